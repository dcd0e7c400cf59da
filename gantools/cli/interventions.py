"""`gantools ablate`, `insert` and `rank` (gantools.interventions, gantools.ranking), and the unit
options they share with `edit`."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..utils import GantoolsError
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, InterruptNote, JsonOpt, ModelOpt, OutOpt, QuietOpt, \
    Reporter, SeedOpt, check_out_dir, in_flags, on_interrupt, on_rank0, print_json, stdout_console, unit_list


class UnitRanking(str, Enum):
    auto = "auto"
    iou = "iou"
    ace = "ace"


LayerArg = Annotated[str, typer.Option("--layer", "-l", help="Layer: a number (3 = layer3) or a dotted module name.")]
UnitsOpt = Annotated[Optional[str], typer.Option("--units", "-u", help="Units to edit, e.g. 4,17,33 or 0-7 (instead "
                                                 "of --concept/--top).", show_default=False)]
ConceptOpt = Annotated[Optional[str], typer.Option("--concept", "-c", help="Target concept; with no --units, edit its "
                                                   "--top units.", show_default=False)]
TopOpt = Annotated[int, typer.Option("--top", "-k", min=1, help="How many of the concept's top-ranked units to edit.")]
RankOpt = Annotated[UnitRanking, typer.Option("--rank", help="Rank units by dissection IoU, or by causal effect (ace, "
                                              "from `gantools rank`); auto: ace where the report has it, else IoU.")]
ReportOpt = Annotated[Optional[Path], typer.Option("--report", "-r", help="Dissection report (directory or "
                                                   "report.json) to rank units and read unit levels from.",
                                                   show_default="the one shipped with the model, else dissect on "
                                                   "the fly")]
DissectNOpt = Annotated[int, typer.Option("--dissect-n", min=1, help="Samples for a dissection computed on the fly "
                                          "(no --report, and none shipped with the model for the layer).")]
StrengthOpt = Annotated[float, typer.Option("--strength", min=0.0, max=1.0, help="Edit strength s: x' = (1-s)*x + s*v "
                                            "(1 = set the units to v, 0.5 = halfway).")]
AllowWeakOpt = Annotated[bool, typer.Option("--allow-weak", help="With --concept: edit its top units even when none "
                                            "of them matches it (best IoU below the report's interpretable line), "
                                            "instead of stopping.")]
SamplesOpt = Annotated[int, typer.Option("--n", "-n", min=2, help="Samples measured (at least 2: effects come with a "
                                         "95% CI).")]
SegmenterOpt = Annotated[Optional[str], typer.Option("--segmenter", "-s", help="color, or a segmenter .safetensors "
                                                     "file.", show_default="the model's own segmenter, else color")]
BatchOpt = Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Latents per batch.")]
GridOpt = Annotated[int, typer.Option("--grid", min=0, help="Before/after pairs in the picture.")]


def check_choice(units: Optional[str], concept: Optional[str], top: int, rank: UnitRanking,
                 report: Optional[Path], model: str) -> None:
    """Which units to edit, checked while parsing (`units.UnitChoice.check`), as a usage error in flags."""
    from ..units import UnitChoice

    try:
        UnitChoice(units, concept, top, rank.value).check(report, model)
    except GantoolsError as e:
        raise typer.BadParameter(in_flags(str(e))) from None


def measuring(command: str) -> InterruptNote:
    """The Ctrl-C note of a command that measures samples, then writes --out."""
    return InterruptNote(f"{command} writes --out once every sample is measured", ", with a smaller --n to finish "
                         "sooner")


def save_to(result: Any, out: Optional[Path], note: InterruptNote) -> Optional[Path]:
    """result.save(out) when --out was given (the folder written), else None. Under torchrun every
    process has the same result and rank 0 alone writes it (the others get its answer)."""
    if out is None:
        return None
    from ..distributed import on_main

    note.writing = out
    return on_main(lambda: result.save(out))


def say_written(folder: Optional[Path], since: float) -> None:
    """Name the files a command wrote into its --out folder (those written since it started)."""
    if folder is None:
        return
    from rich.console import Console

    names = sorted(p.name for p in folder.iterdir() if p.is_file() and p.stat().st_mtime >= since - 1)
    Console(stderr=True).print(f"wrote {', '.join(names) or 'nothing'} to {folder}", highlight=False)


def effects_table(title: str, effects: dict[str, Any], target: str, limit: int = 12) -> Any:
    """Concept pixel fractions before and after, target first, then by size of change."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("concept", "before", "after", "change", "95% CI"):
        table.add_column(col, justify="left" if col == "concept" else "right")
    ordered = [target] + sorted((c for c in effects if c != target), key=lambda c: -abs(effects[c].mean))
    for c in ordered[:limit]:
        e = effects[c]
        if c != target and e.mean == 0 and e.before == 0:
            continue
        table.add_row(f"[bold]{c}[/]" if c == target else c, f"{e.before:.4f}", f"{e.after:.4f}",
                      f"{e.mean:+.4f}", f"[{e.ci_low:+.4f}, {e.ci_high:+.4f}]")
    return table


def ablate_cmd(  # long: one annotated parameter per option
    layer: LayerArg,
    units: UnitsOpt = None,
    concept: ConceptOpt = None,
    top: TopOpt = 10,
    rank: RankOpt = UnitRanking.auto,
    report_dir: ReportOpt = None,
    value: Annotated[str, typer.Option("--value", help="Level the units are set to: zero, mean (each unit's mean "
                                       "activation, from the dissection) or a number.")] = "zero",
    strength: StrengthOpt = 1.0,
    allow_weak: AllowWeakOpt = False,
    n: SamplesOpt = 500,
    curve_points: Annotated[int, typer.Option("--curve-points", min=2, help="At most this many k values on the "
                                              "curve of the effect against units ablated.")] = 21,
    dissect_n: DissectNOpt = 1000,
    segmenter: SegmenterOpt = None,
    batch_size: BatchOpt = 50,
    grid: GridOpt = 8,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Ablate units and measure the average causal effect on every concept (with 95% CIs).

    Writes effect.json, curve.json, curve.png (effect against k units ablated) and before/after pictures to --out.
    """
    check_out_dir(out)
    check_choice(units, concept, top, rank, report_dir, model)
    from ..interventions import ablate

    started, note = time.time(), measuring("ablate")
    with Reporter(quiet) as rep, on_interrupt(note.line):
        result = ablate(model, layer, units, concept=concept, top=top, rank=rank.value, value=value,
                        strength=strength, dissection=report_dir, segmenter=segmenter, n=n, seed=seed,
                        batch_size=batch_size, curve_points=curve_points, grid=grid, dissect_n=dissect_n,
                        allow_weak=allow_weak, device=device, progress=rep)
        folder = save_to(result, out, note)
    if not on_rank0():
        return
    if json_out:
        print_json(result.to_dict())
    else:
        e = result.effect
        console = stdout_console()
        console.print(f"ablated {len(result.units)} unit(s) of {result.layer}: {unit_list(result.units)}",
                      highlight=False)
        console.print(effects_table(f"effect on pixel fractions, N={e.n}", result.effects, result.concept))
        curve = result.curve[result.concept]
        console.print("k units ablated -> change in " + result.concept + ": " + ", ".join(
            f"{k}: {c.mean:+.4f}" for k, c in zip(result.ks, curve)), highlight=False)
    say_written(folder, started)


def insert_cmd(  # long: one annotated parameter per option
    layer: LayerArg,
    at: Annotated[Optional[str], typer.Option("--at", help="Where to insert: x,y as fractions of the image "
                                              "(0,0 top left), e.g. 0.5,0.7.", show_default=False)] = None,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="Where to insert: a mask PNG (white = inside), "
                                                 "instead of --at.", show_default=False)] = None,
    patch: Annotated[int, typer.Option("--patch", min=1, help="With --at: edit a patch x patch block of "
                                       "feature-map cells centred on the point.")] = 3,
    units: UnitsOpt = None,
    concept: ConceptOpt = None,
    top: TopOpt = 10,
    rank: RankOpt = UnitRanking.auto,
    report_dir: ReportOpt = None,
    value: Annotated[str, typer.Option("--value", help="Level the units are set to: q99 (each unit's 0.99 "
                                       "quantile, from the dissection), mean, or a number.")] = "q99",
    strength: StrengthOpt = 1.0,
    allow_weak: AllowWeakOpt = False,
    n: SamplesOpt = 500,
    dissect_n: DissectNOpt = 1000,
    segmenter: SegmenterOpt = None,
    batch_size: BatchOpt = 50,
    grid: GridOpt = 8,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Force units on at a place and measure the concept pixels added, by what was there before.

    Writes effect.json and before/after pictures (the region highlighted) to --out.
    """
    check_out_dir(out)
    check_choice(units, concept, top, rank, report_dir, model)
    from ..interventions import insert

    started, note = time.time(), measuring("insert")
    with Reporter(quiet) as rep, on_interrupt(note.line):
        result = insert(model, layer, units, concept=concept, top=top, rank=rank.value, at=at, mask=mask,
                        patch=patch, value=value, strength=strength, dissection=report_dir, segmenter=segmenter,
                        n=n, seed=seed, batch_size=batch_size, grid=grid, dissect_n=dissect_n,
                        allow_weak=allow_weak, device=device, progress=rep)
        folder = save_to(result, out, note)
    if not on_rank0():
        return
    if json_out:
        print_json(result.to_dict())
    else:
        _show_insertion(result, f"at {at}" if at is not None else f"inside {mask}")
    say_written(folder, started)


def _show_insertion(result: Any, where: str) -> None:
    from rich.table import Table

    console = stdout_console()
    console.print(f"inserted {len(result.units)} unit(s) of {result.layer} {where} "
                  f"({result.location['region_pixels']} pixels): {unit_list(result.units)}", highlight=False)
    r = result.region_effect
    console.print(f"{result.concept} inside the region: {r.before:.4f} -> {r.after:.4f} ({r.mean:+.4f}, "
                  f"95% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}])", highlight=False)
    table = Table(title=f"{result.concept} added, by what the region showed before (context)", title_justify="left")
    for col in ("context", "samples", "in region", "95% CI", "whole image", "95% CI "):
        table.add_column(col, justify="left" if col == "context" else "right")
    for ce in result.by_context.values():
        table.add_row(ce.context, str(ce.count), f"{ce.region.mean:+.4f}",
                      f"[{ce.region.ci_low:+.4f}, {ce.region.ci_high:+.4f}]", f"{ce.effect.mean:+.4f}",
                      f"[{ce.effect.ci_low:+.4f}, {ce.effect.ci_high:+.4f}]")
    console.print(table)
    console.print(effects_table(f"whole-image pixel fractions, N={r.n}", result.effects, result.concept))


def rank_cmd(  # long: one annotated parameter per option
    layer: LayerArg,
    concept: Annotated[str, typer.Option("--concept", "-c", help="Concept whose pixels are measured; several "
                                         "(door,window) or all are ranked in one pass, at the cost of one.")],
    report_dir: Annotated[Optional[Path], typer.Option(
        "--report", "-r", help="Dissection report (directory or report.json): the ranking is stored in it as "
        "ace (per concept), so --rank ace works in ablate/insert.", show_default=False)] = None,
    units: Annotated[Optional[str], typer.Option("--units", "-u", help="Only these units, e.g. 0-63.",
                                                 show_default="all")] = None,
    value: Annotated[str, typer.Option("--value", help="Ablation level: zero, mean (needs --report) or a number.")]
    = "zero",
    n: Annotated[int, typer.Option("--n", "-n", min=2, help="Samples per unit (at least 2: each ACE comes with "
                                   "a 95% CI).")] = 200,
    show: Annotated[int, typer.Option("--show", min=1, help="Units listed in the table.")] = 20,
    greedy: Annotated[Optional[int], typer.Option("--greedy", min=1, help="Instead choose K units jointly: each "
                      "round adds the unit that, ablated with those already chosen, removes most of the concept "
                      "(K passes; not stored in a report).", show_default=False)] = None,
    segmenter: SegmenterOpt = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Latents per batch (each batch is "
                                            "repeated once per unit measured with it).")] = 32,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rank a layer's units by the causal effect on a concept of ablating each one alone.

    With --greedy K, choose a concept's K units jointly instead: single-unit effects do not add up when
    units stand in for each other.
    """
    check_out_dir(out)
    from ..units import needs_stats

    if report_dir is None and needs_stats(value):
        raise typer.BadParameter(f"{value} is read from a dissection: give --report DIR, or a number",
                                 param_hint="'--value'")
    names = None if concept.strip() == "all" else [c.strip() for c in concept.split(",") if c.strip()]
    if names == []:
        raise typer.BadParameter("name a concept, several (door,window), or all", param_hint="'--concept'")
    from ..dissection import load_report, record_rankings
    from ..distributed import on_main
    from ..models import load_model
    from ..ranking import rank_concepts

    dissection = load_report(report_dir) if report_dir is not None else None
    if greedy is not None:
        if names is None:
            raise typer.BadParameter("with --greedy, name the concepts (each costs K passes)",
                                     param_hint="'--concept'")
        _rank_greedy(greedy, layer, names, units, value, dissection, segmenter, n, batch_size, model, device, seed,
                     out, quiet, json_out)
        return
    started, note = time.time(), measuring("rank")
    with Reporter(quiet) as rep, on_interrupt(note.line):
        gan = load_model(model, device=device)
        results = rank_concepts(gan, layer, names, units=units, value=value, dissection=dissection,
                                segmenter=segmenter, n=n, seed=seed, batch_size=batch_size, progress=rep)
        first = next(iter(results.values()))
        folder = save_to(results, out, note)
        if report_dir is not None:
            note.writing = report_dir
            aces = {c: r.ace_list() for c, r in results.items()}
            stored = on_main(lambda: record_rankings(report_dir, first.layer, aces, gan=gan))  # rank 0 alone writes
            rep.print(f"stored ace[{', '.join(results)}] for {first.layer} in {stored}")
        elif not quiet:
            rep.print("not stored in a report: give --report DIR to make --rank ace available to ablate/insert")
    if not on_rank0():
        return
    if json_out:
        print_json(results.to_dict())
    else:
        stats = dissection.layers.get(first.layer) if dissection is not None else None
        for result in results.values():
            _show_ranking(result, stats, n, show)
    say_written(folder, started)


def _rank_greedy(k: int, layer: Any, names: list[str], units: Optional[str], value: str, dissection: Any,
                 segmenter: Any, n: int, batch_size: int, model: str, device: Any, seed: int, out: Optional[Path],
                 quiet: bool, json_out: bool) -> None:
    """`rank --greedy K`: each concept's K units chosen jointly, shown with the joint effect per round."""
    from ..models import load_model
    from ..ranking import greedy_units

    started, note = time.time(), measuring("rank --greedy")
    with Reporter(quiet) as rep, on_interrupt(note.line):
        gan = load_model(model, device=device)
        chosen = {c: greedy_units(gan, layer, c, k, units=units, value=value, dissection=dissection,
                                  segmenter=segmenter, n=n, seed=seed, batch_size=batch_size, progress=rep)
                  for c in names}
        summaries = [joint.to_dict() for joint in chosen.values()]
        document = summaries[0] if len(summaries) == 1 else summaries  # as rank.json: one concept unwrapped
        if out is not None:
            from ..distributed import on_main
            from ..utils import write_json

            note.writing = out
            on_main(lambda: write_json(Path(out) / "greedy.json", document))  # rank 0 alone writes
    if not on_rank0():
        return
    if json_out:
        print_json(document)
    else:
        _show_greedy(chosen, n)
    say_written(out, started)


def _show_greedy(chosen: dict[str, Any], n: int) -> None:
    from rich.table import Table

    for concept, joint in chosen.items():
        table = Table(title=f"units of {joint.layer} chosen jointly for {concept} (N={n}; joint ACE = pixel "
                      "fraction lost when the units so far are ablated together)", title_justify="left")
        for col in ("round", "unit", "joint ACE"):
            table.add_column(col, justify="right")
        for i, (u, ace) in enumerate(zip(joint, joint.joint_ace)):
            table.add_row(str(i + 1), str(u), f"{ace:+.4f}")
        stdout_console().print(table)


def _show_ranking(result: Any, stats: Any, n: int, show: int) -> None:
    from rich.table import Table

    table = Table(title=f"units of {result.layer} by causal effect on {result.concept} (N={n}; ACE = pixel "
                  "fraction lost when the unit alone is ablated)", title_justify="left")
    for col in ("rank", "unit", "ACE", "95% CI") + (("IoU label", "IoU") if stats is not None else ()):
        table.add_column(col, justify="right")
    for i, u in enumerate(result.units[:show]):
        e = result.effects[u]
        # The ACE is minus the signed effect, so its CI is the effect's CI mirrored (0.0 - x: no "-0").
        row = [str(i + 1), str(u), f"{result.ace[u]:+.4f}", f"[{0.0 - e.ci_high:+.4f}, {0.0 - e.ci_low:+.4f}]"]
        if stats is not None:
            row += [str(stats.label[u]), f"{float(stats.best_iou[u]):.3f}"]
        table.add_row(*row)
    stdout_console().print(table)
