"""Training throughput: images/s for one epoch of DCGAN training, beside the machine's matmul GFLOP/s.

The configuration of the classic PyTorch DCGAN example: 64x64, 3 channels, batch 64, nz 100,
ngf = ndf = 64, on ../shared/data/mnist4k (4,000 digits, converted to RGB). It reports

- images/s over one epoch of `gantools.train` (wall clock; data decoded beforehand, not counted),
  and the steady-state figure from stats.jsonl (the first logged window, with warm-up, left out);
- the FLOPs of one training step (forward + backward of G and D as the trainer runs them), counted
  with torch.utils.flop_counter.FlopCounterMode as the difference between a 2-step and a 1-step run;
- the machine's float32 matmul GFLOP/s (a large square matmul) and the fraction of it a training
  step reaches.

Only the public API is used. On a shared machine the figures move with other people's load: the load
average and the CPU time the run got are printed beside them.

    python benchmarks/train_throughput.py [--data ../shared/data/mnist4k] [--epochs 1] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import torch

import gantools
from gantools import TrainConfig

HERE = Path(__file__).resolve().parent
DEFAULT_DATA = HERE.parent.parent / "shared" / "data" / "mnist4k"


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
    """Best-of-`repeats` float32 matmul throughput (GFLOP/s) at n x n, the machine's practical peak."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t)
    return 2 * n**3 / best / 1e9


def step_flops(config: TrainConfig, workdir: Path) -> float:
    """FLOPs of one training step: a 2-step run minus a 1-step run (setup, sampling, export cancel out)."""
    from PIL import Image
    import numpy as np

    data = workdir / "flop_data"
    data.mkdir()
    rng = np.random.default_rng(0)
    for i in range(config.batch_size * 2):
        Image.fromarray(rng.integers(0, 256, (config.image_size,) * 2 + (3,), dtype=np.uint8)).save(data / f"{i}.png")
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for steps in (1, 2):
        cfg = TrainConfig(**{**config.to_dict(), "data": str(data), "steps": steps, "epochs": None,
                             "out": str(workdir / f"flops{steps}"), "sample_every": 0, "checkpoint_every": 0})
        with FlopCounterMode(display=False) as counter:
            gantools.train(cfg)
        counts.append(counter.get_total_flops())
    return float(counts[1] - counts[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="image folder (default: mnist4k)")
    parser.add_argument("--epochs", type=float, default=1.0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if not args.data.is_dir():
        raise SystemExit(f"data folder not found: {args.data}")

    config = TrainConfig(data=str(args.data), image_size=64, nc=3, nz=100, ngf=64, ndf=64, batch_size=64,
                         epochs=args.epochs, device=args.device, sample_every=0, checkpoint_every=0,
                         log_every=10, seed=0)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}, "
          f"load average {load:.2f} (other processes share this machine)")

    gflops = matmul_gflops()
    print(f"float32 matmul 2048x2048: {gflops:.1f} GFLOP/s")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        flops = step_flops(config, tmp)
        print(f"one training step (G+D forward and backward, batch 64): {flops / 1e9:.2f} GFLOP")

        cpu0 = time.process_time()
        result = gantools.train(TrainConfig(**{**config.to_dict(), "out": str(tmp / "run")}))
        cpu = time.process_time() - cpu0
        images = result.step * config.batch_size * config.d_steps
        img_s = images / result.elapsed
        rows = [json.loads(line) for line in (result.run_dir / "stats.jsonl").read_text().splitlines()]
        steady = [r["img/s"] for r in rows[1:]] or [img_s]
        steady_img_s = sorted(steady)[len(steady) // 2]  # median of the windows after warm-up

    step_s = config.batch_size / img_s
    achieved = flops / step_s / 1e9
    out = {
        "data": str(args.data), "device": args.device, "threads": torch.get_num_threads(),
        "load_average": load, "steps": result.step, "images": images, "seconds": round(result.elapsed, 2),
        "cpu_seconds": round(cpu, 2), "img_per_cpu_s": round(images / cpu, 1), "img_per_s": round(img_s, 1), "steady_img_per_s": round(steady_img_s, 1),
        "step_gflop": round(flops / 1e9, 3), "achieved_gflops": round(achieved, 2),
        "matmul_gflops": round(gflops, 1), "fraction_of_matmul": round(achieved / gflops, 3),
        "steady_fraction_of_matmul": round(flops * steady_img_s / config.batch_size / 1e9 / gflops, 3),
    }
    print(f"one epoch: {result.step} steps, {images} images in {result.elapsed:.1f} s -> {img_s:.1f} img/s "
          f"(steady state {steady_img_s:.1f} img/s); {cpu:.0f} CPU-seconds in all (decoding included): "
          f"{images / cpu:.1f} img per CPU-second, the fairer figure on a busy machine")
    print(f"training reaches {achieved:.1f} GFLOP/s = {out['fraction_of_matmul']:.1%} of matmul "
          f"(steady state {out['steady_fraction_of_matmul']:.1%})")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")


if __name__ == "__main__":
    main()
