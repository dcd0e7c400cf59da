"""Pictures for people: line plots, concept palettes, label overlays, image strips.

Plots are drawn with matplotlib (imported inside the function, so that importing gantools and
`--help` stay fast); image strips with PIL. HTML reports live beside their producers' data (see
dissection).
"""

from __future__ import annotations

import colorsys
import math
import os
from pathlib import Path
from typing import Sequence

import torch

from .utils import atomic_path

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
    from .utils import to_uint8

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
