"""`gantools classifier train|eval` (gantools.classifier): the domain classifiers that eval uses."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from ..defaults import CLASSIFIER_EVAL, CLASSIFIER_TRAIN
from .common import DEFAULT_DEVICE, DeviceOpt, JsonOpt, QuietOpt, Reporter, SeedOpt, check_channels, check_out_file, \
    default_companion, kept_file, nothing_kept, on_interrupt, print_json, stdout_console

classifier_app = typer.Typer(help="Domain classifiers: eval's feature extractor and class-coverage judge.",
                             no_args_is_help=True)


@classifier_app.command("train")
def classifier_train_cmd(  # long: one annotated parameter per option
    data: Annotated[Path, typer.Option("--data", "-d", help="Class-folder dataset: one subfolder of images per "
                                       "class.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="File to write.", show_default="classifier."
                                                "safetensors beside --model, else ./classifier.safetensors")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Train for this model: its image size and "
                                                 "channels, and --out beside it (where eval finds it).",
                                                 show_default=False)] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", min=8, help="Input side.",
                                                      show_default=f"the model's, else {CLASSIFIER_TRAIN.image_size}")]
    = None,
    nc: Annotated[Optional[int], typer.Option("--nc", help="Channels, 1 or 3.", callback=check_channels,
                                              show_default=f"the model's, else {CLASSIFIER_TRAIN.nc}")] = None,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Passes over the training images.")]
    = CLASSIFIER_TRAIN.epochs,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Batch size.")]
    = CLASSIFIER_TRAIN.batch_size,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Peak AdamW learning rate (one-cycle schedule).")]
    = CLASSIFIER_TRAIN.lr,
    width: Annotated[int, typer.Option("--width", min=1, help="Channels of the first conv stage.")]
    = CLASSIFIER_TRAIN.width,
    feature_dim: Annotated[int, typer.Option("--feature-dim", min=1, help="Length of the feature vector eval "
                                             "uses.")] = CLASSIFIER_TRAIN.feature_dim,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, help="Share of training "
                                                "images kept aside to measure accuracy.")]
    = CLASSIFIER_TRAIN.val_fraction,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help="Leave out N images, the last by file name in "
                                         "each class folder (as `gantools train --holdout`); evaluate on them "
                                         "with `classifier eval --holdout N`.")] = CLASSIFIER_TRAIN.holdout,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random small shifts and scalings.")]
    = CLASSIFIER_TRAIN.augment,
    seed: SeedOpt = CLASSIFIER_TRAIN.seed,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a small CNN classifier on class folders (e.g. digits in 0/ ... 9/)."""
    check_out_file(out)
    from ..classifier import CLASSIFIER_COMPONENT, train_classifier

    sizes: dict[str, Any] = {"image_size": image_size, "nc": nc}
    if model is not None:
        from ..models import load_model

        gan = load_model(model)
        sizes = {"image_size": image_size or gan.config.image_size, "nc": nc or gan.config.nc}
        out = out or default_companion(gan.path, CLASSIFIER_COMPONENT)
    out = out or Path(f"{CLASSIFIER_COMPONENT}.safetensors")
    with Reporter(quiet) as rep, on_interrupt(lambda: kept_file(out, "the classifier is written only when training "
                                                                     "ends", ", with fewer --epochs to finish sooner")):
        result = train_classifier(data, out=out, epochs=epochs, batch_size=batch_size, lr=lr, width=width,
                                  feature_dim=feature_dim, val_fraction=val_fraction, holdout=holdout,
                                  augment=augment, seed=seed, device=device, progress=rep,
                                  **{k: v for k, v in sizes.items() if v is not None})
    if json_out:
        print_json(result.to_dict())
        return
    val = f"{100 * result.val_accuracy:.2f}%" if result.val_accuracy is not None else "n/a"
    held = (f"{holdout} images held out: `classifier eval --holdout {holdout}` scores them" if holdout else
            "no images held out: `classifier eval` on this folder scores training images")
    typer.echo(f"{result.path}  ({len(result.classifier.classes)} classes, {result.n_train} training images, "
               f"validation accuracy {val}, {result.seconds:.0f} s; {held})")


@classifier_app.command("eval")
def classifier_eval_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="Class-folder dataset to classify.")],
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="Classifier .safetensors.",
                                                       show_default="the one beside --model")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Use this model's classifier.safetensors.",
                                                 show_default=False)] = None,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help="Classify only the N images that `train "
                                         "--holdout N` leaves out (the last by file name in each class folder); an "
                                         "error when the classifier was trained on some of them.")]
    = CLASSIFIER_EVAL.holdout,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per forward pass.")]
    = CLASSIFIER_EVAL.batch_size,
    device: DeviceOpt = DEFAULT_DEVICE,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy of a classifier on a class-folder dataset, overall and per class."""
    if (classifier is None) == (model is None):
        raise typer.BadParameter("give --classifier PATH or --model M (whose classifier.safetensors is used), "
                                 "one of them")
    from ..classifier import evaluate_classifier

    with Reporter(quiet) as rep, on_interrupt(lambda: nothing_kept("classifier eval only prints its scores")):
        result = evaluate_classifier(classifier, data, holdout=holdout, batch_size=batch_size, device=device,
                                     progress=rep, model=model)
    if json_out:
        print_json(result.to_dict())
        return
    _show_accuracy(result, holdout)


def _show_accuracy(result: Any, holdout: int) -> None:
    from rich.table import Table

    if result.trained_on:
        what = f" ({result.trained_on} of them training images: not a held-out score)"
    elif result.trained_on == 0:
        what = " (held out: none of them was a training image)"
    else:
        what = f" (the last {holdout} of each folder's share)" if holdout else ""
    table = Table(title=f"accuracy {100 * result.accuracy:.2f}% on {result.n} images of {result.data}{what}")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("accuracy", justify="right")
    for c, acc in result.per_class.items():
        table.add_row(c, str(result.counts[c]), f"{100 * acc:.1f}%")
    stdout_console().print(table)
