"""`gantools train` and `gantools export` (gantools.training).

Every option's default is TrainConfig's (or its default recipe's), read from the torch-free
`gantools.training.config`; an option counts as given only when it was typed, so a resumed run
keeps its own settings.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..architecture import D_NORMS
from ..training.config import DEFAULT_EPOCHS, DEFAULT_RECIPE, LOSSES, RECIPES, TrainConfig
from .common import JsonOpt, QuietOpt, Reporter, check_out_dir, check_out_file, defaults_of, number, on_interrupt, \
    print_json, stdout_console

TRAIN = defaults_of(TrainConfig)
RECIPE = RECIPES[DEFAULT_RECIPE]

# Choices come from the library's own tuples, so they cannot drift from what it accepts.
Recipe = Enum("Recipe", {name: name for name in RECIPES}, type=str)  # type: ignore[misc]
GanLoss = Enum("GanLoss", {name: name for name in LOSSES}, type=str)  # type: ignore[misc]
DNorm = Enum("DNorm", {name: name for name in D_NORMS}, type=str)  # type: ignore[misc]


def _recipe_text(settings: dict[str, Any]) -> str:
    """A recipe's settings in a few words, from RECIPES itself."""
    r1 = f", R1 {settings['r1']:g}" if settings["r1"] else ""
    return (f"{settings['d_norm']}-norm D, {settings['loss']} loss, Adam {settings['lr_g']:g}/{settings['lr_d']:g}, "
            f"betas {settings['beta1']},{settings['beta2']}{r1}")


RECIPE_TEXT = "; ".join(f"{name}: {_recipe_text(settings)}" for name, settings in RECIPES.items())


def _by_recipe(field: str) -> str:
    """The shown default of a field the recipe sets."""
    return f"{DEFAULT_RECIPE}'s: {RECIPE[field]}"


def _opt(*names: str, help: str, default: Any = True, **kw: Any) -> Any:
    """An option whose shown default is TrainConfig's value (default=True) or the given text."""
    return typer.Option(*names, help=help, show_default=default, **kw)


def train_cmd(  # long: one annotated parameter per option (40 options)
    ctx: typer.Context,
    data: Annotated[str, _opt("--data", "-d", help="Folder of images (searched recursively) or a built-in dataset "
                              "name (scenes).")] = TRAIN["data"],
    image_size: Annotated[int, _opt("--image-size", help="Image side: 16, 32, 64 or 128.")] = TRAIN["image_size"],
    nc: Annotated[int, _opt("--nc", help="Channels: 1 (grayscale) or 3 (RGB).")] = TRAIN["nc"],
    nz: Annotated[int, _opt("--nz", help="Latent size.")] = TRAIN["nz"],
    ngf: Annotated[int, _opt("--ngf", help="Generator width.")] = TRAIN["ngf"],
    ndf: Annotated[int, _opt("--ndf", help="Discriminator width.")] = TRAIN["ndf"],
    batch_size: Annotated[int, _opt("--batch-size", "-b", help="Batch size.")] = TRAIN["batch_size"],
    recipe: Annotated[Recipe, _opt("--recipe", help=f"A set of the options below chosen together: {RECIPE_TEXT}. "
                                   "Options given explicitly override the recipe. dcgan, the DCGAN paper's, "
                                   "measured best on scenes: concept TV 0.06 and FID 0.9 at 3,000 steps against "
                                   "0.78 and 17.5 for stable (docs/recipes.md).")] = Recipe(TRAIN["recipe"]),
    d_norm: Annotated[Optional[DNorm], _opt("--d-norm", default=_by_recipe("d_norm"), help="D's normalisation: "
                                            "batch (BatchNorm), spectral (spectral norm on every convolution, no "
                                            "BatchNorm) or none.")] = None,
    loss: Annotated[Optional[GanLoss], _opt("--loss", default=_by_recipe("loss"), help="nonsaturating (G "
                                            "maximises log D(G(z))), minimax (G minimises log(1-D(G(z)))) or "
                                            "hinge.")] = None,
    lr: Annotated[Optional[float], _opt("--lr", default=False, help="Adam learning rate of both nets (sets "
                                        "--lr-g and --lr-d).")] = None,
    lr_g: Annotated[Optional[float], _opt("--lr-g", default=_by_recipe("lr_g"), help="Adam learning rate of G.")]
    = None,
    lr_d: Annotated[Optional[float], _opt("--lr-d", default=_by_recipe("lr_d"), help="Adam learning rate of D (two "
                                          "time-scale updates when it differs from --lr-g).")] = None,
    betas: Annotated[Optional[str], _opt("--betas", default=f"{DEFAULT_RECIPE}'s: {RECIPE['beta1']},"
                                         f"{RECIPE['beta2']}", help="Adam betas of both nets, e.g. 0.5,0.999.")]
    = None,
    r1: Annotated[Optional[float], _opt("--r1", default=_by_recipe("r1"), help="R1 penalty weight gamma on real "
                                        "images (gamma/2 |grad D|^2), applied every 16 D steps; 0: off.")] = None,
    d_steps: Annotated[int, _opt("--d-steps", help="Discriminator steps per generator step.")] = TRAIN["d_steps"],
    steps: Annotated[Optional[int], _opt("--steps", default=False, help="Stop after this many generator steps in "
                                         "all.")] = None,
    epochs: Annotated[Optional[float], _opt("--epochs", default=f"{DEFAULT_EPOCHS} when --steps is not given",
                                            help="Stop after this many passes over the data.")] = None,
    seed: Annotated[int, _opt("--seed", help="Seed of weights, data order and noise.")] = TRAIN["seed"],
    out: Annotated[Optional[Path], _opt("--out", "-o", default="runs/<nnnnn>-<data>", help="Run directory.")] = None,
    device: Annotated[str, _opt("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")] = TRAIN["device"],
    resume: Annotated[Optional[Path], _opt("--resume", default=False, help="Continue this run directory from its "
                                           "checkpoint (give a larger --steps or --epochs to train longer).")] = None,
    init: Annotated[Optional[Path], _opt("--init", default=False, help="Start from the G and D weights of this run "
                                         "directory or checkpoint (same architecture, any recipe; fresh "
                                         "optimisers, step 0): e.g. an R1 penalty or a lower rate for a run "
                                         "that D began to overpower.")] = None,
    sample_every: Annotated[int, _opt("--sample-every", help="Steps between sample grids; 0: at the end only.")]
    = TRAIN["sample_every"],
    checkpoint_every: Annotated[int, _opt("--checkpoint-every", help="Steps between checkpoints; 0: at the end "
                                          "only.")] = TRAIN["checkpoint_every"],
    snapshot_every: Annotated[int, _opt("--snapshot-every", help="Steps between model snapshots "
                                        "(snapshots/step_NNNNNN.safetensors, each the model file of that step, to "
                                        "choose among later); 0: none.")] = TRAIN["snapshot_every"],
    log_every: Annotated[int, _opt("--log-every", help="Steps per stats.jsonl line.")] = TRAIN["log_every"],
    eval_every: Annotated[int, _opt("--eval-every", help="Steps between FID evaluations; keeps best.pt (lowest "
                                    "FID). 0: never.")] = TRAIN["eval_every"],
    eval_n: Annotated[int, _opt("--eval-n", help="Generated images per FID evaluation.")] = TRAIN["eval_n"],
    track_concepts: Annotated[Optional[str], _opt("--track-concepts", default=False, help="At every --eval-every, "
                                                  "also log each concept's pixel share in generated and real images "
                                                  "through this segmenter (a file or a pretrained name) and plot "
                                                  "concepts_curve.png.")] = None,
    data_version: Annotated[Optional[int], _opt("--data-version", default="the current one", help="Design version "
                                                "of a built-in dataset (scenes: 1 or 2).")] = None,
    threads: Annotated[int, _opt("--threads", help="CPU threads for torch; 0: one per core.")] = TRAIN["threads"],
    channels_last: Annotated[bool, _opt("--channels-last/--no-channels-last", help="Channels-last memory layout "
                                        "(measured 1.26x faster per step on 2 CPU cores, and faster on CUDA).")]
    = TRAIN["channels_last"],
    holdout: Annotated[int, _opt("--holdout", help="Leave N images out of training: the last by sorted file name "
                                 "in each class folder (equal shares).")] = TRAIN["holdout"],
    data_n: Annotated[Optional[int], _opt("--data-n", default="the dataset's own", help="Images of a generated "
                                          "dataset (scenes).")] = None,
    amp: Annotated[bool, _opt("--amp/--no-amp", help="Mixed precision on CUDA.")] = TRAIN["amp"],
    cpu_amp: Annotated[bool, _opt("--cpu-amp/--no-cpu-amp", help="bfloat16 autocast on the CPU too: about 2x "
                                  "faster per step on 2 cores, with other numerics than float32.")] = TRAIN["cpu_amp"],
    augment: Annotated[str, _opt("--augment", default="off", help="Differentiable augmentation of what D sees (real "
                                 "and generated), for small datasets: a comma list of color, translation, "
                                 "cutout.")] = TRAIN["augment"],
    augment_p: Annotated[float, _opt("--augment-p", min=0.0, max=1.0, help="Probability that each image D sees "
                                     "is augmented (with --augment-target: where it starts).")] = TRAIN["augment_p"],
    augment_target: Annotated[float, _opt("--augment-target", min=0.0, max=0.99, help="Adapt --augment-p to D's "
                                          "overfitting (ADA): keep the mean sign of D's logits on real images at "
                                          "this value (0.6 is ADA's); 0: fixed.")] = TRAIN["augment_target"],
    g_top_k: Annotated[float, _opt("--g-top-k", min=0.01, max=1.0, help="G learns from this share of each "
                                   "batch of generated images, those D rates most real (top-k training); 1: "
                                   "all.")] = TRAIN["g_top_k"],
    ema: Annotated[float, _opt("--ema", help="Keep a moving average of G's weights with this decay (e.g. 0.999) "
                               "and export it; 0: off.")] = TRAIN["ema"],
    sync_bn: Annotated[Optional[bool], _opt("--sync-bn/--no-sync-bn", default="on under torchrun", help="Under "
                                            "torchrun, BatchNorm normalises with the global batch's statistics "
                                            "(CUDA only: on the CPU each process keeps its own, with a "
                                            "notice).")] = TRAIN["sync_bn"],
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a DCGAN on a folder of images or a built-in dataset (Ctrl-C saves and stops)."""
    check_out_dir(out)
    from ..training import train

    if lr is not None and (lr_g is not None or lr_d is not None):
        raise typer.BadParameter("--lr sets both learning rates: give it, or --lr-g/--lr-d, not both")
    fields = _given_fields(ctx, {k: v for k, v in ctx.params.items() if k in TRAIN})
    fields.update(_learning_rates(lr, betas))
    with Reporter(quiet) as rep:
        if resume is not None:
            if out is not None:
                raise typer.BadParameter("--resume continues in the run directory itself; drop --out")
            result = train(resume=resume, progress=rep, **fields)
        else:
            result = train(TrainConfig(**fields), progress=rep)
    _show_training(result, json_out)


def _given_fields(ctx: typer.Context, values: dict[str, Any]) -> dict[str, Any]:
    """The TrainConfig fields typed on the command line (enums as their names, paths as text)."""
    given = {}
    for name, value in values.items():
        source = ctx.get_parameter_source(name)  # typer's own click: compared by name
        if source is None or source.name in ("DEFAULT", "DEFAULT_MAP"):
            continue
        given[name] = value.value if isinstance(value, Enum) else str(value) if isinstance(value, Path) else value
    return given


def _learning_rates(lr: Optional[float], betas: Optional[str]) -> dict[str, float]:
    """--lr and --betas as the TrainConfig fields they set."""
    fields = {} if lr is None else {"lr_g": lr, "lr_d": lr}
    if betas is not None:
        try:
            fields["beta1"], fields["beta2"] = (float(v) for v in betas.split(","))
        except ValueError:
            raise typer.BadParameter(f"--betas takes two numbers, e.g. 0.5,0.999; got {betas!r}") from None
    return fields


def _show_training(result: Any, json_out: bool) -> None:
    summary = {"run_dir": str(result.run_dir), "step": result.step, "total_steps": result.total_steps,
               "interrupted": result.interrupted, "model": str(result.model_path) if result.model_path else None,
               "best_fid": result.best_fid, "seconds": round(result.elapsed, 1), **result.stats}
    if json_out:
        print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training interrupted (checkpoint saved)" if result.interrupted else "training done",
                  show_header=False)
    for key in ("run_dir", "step", "Loss_D", "Loss_G", "D(x)", "D(G(z))_before", "D(G(z))_after", "img/s",
                "best_fid", "model"):
        if summary.get(key) is not None:
            v = summary[key]
            table.add_row(key, number(v) if isinstance(v, float) else str(v))
    stdout_console().print(table)
    if result.interrupted:
        Console(stderr=True).print(f"continue with: gantools train --resume {result.run_dir}", highlight=False)


def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or a checkpoint file).")],
    best: Annotated[bool, typer.Option("--best", help="Export best.pt (lowest FID) instead of the latest "
                                       "checkpoint.")] = False,
    half: Annotated[bool, typer.Option("--half", help="Store weights in float16 (half the file size).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file.",
                                                show_default="RUN_DIR/model.safetensors")] = None,
) -> None:
    """Write a run's model.safetensors (G, D and config) for the analysis commands."""
    check_out_file(out)
    from ..training import export

    target = out if out is not None else (run_dir / "model.safetensors" if run_dir.is_dir() else None)
    with on_interrupt(lambda: _export_interrupted(target, run_dir)):
        path = export(run_dir, best=best, out=out, half=half)
    typer.echo(str(path))


def _export_interrupted(target: Optional[Path], run_dir: Path) -> str:
    before = f"; the existing {target} is unchanged" if target is not None and target.exists() else ""
    return (f"interrupted: nothing was written (the model file is written whole or not at all{before}); the run in "
            f"{run_dir} is untouched: run the command again")
