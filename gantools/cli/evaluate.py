"""`gantools eval` (gantools.metrics): FID, KID, precision/recall, class coverage and concept frequencies."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defaults import EVALUATE
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, JsonOpt, ModelOpt, QuietOpt, Reporter, SeedOpt, \
    on_interrupt, print_json, stdout_console


def eval_cmd(  # long: one annotated parameter per option
    model: ModelOpt = DEFAULT_MODEL,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Real images: a folder or a built-in dataset "
                                                "(scenes).", show_default="the data the model was trained on, "
                                                "when its file records it")] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=2, help="Generated images (and at most this many real ones).")]
    = EVALUATE.n,
    metrics: Annotated[str, typer.Option("--metrics", help="Comma-separated: fid, kid, pr (precision/recall), classes "
                                         "(class coverage), concepts (concept pixel frequencies); auto = fid,kid,pr "
                                         "plus classes/concepts when the model has a classifier/segmenter beside "
                                         "it; all.")] = EVALUATE.metrics,
    extractor: Annotated[str, typer.Option("--extractor", help="Features for FID/KID/PR: auto, classifier (the "
                                           "model's classifier.safetensors), segmenter (its learned segmenter's "
                                           "encoder), inception (needs --inception-weights), random (seeded untrained "
                                           "CNN), or a classifier/segmenter .safetensors or inception .pth file.")]
    = EVALUATE.extractor,
    inception_weights: Annotated[Optional[Path], typer.Option("--inception-weights", help="Local torchvision "
                                                              "Inception-v3 weights (.pth); never downloaded.",
                                                              show_default=False)] = None,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help="Compare with only the N images of the --data "
                                         "folder that `train --holdout N` leaves out (the last by file name in "
                                         "each class folder).")] = EVALUATE.holdout,
    k: Annotated[int, typer.Option("--k", min=1, help="Nearest neighbours for precision/recall.")] = EVALUATE.k,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", min=1, help="Random subsets for KID.")]
    = EVALUATE.kid_subsets,
    kid_subset_size: Annotated[int, typer.Option("--kid-subset-size", min=2, help="Images per KID subset.")]
    = EVALUATE.kid_subset_size,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
    = EVALUATE.batch_size,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute the reference statistics (cached in "
                                           "$GANTOOLS_CACHE/stats, default ~/.cache/gantools/stats).")] = False,
    seed: SeedOpt = EVALUATE.seed,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Sample quality: FID, KID, precision/recall, class coverage and concept frequencies, offline."""
    from ..metrics import evaluate

    started = time.time()
    with Reporter(quiet) as rep, on_interrupt(lambda: _interrupted(started)):
        result = evaluate(model, data=data, n=n, metrics=metrics, extractor=extractor,
                          inception_weights=inception_weights, seed=seed, holdout=holdout, k=k,
                          kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, batch_size=batch_size,
                          use_cache=not no_cache, device=device, progress=rep)
    if json_out:
        print_json(result.to_dict())
        return
    _show_scores(result)
    _show_coverage(result.class_coverage)
    _show_concepts(result.concepts)


def _interrupted(started: float) -> str:
    from ..metrics import cache_dir

    cache = cache_dir()
    # reference statistics are cached (atomically) as soon as they are complete
    kept = [f for f in cache.glob("*.pt") if f.stat().st_mtime >= started - 1] if cache.is_dir() else []
    if kept:
        return (f"interrupted: kept the reference statistics computed so far ({len(kept)} file(s) in {cache}/); run "
                "the command again: it reuses them and measures the generated samples")
    return "interrupted: nothing was written; run the command again (a smaller --n finishes sooner)"


def _show_scores(result: Any) -> None:
    from rich.table import Table

    console = stdout_console()
    console.print(f"{result.model} vs {result.data}: {result.n_generated} generated, {result.n_real} real images",
                  highlight=False)
    if not result.metrics:
        return
    floor = getattr(result, "floor", None) or {}
    table = Table(show_header=True)
    table.add_column("metric")
    table.add_column("model", justify="right")
    if floor.get("n"):  # what a perfect model would score: real images against other real images
        table.add_column(f"real vs real ({floor['n']} + {floor['n']})", justify="right")
    m = result.metrics

    def row(label: str, key: str, fmt: Any) -> None:
        cells = [label, fmt(m, key)]
        if floor.get("n"):
            cells.append(fmt(floor, key) if key in floor else "-")
        table.add_row(*cells)

    if "fid" in m:
        row("FID", "fid", lambda d, k: f"{d[k]:.4g}")
    if "kid" in m:
        row("KID (x1000)", "kid", lambda d, k: f"{1000 * d['kid']:.4g} ± {1000 * d['kid_std']:.2g}")
    if "precision" in m:
        row(f"precision (k={result.settings['k']})", "precision", lambda d, k: f"{d[k]:.3f}")
        row(f"recall (k={result.settings['k']})", "recall", lambda d, k: f"{d[k]:.3f}")
    console.print(table)
    names = {"fid": "FID", "kid": "KID", "precision": "precision", "recall": "recall"}
    for key, text in result.explain().items():
        console.print(f"{names.get(key, key)}: {text}", highlight=False, markup=False, soft_wrap=True)
    ex = result.extractor
    console.print(f"extractor: {ex['description']}  (fingerprint {ex['fingerprint']}, {ex['dim']} features) "
                  "- compare scores only between results with the same extractor fingerprint", highlight=False,
                  markup=False)


def _show_coverage(cov: Any) -> None:
    if cov is None:
        return
    from rich.table import Table

    table = Table(title=f"class coverage: {100 * cov.confident_fraction:.1f}% of samples classified with "
                        f"confidence >= {cov.threshold:g}")
    table.add_column("class")
    table.add_column("share of samples", justify="right")
    table.add_column("confident", justify="right")
    for c, f, s in zip(cov.classes, cov.fractions, cov.confident_per_class):
        table.add_row(c, f"{100 * f:.1f}%", f"{100 * s:.1f}%")
    stdout_console().print(table)


def _show_concepts(con: Any) -> None:
    if con is None:
        return
    from rich.table import Table

    table = Table(title=f"concept pixel frequencies ({con.segmenter}); total variation distance "
                        f"{con.tv_distance:.3f}")
    table.add_column("concept")
    table.add_column("real", justify="right")
    table.add_column("generated", justify="right")
    table.add_column("relative difference", justify="right")
    for c, r, g in zip(con.concepts, con.real, con.generated):
        rel = f"{100 * (g - r) / r:+.0f}%" if r > 0.01 else ""
        table.add_row(c, f"{100 * r:.2f}%", f"{100 * g:.2f}%", rel)
    stdout_console().print(table)
