"""`gantools edit` (gantools.editing): remove or add a concept in a real image."""

from __future__ import annotations

import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, InterruptNote, JsonOpt, ModelOpt, OutOpt, QuietOpt, \
    Reporter, SeedOpt, check_out_dir, on_interrupt, print_json, stdout_console, unit_list
from .interventions import AllowWeakOpt, DissectNOpt, LayerArg, RankOpt, ReportOpt, SegmenterOpt, StrengthOpt, TopOpt, \
    UnitRanking, UnitsOpt, check_choice, save_to, say_written


class EditBlend(str, Enum):
    input = "input"
    reconstruction = "reconstruction"


def edit_cmd(  # long: one annotated parameter per option
    image: Annotated[Path, typer.Argument(help="The image to edit (any size; resized and centre-cropped).")],
    layer: LayerArg,
    remove: Annotated[Optional[str], typer.Option("--remove", help="Concept to remove: its top units are switched "
                                                  "off over the whole image.", show_default=False)] = None,
    add: Annotated[Optional[str], typer.Option("--add", help="Concept to add at --at or inside --mask: its top "
                                               "units are set to their q99 level there.", show_default=False)] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="With --add: x,y as fractions of the image (0,0 top "
                                              "left), e.g. 0.5,0.7.", show_default=False)] = None,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="With --add: a mask PNG of the image's size "
                                                 "(white = inside), instead of --at.", show_default=False)] = None,
    top: TopOpt = 20,
    strength: StrengthOpt = 1.0,
    allow_weak: AllowWeakOpt = False,
    units: UnitsOpt = None,
    rank: RankOpt = UnitRanking.auto,
    report_dir: ReportOpt = None,
    segmenter: SegmenterOpt = None,
    blend: Annotated[EditBlend, typer.Option("--blend", help="Outside the edited region keep the input's pixels "
                                             "or the reconstruction's.")] = EditBlend.input,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Inversion steps.")] = 200,
    restarts: Annotated[int, typer.Option("--restarts", min=1, help="Inversion restarts.")] = 2,
    invert_layer: Annotated[Optional[str], typer.Option("--invert-layer", help="Layer whose features the inversion "
                                                        "refines, at or below --layer.",
                                                        show_default="the one below it")] = None,
    dissect_n: DissectNOpt = 1000,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Edit a real image: invert it, switch a concept's units off (--remove) or on (--add), regenerate.

    Outside the edited region the input's pixels are kept. Writes <stem>_edited.png, strip.png
    (input | reconstruction | edited | difference) and edit.json (concept pixel fractions before and
    after) to --out.
    """
    check_out_dir(out)
    if remove is not None or add is not None:  # else edit says what is missing
        check_choice(units, remove or add, top, rank, report_dir, model)
    from ..editing import edit

    started = time.time()
    note = InterruptNote("edit writes --out once the image is inverted and edited", ", with fewer --steps to "
                         "finish sooner")
    with Reporter(quiet) as rep, on_interrupt(note.line):
        result = edit(model, image, layer, remove=remove, add=add, at=at, mask=mask, top=top, strength=strength,
                      units=units, rank=rank.value, dissection=report_dir, segmenter=segmenter, blend=blend.value,
                      steps=steps, restarts=restarts, invert_layer=invert_layer, dissect_n=dissect_n, seed=seed,
                      allow_weak=allow_weak, device=device, progress=rep)
        folder = save_to(result, out, note)
    if json_out:
        print_json(result.to_dict())
    else:
        _show_edit(result)
    say_written(folder, started)


def _show_edit(result: Any) -> None:
    from rich.table import Table

    console = stdout_console()
    console.print(f"{'removed' if result.action == 'remove' else 'added'} {result.concept}: "
                  f"{len(result.units)} unit(s) of {result.layer}: {unit_list(result.units)}; "
                  f"reconstruction PSNR {result.psnr:.1f} dB; edited region "
                  f"{100 * float(result.region.float().mean()):.1f}% of the image", highlight=False)
    table = Table(title=f"concept pixel fractions (before = {result.blend})", title_justify="left")
    for col in ("concept", "before", "reconstruction", "after", "change"):
        table.add_column(col, justify="left" if col == "concept" else "right")
    for c in sorted(result.before, key=lambda c: (c != result.concept, -abs(result.after[c] - result.before[c]))):
        if c != result.concept and result.before[c] == 0 and result.after[c] == 0:
            continue
        table.add_row(f"[bold]{c}[/]" if c == result.concept else c, f"{result.before[c]:.4f}",
                      f"{result.reconstructed[c]:.4f}", f"{result.after[c]:.4f}",
                      f"{result.after[c] - result.before[c]:+.4f}")
    console.print(table)
