"""Writing scenes to a labelled folder (images/, labels/, concepts.json) and the preview sheet.

`gantools.data.LabelledFolder` (and `open_dataset`) read the folder back, pixel for pixel.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from ..images import save_image, save_label
from ..utils import GantoolsError, ProgressCallback, atomic_path, notice, report, write_json
from .dataset import FrequencyCounter, Scenes
from .design import CONCEPTS, VERSION


@dataclass
class WriteScenesResult:
    """What `write_scenes` wrote: the folder, the dataset's settings, its concept frequencies
    (as `concept_frequencies` gives them) and the preview sheet."""

    out: Path
    n: int
    image_size: int
    nc: int
    seed: int
    version: int
    concepts: list[str]
    frequencies: dict[str, dict[str, float]]
    preview: Path


# The old name, kept so that existing callers keep working.
ScenesWritten = WriteScenesResult


def save_preview(images: torch.Tensor, labels: torch.Tensor, concepts: Sequence[str],
                 path: str | os.PathLike, columns: int = 4, scale: int | None = None) -> Path:
    """A sheet of images beside their label maps blended over them, with a legend of concept names.

    Args:
        images: N x C x S x S uint8.
        labels: N x S x S int64 concept ids.
        concepts: concept names (id order), for colours and the legend.
        path: PNG to write.
        columns: image/label pairs per row.
        scale: integer upscaling (nearest) of each tile; default brings tiles to about 128 px.
    """
    from PIL import Image, ImageDraw

    from ..reports import colorize_labels, concept_palette

    n, c, s = images.shape[0], images.shape[1], images.shape[-1]
    scale = scale or max(1, 128 // s)
    rgb = images if c == 3 else images.expand(-1, 3, -1, -1)
    colors = colorize_labels(labels, len(concepts))
    blended = (0.35 * rgb.float() + 0.65 * colors.float()).round().to(torch.uint8)
    tile, pad = s * scale, 4
    columns = max(1, min(columns, n))
    nrows = int(math.ceil(n / columns))
    legend_h = 18 * int(math.ceil(len(concepts) / 5)) + 8
    width = columns * (2 * tile + 3 * pad) + pad
    height = nrows * (tile + pad) + pad + legend_h
    sheet = Image.new("RGB", (width, height), (255, 255, 255))

    def to_pil(t: torch.Tensor) -> Image.Image:
        img = Image.fromarray(t.permute(1, 2, 0).numpy(), "RGB")
        return img.resize((tile, tile), Image.NEAREST) if scale > 1 else img

    for i in range(n):
        r, col = divmod(i, columns)
        x = pad + col * (2 * tile + 3 * pad)
        y = pad + r * (tile + pad)
        sheet.paste(to_pil(rgb[i]), (x, y))
        sheet.paste(to_pil(blended[i]), (x + tile + pad, y))
    draw = ImageDraw.Draw(sheet)
    palette = concept_palette(len(concepts)).tolist()
    y0 = nrows * (tile + pad) + pad + 4
    colw = width // 5
    for i, name in enumerate(concepts):
        r, col = divmod(i, 5)
        x, y = 8 + col * colw, y0 + r * 18
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(palette[i]), outline=(60, 60, 60))
        draw.text((x + 17, y), f"{i} {name}", fill=(20, 20, 20))
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def write_scenes(out: str | os.PathLike, n: int = 1000, image_size: int = 64, seed: int = 0, nc: int = 3,
                 preview: int = 16, progress: ProgressCallback | None = None,
                 version: int = VERSION) -> WriteScenesResult:
    """Write scenes to a folder that `LabelledFolder` (and `open_dataset`) read back.

    Writes `images/NNNNNN.png`, `labels/NNNNNN.png` (palette PNGs whose index is the concept id),
    `concepts.json` ({"concepts": [...], "dataset": "scenes", "version": V, "seed": s}) and `preview.png`.

    Args:
        out: output folder (created). Scenes of an earlier write there are replaced, and those beyond
            this write's n are removed, so the folder holds exactly this dataset.
        n, image_size, seed, nc, version: as for `Scenes`.
        preview: number of scenes shown in preview.png (at least 1; at most n are shown).
        progress: callback for progress.
    """
    scenes = Scenes(n=n, image_size=image_size, seed=seed, nc=nc, version=version)
    if preview < 1:
        raise GantoolsError(f"preview must be at least 1, got {preview}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GantoolsError(f"output {out} exists and is not a folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(n - 1)))
    # Only files named as this function names them: anything else in the folder is the user's.
    earlier = [f for sub in ("images", "labels") for f in (out / sub).glob("*.png") if f.stem.isdigit()]
    counter, shown = _write_files(scenes, out, digits, preview, progress)
    stale = [f for f in earlier if f.name != f"{int(f.stem):0{digits}d}.png" or int(f.stem) >= n]
    for f in stale:
        f.unlink(missing_ok=True)
    if stale:
        count = sum(f.parent.name == "images" for f in stale)
        notice(progress, f"removed {count} scene(s) of an earlier write to {out}")
    write_json(out / "concepts.json", {"concepts": list(CONCEPTS), "dataset": "scenes", "version": scenes.version,
                                       "seed": seed})
    preview_path = save_preview(torch.stack([s[0] for s in shown]), torch.stack([s[1] for s in shown]), CONCEPTS,
                                out / "preview.png")
    return WriteScenesResult(out, n, image_size, nc, seed, scenes.version, list(CONCEPTS),
                             counter.result(CONCEPTS), preview_path)


def _write_files(scenes: Scenes, out: Path, digits: int, preview: int, progress: ProgressCallback | None,
                 ) -> tuple[FrequencyCounter, list[tuple[torch.Tensor, torch.Tensor]]]:
    """Render and write every scene's image and label map; returns the concept counts and the first
    `preview` (image, label) pairs."""
    from concurrent.futures import ThreadPoolExecutor

    counter = FrequencyCounter(len(CONCEPTS))
    shown: list[tuple[torch.Tensor, torch.Tensor]] = []
    n = len(scenes)

    def save(i: int, image: torch.Tensor, labels: torch.Tensor) -> None:
        name = f"{i:0{digits}d}.png"
        save_image(image, out / "images" / name)
        save_label(labels, out / "labels" / name, len(CONCEPTS))

    # Each file is written atomically (temp file, fsync, rename); fsync waits on the disk, so a few
    # threads overlap those waits while this thread keeps rendering.
    pending: list = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i in range(n):
            image, labels = scenes[i]
            pending.append(pool.submit(save, i, image, labels))
            counter.add(labels)
            if i < preview:
                shown.append((image, labels))
            if len(pending) >= 64:
                for f in pending:
                    f.result()  # re-raises a failed write
                pending.clear()
                report(progress, "write scenes", i + 1, n)
        for f in pending:
            f.result()
    report(progress, "write scenes", n, n)
    return counter, shown
