"""`gantools dissect` (gantools.dissection): which units match which concepts; writes the report."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defaults import DISSECT, IQR_MIN_CONCEPT_SHARE
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, JsonOpt, ModelOpt, QuietOpt, Reporter, SeedOpt, \
    check_out_dir, InterruptNote, on_interrupt, on_rank0, print_json, stdout_console


class ThresholdMethod(str, Enum):
    quantile = "quantile"
    iqr = "iqr"


def model_label(spec: str) -> str:
    """A short name for a model spec, for default output folders: scenes64, a run's folder name, a file stem."""
    p = Path(spec)
    if p.suffix == ".safetensors":
        return p.parent.name if p.name == "model.safetensors" and p.parent.name else p.stem
    return p.name or str(spec)


def dissect_cmd(  # long: one annotated parameter per option
    layer: Annotated[Optional[list[str]], typer.Option(
        "--layer", "-l", help="Layer: a number (3 = layer3) or a dotted module name. Repeat for several "
        "layers (dissected in one pass).", show_default="3, or 2 on a 16px model")] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Generated samples.")] = DISSECT.n,
    # None tells "given" from "default": --quantile is refused with --threshold iqr
    quantile: Annotated[Optional[float], typer.Option("--quantile", min=0.0, max=1.0, help="Threshold each unit at "
                                                      "the level exceeded by this top fraction (0 < q < 1) of its "
                                                      "upsampled activations.", show_default=str(DISSECT.quantile))]
    = None,
    threshold: Annotated[ThresholdMethod, typer.Option(
        "--threshold", help="quantile (--quantile), or iqr: the level and concept maximising the information "
        f"quality ratio over positively associated pairs (levels above 0, concepts over "
        f"{100 * IQR_MIN_CONCEPT_SHARE:g}% of pixels), chosen "
        "on n other samples; the unit is labelled with that concept.")] = ThresholdMethod(DISSECT.threshold),
    min_iou: Annotated[float, typer.Option("--min-iou", min=0.0, max=1.0, help="A unit is interpretable when its "
                                           "best IoU reaches this.")] = DISSECT.min_iou,
    segmenter: Annotated[Optional[str], typer.Option(
        "--segmenter", "-s", help="color, or a segmenter .safetensors file.",
        show_default="the model's own segmenter, else color")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per batch.")]
    = DISSECT.batch_size,
    strip: Annotated[int, typer.Option("--strip", min=0, help="Top-activating images per unit in the HTML "
                                       "report.")] = DISSECT.top_k,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = DISSECT.seed,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.",
                                                show_default="dissect/<model>-<layers>")] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Dissect generator layers: which units match which concepts (unit-mask IoU over N samples).

    Each unit's map is upsampled, thresholded at its top --quantile (or --threshold iqr), and compared
    with the segmentation of every generated image.

    Writes report.json, units.csv and a self-contained report.html (offline; open it from disk).
    """
    check_out_dir(out)
    if quantile is not None and threshold != ThresholdMethod.quantile:
        raise typer.BadParameter("--quantile is for --threshold quantile (iqr chooses each unit's level itself)")
    from ..dissection import HTML_FILE, REPORT_FILE, UNITS_FILE, dissect
    from ..distributed import on_main

    note = InterruptNote("dissect writes its report once every sample is measured", ", with a smaller --n to "
                         "finish sooner")
    with Reporter(quiet) as rep, on_interrupt(note.line):
        result = dissect(model, layers=layer or None, segmenter=segmenter, n=n, seed=seed,
                         quantile=DISSECT.quantile if quantile is None else quantile, threshold=threshold.value,
                         min_iou=min_iou, batch_size=batch_size, device=device, progress=rep, top_k=strip)
        note.writing = out if out is not None else Path("dissect") / f"{model_label(model)}-{'-'.join(result.layers)}"
        folder = on_main(lambda: result.save(note.writing))  # under torchrun, rank 0 alone writes
    if not on_rank0():
        return
    files = {"html": folder / HTML_FILE, "json": folder / REPORT_FILE, "csv": folder / UNITS_FILE}
    if json_out:
        print_json({"out": str(folder), **{k: str(v) for k, v in files.items()}, "settings": result.settings,
                    "layers": {name: {"units": ld.units, "interpretable": len(ld.interpretable),
                                      "concepts": result.summary()[name]} for name, ld in result.layers.items()}})
        return
    console = stdout_console()
    console.print(dissection_table(result))
    console.print(f"report: {files['html']}  (also {REPORT_FILE}, {UNITS_FILE})", highlight=False)


def dissection_table(result: Any, limit: int = 8) -> Any:
    """Interpretable units per concept (rows) and layer (columns): count, then the best units with their IoU."""
    from rich.table import Table

    summary = result.summary()
    table = Table(title=f"interpretable units per concept (IoU >= {result.settings['min_iou']:g}, "
                        f"N={result.settings['n']})", title_justify="left")
    table.add_column("concept")
    for name in result.layers:
        table.add_column(f"{name}", justify="right")
        table.add_column("best units (IoU)")
    concepts = sorted({c for per in summary.values() for c in per},
                      key=lambda c: (-sum(len(per.get(c, [])) for per in summary.values()), c))
    for c in concepts:
        row = [c]
        for name, layer in result.layers.items():
            units = summary[name].get(c, [])
            k = layer.concepts.index(c)
            shown = ", ".join(f"{u} ({float(layer.iou[u, k]):.2f})" for u in units[:limit])
            row += [str(len(units)) if units else "-", shown + (", ..." if len(units) > limit else "")]
        table.add_row(*row)
    if not concepts:
        table.add_row("[dim](none)[/]", *[""] * (2 * len(result.layers)))
    table.add_section()
    totals = ["[bold]interpretable[/]"]
    for layer in result.layers.values():
        totals += [f"[bold]{len(layer.interpretable)}/{layer.units}[/]", ""]
    table.add_row(*totals)
    return table
