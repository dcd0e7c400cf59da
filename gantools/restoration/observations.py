"""The user's images, read for inversion: degraded inputs, inpainting masks and clean targets.

Inputs may be files of any size and mode, folders of them, or tensors; each is converted to the
channels and resolution the task's operator expects (`load_observations`), with a notice when it
had to be resized. Masks are brought to generator resolution conservatively (`load_mask`), and clean
targets for scoring are matched to the inputs by file stem (`load_targets`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch

from ..data import find_images, load_image, read_image, read_mask, resize_center_crop
from ..types import ImageSource
from ..utils import GantoolsError, ProgressCallback, from_uint8, luminance, notice, to_uint8
from .degradations import as_mask


@dataclass
class Observations:
    """Degraded inputs as the model sees them.

    Args:
        images: N x C x s x s in [-1, 1] (s = generator size, or size / scale for superres).
        names: stems used for output files.
        originals: the inputs as read (uint8 C x H x W at their own size), for display.
        resized: which inputs were resized to fit.
        sources: the file each input came from (None for tensor inputs).
    """

    images: torch.Tensor
    names: list[str]
    originals: list[torch.Tensor]
    resized: list[bool]
    sources: list[str | None] = field(default_factory=list)


def convert_channels(img: torch.Tensor, nc: int) -> torch.Tensor:
    """One image (C x H x W, uint8 or float) with `nc` channels: gray is replicated to RGB, and RGB
    becomes gray by BT.601 luminance (the formula PIL uses for mode "L"). Returned as is when it has them."""
    if img.shape[0] == nc:
        return img
    if nc == 3:
        return img.expand(3, -1, -1).contiguous()
    y = luminance(img[None].float())[0]
    return y.round().clamp(0, 255).to(torch.uint8) if img.dtype == torch.uint8 else y


def load_observations(images: ImageSource | Sequence[str | os.PathLike], image_size: int, nc: int, task: str,
                      scale: int = 4, names: Sequence[str] | None = None,
                      progress: ProgressCallback | None = None) -> Observations:
    """Read and convert the user's degraded inputs to what the operator of `task` expects.

    Args:
        images: paths (a folder stands for the images in it), or a tensor N x C x H x W (uint8, or
            float in [-1, 1]).
        image_size, nc: the generator's resolution and channels.
        task: which operator; colorize reads grayscale, superres needs exactly image_size / scale.
        scale: superres factor.
        names: stems for tensor inputs (default img0000, img0001, ...).
        progress: receives a one-line notice per resized input.
    """
    want_c = 1 if task == "colorize" else nc
    if isinstance(images, torch.Tensor):
        raw, labels, originals, sources = _from_tensor(images, want_c, names)
    else:
        raw, labels, originals, sources = _from_files(images, want_c, nc, task, progress)
    if len(set(labels)) != len(labels):
        dup = sorted({n for n in labels if labels.count(n) > 1})
        raise GantoolsError(f"several inputs share the name {dup[0]!r}: outputs are named by stem, so rename them")
    side = image_size // scale if task == "superres" else image_size
    out, resized = [], []
    for name, img in zip(labels, raw):
        h, w = img.shape[-2:]
        if (h, w) != (side, side):
            if task == "superres":
                raise GantoolsError(f"{name}: super-resolution input must be exactly {side}x{side} "
                                    f"(the generator's {image_size}px divided by scale {scale}), got {w}x{h}")
            img = resize_center_crop(img, side)
            notice(progress, f"{name}: {w}x{h} resized and center-cropped to the generator's {side}x{side}")
        resized.append((h, w) != (side, side))
        out.append(img.clamp(-1, 1))
    if not out:
        raise GantoolsError("no images to invert")
    return Observations(torch.stack(out), labels, originals, resized, sources)


# The inputs as read, before resizing: images in [-1, 1], stems, originals for display, source files.
_Read = tuple[list[torch.Tensor], list[str], list[torch.Tensor], list[str | None]]


def _from_tensor(images: torch.Tensor, want_c: int, names: Sequence[str] | None) -> _Read:
    t = images if images.dim() == 4 else images[None]
    if t.dim() != 4:
        raise GantoolsError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
    # Float tensors keep their precision (no 8-bit rounding); uint8 ones are scaled to [-1, 1].
    t = from_uint8(t.cpu()) if t.dtype == torch.uint8 else t.detach().float().cpu().clamp(-1, 1)
    if names is not None and len(names) != t.shape[0]:
        raise GantoolsError(f"{len(names)} names for {t.shape[0]} images")
    raw, labels, originals = [], [], []
    for i, img in enumerate(t):
        if img.shape[0] not in (1, 3):
            raise GantoolsError(f"image {i} has {img.shape[0]} channels: use 1 or 3")
        originals.append(to_uint8(img))
        raw.append(convert_channels(img, want_c))
        labels.append(names[i] if names is not None else f"img{i:04d}")
    return raw, labels, originals, [None] * len(raw)


def _from_files(images: str | os.PathLike | Sequence[str | os.PathLike], want_c: int, nc: int, task: str,
                progress: ProgressCallback | None) -> _Read:
    paths: list[Path] = []
    for p in map(Path, [images] if isinstance(images, (str, os.PathLike)) else images):
        if p.is_dir():  # a folder stands for the images in it
            found = find_images(p)
            if not found:
                raise GantoolsError(f"no images in {p}")
            paths += found
        else:
            paths.append(p)
    if not paths:
        raise GantoolsError("no images to invert")
    raw, labels, originals, sources = [], [], [], []
    for p in paths:
        shown = read_image(p, 3 if want_c == 3 or task == "colorize" else nc)
        originals.append(shown)
        img = read_image(p, want_c)
        if task == "colorize" and not _is_gray(shown):
            notice(progress, f"{p.name}: colour input converted to grayscale (BT.601 luminance) for colorize")
        raw.append(from_uint8(img))
        labels.append(p.stem)
        sources.append(str(p))
    return raw, labels, originals, sources


def _is_gray(img: torch.Tensor) -> bool:
    return img.shape[0] == 1 or bool((img[0] == img[1]).all() and (img[1] == img[2]).all())


def load_mask(mask: str | os.PathLike | torch.Tensor, sizes: Sequence[tuple[int, int]], image_size: int) -> torch.Tensor:
    """The inpainting mask (nonzero = missing) at generator resolution: N|1 x 1 x S x S.

    Args:
        mask: a PNG path or a tensor (H x W, or N x 1 x H x W for one mask per image).
        sizes: the inputs' own (height, width); the mask must have the same size.
        image_size: generator resolution to bring it to.
    """
    if isinstance(mask, torch.Tensor):
        m = as_mask(mask)
        name = "mask"
    else:
        m = as_mask(read_mask(mask)[None])
        name = f"mask {Path(mask).name}"
    h, w = m.shape[-2:]
    for ih, iw in sizes:
        if (ih, iw) != (h, w):
            raise GantoolsError(f"{name} is {w}x{h} but the image is {iw}x{ih}: the mask must have the image's size")
    if (h, w) != (image_size, image_size):
        # Resize like the image; antialiasing spreads the hole's edge, and any nonzero value stays
        # missing, so a resized mask never claims a missing pixel is known.
        u8 = (m * 255).to(torch.uint8)
        m = torch.stack([resize_center_crop(x, image_size) for x in u8]).float()
        m = (m > 0).float()
    return m


def load_targets(targets: ImageSource | Sequence[str | os.PathLike], names: Sequence[str], image_size: int,
                 nc: int, progress: ProgressCallback | None = None) -> list[torch.Tensor | None]:
    """Clean images for scoring, aligned with `names`: a tensor, a list of paths, one file (one
    input only) or a folder matched by stem. Missing stems give None (with a notice)."""
    if isinstance(targets, torch.Tensor):
        t = targets if targets.dim() == 4 else targets[None]
        if t.shape[0] != len(names):
            raise GantoolsError(f"{t.shape[0]} target images for {len(names)} inputs")
        t = from_uint8(t) if t.dtype == torch.uint8 else t.float()
        if t.shape[1] != nc or t.shape[-1] != image_size or t.shape[-2] != image_size:
            raise GantoolsError(f"target must be N x {nc} x {image_size} x {image_size}, got {tuple(t.shape)}")
        return list(t.cpu())
    out: list[torch.Tensor | None] = []
    for f in _target_files(targets, names, progress):
        if f is None:
            out.append(None)
            continue
        img = read_image(f, nc)
        if img.shape[-2:] != (image_size, image_size):
            notice(progress, f"target {f.name}: {img.shape[-1]}x{img.shape[-2]} resized to {image_size}x{image_size}")
            img = load_image(f, nc, image_size)
        out.append(from_uint8(img))
    return out


def _target_files(targets: str | os.PathLike | Sequence[str | os.PathLike], names: Sequence[str],
                  progress: ProgressCallback | None) -> list[Path | None]:
    """The clean file for each input name (None where a folder has none)."""
    if not isinstance(targets, (str, os.PathLike)):
        files = [Path(p) for p in targets]
        if len(files) != len(names):
            raise GantoolsError(f"{len(files)} target images for {len(names)} inputs")
        return list(files)
    path = Path(targets)
    if not path.is_dir():
        if len(names) != 1:
            raise GantoolsError("target is one file but there are several inputs: give a folder of "
                                "clean images named like the inputs")
        return [path]
    by_stem = {p.stem: p for p in find_images(path)}
    found: list[Path | None] = [by_stem.get(n) for n in names]
    missing = [n for n, f in zip(names, found) if f is None]
    if len(missing) == len(names):
        raise GantoolsError(f"no clean image in {path} matches the inputs' names (e.g. {names[0]}.png)")
    if missing:
        notice(progress, f"no target in {path} for {', '.join(missing[:5])}: no PSNR/SSIM for those")
    return found
