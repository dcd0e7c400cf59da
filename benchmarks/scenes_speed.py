"""How fast the built-in scenes render: images/s on one CPU core (goal: at least 1,000/s at 64x64).

Renders `--n` scenes per size through `Scenes.__getitem__` (what training streams: uint8 image
tensor and int64 label tensor) with torch and numpy on one thread, and reports wall-clock and
CPU-time throughput (CPU time is the fairer figure on a busy shared machine). With --frequencies it
also prints per-concept image and pixel frequencies over that many scenes.

    python benchmarks/scenes_speed.py [--n 3000] [--sizes 32 64 128] [--frequencies 2000]
"""

from __future__ import annotations

import argparse
import os

# one core for numpy's BLAS as well (set before numpy loads)
for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(var, "1")

import time  # noqa: E402

import torch  # noqa: E402

from gantools.scenes import Scenes, concept_frequencies  # noqa: E402

GOAL = 1000.0


def measure(size: int, n: int, seed: int, nc: int) -> tuple[float, float]:
    ds = Scenes(n=n, image_size=size, seed=seed, nc=nc)
    ds[0]  # texture bank for this size
    wall0, cpu0 = time.perf_counter(), time.process_time()
    for i in range(n):
        ds[i]
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    return n / wall, n / cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000, help="scenes rendered per size")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 64, 128])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--frequencies", type=int, default=0, help="also report concept frequencies over N scenes")
    args = parser.parse_args()
    torch.set_num_threads(1)

    print(f"scenes rendering speed, one thread, {args.n} scenes per row")
    print(f"{'size':>5} {'nc':>3} {'img/s (wall)':>13} {'img/s (cpu)':>12}")
    results = {}
    for size in args.sizes:
        for nc in (3, 1):
            wall, cpu = measure(size, args.n, args.seed, nc)
            results[(size, nc)] = (wall, cpu)
            print(f"{size:>5} {nc:>3} {wall:>13.0f} {cpu:>12.0f}")
    if (64, 3) in results:
        wall, cpu = results[(64, 3)]
        verdict = "met" if cpu >= GOAL else "NOT met"
        print(f"goal >= {GOAL:.0f} img/s at 64x64 RGB on one core: {verdict} ({cpu:.0f} img/s CPU time, "
              f"{wall:.0f} img/s wall clock)")

    if args.frequencies:
        freq = concept_frequencies(Scenes(n=args.frequencies, image_size=64, seed=args.seed))
        print(f"\nconcept frequencies over {args.frequencies} scenes (64x64, seed {args.seed})")
        print(f"{'concept':<10} {'images':>8} {'pixels':>8}")
        for name, f in freq.items():
            print(f"{name:<10} {100 * f['image_frequency']:>7.1f}% {100 * f['pixel_frequency']:>7.2f}%")


if __name__ == "__main__":
    main()
