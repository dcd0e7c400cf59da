"""`gantools encoder train` (gantools.restoration): an encoder E(x) -> z that gives inversion a start."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defaults import ENCODER_TRAIN
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, JsonOpt, ModelOpt, QuietOpt, Reporter, SeedOpt, \
    check_out_file, default_companion, kept_file, on_interrupt, print_json, stdout_console

encoder_app = typer.Typer(help="Encoders that give inversion a starting latent.", no_args_is_help=True)


@encoder_app.command("train")
def encoder_train_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Also train on real images: a folder "
                                                "(searched recursively) or a built-in dataset name (scenes).",
                                                show_default=False)] = None,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help="With a folder: leave N images out, split as "
                                         "`gantools train --holdout` does (the last by sorted file name, per "
                                         "class folder).")] = ENCODER_TRAIN.holdout,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")] = ENCODER_TRAIN.steps,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=2, help="Images per step.")]
    = ENCODER_TRAIN.batch_size,
    width: Annotated[int, typer.Option("--width", min=4, help="Channels of the first conv block.")]
    = ENCODER_TRAIN.width,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (cosine decay).")]
    = ENCODER_TRAIN.lr,
    latent_weight: Annotated[float, typer.Option("--latent-weight", min=0.0, help="Weight of |E(G(z)) - z|^2 on "
                                                 "generated images (their z is known).")] = ENCODER_TRAIN.latent_weight,
    pixel_weight: Annotated[float, typer.Option("--pixel-weight", min=0.0, help="Weight of |G(E(x)) - x|^2 "
                                                "(generated and real images).")] = ENCODER_TRAIN.pixel_weight,
    perceptual_weight: Annotated[float, typer.Option("--perceptual-weight", min=0.0, help="Weight of the "
                                                     "discriminator-feature distance between G(E(x)) and x "
                                                     "(0 skips it).")] = ENCODER_TRAIN.perceptual_weight,
    augment: Annotated[float, typer.Option("--augment", min=0.0, max=1.0, help="Probability that an input is "
                                           "degraded (hole, noise, grayscale or low resolution), so that E "
                                           "also starts restorations well.")] = ENCODER_TRAIN.augment,
    deform: Annotated[float, typer.Option("--deform", min=0.0, max=1.0, help="With --data: probability that a "
                                          "real image is first rotated, scaled, sheared and shifted a little, so "
                                          "that a small dataset (digits) is not learnt by heart.")]
    = ENCODER_TRAIN.deform,
    prior_weight: Annotated[float, typer.Option("--prior-weight", min=0.0, help="With --data: weight of the "
                                                "inversion's latent prior (|E(x)|^2/nz - 1)^2 on real images.")]
    = ENCODER_TRAIN.prior_weight,
    init: Annotated[Optional[Path], typer.Option("--init", help="Continue from this encoder file (its width "
                                                 "wins) instead of a fresh one, e.g. a second stage at a lower "
                                                 "--lr.", show_default=False)] = None,
    start_rate: Annotated[Optional[float], typer.Option("--start-rate", min=0.0, max=1.0,
                                                        help="Learning-rate factor of inversion's steps from this "
                                                        "encoder's start: the more accurate the encoder, the "
                                                        "smaller (measure it with benchmarks/encoder_start.py "
                                                        "--start-rates).", show_default="--init's, else 0.25")]
    = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Encoder file.", show_default="encoder.safetensors "
                                                "beside the model, where invert finds it")] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = ENCODER_TRAIN.seed,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train an encoder E(x) -> z for a model; `gantools invert` starts from E(x) when it exists."""
    _check_options(out, init, data, holdout=holdout, deform=deform, prior_weight=prior_weight,
                   start_rate=start_rate)
    from ..models import load_model
    from ..restoration.encoder import encoder_dataset, evaluate_encoder, train_encoder

    gan = load_model(model, device=device)
    if out is None:
        if gan.path is None:
            raise typer.BadParameter("give --out: the model has no file to store the encoder beside")
        out = default_companion(gan.path, "encoder")
    with Reporter(quiet) as rep:
        dataset = None if data is None else encoder_dataset(data, gan.config.image_size, gan.config.nc,
                                                            holdout=holdout, seed=seed, progress=rep)
        with on_interrupt(lambda: kept_file(out, "the encoder is written only when training ends",
                                            ", with fewer --steps to finish sooner")):
            result = train_encoder(gan, steps=steps, batch_size=batch_size, data=dataset, width=width, lr=lr,
                                   latent_weight=latent_weight, pixel_weight=pixel_weight,
                                   perceptual_weight=perceptual_weight, augment=augment, deform=deform,
                                   prior_weight=prior_weight, out=out, device=device,
                                   seed=seed, progress=rep, init=init, start_rate=start_rate)
    scores = evaluate_encoder(result.encoder, gan)  # on fresh samples, beside an untrained encoder
    summary = {"out": str(result.path), "steps": steps, "seconds": result.settings["seconds"], "data": data,
               **scores.to_dict()}
    if json_out:
        print_json(summary)
        return
    _show_scores(scores)
    stdout_console().print(f"wrote {result.path} ({steps} steps in {result.settings['seconds']:.0f} s)",
                           highlight=False)


def _check_options(out: Optional[Path], init: Optional[Path], data: Optional[str], *, holdout: int, deform: float,
                   prior_weight: float, start_rate: Optional[float]) -> None:
    """typer.BadParameter for options that cannot go together or point at nothing."""
    check_out_file(out)
    if init is not None and not init.is_file():
        raise typer.BadParameter(f"no encoder file {init}", param_hint="--init")
    if holdout and data is None:
        raise typer.BadParameter("--holdout needs --data FOLDER")
    if data is None and (deform or prior_weight):
        raise typer.BadParameter("--deform and --prior-weight act on real images: give --data")
    if start_rate is not None and start_rate <= 0:
        raise typer.BadParameter(f"{start_rate} is not above 0", param_hint="--start-rate")


def _show_scores(scores: Any) -> None:
    from rich.table import Table

    table = Table(title=f"encoder on {scores.samples} fresh generated samples")
    for col in ("", "latent MSE", "pixel MSE [0,1]"):
        table.add_column(col, justify="right")
    table.add_row("untrained", f"{scores.untrained_latent_mse:.4f}", f"{scores.untrained_pixel_mse:.5f}")
    table.add_row("trained", f"{scores.latent_mse:.4f}", f"{scores.pixel_mse:.5f}")
    stdout_console().print(table)
