"""torchrun on one CPU machine: 2 processes x 1 thread against 1 process x 2 threads.

Three throughputs (higher is better), each measured both ways on the same work:
- train img/s: a 32 px DCGAN (ngf = ndf = 32) on a folder of 512 generated images, global batch 64
  (one process: batch 64; two: 32 each), the median `img/s` of stats.jsonl after the first window;
- dissect samples/s: layer 2 of a random (BatchNorm-calibrated) 32 px generator, colour segmenter;
- invert img/s: 16 generated images, 4 per batch, 2 restarts, 50 steps.
The two-process runs go through `python -m torch.distributed.run --standalone --nproc-per-node 2`,
as users run them, and time the library call itself (after a barrier), not the start-up. The ratio
is two processes over one: above 1, sharding beats torch's own threading on this machine.

    python benchmarks/distributed.py [--quick] [--json out.json]

`--quick` shrinks everything to a few seconds of work (a smoke test; its numbers mean nothing).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

WORKLOADS = ("train", "dissect", "invert")
SIZES = {"full": dict(train_steps=60, dissect_n=2048, invert_n=16, invert_steps=50),
         "quick": dict(train_steps=4, dissect_n=64, invert_n=4, invert_steps=3)}
MARK = "BENCH-RESULT "


# ---------------------------------------------------------------------------------------------
# Inputs, made once by the parent


def make_inputs(work: Path) -> None:
    """A random 32 px model whose images vary with z, and a folder of 512 training images."""
    import numpy as np
    from PIL import Image

    from gantools.models import Discriminator, Generator, ModelConfig, save_model

    config = ModelConfig(image_size=32, nc=3, nz=64, ngf=32, ndf=32)
    torch.manual_seed(0)
    g, d = Generator(config), Discriminator(config)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    g.train()
    with torch.no_grad():
        g(torch.randn(256, config.nz))
    save_model(work / "model.safetensors", g.eval(), d.eval())
    folder = work / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(512):
        arr = np.full((32, 32, 3), rng.integers(0, 80), np.uint8)
        y, x = rng.integers(0, 20, 2)
        arr[y:y + 12, x:x + 12] = rng.integers(100, 255, 3)
        Image.fromarray(arr).save(folder / f"{i:03d}.png")


# ---------------------------------------------------------------------------------------------
# One measurement, in a worker process (under torchrun, every rank runs it)


def timed(fn) -> float:
    """Seconds of fn() on every process, from a common start to the last one's end."""
    from gantools import distributed

    distributed.barrier()
    t = time.perf_counter()
    fn()
    distributed.barrier()
    return time.perf_counter() - t


def run_train(work: Path, size: dict, processes: int, tag: str) -> float:
    from gantools.training import TrainConfig, train
    from gpu import steady_img_per_s

    steps = size["train_steps"]
    out = work / f"train-{tag}"
    train(TrainConfig(data=str(work / "data"), image_size=32, nz=64, ngf=32, ndf=32, batch_size=64 // processes,
                      steps=steps, log_every=max(1, steps // 6), sample_every=0, checkpoint_every=0, device="cpu",
                      out=str(out)))
    return steady_img_per_s(out)


def run_dissect(work: Path, size: dict) -> float:
    from gantools.dissection import dissect
    from gantools.models import load_model

    gan = load_model(work / "model.safetensors", "cpu")
    n = size["dissect_n"]
    return n / timed(lambda: dissect(gan, layers=[2], segmenter="color", n=n, batch_size=64, device="cpu"))


def run_invert(work: Path, size: dict) -> float:
    from gantools.models import load_model
    from gantools.restoration.inversion import invert

    gan = load_model(work / "model.safetensors", "cpu")
    n = size["invert_n"]
    with torch.no_grad():
        images = gan.generator(gan.generator.sample_z(n, 7, device="cpu"))
    return n / timed(lambda: invert(gan, images, steps=size["invert_steps"], restarts=2, batch_size=4,
                                    encoder=None, device="cpu"))


def worker(workload: str, work: Path, size_name: str, threads: int) -> None:
    from gantools import distributed

    torch.set_num_threads(threads)
    world = distributed.start(torch.device("cpu"))
    size, tag = SIZES[size_name], f"{world.size}x{threads}"
    if workload == "train":
        rate = run_train(work, size, world.size, tag)
    elif workload == "dissect":
        rate = run_dissect(work, size)
    else:
        rate = run_invert(work, size)
    if world.is_main:
        print(MARK + json.dumps({"workload": workload, "layout": tag, "rate": rate}), flush=True)
    distributed.stop()


# ---------------------------------------------------------------------------------------------
# The parent: each workload both ways


def launch(workload: str, work: Path, size_name: str, processes: int, threads: int) -> float:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK"):
        env.pop(key, None)
    args = [__file__, "--worker", workload, "--work", str(work), "--size", size_name, "--threads", str(threads)]
    if processes > 1:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *args]
    else:
        cmd = [sys.executable, *args]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=3600)
    lines = [line for line in done.stdout.splitlines() if line.startswith(MARK)]
    if done.returncode != 0 or not lines:
        raise SystemExit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return float(json.loads(lines[-1][len(MARK):])["rate"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="a few seconds of work: a smoke test")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    parser.add_argument("--worker", choices=WORKLOADS, help=argparse.SUPPRESS)
    parser.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--size", default="full", choices=list(SIZES), help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.worker, args.work, args.size, args.threads)
        return
    size_name = "quick" if args.quick else "full"
    rows = {}
    units = {"train": "img/s", "dissect": "samples/s", "invert": "img/s"}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gantools-distributed-") as tmp:
        work = Path(tmp)
        make_inputs(work)
        for workload in WORKLOADS:
            one = launch(workload, work, size_name, processes=1, threads=2)
            two = launch(workload, work, size_name, processes=2, threads=1)
            rows[workload] = {"1 process x 2 threads": one, "2 processes x 1 thread": two, "ratio": two / one}
    print(f"{'measure':22s}{'1 proc x 2 thr':>16s}{'2 procs x 1 thr':>17s}{'ratio 2p/1p':>13s}")
    for workload, row in rows.items():
        print(f"{workload + ' ' + units[workload]:22s}{row['1 process x 2 threads']:16.1f}"
              f"{row['2 processes x 1 thread']:17.1f}{row['ratio']:13.2f}")
    print(f"({'quick smoke test: the numbers mean nothing; ' if args.quick else ''}"
          f"{os.cpu_count()} CPU cores, torch {torch.__version__}, {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps({"quick": args.quick, "cpus": os.cpu_count(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
