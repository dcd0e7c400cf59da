"""Semantic editing of real scenes the model never saw: remove trees, add doors on walls (and in the sky).

Scenes come from fresh seeds of the built-in dataset (the model trained on seed 0), so they are real
images of the domain that the generator has not seen. Uses only the public API:

- removal: for scenes whose ground truth has at least --min-tree of tree pixels,
  `gantools.edit(..., remove="tree")`. Reported: the share of tree pixels removed (the segmenter's
  tree fraction of the input against that of the edited image), and the PSNR against the input of
  the pixels outside the edited region, both for the default blend (input pixels kept outside the
  region, so exact by construction) and for the raw regenerated image (what the generator itself
  changed outside the region: the honest measure of collateral damage).
- insertion: `gantools.edit(..., add="door", at=(x, y))` at the centre of a wall (a place whose
  whole patch is wall in the ground truth) and, on the same scenes, at the centre of the sky. A
  case succeeds when the segmenter finds at least --min-added more door pixels in the edited image
  than in the input. GAN Dissection's finding: units add a concept only where the context allows,
  so the wall rate should be high and the sky rate low. `--add tree --on grass --off sky` runs the
  same test for another concept.

The layer's units are ranked once by a dissection of --dissect-n generated samples, shared by all
edits (as `gantools dissect --out R` then `gantools edit --report R` would); with --rank ace, by the
causal effect of ablating each alone (as `gantools rank --concept tree,door --report R` then
`gantools edit --rank ace` would). With --shipped, edits run as a plain `gantools edit` does: units
from the dissection shipped with the model (pretrained/scenes64/dissection.json), ranked by its
causal ranking.

    python benchmarks/edit.py [--model scenes64] [--n 12] [--layer 3] [--top 20] [--rank ace | --shipped]
                              [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

import gantools

FRESH_SEED = 777  # scenes seed for the test images; the shipped model trained on seed 0


def masked_psnr(a_u8: torch.Tensor, b_u8: torch.Tensor, keep: torch.Tensor) -> float:
    """PSNR (dB, [0, 1] scale) between two uint8 images over the pixels where keep (H x W) is True."""
    if not bool(keep.any()):
        return float("nan")
    diff = (a_u8.float() - b_u8.float())[:, keep] / 255.0
    mse = float(diff.pow(2).mean())
    return math.inf if mse == 0 else 10 * math.log10(1.0 / mse)


def centre_of(region: np.ndarray, margin: int) -> tuple[float, float] | None:
    """(x, y) fractions of a pixel whose (2 margin + 1)^2 neighbourhood lies inside `region`, nearest
    the region's centroid; None when there is none."""
    r = torch.from_numpy(region).float()[None, None]
    k = 2 * margin + 1  # erosion = the minimum over the neighbourhood (outside the image counts as outside)
    core = -torch.nn.functional.max_pool2d(-torch.nn.functional.pad(r, (margin,) * 4), k, stride=1)
    ys, xs = np.nonzero(core[0, 0].numpy() > 0.5)
    if len(ys) == 0:
        return None
    cy, cx = np.nonzero(region)
    i = int(np.argmin((ys - cy.mean()) ** 2 + (xs - cx.mean()) ** 2))
    s = region.shape[0]
    return (xs[i] + 0.5) / s, (ys[i] + 0.5) / s


def find_scenes(size: int, n_tree: int, n_insert: int, min_tree: float, margin: int, on: str = "wall",
                off: str = "sky", limit: int = 5000):
    """Indices of fresh scenes for removal (enough tree) and insertion (an `on` patch and an `off` patch)."""
    scenes = gantools.Scenes(limit, image_size=size, seed=FRESH_SEED)
    concepts = scenes.concepts
    tree, on_id, off_id = (concepts.index(c) for c in ("tree", on, off))
    removal, insertion = [], []
    for i in range(limit):
        if len(removal) >= n_tree and len(insertion) >= n_insert:
            break
        _, labels = scenes.render(i)
        if len(removal) < n_tree and (labels == tree).mean() >= min_tree:
            removal.append(i)
        if len(insertion) < n_insert:
            at_on = centre_of(labels == on_id, margin)
            at_off = centre_of(labels == off_id, margin)
            if at_on is not None and at_off is not None:
                insertion.append((i, at_on, at_off))
    return scenes, removal, insertion


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="scenes64")
    ap.add_argument("--layer", default="3")
    ap.add_argument("--n", type=int, default=12, help="scenes per experiment (removal, insertion)")
    ap.add_argument("--top", type=int, default=20, help="units edited")
    ap.add_argument("--rank", choices=("iou", "ace"), default="iou",
                    help="how the units are chosen: by dissection IoU, or by causal effect (gantools rank)")
    ap.add_argument("--rank-n", type=int, default=100, help="samples per unit for --rank ace")
    ap.add_argument("--shipped", action="store_true",
                    help="edit with the model's shipped dissection and the default ranking, as a plain gantools edit")
    ap.add_argument("--steps", type=int, default=200, help="inversion steps per edit")
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--dissect-n", type=int, default=1000)
    ap.add_argument("--min-tree", type=float, default=0.03, help="ground-truth tree fraction for removal scenes")
    ap.add_argument("--min-added", type=int, default=10, help="pixels an insertion must add to count")
    ap.add_argument("--add", default="door", help="concept to insert")
    ap.add_argument("--on", default="wall", help="where the context allows it")
    ap.add_argument("--off", default="sky", help="where it does not")
    ap.add_argument("--skip-removal", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t0 = time.perf_counter()
    gan = gantools.load_model(args.model)
    size = gan.config.image_size
    seg = gantools.load_segmenter(None, gan=gan)
    if args.shipped:
        from gantools.units import shipped_dissection_path

        if shipped_dissection_path(gan) is None:
            ap.error(f"--shipped: {args.model} ships no dissection.json")
        report, args.rank = None, "auto"
    else:
        report = gantools.dissect(gan, args.layer, segmenter=seg, n=args.dissect_n, seed=1)
    if args.rank == "ace":  # each unit ablated alone, on other latents (seed 2) than the dissection's
        for ranking in gantools.rank_concepts(gan, args.layer, ["tree", args.add], dissection=report, segmenter=seg,
                                              n=args.rank_n, seed=2).values():
            ranking.store(report)
    # `--at` edits a 3 x 3 block of cells (12 x 12 px at layer 3 of a 64 px model): the chosen point's
    # neighbourhood of that size must be all wall (or all sky)
    margin = max(2, size // 16)
    scenes, removal, insertion = find_scenes(size, 0 if args.skip_removal else args.n, args.n, args.min_tree, margin,
                                             args.on, args.off)
    common = dict(segmenter=seg, dissection=report, top=args.top, rank=args.rank, steps=args.steps,
                  restarts=args.restarts)

    rows = []
    for i in removal:
        image, _ = scenes[i]
        r = gantools.edit(gan, image, args.layer, remove="tree", **common)
        outside = ~r.region
        rows.append({"scene": i, "before": r.before["tree"], "after": r.after["tree"],
                     "removed": 1 - r.after["tree"] / r.before["tree"] if r.before["tree"] > 0 else float("nan"),
                     "psnr_outside": masked_psnr(r.edited, r.input, outside),
                     "psnr_outside_raw": masked_psnr(r.raw_edited, r.input, outside),
                     "reconstruction_psnr": r.psnr, "region": float(r.region.float().mean())})
    before = sum(r["before"] for r in rows)
    after = sum(r["after"] for r in rows)
    removal_summary = {} if not rows else {
        "scenes": len(rows),
        "mean_removed": float(np.nanmean([r["removed"] for r in rows])),
        "pooled_removed": 1 - after / before if before > 0 else float("nan"),
        "min_psnr_outside": min(r["psnr_outside"] for r in rows),
        "mean_psnr_outside_raw": float(np.mean([r["psnr_outside_raw"] for r in rows])),
        "mean_reconstruction_psnr": float(np.mean([r["reconstruction_psnr"] for r in rows])),
    }

    adds = []
    for i, at_on, at_off in insertion:
        image, _ = scenes[i]
        for where, at in ((args.on, at_on), (args.off, at_off)):
            r = gantools.edit(gan, image, args.layer, add=args.add, at=at, allow_weak=True, **common)
            added = (r.after[args.add] - r.before[args.add]) * size * size
            adds.append({"scene": i, "where": where, "at": list(at), "added_pixels": added,
                         "success": added >= args.min_added, "reconstruction_psnr": r.psnr})
    insertion_summary = {}
    for where in (args.on, args.off):
        sel = [a for a in adds if a["where"] == where]
        insertion_summary[where] = {"cases": len(sel), "success_rate": float(np.mean([a["success"] for a in sel])),
                                    "mean_added_pixels": float(np.mean([a["added_pixels"] for a in sel]))}

    result = {"model": args.model, "layer": args.layer, "top": args.top, "rank": args.rank, "shipped": args.shipped,
              "steps": args.steps,
              "add": args.add, "restarts": args.restarts, "scenes_seed": FRESH_SEED, "min_added": args.min_added,
              "removal": removal_summary, "insertion": insertion_summary, "seconds": round(time.perf_counter() - t0, 1),
              "per_scene": {"removal": rows, "insertion": adds}}
    rs, ins = removal_summary, insertion_summary
    print(f"edit benchmark: {args.model} {gan.config.image_size}px, layer {args.layer}, top {args.top} units, "
          f"ranked by {args.rank}{' (shipped dissection)' if args.shipped else ''}, fresh scenes (seed {FRESH_SEED})")
    if rs:
        print(f"  remove tree ({rs['scenes']} scenes): {100 * rs['mean_removed']:.0f}% of tree pixels removed on "
              f"average (pooled {100 * rs['pooled_removed']:.0f}%; goal >= 70%)")
        print(f"    outside the edited region: PSNR vs input {rs['min_psnr_outside']:.1f} dB at worst (default "
              f"blend; goal >= 30), raw regenerated image {rs['mean_psnr_outside_raw']:.1f} dB; reconstruction "
              f"{rs['mean_reconstruction_psnr']:.1f} dB")
    on, off = ins[args.on], ins[args.off]
    print(f"  add {args.add} ({on['cases']} scenes, >= {args.min_added} pixels added): on {args.on} "
          f"{100 * on['success_rate']:.0f}% (mean {on['mean_added_pixels']:.0f} px; goal >= 50%), "
          f"on {args.off} {100 * off['success_rate']:.0f}% (mean {off['mean_added_pixels']:.0f} px)")
    print(f"  {result['seconds']:.0f} s")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=float))


if __name__ == "__main__":
    main()
