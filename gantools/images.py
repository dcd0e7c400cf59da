"""Images in and out: the one image loader, saving, grids, and label maps (index PNGs).

`load_image` is the one image loader: any size, mode (L, LA, RGB, RGBA, P, I;16...) and common
format, converted to nc channels and optionally resized and center-cropped; `read_image` is its
first step (decode at the file's own size). Images are uint8 tensors (C x H x W); convert to the
models' [-1, 1] range with `gantools.utils.from_uint8`.

This module sits below `data` (folders, datasets) and `scenes` (which writes label maps), so that
neither has to import the other's helpers. `gantools.data` re-exports every name here.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from .utils import GantoolsError, atomic_path, to_uint8

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


# ---------------------------------------------------------------------------------------------
# Pictures and masks


def _to_mode(img, nc: int, background: int = 255):
    """Convert a PIL image of any mode to 'L' (nc=1) or 'RGB' (nc=3); alpha is composited on a
    `background` grey level (white for pictures, black for masks)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: rescale to 8 bits by their dtype's range, not by clipping.
        arr = np.asarray(img)
        if arr.dtype == np.uint16 or img.mode.startswith("I;16"):
            arr = arr.astype(np.float64) / 65535.0
        elif img.mode == "I":
            arr = arr.astype(np.float64) / (65535.0 if arr.max() > 255 else 255.0)
        else:
            arr = arr.astype(np.float64)
        img = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        matte = Image.new("RGBA", img.size, (background, background, background, 255))
        img = Image.alpha_composite(matte, img.convert("RGBA"))
    return img.convert("L" if nc == 1 else "RGB")


def read_image(path: str | os.PathLike, nc: int = 3, background: int = 255) -> torch.Tensor:
    """Decode an image file at its own size: uint8 tensor nc x H x W. Raises GantoolsError if unreadable.
    Transparent pixels are composited on the `background` grey level."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise GantoolsError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_mode(img, nc, background)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GantoolsError(f"cannot read image {path}: {e}") from e
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask file as a uint8 H x W tensor (white = selected); transparent pixels are unselected."""
    return read_image(path, nc=1, background=0)[0]


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to `size` (antialiased) and center-crop to size x size; uint8 in and out."""
    import torchvision.transforms.v2.functional as TF

    _, h, w = image.shape
    if (h, w) != (size, size):
        image = TF.resize(image, size, antialias=True)
        image = TF.center_crop(image, [size, size])
    return image


def load_image(path: str | os.PathLike, nc: int = 3, size: int | None = None) -> torch.Tensor:
    """The one image loader: uint8 tensor nc x size x size (or the file's own size when size is None)."""
    image = read_image(path, nc)
    return resize_center_crop(image, size) if size is not None else image


# Formats by file suffix; anything else is written as PNG (the lossless default).
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one image (C x H x W, uint8 or float in [-1, 1]) atomically, as PNG unless the suffix
    names another format (.jpg, .webp, .bmp, .tif)."""
    from PIL import Image

    if image.dtype != torch.uint8:
        image = to_uint8(image)
    arr = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB")
    path = Path(path)
    with atomic_path(path) as tmp:
        pil.save(tmp, format=SAVE_FORMATS.get(path.suffix.lower(), "PNG"))
    return path


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> torch.Tensor:
    """Tile N x C x H x W images (uint8 or [-1, 1] float) into one uint8 image, `nrow` per row."""
    import torchvision.utils as vutils

    if images.dtype != torch.uint8:
        images = to_uint8(images)
    n = images.shape[0]
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    grid = vutils.make_grid(images.cpu(), nrow=nrow, padding=padding, pad_value=pad_value)
    return grid[: images.shape[1]] if images.shape[1] == 1 else grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """Save a grid of images as one PNG."""
    return save_image(make_grid(images, nrow=nrow, padding=padding), path)


# ---------------------------------------------------------------------------------------------
# Label maps: index PNGs whose pixel value is a concept id


def save_label(labels: torch.Tensor | np.ndarray, path: str | os.PathLike, num_concepts: int) -> Path:
    """Save a label map (H x W concept ids) as a palette PNG whose pixel index is the concept id.

    The palette is `reports.concept_palette`, so label files also look right in an image viewer.
    """
    from PIL import Image

    from .reports import concept_palette

    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 2:
        raise GantoolsError(f"a label map must be H x W, got shape {tuple(arr.shape)}")
    if arr.size and (arr.min() < 0 or arr.max() >= min(num_concepts, 256)):
        raise GantoolsError(f"label ids must lie in 0..{min(num_concepts, 256) - 1}, got {arr.min()}..{arr.max()}")
    img = Image.fromarray(arr.astype(np.uint8), "P")
    palette = concept_palette(max(num_concepts, 1)).reshape(-1).tolist()
    img.putpalette(palette + [0] * (768 - len(palette)))
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def read_label(path: str | os.PathLike) -> torch.Tensor:
    """Read an index PNG (palette 'P' or grayscale 'L'): int64 tensor H x W of concept ids."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise GantoolsError(f"label {path} is a {img.mode} image: labels must be palette (P) or "
                                    "grayscale (L) PNGs whose pixel value is the concept id")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GantoolsError(f"cannot read label {path}: {e}") from e
    return torch.from_numpy(arr.astype(np.int64))


def resize_center_crop_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Resize labels like `resize_center_crop` resizes images, but by nearest neighbour (ids stay ids)."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    h, w = labels.shape
    if (h, w) == (size, size):
        return labels
    out = TF.resize(labels[None].to(torch.uint8), size, interpolation=InterpolationMode.NEAREST_EXACT,
                    antialias=False)
    return TF.center_crop(out, [size, size])[0].long()
