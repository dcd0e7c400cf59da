"""`gantools segmenter train|eval` (gantools.segmenters).

Defaults come from the torch-free `gantools.segmenters.config` (SegmenterTrainConfig and the
evaluation constants), so `--help` restates no number of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..segmenters.config import DEFAULT_DECODER_CHANNELS, EVAL_SCENES, EVAL_SEED, SegmenterTrainConfig, is_scenes
from ..utils import GantoolsError
from .common import DEFAULT_DEVICE, DeviceOpt, JsonOpt, QuietOpt, Reporter, check_channels, check_out_file, \
    defaults_of, kept_file, nothing_kept, on_interrupt, print_json, stdout_console

SEG = defaults_of(SegmenterTrainConfig)

segmenter_app = typer.Typer(help="Segmenters that label generated images with concepts.", no_args_is_help=True)


@segmenter_app.command("train")
def segmenter_train_cmd(  # long: one annotated parameter per option
    out: Annotated[Path, typer.Option("--out", "-o", help="Segmenter file to write (.safetensors).")],
    data: Annotated[str, typer.Option("--data", help="'scenes', or a folder with images/, labels/ and "
                                      "concepts.json (as `gantools data scenes` writes).")] = "scenes",
    arch: Annotated[str, typer.Option("--arch", help="segmentation-models-pytorch architecture: unet, "
                                      "unetplusplus, fpn, deeplabv3plus, ... (an unknown name lists them "
                                      "all).")] = SEG["arch"],
    encoder: Annotated[str, typer.Option("--encoder", help="smp encoder name, or tu-<timm model> "
                                         "(e.g. tu-regnetx_002, tu-mobilenetv3_small_050, resnet18).")]
    = SEG["encoder"],
    encoder_weights: Annotated[Optional[Path], typer.Option(
        "--encoder-weights", help="Local encoder weights file (safetensors or torch state dict); nothing is "
        "ever downloaded.", show_default="start from scratch")] = None,
    encoder_depth: Annotated[int, typer.Option("--encoder-depth", min=1, max=5, help="Encoder stages (image size "
                                               "must divide by 2**depth).")] = SEG["encoder_depth"],
    decoder_channels: Annotated[str, typer.Option(
        "--decoder-channels", help="Unet-family decoder widths, comma-separated, one per encoder stage; "
        "'default' for the architecture's own.")] = ",".join(map(str, DEFAULT_DECODER_CHANNELS)),
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimisation steps.",
                                                 show_default=str(SegmenterTrainConfig.DEFAULT_STEPS))] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", min=0.0, help="Passes over the training images "
                                                    "(instead of --steps).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")]
    = SEG["batch_size"],
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (cosine decay).")] = SEG["lr"],
    n: Annotated[int, typer.Option("--n", "-n", min=2, help="Training scenes (folders use all their images).")]
    = SEG["n"],
    image_size: Annotated[Optional[int], typer.Option("--image-size", min=8, help="Training resolution.",
                                                      show_default=f"{SEG['image_size']} for scenes, a folder's "
                                                      "own size")] = None,
    nc: Annotated[int, typer.Option("--nc", help="Channels: 3 (RGB) or 1 (grayscale).", callback=check_channels)]
    = SEG["nc"],
    val_n: Annotated[int, typer.Option("--val-n", min=1, help="Held-out scenes (from another seed).")] = SEG["val_n"],
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9,
                                                help="Held-out fraction of a folder.")] = SEG["val_fraction"],
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Augment with horizontal flips.")] = SEG["flip"],
    half: Annotated[bool, typer.Option("--half/--full", help="Store weights in float16 (half the file).")]
    = SEG["half"],
    seed: Annotated[int, typer.Option("--seed", help="Seed of the scenes, the weights and the batches.")]
    = SEG["seed"],
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a segmenter (segmentation-models-pytorch) on labelled images; report held-out IoU."""
    check_out_file(out)
    if steps is not None and epochs is not None:
        raise typer.BadParameter("give --steps or --epochs, not both")
    from ..segmenters import parse_decoder_channels, train_segmenter

    try:
        channels = parse_decoder_channels(decoder_channels, encoder_depth)
    except GantoolsError as e:
        raise typer.BadParameter(str(e), param_hint="'--decoder-channels'") from None
    if is_scenes(data) and image_size is None:
        image_size = SEG["image_size"]
    with Reporter(quiet) as rep, on_interrupt(lambda: kept_file(out, "the segmenter is written only when training "
                                                                     "ends", ", with fewer --steps to finish sooner")):
        result = train_segmenter(data, out, arch=arch, encoder=encoder, encoder_weights=encoder_weights,
                                 encoder_depth=encoder_depth, decoder_channels=channels, image_size=image_size,
                                 nc=nc, n=n, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
                                 val_n=val_n, val_fraction=val_fraction, flip=flip, seed=seed, half=half,
                                 device=device, progress=rep)
    summary = {"out": str(result.path), "file_bytes": result.file_bytes, "steps": result.steps,
               "train_seconds": round(result.seconds, 1), "train_images": result.train_images,
               "val_images": result.val_images, "validation": _scores(result.validation)}
    if json_out:
        print_json(summary)
        return
    _show_scores(result.validation, f"held-out IoU ({result.val_images} images)")
    stdout_console().print(f"wrote {result.path} ({result.file_bytes / 1e6:.2f} MB); {result.steps} steps in "
                           f"{result.seconds / 60:.1f} min", highlight=False)


@segmenter_app.command("eval")
def segmenter_eval_cmd(
    segmenter: Annotated[str, typer.Option("--segmenter", "-s", help="'color', a segmenter .safetensors file, "
                                           "a folder holding segmenter.safetensors, or a pretrained model name "
                                           "that ships one (scenes64).")],
    data: Annotated[str, typer.Option("--data", help="'scenes', or a folder with images/, labels/ and "
                                      "concepts.json.")] = "scenes",
    n: Annotated[Optional[int], typer.Option("--n", "-n", min=1, help="Images to evaluate.",
                                             show_default=f"{EVAL_SCENES} scenes, or all of a folder")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Scenes seed; pick one the segmenter was not trained "
                                      f"on (training uses {SEG['seed']} unless told otherwise).")] = EVAL_SEED,
    image_size: Annotated[Optional[int], typer.Option("--image-size", min=8, help="Image size.",
                                                      show_default="the segmenter's training size, or 64")] = None,
    nc: Annotated[Optional[int], typer.Option("--nc", help="Channels.", callback=check_channels,
                                              show_default="the segmenter's, or 3")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")] = 64,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-concept IoU and mIoU of a segmenter on labelled images (scenes or a labelled folder)."""
    from ..segmenters import evaluate_segmenter

    with Reporter(quiet) as rep, on_interrupt(lambda: nothing_kept("segmenter eval only prints its scores",
                                                                   " (a smaller --n finishes sooner)")):
        result = evaluate_segmenter(segmenter, data, n=n, batch_size=batch_size, device=device, progress=rep,
                                    seed=seed, image_size=image_size, nc=nc)
    if json_out:
        print_json(_scores(result))
        return
    where = f"scenes seed {seed}" if is_scenes(data) else data
    _show_scores(result, f"{result.segmenter} on {result.n} images ({where})")


def _scores(result: Any) -> dict[str, Any]:
    """A SegmenterEvalResult as JSON, with the IoU by concept name."""
    return {**result.to_dict(), "iou": result.per_concept()}


def _show_scores(result: Any, title: str) -> None:
    """Per-concept IoU of a SegmenterEvalResult as a table on stdout."""
    from rich.table import Table

    table = Table(title=title)
    table.add_column("id", justify="right")
    table.add_column("concept")
    table.add_column("IoU", justify="right")
    table.add_column("pixels", justify="right")
    total = max(sum(result.support), 1)
    for i, (name, iou) in enumerate(zip(result.concepts, result.iou)):
        table.add_row(str(i), name, "-" if iou is None else f"{iou:.4f}", f"{100 * result.support[i] / total:.2f}%")
    table.add_section()
    table.add_row("", "[bold]mIoU[/]", f"[bold]{result.miou:.4f}[/]", "")
    table.add_row("", "pixel accuracy", f"{result.pixel_accuracy:.4f}", "")
    stdout_console().print(table)
