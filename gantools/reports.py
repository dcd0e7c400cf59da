"""Pictures for people: line plots, concept palettes, label overlays, image strips.

Plots are drawn with PIL (already a dependency through torchvision) rather than matplotlib, to keep
installs small and imports fast. HTML reports live beside their producers' data (see dissection).
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


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    if not math.isfinite(lo) or not math.isfinite(hi):
        return []
    if hi <= lo:
        hi = lo + 1.0
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    start = math.ceil(lo / step) * step
    return [start + i * step for i in range(int((hi - start) / step + 1e-9) + 1)]


def _fmt_tick(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.0f}"


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | os.PathLike,
              title: str = "", xlabel: str = "", ylabel: str = "", size: tuple[int, int] = (720, 420),
              bands: dict[str, tuple[Sequence[float], Sequence[float]]] | None = None) -> Path:
    """Draw named (x, y) series as a PNG line chart, atomically.

    Args:
        series: name -> (xs, ys). Non-finite points are skipped.
        path: PNG to write.
        title, xlabel, ylabel: text around the chart.
        size: image size in pixels.
        bands: optional name -> (low ys, high ys), drawn as a shaded band under the series
            (confidence intervals); the band's xs are the series' xs.
    """
    from PIL import Image, ImageDraw

    w, h = size
    left, right, top, bottom = 70, 150, 36, 50
    img = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(img)
    points = [(x, y) for xs, ys in series.values() for x, y in zip(xs, ys) if math.isfinite(y)]
    for lo_ys, hi_ys in (bands or {}).values():
        points += [(0.0, v) for v in list(lo_ys) + list(hi_ys) if math.isfinite(v)]
    xs_all = [x for xs, _ in series.values() for x in xs]
    x0, x1 = (min(xs_all), max(xs_all)) if xs_all else (0.0, 1.0)
    ys_all = [y for _, y in points] or [0.0, 1.0]
    y0, y1 = min(ys_all), max(ys_all)
    if x1 == x0:
        x1 = x0 + 1
    if y1 == y0:
        y0, y1 = y0 - 0.5, y1 + 0.5
    pad = (y1 - y0) * 0.05
    y0, y1 = y0 - pad, y1 + pad

    def px(x: float, y: float) -> tuple[float, float]:
        return (left + (x - x0) / (x1 - x0) * (w - left - right), top + (y1 - y) / (y1 - y0) * (h - top - bottom))

    for t in _nice_ticks(y0, y1):
        _, yy = px(x0, t)
        draw.line([(left, yy), (w - right, yy)], fill="#e5e5e5")
        draw.text((5, yy - 6), _fmt_tick(t), fill="#333")
    for t in _nice_ticks(x0, x1):
        xx, _ = px(t, y0)
        draw.line([(xx, top), (xx, h - bottom)], fill="#f0f0f0")
        draw.text((xx - 10, h - bottom + 6), _fmt_tick(t), fill="#333")
    draw.rectangle([left, top, w - right, h - bottom], outline="#888")
    for i, (name, (xs, ys)) in enumerate(series.items()):
        color = SERIES_COLORS[i % len(SERIES_COLORS)]
        if bands and name in bands:
            lo, hi = bands[name]
            poly = [px(x, v) for x, v in zip(xs, hi) if math.isfinite(v)]
            poly += [px(x, v) for x, v in reversed(list(zip(xs, lo))) if math.isfinite(v)]
            if len(poly) >= 3:
                overlay = Image.new("RGBA", size, (0, 0, 0, 0))
                r, g, b = (int(color[k:k + 2], 16) for k in (1, 3, 5))
                ImageDraw.Draw(overlay).polygon(poly, fill=(r, g, b, 50))
                img.paste(overlay, (0, 0), overlay)
                draw = ImageDraw.Draw(img)
        pts = [px(x, y) for x, y in zip(xs, ys) if math.isfinite(y)]
        if len(pts) > 1:
            draw.line(pts, fill=color, width=2)
        elif pts:
            draw.ellipse([pts[0][0] - 2, pts[0][1] - 2, pts[0][0] + 2, pts[0][1] + 2], fill=color)
        draw.line([(w - right + 10, top + 8 + 16 * i), (w - right + 30, top + 8 + 16 * i)], fill=color, width=3)
        draw.text((w - right + 35, top + 2 + 16 * i), name[:18], fill="#222")
    draw.text((left, 10), title, fill="#000")
    draw.text(((w - right + left) / 2 - 3 * len(xlabel), h - 22), xlabel, fill="#333")
    draw.text((5, top - 22), ylabel, fill="#333")
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
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
