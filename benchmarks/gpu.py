"""One short pass over every benchmark on a CUDA machine, beside the same on the CPU: one table.

Rows (each a throughput; higher is better):
- train img/s, DCGAN-64 on built-in scenes (batch 64, ngf = ndf = 64), in float32, with AMP, and with
  AMP + channels_last; from the steady-state `img/s` of stats.jsonl (warm-up excluded);
- dissect samples/s: one layer of the shipped scenes64 with its own segmenter;
- invert img/s: a batch of generated images inverted together (reconstruction, fixed steps);
- distributed train img/s: `torchrun --nproc-per-node K` on K GPUs, when there are two or more.
Graph capture (CUDA graphs / torch.compile) is not used by the training loop; the table says so
rather than timing something the tool does not do.

Everything runs through the public API in temporary folders. The CPU column uses smaller work (the
same per-item cost is what is compared). The whole script is sized to finish in under 5 minutes on
an H200; `--quick` shrinks everything for a smoke test on any machine.

    python benchmarks/gpu.py [--quick] [--json out.json] [--no-cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import gantools
from gantools import TrainConfig


def steady_img_per_s(run_dir: Path) -> float:
    """Median img/s of the logged windows after the first (which holds warm-up and compilation)."""
    from gantools.training import read_stats

    rates = sorted([r["img/s"] for r in read_stats(run_dir) if "img/s" in r][1:]) or [float("nan")]
    return rates[len(rates) // 2]


def bench_train(device: str, steps: int, amp: bool, channels_last: bool, work: Path, tag: str) -> float:
    config = TrainConfig(data="scenes", data_version=2, image_size=64, ngf=64, ndf=64, batch_size=64,
                         steps=steps, data_n=2048, log_every=max(steps // 8, 1), sample_every=0,
                         checkpoint_every=steps, eval_every=0, device=device, amp=amp,
                         channels_last=channels_last, out=str(work / f"train-{tag}"))
    gantools.train(config)
    return steady_img_per_s(work / f"train-{tag}")


def bench_dissect(device: str, n: int) -> float:
    gan = gantools.load_model("scenes64", device=device)
    segmenter = gantools.load_segmenter("scenes64", device=device)
    gantools.dissect(gan, layers=[3], n=min(n, 64), segmenter=segmenter, device=device)  # warm-up
    sync(device)
    t = time.perf_counter()
    gantools.dissect(gan, layers=[3], n=n, segmenter=segmenter, device=device)
    sync(device)
    return n / (time.perf_counter() - t)


def bench_invert(device: str, n: int, steps: int) -> float:
    gan = gantools.load_model("scenes64", device=device)
    z = gan.generator.sample_z(n, 7, device=device)
    images = gantools.generate(gan, z, device=device)
    gantools.invert(gan, images[:2], steps=2, restarts=1, encoder=None, device=device)  # warm-up
    sync(device)
    t = time.perf_counter()
    gantools.invert(gan, images, steps=steps, restarts=1, encoder=None, batch_size=n, device=device)
    sync(device)
    return n / (time.perf_counter() - t)


def bench_distributed(gpus: int, steps: int, work: Path) -> float | None:
    if gpus < 2 or shutil.which("torchrun") is None:
        return None
    out = work / "train-ddp"
    cmd = ["torchrun", "--standalone", f"--nproc-per-node={gpus}", "-m", "gantools", "train", "--data", "scenes",
           "--image-size", "64", "--ngf", "64", "--ndf", "64", "-b", "64", "--steps", str(steps), "--data-n", "2048",
           "--log-every", str(max(steps // 8, 1)), "--device", "cuda", "--out", str(out), "--quiet"]
    subprocess.run(cmd, check=True, timeout=240)
    return steady_img_per_s(out)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def measure(device: str, quick: bool, work: Path) -> dict[str, float | None]:
    gpu = device.startswith("cuda")
    scale = 1 if gpu else 0
    train_steps = 8 if quick else (400 if gpu else 24)
    rows: dict[str, float | None] = {}
    rows["train img/s, float32"] = bench_train(device, train_steps, False, False, work, f"{device}-fp32")
    if gpu:
        rows["train img/s, AMP"] = bench_train(device, train_steps, True, False, work, f"{device}-amp")
        rows["train img/s, AMP + channels_last"] = bench_train(device, train_steps, True, True, work, f"{device}-amp-cl")
    else:  # AMP is a CUDA feature here; channels_last is the CPU default
        rows["train img/s, channels_last"] = bench_train(device, train_steps, False, True, work, f"{device}-cl")
    rows["train img/s, graph capture"] = None
    rows["dissect samples/s"] = bench_dissect(device, 64 if quick else (4000 if scale else 256))
    rows["invert img/s"] = bench_invert(device, 4 if quick else (64 if scale else 8), 10 if quick else 100)
    if gpu:
        rows[f"distributed train img/s ({torch.cuda.device_count()} GPUs)"] = bench_distributed(
            torch.cuda.device_count(), train_steps, work)
    return rows


def table(columns: dict[str, dict[str, float | None]]) -> str:
    names = list(dict.fromkeys(k for col in columns.values() for k in col))
    head = f"{'measure':44s}" + "".join(f"{c:>14s}" for c in columns)
    lines = [head, "-" * len(head)]
    for name in names:
        cells = []
        for col in columns.values():
            v = col.get(name)
            cells.append(f"{'n/a':>14s}" if v is None else f"{v:14.1f}")
        lines.append(f"{name:44s}" + "".join(cells))
    if len(columns) == 2:
        (a, col_a), (b, col_b) = columns.items()
        lines.append("")
        for name in names:
            if col_a.get(name) and col_b.get(name):
                lines.append(f"{name}: {a} / {b} = {col_a[name] / col_b[name]:.1f}x")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test on any machine")
    parser.add_argument("--no-cpu", action="store_true", help="skip the CPU column")
    parser.add_argument("--json", type=Path, help="also write the table as JSON here")
    args = parser.parse_args()
    columns: dict[str, dict[str, float | None]] = {}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gantools-gpu-") as tmp:
        if torch.cuda.is_available():
            columns["cuda"] = measure("cuda", args.quick, Path(tmp))
        else:
            print("no CUDA device here: only the CPU column is measured", file=sys.stderr)
        if not args.no_cpu:
            torch.set_num_threads(os.cpu_count() or 1)
            columns["cpu"] = measure("cpu", args.quick, Path(tmp))
    print(table(columns))
    print(f"\n{time.perf_counter() - started:.0f} s in all; torch {torch.__version__}; "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU'}; {os.cpu_count()} CPUs")
    if args.json:
        args.json.write_text(json.dumps({"columns": columns, "torch": torch.__version__}, indent=2) + "\n")


if __name__ == "__main__":
    main()
