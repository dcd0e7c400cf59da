"""Scenes design targets, per version: every concept's presence and pixel share, and the smallest
door, window, trunk and sun drawn (from the layouts), measured on N scenes.

    python benchmarks/scenes_design.py --n 5000 --size 64

Targets of the version-2 design (issue: scenes sized for 64 px): every concept in >= 25% of scenes;
door, window, sun and trunk each >= 1.0% of all pixels; a door at least 4x6 px, a window 4x4, a
trunk 3 px wide and the sun 8 px across wherever they appear.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from gantools.scenes import CONCEPTS, VERSIONS, Scenes, concept_frequencies

# (concept, minimum width, minimum height) in pixels at 64 px
MIN_SIZES = {"door": (4, 6), "window": (4, 4), "trunk": (3, 0), "sun": (8, 8)}


def smallest_objects(scenes: Scenes, n: int) -> dict[str, dict[str, float]]:
    """Per concept: smallest drawn width and height, and the share of objects under the minimum.

    A sun's height is its full disc (objects clipped by the image edge are counted as drawn)."""
    sizes: dict[str, list[tuple[int, int]]] = {c: [] for c in MIN_SIZES}
    for i in range(n):
        for obj in scenes.layout(i).objects:
            if obj.concept in sizes:
                x0, y0, x1, y1 = obj.box
                sizes[obj.concept].append((x1 - x0, y1 - y0))
    out = {}
    for concept, wh in sizes.items():
        a = np.array(wh) if wh else np.zeros((0, 2))
        mw, mh = MIN_SIZES[concept]
        under = ((a[:, 0] < mw) | (a[:, 1] < mh)).mean() if len(a) else 0.0
        out[concept] = {"objects": len(a), "min_width": int(a[:, 0].min()) if len(a) else None,
                        "min_height": int(a[:, 1].min()) if len(a) else None, "share_under_minimum": float(under)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", help="write the measurements here")
    args = ap.parse_args()
    results = {}
    for version in VERSIONS:
        scenes = Scenes(n=args.n, image_size=args.size, seed=args.seed, version=version)
        t0 = time.perf_counter()
        freq = concept_frequencies(scenes)
        seconds = time.perf_counter() - t0
        results[version] = {"frequencies": freq, "objects": smallest_objects(scenes, args.n),
                            "scenes_per_second": args.n / seconds}
    print(f"{args.n} scenes at {args.size} px, seed {args.seed}: presence (share of scenes) / pixel share")
    print(f"{'concept':10s}" + "".join(f"{'v' + str(v) + ' presence':>14s}{'v' + str(v) + ' pixels':>12s}"
                                       for v in VERSIONS))
    for c in CONCEPTS:
        print(f"{c:10s}" + "".join(f"{results[v]['frequencies'][c]['image_frequency']:14.1%}"
                                   f"{results[v]['frequencies'][c]['pixel_frequency']:12.2%}" for v in VERSIONS))
    print("smallest drawn object (w x h px) and share of objects under the minimum size:")
    for c, (mw, mh) in MIN_SIZES.items():
        print(f"{c:10s} minimum {mw}x{mh}: " + "   ".join(
            f"v{v} {results[v]['objects'][c]['min_width']}x{results[v]['objects'][c]['min_height']} "
            f"({results[v]['objects'][c]['share_under_minimum']:.1%} under, {results[v]['objects'][c]['objects']} objects)"
            for v in VERSIONS))
    print("render speed (scenes/s, one core): " + ", ".join(
        f"v{v} {results[v]['scenes_per_second']:.0f}" for v in VERSIONS))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
