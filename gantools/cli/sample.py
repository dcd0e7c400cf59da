"""`gantools sample` (gantools.sampling): a grid, an interpolation strip, or latent vector arithmetic."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, ModelOpt, SeedOpt, check_out_file, on_interrupt

FRAMES = 10  # images in an interpolation strip, when --frames is not given


class InterpMethod(str, Enum):
    slerp = "slerp"
    lerp = "lerp"


def sample_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Images in the grid.")] = 64,
    seed: SeedOpt = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write.", show_default="samples.png, "
                                                "interpolation.png or arithmetic.png")] = None,
    nrow: Annotated[Optional[int], typer.Option("--nrow", min=1, help="Images per row.",
                                                show_default="a square grid")] = None,
    interpolate: Annotated[bool, typer.Option("--interpolate", help="Write a strip from the latent of --seed to "
                                              "that of --seed2 instead of a grid, labelled with t.")] = False,
    seed2: Annotated[Optional[int], typer.Option("--seed2", help="Other end of --interpolate.",
                                                 show_default="seed + 1")] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=2, help="Images in the --interpolate strip.",
                                                  show_default=str(FRAMES))] = None,
    method: Annotated[InterpMethod, typer.Option("--method", help="slerp (spherical) or lerp (straight line).")]
    = InterpMethod.slerp,
    arithmetic: Annotated[Optional[str], typer.Option(
        "--arithmetic", help="Latent arithmetic A-B+C on indices of this seed's grid (index = row * nrow + "
        "column), e.g. '3,17,22-5,8,9+10,11,12'. Writes a labelled row per group (its mean, then its "
        "samples), then the result and its variations.", show_default=False)] = None,
    device: DeviceOpt = DEFAULT_DEVICE,
) -> None:
    """Draw samples from a model: a grid, an interpolation strip, or latent vector arithmetic."""
    check_out_file(out)
    if interpolate and arithmetic:
        raise typer.BadParameter("choose --interpolate or --arithmetic, not both")
    if not interpolate and (seed2 is not None or frames is not None):
        raise typer.BadParameter("--seed2 and --frames are for --interpolate")
    from .. import sampling
    from ..images import save_grid
    from ..models import load_model

    with on_interrupt(lambda: "interrupted: nothing was written (the picture is written once every image is drawn); "
                              "run the command again"):
        gan = load_model(model, device=device)
        if interpolate:
            frames = FRAMES if frames is None else frames
            images = sampling.interpolate(gan, seed, seed2, frames, method.value)
            path = sampling.save_interpolation(images, out or Path("interpolation.png"), seed, seed2, method.value)
        elif arithmetic:
            a, b, c = sampling.parse_arithmetic(arithmetic)
            result = sampling.latent_arithmetic(gan, a, b, c, seed=seed)
            path = result.save(out or Path("arithmetic.png"))
        else:
            path = save_grid(sampling.sample(gan, n, seed), out or Path("samples.png"), nrow=nrow)
    typer.echo(str(path))
