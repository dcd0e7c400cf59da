"""Draw the README's pictures from the shipped models and example inputs (python docs/make_figures.py).

Every grid of images has row and column labels (`gantools.reports.labelled_grid`).

- docs/samples.png: 32 samples of scenes64 beside 32 of mnist32 (seed 0);
- docs/dissection.png: layer 3 of scenes64, the best unit of six concepts, each a row of its
  top-activating samples with the region above the unit's threshold highlighted;
- docs/inversion.png: held-out inputs from examples/inputs/ restored by mnist32 and scenes64
  (clean | degraded input | restored | restored layer-wise), made as the README's Inversion section makes them;
- docs/edit.png: examples/inputs/scenes/scene_trees_lake.png with its trees removed
  (input | reconstruction | edited | difference), as the README's edit line does (units from the
  dissection shipped with scenes64, ranked by causal effect);
- docs/interpolation.png: slerp strips of both models from seed 3 to seed 8;
- docs/arithmetic.png: latent arithmetic A - B + C on scenes64 (the README's sample line).

`python docs/make_figures.py inversion edit` draws only those.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

import gantools
from gantools.dissection import unit_masks
from gantools.images import load_image, make_grid, save_image
from gantools.reports import labelled_grid, overlay
from gantools.sampling import parse_arithmetic
from gantools.utils import to_uint8

DOCS = Path(__file__).resolve().parent
INPUTS = DOCS.parent / "examples" / "inputs"
DIGIT = INPUTS / "digits" / "digit3_01998.png"
SCENE = INPUTS / "scenes" / "scene_house_road.png"
TREES = INPUTS / "scenes" / "scene_trees_lake.png"
ARITHMETIC = "1,9,17-4,12+20,33"  # as in the README: gantools sample --seed 3 --arithmetic ...


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
    rows, labels = [], []
    for c, (iou, u) in sorted(best.items(), key=lambda kv: -kv[1][0])[:6]:
        images = layer.examples.images[u]
        masks = unit_masks(layer, u, layer.examples.maps[u], images.shape[-2:])
        rows.append(overlay(images, masks))
        labels.append(f"unit {u}: {c}\nIoU {iou:.2f}")
    columns = [f"top {j + 1}" for j in range(max(len(r) for r in rows))]
    save_image(labelled_grid(rows, labels, columns, cell=64, title="scenes64 layer 3: top-activating samples"),
               DOCS / "dissection.png")


def degraded_panel(result: gantools.InversionResult) -> torch.Tensor:
    """What the model saw, as a picture: missing pixels drawn as a grey checkerboard."""
    seen = to_uint8(result.observed[0])
    if result.missing is not None:
        hole = result.missing[0, 0].bool()
        yy, xx = torch.meshgrid(torch.arange(hole.shape[0]), torch.arange(hole.shape[1]), indexing="ij")
        seen = torch.where(hole, torch.where((yy // 2 + xx // 2) % 2 == 0, 96, 160).to(torch.uint8), seen)
    return seen


def restored_row(clean: torch.Tensor, result: gantools.InversionResult) -> list[torch.Tensor]:
    """clean | degraded input | restored (| restored layer-wise), each C x H x W uint8."""
    row = [clean, degraded_panel(result), to_uint8(result.images[0])]
    if result.layer_images is not None:
        row.append(to_uint8(result.layer_images[0]))
    return row


def inversion() -> None:
    # the README's inputs: a held-out digit at 8 x 8, and a fresh scene with a hole and with noise
    digit = load_image(DIGIT, nc=1, size=32)
    small = F.avg_pool2d(digit[None].float(), 4)[0].round().to(torch.uint8)
    scene = load_image(SCENE)
    hole = torch.zeros(64, 64)
    hole[20:44, 16:40] = 1
    noise = torch.randn(scene.shape, generator=torch.Generator().manual_seed(0))
    noisy = (scene + 0.1 * 255 * noise).round().clamp(0, 255).to(torch.uint8)
    rows = [restored_row(digit, gantools.invert("mnist32", small[None], "superres", scale=4, layerwise=1,
                                                names=["digit"])),
            restored_row(scene, gantools.invert("scenes64", scene[None], "inpaint", mask=hole, layerwise=2,
                                                names=["scene"])),
            restored_row(scene, gantools.invert("scenes64", noisy[None], "denoise", noise_sigma=0.1, layerwise=2,
                                                names=["scene"]))]
    labels = ["mnist32\nsuper-resolution x4", "scenes64\ninpainting", "scenes64\ndenoising, sigma 0.1"]
    columns = ["clean (not given)", "degraded input", "restored", "restored, layer-wise"]
    save_image(labelled_grid(rows, labels, columns, cell=128), DOCS / "inversion.png")


def edit() -> None:
    # as the README: the plain edit, whose tree units come from the dissection shipped beside scenes64
    # (pretrained/scenes64/dissection.json), ranked by the causal effect of each
    r = gantools.edit("scenes64", TREES, 3, remove="tree")
    save_image(labelled_grid([[r.input, r.reconstruction, r.edited, r.difference]],
                             [f"{TREES.stem}\nremove tree\n(layer 3)"],
                             ["input", "reconstruction", "edited", "difference"], cell=128), DOCS / "edit.png")


def interpolation(frames: int = 8) -> None:
    rows = [gantools.interpolate(name, seed=3, seed2=8, frames=frames) for name in ("scenes64", "mnist32")]
    columns = [f"t = {j / (frames - 1):.2f}" for j in range(frames)]
    save_image(labelled_grid(rows, ["scenes64\nseed 3 -> 8", "mnist32\nseed 3 -> 8"], columns, cell=64,
                             title="slerp between the latents of two seeds"), DOCS / "interpolation.png")


def arithmetic(variations: int = 3) -> None:
    groups = parse_arithmetic(ARITHMETIC)
    r = gantools.latent_arithmetic("scenes64", *groups, seed=3, n=variations + 1)
    rows = [torch.cat([mean[None], images]) for mean, images in zip(r.mean_images, r.group_images)]
    rows.append(r.images)
    labels = [f"{name}: samples\n{', '.join(map(str, g))}" for name, g in zip("ABC", groups)]
    labels.append(f"A - B + C,\nthen {variations} variations")
    columns = ["mean / result"] + [f"{j + 1}" for j in range(max(len(row) for row in rows) - 1)]
    save_image(labelled_grid(rows, labels, columns, cell=64, title=f"scenes64, seed 3: {ARITHMETIC}"),
               DOCS / "arithmetic.png")


FIGURES = {"samples": samples, "dissection": dissection, "inversion": inversion, "edit": edit,
           "interpolation": interpolation, "arithmetic": arithmetic}


if __name__ == "__main__":
    import sys

    for name in sys.argv[1:] or list(FIGURES):  # e.g. python docs/make_figures.py inversion edit
        FIGURES[name]()
    print("wrote", ", ".join(p.name for p in sorted(DOCS.glob("*.png"))))
