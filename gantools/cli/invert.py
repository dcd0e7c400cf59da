"""`gantools invert` (gantools.restoration): invert real images into the GAN and restore what they lack."""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defaults import INVERT
from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, ModelOpt, QuietOpt, Reporter, SeedOpt, check_out_dir, \
    on_interrupt, on_rank0, optional_number, print_json, stdout_console


class InvertTask(str, Enum):
    reconstruct = "reconstruct"
    inpaint = "inpaint"
    colorize = "colorize"
    denoise = "denoise"
    superres = "superres"


def invert_cmd(  # long: one annotated parameter per option
    images: Annotated[list[Path], typer.Argument(help="The real degraded images, or folders of them (any size, "
                                                 "mode and common format; superres: exactly the generator's size / "
                                                 "--scale).")],
    model: ModelOpt = DEFAULT_MODEL,
    task: Annotated[InvertTask, typer.Option("--task", "-t", help="What the input lacks: reconstruct (nothing), "
                                             "inpaint (--mask), colorize (colour), denoise (Gaussian noise), "
                                             "superres (resolution).")] = InvertTask(INVERT.task),
    mask: Annotated[Optional[Path], typer.Option("--mask", help="inpaint: PNG of the input's size whose nonzero "
                                                 "pixels are missing.", show_default=False)] = None,
    scale: Annotated[Optional[int], typer.Option("--scale", min=2, help="superres: the input is the generator's "
                                                 "size divided by this.",
                                                 show_default=str(INVERT.scale))] = None,
    noise_sigma: Annotated[Optional[float], typer.Option(
        "--noise-sigma", help="denoise: noise std on the [0,1] scale (e.g. 0.1).",
        show_default="estimated per image")] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Adam steps per image.")] = INVERT.steps,
    restarts: Annotated[int, typer.Option("--restarts", min=1, help="Starting points per image, optimised "
                                          "together; the lowest final loss wins.")] = INVERT.restarts,
    layerwise: Annotated[Optional[str], typer.Option(
        "--layerwise", help="Also optimise this generator layer's features (number or name) to reach details "
        "outside the generator's range; both results are reported.", show_default=False)] = None,
    layer_steps: Annotated[Optional[int], typer.Option("--layer-steps", min=1, help="Steps of the layer-wise "
                                                       "refinement.", show_default="--steps")] = None,
    composite: Annotated[bool, typer.Option("--composite/--no-composite", help="inpaint: paste the known pixels "
                                            "back; colorize: keep the input's luminance; superres: shift each "
                                            "block so that it downsamples exactly to the input. --no-composite keeps "
                                            "the raw generator output.")] = INVERT.composite,
    encoder: Annotated[Optional[Path], typer.Option("--encoder", help="Encoder file to start from.",
                                                    show_default="the model's encoder.safetensors, when present")]
    = None,
    no_encoder: Annotated[bool, typer.Option("--no-encoder", help="Start from random latents only.")] = False,
    target: Annotated[Optional[Path], typer.Option(
        "--target", help="Clean image (one input) or a folder of clean images named like the inputs: reports "
        "PSNR and SSIM beside those of the degraded input itself (superres: bicubic) and of a classical "
        "baseline (biharmonic inpainting, the best of TV/NL-means/wavelet denoising, bicubic, mean-chroma "
        "colorization), and warns when the result is worse than either.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images inverted together.")]
    = INVERT.batch_size,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: <stem>.png, <stem>_compare.png, "
                                      "<stem>.latent.pt.")] = Path("inverted"),
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per image (losses, metrics, "
                                           "paths) instead of a table.")] = False,
    device: DeviceOpt = DEFAULT_DEVICE,
    seed: SeedOpt = INVERT.seed,
    quiet: QuietOpt = False,
) -> None:
    """Invert real images into the GAN and restore what they lack (GAN-prior restoration)."""
    check_out_dir(out)
    _check_task_options(task.value, mask, scale, noise_sigma, layerwise, layer_steps, encoder, no_encoder)
    from ..distributed import gather_objects
    from ..models import load_model
    from ..restoration.inversion import invert, save_outputs

    paths: list[dict[str, str]] = []
    given = {"scale": scale} if scale is not None else {}
    with Reporter(quiet) as rep, on_interrupt(lambda: _interrupted(paths, out)):
        gan = load_model(model, device=device)
        # each batch's files are written as soon as it is done
        result = invert(gan, images, task.value, mask=mask, noise_sigma=noise_sigma, steps=steps, restarts=restarts,
                        layerwise=layerwise, layer_steps=layer_steps, composite=composite,
                        encoder=None if no_encoder else (encoder if encoder is not None else "auto"),
                        target=target, batch_size=batch_size, seed=seed, progress=rep,
                        on_batch=lambda part: paths.extend(save_outputs(part, out)), **given)
    # under torchrun each process wrote its own block of images, in order: rank 0 reports them all
    paths = [p for block in gather_objects(paths) for p in block]
    if not on_rank0():
        return
    records = [{**result.record(i), **p} for i, p in enumerate(paths)]
    if json_out:
        for rec in records:
            print_json(rec)
        return
    _show_inversions(records, task.value, result.layer)
    stdout_console().print(f"wrote {len(records)} result(s) to {out}/ (<stem>.png, <stem>_compare.png, "
                           "<stem>.latent.pt)", highlight=False)


def _check_task_options(task: str, mask: Optional[Path], scale: Optional[int], noise_sigma: Optional[float],
                        layerwise: Optional[str], layer_steps: Optional[int], encoder: Optional[Path],
                        no_encoder: bool) -> None:
    """Options that belong to another task (or to another option), refused while parsing."""
    if mask is not None and task != "inpaint":
        raise typer.BadParameter("--mask is for --task inpaint")
    if task == "inpaint" and mask is None:
        raise typer.BadParameter("--task inpaint needs --mask MASK.png (nonzero pixels = missing)")
    if layer_steps is not None and layerwise is None:
        raise typer.BadParameter("--layer-steps is for --layerwise")
    if noise_sigma is not None and task != "denoise":
        raise typer.BadParameter("--noise-sigma is for --task denoise")
    if noise_sigma is not None and not 0 < noise_sigma < 1:
        raise typer.BadParameter("--noise-sigma is on the [0,1] scale: give a value between 0 and 1, e.g. 0.1")
    if scale is not None and task != "superres":
        raise typer.BadParameter("--scale is for --task superres")
    if encoder is not None and no_encoder:
        raise typer.BadParameter("give --encoder or --no-encoder, not both")


def _interrupted(paths: list[dict[str, str]], out: Path) -> str:
    if paths:
        last = Path(paths[-1]["output"]).stem
        return (f"interrupted: kept the {len(paths)} result(s) of the finished batches in {out}/ (the last is "
                f"{last}); the images after it were not inverted: invert those to finish")
    return ("interrupted before the first batch finished: nothing was written; run the command again (a smaller "
            "--batch-size writes results sooner)")


def _show_inversions(records: list[dict[str, Any]], task: str, layer: Optional[str]) -> None:
    from rich.table import Table

    has_metrics = any(r.get("psnr") is not None for r in records)
    table = Table(title=f"invert --task {task}")
    for col in ["image", "result", "loss", "mse"] + (["psnr", "ssim"] if has_metrics else []):
        table.add_column(col, justify="left" if col in ("image", "result") else "right")
    for r in records:
        results = [("z-only", r)] + ([(f"layer-wise {layer}", r["layerwise"])] if layer is not None else [])
        for j, (label, v) in enumerate(results):
            row = [r["name"] if j == 0 else "", label, f"{v['total_loss']:.3f}", f"{v['mse']:.2e}"]
            if has_metrics:
                row += [optional_number(v.get("psnr"), ".2f"), optional_number(v.get("ssim"), ".3f")]
            table.add_row(*row)
        # what the result has to beat: the degraded input itself and the classical baseline
        compare = []
        if r.get("input_psnr") is not None and task != "superres":  # superres: the baseline row is the input's
            compare.append(("input as given", r["input_psnr"], r["input_ssim"]))
        if r.get("baseline_psnr") is not None:
            compare.append((f"baseline: {r['baseline']}", r["baseline_psnr"], r["baseline_ssim"]))
        for label, p_, s_ in compare:
            table.add_row("", label, "-", "-", optional_number(p_, ".2f"), optional_number(s_, ".3f"))
    stdout_console().print(table)
