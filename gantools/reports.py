"""Pictures for people: line plots, concept palettes, label overlays, image strips and labelled grids.

Plots are drawn with matplotlib (imported inside the function, so that importing gantools and
`--help` stay fast); image strips and grids with PIL. Every grid of images that people read
(before/after, interpolation, arithmetic, restoration) is drawn by `labelled_grid`, with a label
left of each row and above each column. HTML reports live beside their producers' data (see
dissection).
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from .utils import GantoolsError, atomic_path, to_uint8

SERIES_COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"]


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
              title: str = "", xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (720, 420),
              bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Path:
    """Draw named (x, y) series as a PNG line chart with matplotlib, atomically.

    Args:
        series: name -> (xs, ys). Non-finite points are skipped.
        path: PNG to write.
        title, xlabel, ylabel: text around the chart.
        size: image size in pixels.
        bands: optional name -> (low ys, high ys), drawn as a shaded band under the series
            (confidence intervals); the band's xs are the series' xs.
    """
    import matplotlib

    matplotlib.use("Agg")  # files only, no display; imported here so that `--help` stays fast
    import matplotlib.pyplot as plt

    dpi = 100
    fig, ax = plt.subplots(figsize=(size[0] / dpi, size[1] / dpi), dpi=dpi)
    try:
        many = plt.get_cmap("tab20") if len(series) > len(SERIES_COLORS) else None  # one colour per series
        for i, (name, (xs, ys)) in enumerate(series.items()):
            color = many(i % 20) if many else SERIES_COLORS[i]
            pts = [(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
            if bands and name in bands:
                lo, hi = bands[name]
                ax.fill_between(list(xs), list(lo), list(hi), color=color, alpha=0.2, linewidth=0)
            if pts:
                ax.plot(*zip(*pts), color=color, linewidth=2, marker="o" if len(pts) == 1 else None, label=name)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
        if series:
            # many series (one per concept) go beside the axes, a few inside
            outside = len(series) > 6
            ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0) if outside else None, fontsize=8, frameon=False)
        fig.tight_layout()
        path = Path(path)
        with atomic_path(path) as tmp:
            fig.savefig(tmp, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return path


def concept_palette(n: int) -> torch.Tensor:
    """n distinct RGB colours (uint8, n x 3), stable for a given n: concept i always gets colour i."""
    colors = []
    for i in range(n):
        hue = (i * 0.618033988749895) % 1.0  # golden-ratio hues spread evenly for any n
        sat = 0.65 if i % 2 == 0 else 0.9
        val = 0.95 if i % 3 != 2 else 0.7
        colors.append([round(c * 255) for c in colorsys.hsv_to_rgb(hue, sat, val)])
    return torch.tensor(colors, dtype=torch.uint8).reshape(n, 3)


def colorize_labels(labels: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """Label map(s) (... x H x W, long) -> RGB uint8 (... x 3 x H x W) using `concept_palette`."""
    palette = concept_palette(num_concepts)
    rgb = palette[labels.long().clamp(0, num_concepts - 1).cpu()]  # ... x H x W x 3
    return rgb.movedim(-1, -3).contiguous()


def overlay(images: torch.Tensor, masks: torch.Tensor, color: tuple[int, int, int] = (255, 40, 40),
            alpha: float = 0.5, dim: float = 0.35) -> torch.Tensor:
    """Highlight a boolean region: inside tinted with `color`, outside darkened by `dim`.

    Args:
        images: N x C x H x W, uint8 or float in [-1, 1].
        masks: N x H x W booleans.
    Returns:
        N x 3 x H x W uint8.
    """
    if images.dtype != torch.uint8:
        images = to_uint8(images)
    x = images.cpu().float()
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    m = masks.cpu().bool().unsqueeze(1)
    tint = torch.tensor(color, dtype=torch.float32).view(1, 3, 1, 1)
    inside = (1 - alpha) * x + alpha * tint
    outside = x * (1 - dim)
    return torch.where(m, inside, outside).round().clamp(0, 255).to(torch.uint8)


def image_row(images: torch.Tensor, gap: int = 2, fill: int = 255) -> torch.Tensor:
    """Images (N x C x H x W uint8) side by side with `gap` columns of `fill` between them: C x H x W'."""
    n, c, h, w = images.shape
    out = torch.full((c, h, n * w + max(0, n - 1) * gap), fill, dtype=torch.uint8)
    for i in range(n):
        out[:, :, i * (w + gap):i * (w + gap) + w] = images[i]
    return out


def labelled_grid(rows: torch.Tensor | Sequence[torch.Tensor | Sequence[torch.Tensor]], row_labels: Sequence[str] = (),
                  column_labels: Sequence[str] = (), *, title: str = "", cell: int = 96, gap: int = 4,
                  font_size: int = 13) -> torch.Tensor:
    """Images in a grid, with a label left of each row and above each column, as one picture.

    Args:
        rows: one per row: a tensor N x C x H x W or a list of C x H x W images (uint8, or float in
            [-1, 1]; C = 1 or 3); or one R x N x C x H x W tensor. Rows may differ in length, and
            images in channels and size.
        row_labels: one per row ("" for none; may span lines with "\\n"); none: no label column.
        column_labels: one per column; none: no label row.
        title: a line above everything ("" for none).
        cell: the side of each cell in pixels (at least the largest image); every image is scaled
            up by a whole factor (nearest neighbour, so pixels stay sharp) and centred in its cell.
        gap: white pixels between cells.
        font_size: label text size in pixels (PIL's own font; nothing is downloaded).
    Returns:
        3 x H x W uint8; save it with `gantools.images.save_image`.
    """
    from PIL import Image, ImageDraw

    rows = [[_rgb_uint8(image) for image in row] for row in rows]
    if not rows or not any(len(r) for r in rows):
        raise GantoolsError("rows must hold at least one image")
    if row_labels and len(row_labels) != len(rows):
        raise GantoolsError(f"row_labels has {len(row_labels)} labels for {len(rows)} rows")
    columns = max(len(r) for r in rows)
    if column_labels and len(column_labels) != columns:
        raise GantoolsError(f"column_labels has {len(column_labels)} labels for {columns} columns")
    cell = max(cell, *(max(image.shape[-2:]) for row in rows for image in row))
    font = _label_font(font_size)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    pad = max(4, font_size // 2)  # space between a label and the images it names
    left = max((_text_size(measure, t, font)[0] for t in row_labels), default=0)
    left = left + 2 * pad if left else 0
    top_title = _text_size(measure, title, font)[1] + pad if title else 0
    top = max((_text_size(measure, t, font)[1] for t in column_labels), default=0)
    top = top + pad if top else 0
    width = left + columns * cell + (columns - 1) * gap
    height = top_title + top + len(rows) * cell + (len(rows) - 1) * gap
    canvas = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(canvas)
    if title:
        draw.text((max(0, (width - _text_size(measure, title, font)[0]) // 2), 0), title, fill="black", font=font)
    for j, text in enumerate(column_labels):  # centred over its column
        x = left + j * (cell + gap) + (cell - _text_size(measure, text, font)[0]) // 2
        draw.multiline_text((x, top_title), text, fill="black", font=font, align="center")
    for i, row in enumerate(rows):
        y = top_title + top + i * (cell + gap)
        if row_labels:  # right-aligned against the row, centred on it
            tw, th = _text_size(measure, row_labels[i], font)
            draw.multiline_text((left - pad - tw, y + (cell - th) // 2), row_labels[i], fill="black", font=font,
                                align="right")
        for j, image in enumerate(row):  # centred in its cell
            picture = _scaled(image, cell)
            canvas.paste(picture, (left + j * (cell + gap) + (cell - picture.width) // 2,
                                   y + (cell - picture.height) // 2))
    return torch.from_numpy(np.asarray(canvas).copy()).permute(2, 0, 1).contiguous()


def _rgb_uint8(image: torch.Tensor) -> torch.Tensor:
    """C x H x W (uint8 or float in [-1, 1], C = 1 or 3) -> 3 x H x W uint8 on the CPU."""
    image = image.detach().cpu()
    if image.dtype != torch.uint8:
        image = to_uint8(image)
    return image.expand(3, -1, -1) if image.shape[0] == 1 else image


def _scaled(image: torch.Tensor, cell: int):
    """One 3 x H x W uint8 image as a PIL image, scaled up by a whole factor to fit the cell."""
    from PIL import Image

    k = max(1, cell // max(image.shape[-2:]))
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy()).resize((image.shape[-1] * k, image.shape[-2] * k),
                                                                   Image.NEAREST)


def _label_font(size: int):
    """PIL's bundled scalable font at this size (Pillow >= 10.1 with FreeType), else its bitmap font."""
    from PIL import ImageFont

    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # an older Pillow: no size, a fixed bitmap font
        return ImageFont.load_default()


def _text_size(draw: Any, text: str, font: Any) -> tuple[int, int]:
    """Width and height in pixels of (possibly multi-line) text."""
    if not text:
        return 0, 0
    x0, y0, x1, y1 = draw.multiline_textbbox((0, 0), text, font=font)
    return x1 - min(0, x0), y1 - min(0, y0)


def data_uri(image: torch.Tensor, fmt: str | None = None, quality: int = 88) -> str:
    """An image (C x H x W uint8, C = 1 or 3) as a base64 data: URI for self-contained HTML.

    Args:
        image: the image.
        fmt: "png" or "jpeg"; default PNG up to 32 px high (exact pixels), JPEG above (smaller files).
        quality: JPEG quality.
    """
    import base64
    import io

    from PIL import Image

    arr = image.detach().cpu()
    if arr.dtype != torch.uint8:
        raise ValueError(f"data_uri takes uint8 images, got {arr.dtype}")
    arr = arr[0] if arr.shape[0] == 1 else arr.permute(1, 2, 0)
    img = Image.fromarray(arr.contiguous().numpy())
    fmt = (fmt or ("png" if image.shape[-2] <= 32 else "jpeg")).lower()
    buf = io.BytesIO()
    if fmt == "png":
        img.save(buf, format="PNG", optimize=True)
        mime = "image/png"
    elif fmt in ("jpeg", "jpg"):
        img.save(buf, format="JPEG", quality=quality)
        mime = "image/jpeg"
    else:
        raise ValueError(f"unknown image format {fmt!r}: use png or jpeg")
    return f"data:{mime};base64," + base64.b64encode(buf.getvalue()).decode("ascii")
