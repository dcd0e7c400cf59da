"""CPU threads and memory layout: seconds per DCGAN-64 training step for {1, 2} threads x
{contiguous (NCHW), channels_last (NHWC)}, interleaved in one run so that load changes hit all alike.

    python benchmarks/cpu_layout.py [--ngf 32] [--steps 30] [--rounds 3]

Each configuration trains `--steps` steps (after a warm-up run) on 2,000 built-in scenes, `--rounds`
times in turn; the median seconds per step of each is printed, with the ratio to the default.
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import tempfile
from pathlib import Path

import torch

import gantools
from gantools import TrainConfig
from gantools.training import read_stats


def seconds_per_step(workdir: Path, name: str, steps: int, **kw) -> float:
    cfg = TrainConfig(data="scenes", data_n=2000, image_size=64, batch_size=64, steps=steps, sample_every=0,
                      checkpoint_every=0, log_every=steps, out=str(workdir / name), device="cpu", **kw)
    gantools.train(cfg)
    row = [r for r in read_stats(workdir / name) if "img/s" in r][-1]
    return cfg.batch_size / row["img/s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ngf", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    configs = list(itertools.product((1, 2), (False, True)))
    times: dict[tuple[int, bool], list[float]] = {c: [] for c in configs}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        seconds_per_step(work, "warmup", 5, ngf=args.ngf, ndf=args.ngf, threads=2)
        for r, (threads, cl) in itertools.product(range(args.rounds), configs):
            times[(threads, cl)].append(seconds_per_step(work, f"r{r}t{threads}c{int(cl)}", args.steps, ngf=args.ngf,
                                                         ndf=args.ngf, threads=threads, channels_last=cl))
    base = statistics.median(times[(2, False)])
    print(f"DCGAN 64 px, ngf = ndf = {args.ngf}, batch 64, {args.steps} steps x {args.rounds} rounds, torch "
          f"{torch.__version__}")
    for (threads, cl), values in times.items():
        med = statistics.median(values)
        print(f"threads {threads}  {'channels_last' if cl else 'contiguous   '}  {med:.3f} s/step  "
              f"({med / base:.2f}x the 2-thread contiguous time)")


if __name__ == "__main__":
    main()
