"""How much does dissection cost on top of just generating and segmenting? And does memory grow with N?

Uses only the public API. For N samples on the CPU it times
  (a) the generator and the segmenter alone over the same N samples (batches of 64, inference mode), and
  (b) a full one-layer `gantools.dissect` (thresholds, IoU, statistics, top-k images),
alternating (a) and (b) `--repeats` times and reporting the fastest of each (the CPU may be shared
with other work: the minimum is the least disturbed run). Goal: (b) / (a) <= 1.3.

Then it runs the same dissection for N=500 and N=5000 in fresh processes and reports their peak
resident memory during the dissection (Linux VmHWM, reset just before; ru_maxrss elsewhere).
Goal: within 10% of each other.

Model: pretrained `scenes64` if installed, else a freshly initialised 64x64 generator (ngf=48) saved
to a temporary folder. Segmenter: the model's own learned segmenter if it has one, else the colour
segmenter.

    python benchmarks/dissect_overhead.py [--n 2000] [--layer 3] [--repeats 2] [--memory-n 500 5000] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

import gantools
from gantools import Discriminator, Generator, ModelConfig, dissect, load_model, load_segmenter, save_model


def find_model(workdir: Path) -> tuple[str, str]:
    """(model spec, description): scenes64 if installed, else a fresh ngf=48 64x64 model saved in workdir."""
    try:
        load_model("scenes64")
        return "scenes64", "pretrained scenes64"
    except gantools.GantoolsError:
        pass
    path = workdir / "fresh64" / "model.safetensors"
    if not path.is_file():
        torch.manual_seed(0)
        config = ModelConfig(image_size=64, nc=3, nz=100, ngf=48, ndf=48)
        save_model(path, Generator(config).eval(), Discriminator(config).eval())
    return str(path), "fresh 64x64 generator (ngf=48, untrained; scenes64 is not installed)"


def time_baseline(gan, segmenter, n: int, seed: int, batch_size: int) -> float:
    """Seconds to generate and segment n samples, nothing else."""
    z = gan.generator.sample_z(n, seed, device="cpu")
    start = time.perf_counter()
    with torch.inference_mode():
        for a in range(0, n, batch_size):
            segmenter(gan.generator(z[a:a + batch_size]))
    return time.perf_counter() - start


def time_dissect(gan, segmenter, n: int, seed: int, batch_size: int, layer: str,
                 threshold: str = "quantile") -> tuple[float, object]:
    start = time.perf_counter()
    result = dissect(gan, layers=(layer,), segmenter=segmenter, n=n, seed=seed, batch_size=batch_size, device="cpu",
                     threshold=threshold)
    return time.perf_counter() - start, result


def _status_mb(key: str) -> float | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) to the current RSS (Linux); False where unsupported."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def child_memory(model: str, n: int, layer: str, batch_size: int) -> None:
    """Run in a fresh process: peak RSS of a dissection of n samples (printed as JSON).

    The process first loads everything and runs one batch of G + segmenter, then (on Linux) resets
    the peak mark, so the figure is the peak *during* the dissection, not the segmenter's warm-up.
    """
    gan = load_model(model)
    segmenter = load_segmenter(None, gan)
    with torch.inference_mode():  # warm up kernels and allocator with one batch of G + segmenter
        segmenter(gan.generator(gan.generator.sample_z(batch_size, 0, device="cpu")))
    reset = _reset_peak()
    before = _status_mb("VmRSS")
    start = time.perf_counter()
    dissect(gan, layers=(layer,), segmenter=segmenter, n=n, seed=0, batch_size=batch_size, device="cpu")
    seconds = time.perf_counter() - start
    peak = _status_mb("VmHWM") if reset else None
    if peak is None:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"n": n, "peak_rss_mb": peak, "rss_before_mb": before,
                      "peak_since": "start of dissect" if reset else "process start", "seconds": seconds}))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=2000, help="samples for the timing comparison")
    ap.add_argument("--layer", default="3", help="layer to dissect")
    ap.add_argument("--repeats", type=int, default=2, help="alternating runs of each")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--threshold", default="quantile", choices=["quantile", "iqr"],
                    help="dissect's threshold rule (goal: ratio <= 1.3 for quantile, <= 2.5 for iqr)")
    ap.add_argument("--memory-n", type=int, nargs="*", default=[500, 5000], help="N values for the memory runs "
                    "(none to skip)")
    ap.add_argument("--model", default=None, help="model spec (default: scenes64, else a fresh 64x64 model)")
    ap.add_argument("--segmenter", default=None, help="color or a segmenter file (default: the model's own)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--child-memory", type=int, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()

    with tempfile.TemporaryDirectory(prefix="gantools-bench-") as tmp:
        if args.child_memory is not None:
            child_memory(args.model, args.child_memory, args.layer, args.batch_size)
            return
        model, described = (args.model, args.model) if args.model else find_model(Path(tmp))
        gan = load_model(model)
        segmenter = load_segmenter(args.segmenter, gan)
        layer = f"layer{args.layer}" if str(args.layer).isdigit() else args.layer
        log = sys.stderr
        print(f"model: {described}; segmenter: {getattr(segmenter, 'description', type(segmenter).__name__)}; "
              f"{layer}; "
              f"torch threads {torch.get_num_threads()}; CPUs {os.cpu_count()}; "
              f"load average {os.getloadavg()[0]:.1f}", file=log)
        time_baseline(gan, segmenter, args.batch_size, 1, args.batch_size)  # warm-up
        base, full, result = [], [], None
        for r in range(args.repeats):
            base.append(time_baseline(gan, segmenter, args.n, 0, args.batch_size))
            seconds, result = time_dissect(gan, segmenter, args.n, 0, args.batch_size, layer, args.threshold)
            full.append(seconds)
            print(f"run {r + 1}: G+segmenter {base[-1]:.1f} s, dissect {full[-1]:.1f} s "
                  f"(ratio {full[-1] / base[-1]:.3f})", file=log)
        t0 = time.perf_counter()
        result.save(Path(tmp) / "report")
        save_seconds = time.perf_counter() - t0
        figures = {
            "model": described, "layer": layer, "n": args.n, "threshold": args.threshold,
            "units": result.layers[layer].units,
            "baseline_s": min(base), "dissect_s": min(full), "ratio": min(full) / min(base),
            "ratio_per_run": [f / b for f, b in zip(full, base)],
            # each run's dissection over the baseline timed just before it: slow drifts of a shared
            # machine cancel within a pair, so the median of the pairs is the steadiest figure
            "ratio_median_of_pairs": statistics.median(f / b for f, b in zip(full, base)),
            "save_s": save_seconds,
            "interpretable": len(result.layers[layer].interpretable), "load_average": os.getloadavg()[0],
        }
        memory = []
        for n in args.memory_n:
            out = subprocess.run([sys.executable, __file__, "--child-memory", str(n), "--model", model,
                                  "--layer", str(args.layer), "--batch-size", str(args.batch_size)],
                                 check=True, capture_output=True, text=True)
            memory.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"N={n}: peak RSS {memory[-1]['peak_rss_mb']:.0f} MB "
                  f"(before dissect {memory[-1]['rss_before_mb']:.0f} MB, {memory[-1]['seconds']:.0f} s)", file=log)
        figures["memory"] = memory
        if len(memory) >= 2:
            peaks = [m["peak_rss_mb"] for m in memory]
            figures["memory_spread"] = max(peaks) / min(peaks) - 1
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(f"\ndissection overhead, N={args.n}, {layer}, threshold {args.threshold}, CPU ({described}):")
    print(f"  G + segmenter only  {figures['baseline_s']:7.1f} s")
    print(f"  dissect()           {figures['dissect_s']:7.1f} s   ratio {figures['ratio']:.3f}  (goal <= {1.3 if args.threshold == 'quantile' else 2.5}; "
          f"per run: {', '.join(f'{r:.3f}' for r in figures['ratio_per_run'])}; "
          f"median of the pairs {figures['ratio_median_of_pairs']:.3f})")
    print(f"  save() with HTML    {figures['save_s']:7.1f} s")
    for m in memory:
        print(f"  peak RSS at N={m['n']:<5}  {m['peak_rss_mb']:7.0f} MB")
    if "memory_spread" in figures:
        print(f"  peak memory spread  {100 * figures['memory_spread']:6.1f} %  (goal <= 10%)")
    print(f"  (load average {figures['load_average']:.1f} on {os.cpu_count()} CPUs: the machine may be shared)")


if __name__ == "__main__":
    main()
