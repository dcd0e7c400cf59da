"""Is batched inversion at the machine's compute limit? img/s batched vs one at a time, with GFLOP/s.

Issue #18 asks batched inversion to be 3x faster than one image at a time, or, where the batched
run is already at the compute limit, to show it. For the same images, steps and restarts this script
reports, for a batch of all N images and for N runs of one image:

- img/s (wall clock, the best of `--repeats` alternating runs);
- FLOPs per image and optimisation step (torch's per-operator formulas, as the difference between a
  2-step and a 1-step inversion, so set-up and scoring cancel out);
- achieved GFLOP/s, beside the machine's float32 matmul peak (a large square matmul, best of 10).

and, as the evidence of a compute limit, the same batched run with `--saturation` times more images:
if its GFLOP/s stays where the N-image batch already was, batching has nothing more to give, and the
speed-up over one image at a time is bounded by that ceiling over the single run's GFLOP/s.

Every latent is optimised independently, so both runs give the same latents (max |z| difference
printed). Uses only the public API and the shipped models.

    python benchmarks/invert_batching.py [--model mnist32] [--n 16] [--steps 50] [--restarts 4] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.flop_counter import flop_registry

import gantools
from train_throughput import matmul_gflops


class CountFlops(TorchDispatchMode):
    """Sums torch's own per-operator FLOP formulas. (FlopCounterMode's module tracker fails on a
    frozen generator: its backward hooks need every module input to carry a gradient function.)"""

    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = flop_registry.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def flops_per_step(gan: gantools.GAN, images: torch.Tensor, restarts: int, batch_size: int) -> float:
    """FLOPs of one optimisation step over all `images` (a 2-step run minus a 1-step run)."""
    counts = []
    for steps in (1, 2):
        with CountFlops() as counter:
            gantools.invert(gan, images, steps=steps, restarts=restarts, encoder=None, batch_size=batch_size)
        counts.append(counter.total)
    return float(counts[1] - counts[0])


def timed(gan: gantools.GAN, images: torch.Tensor, steps: int, restarts: int, batch_size: int):
    t = time.perf_counter()
    result = gantools.invert(gan, images, steps=steps, restarts=restarts, encoder=None, batch_size=batch_size)
    return time.perf_counter() - t, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="mnist32")
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--saturation", type=int, default=4, help="also time a batch this many times larger (0: skip)")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()

    gan = gantools.load_model(args.model, device="cpu")
    z = gan.generator.sample_z(args.n, 2024)
    images = gantools.generate(gan, z)
    peak = matmul_gflops()
    step_flops = {"batched": flops_per_step(gan, images, args.restarts, args.n),
                  "single": flops_per_step(gan, images, args.restarts, 1)}
    best = {"batched": float("inf"), "single": float("inf")}
    results = {}
    for _ in range(args.repeats):  # alternate, keep the least disturbed run of each
        for mode, batch in (("batched", args.n), ("single", 1)):
            seconds, results[mode] = timed(gan, images, args.steps, args.restarts, batch)
            best[mode] = min(best[mode], seconds)
    out = {"model": args.model, "images": args.n, "steps": args.steps, "restarts": args.restarts,
           "threads": torch.get_num_threads(), "matmul_peak_gflops": peak,
           "max_z_diff": float((results["batched"].z - results["single"].z).abs().max())}
    for mode in ("batched", "single"):
        gflops = step_flops[mode] * args.steps / best[mode] / 1e9
        out[mode] = {"seconds": best[mode], "img_per_s": args.n / best[mode],
                     "flops_per_image_step": step_flops[mode] / args.n, "gflops": gflops,
                     "fraction_of_peak": gflops / peak}
    out["speedup"] = best["single"] / best["batched"]
    if args.saturation > 1:
        big = gantools.generate(gan, gan.generator.sample_z(args.n * args.saturation, 2025))
        seconds, _ = timed(gan, big, args.steps, args.restarts, big.shape[0])
        gflops = step_flops["batched"] * args.saturation * args.steps / seconds / 1e9  # FLOPs grow with the batch
        out["larger_batch"] = {"images": big.shape[0], "img_per_s": big.shape[0] / seconds, "gflops": gflops,
                               "fraction_of_peak": gflops / peak}
    print(f"{args.model}: {args.n} images, {args.steps} steps, {args.restarts} restarts; "
          f"{out['threads']} threads; load {os.getloadavg()[0]:.1f}; matmul peak {peak:.1f} GFLOP/s")
    for mode in ("batched", "single"):
        r = out[mode]
        print(f"  {mode:8s} {r['img_per_s']:7.3f} img/s  {r['flops_per_image_step'] / 1e6:8.2f} MFLOP per image-step  "
              f"{r['gflops']:6.1f} GFLOP/s = {r['fraction_of_peak']:.0%} of peak")
    if "larger_batch" in out:
        r = out["larger_batch"]
        print(f"  batch of {r['images']:<3d} {r['img_per_s']:7.3f} img/s  {'':27s}{r['gflops']:6.1f} GFLOP/s = "
              f"{r['fraction_of_peak']:.0%} of peak  (the ceiling batching reaches)")
    print(f"  batched / one at a time: {out['speedup']:.2f}x  (max |z| difference {out['max_z_diff']:.2e})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
