"""The recipe comparison: training recipes x scenes designs, measured every 500 steps with the same code.

Arms are {dcgan, stable} x {scenes v1, scenes v2}: the same G and D (ngf = ndf = 32), 64 px, batch 64,
50,000 training scenes, seed 0, one CPU thread each, so that wall-time figures compare. Each arm
trains in chunks of `--every` steps (resume is bit-exact, so chunks equal one run) and keeps the
generator of every chunk boundary as `snapshots/step_NNNNNN.safetensors`.

    python benchmarks/recipes.py train stable-v2 --root /work/train/recipes --steps 3000
    git show 41244c2:pretrained/scenes64/segmenter.safetensors > seg_v1.safetensors   # the first scenes64's
    python benchmarks/recipes.py measure --root /work/train/recipes --segmenter-v1 seg_v1.safetensors \\
        --segmenter-v2 scenes64 --out recipes.json

`measure` scores every snapshot of every arm with the same code, through each design's segmenter:
- concept pixel shares of generated vs real scenes: total-variation distance and per concept;
- layer-3 concepts with a unit at IoU >= 0.1 (dissection, default top-1% threshold);
- FID on the segmenter encoder's features;
- D(x) and D(G(z)) (mean over the chunk's logged steps; sigmoid of the logits for the hinge loss too);
- seconds per step (from the run's own timing of its training steps).
It writes recipes.json and recipes.png (each measure against the step, one line per arm).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

ARMS = {
    "dcgan-v1": {"recipe": "dcgan", "data_version": 1},
    "dcgan-v2": {"recipe": "dcgan", "data_version": 2},
    "stable-v2": {"recipe": "stable", "data_version": 2},
    # SAGAN's settings (spectral-norm D, hinge, lr 1e-4 G / 4e-4 D, betas 0, 0.9), stopped at step 1,600
    # with G still drawing grey noise; kept as evidence for the choice of the "stable" recipe.
    "ttur-v1": {"recipe": "stable", "lr_g": 1e-4, "lr_d": 4e-4, "beta1": 0.0, "beta2": 0.9, "data_version": 1},
}
COMMON = dict(data="scenes", image_size=64, ngf=32, ndf=32, batch_size=64, data_n=50000, seed=0,
              sample_every=500, checkpoint_every=100, threads=1, device="cpu")
CONCEPT_UNITS_IOU = 0.1


def snapshot_path(run: Path, step: int) -> Path:
    return run / "snapshots" / f"step_{step:06d}.safetensors"


def train_arm(arm: str, root: Path, steps: int, every: int) -> None:
    """Train (or continue) one arm up to `steps`, keeping a snapshot of G every `every` steps."""
    from gantools.training import CHECKPOINT_FILE, TrainConfig, load_checkpoint, train

    run = root / arm
    for target in range(every, steps + 1, every):
        if snapshot_path(run, target).is_file():
            continue
        if (run / CHECKPOINT_FILE).is_file():
            if int(load_checkpoint(run / CHECKPOINT_FILE)["step"]) > target:
                sys.exit(f"{run} is past step {target} without its snapshot")
            result = train(resume=run, steps=target)
        else:
            result = train(TrainConfig(out=str(run), steps=target, **COMMON, **ARMS[arm]))
        if result.interrupted:
            sys.exit(f"{arm} interrupted at step {result.step}")
        snapshot_path(run, target).parent.mkdir(exist_ok=True)
        shutil.copyfile(result.model_path, snapshot_path(run, target))
        print(f"{arm}: step {target}", flush=True)


def _window(rows: list[dict], lo: int, hi: int, key: str) -> float | None:
    values = [r[key] for r in rows if lo < r["step"] <= hi and key in r]
    return sum(values) / len(values) if values else None


def measure_snapshot(path: Path, segmenter, version: int, n: int, dissect_n: int) -> dict:
    """The measures of one generator snapshot (see the module docstring)."""
    import gantools
    from gantools import metrics

    gan = gantools.load_model(path)
    ev = metrics.evaluate(gan, data="scenes", data_version=version, n=n, metrics="fid,concepts",
                          extractor=metrics.segmenter_extractor(segmenter), segmenter=segmenter)
    c = ev.concepts
    layer = gantools.dissect(gan, layers=[3], n=dissect_n, segmenter=segmenter, seed=1).layers["layer3"]
    best = dict(zip(layer.concepts, layer.iou.max(0).values.tolist()))  # best unit's IoU per concept
    return {
        "fid_segmenter": ev.metrics["fid"],
        "concept_tv": c.tv_distance,
        "concepts_generated": dict(zip(c.concepts, c.generated)),
        "concepts_real": dict(zip(c.concepts, c.real)),
        "layer3_best_iou": best,
        "layer3_concepts_iou_0.1": sum(v >= CONCEPT_UNITS_IOU for v in best.values()),
    }


def measure(root: Path, segmenters: dict[int, str], n: int, dissect_n: int, out: Path) -> dict:
    from gantools.segmenters import resolve_segmenter
    from gantools.training import read_stats

    done = json.loads(out.read_text()) if out.is_file() else {}
    for arm, spec in ARMS.items():
        run = root / arm
        if not run.is_dir():
            continue
        segmenter = resolve_segmenter(segmenters[spec["data_version"]])
        rows = [r for r in read_stats(run) if "Loss_D" in r]
        entries = done.setdefault(arm, {})
        for snap in sorted((run / "snapshots").glob("step_*.safetensors")):
            step = int(snap.stem.split("_")[1])
            if str(step) in entries:
                continue
            m = measure_snapshot(snap, segmenter, spec["data_version"], n, dissect_n)
            lo = step - 500
            m["D(x)"] = _window(rows, lo, step, "D(x)")
            m["D(G(z))"] = _window(rows, lo, step, "D(G(z))_before")
            ips = _window(rows, lo, step, "img/s")
            m["s_per_step"] = 64 / ips if ips else None
            entries[str(step)] = m
            out.write_text(json.dumps(done, indent=1))
            print(f"{arm} step {step}: TV {m['concept_tv']:.3f}  FID {m['fid_segmenter']:.1f}  "
                  f"layer-3 concepts {m['layer3_concepts_iou_0.1']}  D(x) {m['D(x)']:.3f}  "
                  f"s/step {m['s_per_step']:.3f}", flush=True)
    return done


def speed(rounds: int, steps: int) -> dict[str, float]:
    """Median seconds per step of each recipe (one thread), interleaved in one process, so that the
    machine's load hits every recipe alike (the arms' own timings ran beside other work)."""
    import statistics
    import tempfile

    import torch
    from cpu_layout import seconds_per_step  # benchmarks/cpu_layout.py

    torch.set_num_threads(1)
    recipes = {"dcgan": {"recipe": "dcgan"}, "stable": {"recipe": "stable"},
               "stable+r1": {"recipe": "stable", "r1": 1.0}}
    times: dict[str, list[float]] = {name: [] for name in recipes}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(rounds):
            for name, kw in recipes.items():
                times[name].append(seconds_per_step(Path(tmp), f"{name}{r}", steps, ngf=32, ndf=32, threads=1, **kw))
    return {name: statistics.median(v) for name, v in times.items()}


def table(results: dict) -> str:
    """A markdown table: every arm's measures at every snapshot."""
    lines = ["| arm | step | concept TV | FID (segmenter) | layer-3 concepts IoU >= 0.1 | D(x) | D(G(z)) | "
             "door / window / sun / trunk, generated / real |",
             "|---|---|---|---|---|---|---|---|"]
    for arm, entries in results.items():
        for step in sorted(entries, key=int):
            m = entries[step]
            small = " / ".join(f"{m['concepts_generated'][c] / m['concepts_real'][c]:.2f}"
                               for c in ("door", "window", "sun", "trunk"))
            lines.append(f"| {arm} | {int(step):,} | {m['concept_tv']:.3f} | {m['fid_segmenter']:.2f} | "
                         f"{m['layer3_concepts_iou_0.1']} | {m['D(x)']:.3f} | {m['D(G(z))']:.3f} | {small} |")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [("concept_tv", "concept TV distance (lower is better)"), ("fid_segmenter", "FID, segmenter features"),
            ("layer3_concepts_iou_0.1", "layer-3 concepts with a unit at IoU >= 0.1"), ("D(x)", "D(x)"),
            ("D(G(z))", "D(G(z))"), ("s_per_step", "seconds per step (1 thread)")]
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for ax, (key, title) in zip(axes.flat, keys):
        for arm, entries in results.items():
            steps = sorted(int(s) for s in entries)
            ax.plot(steps, [entries[str(s)][key] for s in steps], marker="o", label=arm)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.grid(alpha=0.3)
    axes.flat[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train one arm in chunks")
    t.add_argument("arm", choices=sorted(ARMS))
    t.add_argument("--root", type=Path, required=True)
    t.add_argument("--steps", type=int, default=3000)
    t.add_argument("--every", type=int, default=500)
    m = sub.add_parser("measure", help="score every snapshot of every arm")
    m.add_argument("--root", type=Path, required=True)
    m.add_argument("--segmenter-v1", required=True, help="segmenter of scenes v1 (the first scenes64's, in git)")
    m.add_argument("--segmenter-v2", default="scenes64", help="segmenter of scenes v2 (the shipped scenes64's)")
    m.add_argument("--n", type=int, default=1000, help="generated (and real) images per measure")
    m.add_argument("--dissect-n", type=int, default=500)
    m.add_argument("--out", type=Path, default=Path("recipes.json"))
    tb = sub.add_parser("table", help="print recipes.json as a markdown table")
    tb.add_argument("json", type=Path)
    sp = sub.add_parser("speed", help="seconds per step of each recipe, interleaved in one process")
    sp.add_argument("--rounds", type=int, default=3)
    sp.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    if args.cmd == "train":
        train_arm(args.arm, args.root, args.steps, args.every)
    elif args.cmd == "table":
        print(table(json.loads(args.json.read_text())))
    elif args.cmd == "speed":
        for name, sec in speed(args.rounds, args.steps).items():
            print(f"{name:10s} {sec:.3f} s/step (one thread, ngf = ndf = 32, 64 px, batch 64)")
    else:
        results = measure(args.root, {1: args.segmenter_v1, 2: args.segmenter_v2}, args.n, args.dissect_n, args.out)
        plot(results, args.out.with_suffix(".png"))
        print(f"wrote {args.out} and {args.out.with_suffix('.png')}")


if __name__ == "__main__":
    main()
