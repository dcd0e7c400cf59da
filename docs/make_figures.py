"""Draw the README's pictures from the shipped models (python docs/make_figures.py; about 3 minutes on 2 cores).

- docs/samples.png: 32 samples of scenes64 beside 32 of mnist32 (seed 0);
- docs/dissection.png: layer 3 of scenes64, the best unit of six concepts, each a row of its
  top-activating samples with the region above the unit's threshold highlighted;
- docs/inversion.png: held-out images restored by mnist32 and scenes64 (input | what the model saw |
  result), for super-resolution, inpainting and denoising;
- docs/edit.png: a fresh scene with its trees removed (input | reconstruction | edited | difference).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

import gantools
from gantools.data import find_images, load_image, make_grid, save_image, split_holdout
from gantools.dissection import unit_masks
from gantools.restoration.inversion import compare_strip
from gantools.reports import image_row, overlay
from gantools.utils import to_uint8

DOCS = Path(__file__).resolve().parent
MNIST = DOCS.parent.parent / "shared" / "data" / "mnist4k"


def labelled(image: torch.Tensor, text: str, width: int = 120) -> torch.Tensor:
    """A row with a caption on its left (PIL's built-in font; nothing downloaded)."""
    c, h, w = image.shape
    canvas = Image.new("RGB", (width + w, h), "white")
    arr = image.expand(3, -1, -1) if c == 1 else image
    canvas.paste(Image.fromarray(arr.permute(1, 2, 0).numpy()), (width, 0))
    ImageDraw.Draw(canvas).text((6, h // 2 - 6), text, fill="black")
    return torch.from_numpy(np.array(canvas)).permute(2, 0, 1).contiguous()


def stack(rows: list[torch.Tensor], gap: int = 4) -> torch.Tensor:
    width = max(r.shape[-1] for r in rows)
    padded = [F.pad(r.expand(3, -1, -1), (0, width - r.shape[-1], 0, gap), value=255) for r in rows]
    return torch.cat(padded, dim=1)


def samples() -> None:
    scenes = to_uint8(gantools.sample("scenes64", n=32, seed=0))
    digits = to_uint8(gantools.sample("mnist32", n=32, seed=0)).repeat_interleave(2, -1).repeat_interleave(2, -2)
    left, right = make_grid(scenes, nrow=8), make_grid(digits.expand(-1, 3, -1, -1), nrow=8)
    h = max(left.shape[1], right.shape[1])
    gap = torch.full((3, h, 16), 255, dtype=torch.uint8)
    save_image(torch.cat([F.pad(left, (0, 0, 0, h - left.shape[1]), value=255), gap,
                          F.pad(right, (0, 0, 0, h - right.shape[1]), value=255)], dim=2), DOCS / "samples.png")


def dissection() -> None:
    gan = gantools.load_model("scenes64")
    result = gantools.dissect(gan, 3, n=1000)
    layer = result.layer(3)
    best: dict[str, tuple[float, int]] = {}
    for u in layer.interpretable:
        c, iou = layer.label[u], float(layer.best_iou[u])
        if iou > best.get(c, (0.0, -1))[0]:
            best[c] = (iou, u)
    rows = []
    for c, (iou, u) in sorted(best.items(), key=lambda kv: -kv[1][0])[:6]:
        ex = layer.examples
        images = ex.images[u]
        masks = unit_masks(layer, u, ex.maps[u], images.shape[-2:])
        rows.append(labelled(image_row(overlay(images, masks)), f"unit {u}: {c}\nIoU {iou:.2f}"))
    save_image(stack(rows), DOCS / "dissection.png")


def inversion() -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if MNIST.is_dir():
            _, held = split_holdout(find_images(MNIST), 500)
            clean = torch.stack([load_image(p, nc=1, size=32) for p in held[:1]])
            low = F.avg_pool2d(clean.float(), 4).round().to(torch.uint8)
            r = gantools.invert("mnist32", low, "superres", scale=4, layerwise=1, names=["digit"])
            rows.append(labelled(compare_strip(r, 0, min_size=96), "mnist32\nsuper-res x4\n(+ layer-wise)"))
        scenes = gantools.Scenes(10, image_size=64, seed=4242)
        img, _ = scenes[3]
        hole = torch.zeros(64, 64)
        hole[20:44, 16:40] = 1
        r = gantools.invert("scenes64", img[None], "inpaint", mask=hole, names=["scene"])
        rows.append(labelled(compare_strip(r, 0, min_size=96), "scenes64\ninpainting"))
        noisy = (img.float() / 255 + 0.1 * torch.randn(img.shape, generator=torch.Generator().manual_seed(0)))
        noisy_u8 = (noisy.clamp(0, 1) * 255).round().to(torch.uint8)
        r = gantools.invert("scenes64", noisy_u8[None], "denoise", noise_sigma=0.1, names=["scene"])
        rows.append(labelled(compare_strip(r, 0, min_size=96), "scenes64\ndenoising 0.1"))
    save_image(stack(rows), DOCS / "inversion.png")


def edit() -> None:
    scenes = gantools.Scenes(50, image_size=64, seed=777)
    tree = scenes.concepts.index("tree")
    index = next(i for i in range(50) if float((scenes[i][1] == tree).float().mean()) > 0.06)
    r = gantools.edit("scenes64", scenes[index][0], 3, remove="tree")
    save_image(r.strip(min_size=128), DOCS / "edit.png")


if __name__ == "__main__":
    import sys

    figures = {"samples": samples, "dissection": dissection, "inversion": inversion, "edit": edit}
    for name in sys.argv[1:] or list(figures):  # e.g. python docs/make_figures.py inversion edit
        figures[name]()
    print("wrote", ", ".join(p.name for p in sorted(DOCS.glob("*.png"))))
