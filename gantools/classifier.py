"""A small CNN classifier for class-folder datasets (e.g. MNIST digits in folders 0/ ... 9/).

`gantools eval` uses a model's companion classifier (`classifier.safetensors` beside the model) as
its domain feature extractor (`features`, the penultimate layer) and to measure class coverage of
generated samples (`predict_proba`). Images go in as N x nc x H x W floats in [-1, 1], like the
generators' outputs; other sizes are resized to the classifier's own.

File format: `save_safetensors(path, {"classifier": module}, {"classifier_config": {...}, "training": {...}})`.
"""

from __future__ import annotations

import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .data import ImageFolder, find_images, split_holdout
from .defaults import CLASSIFIER_EVAL, CLASSIFIER_TRAIN
from .models import GAN, component_state, find_companion, load_state, read_safetensors, save_safetensors
from .utils import Config, GantoolsError, ProgressCallback, from_uint8, notice, report, resolve_device

if TYPE_CHECKING:
    from .types import DeviceSpec

CLASSIFIER_COMPONENT = "classifier"  # classifier.safetensors, beside a model
CONFIG_KEY = "classifier_config"  # the config's key in a classifier file's metadata

CONFIDENT = 0.9  # the confidence threshold for "clearly a <class>" in coverage statistics


def _natural_key(text: str) -> tuple:
    # "2" before "10": class folders named by number sort as numbers.
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text))


@dataclass
class ClassifierConfig(Config):
    """Architecture and input of a classifier.

    Args:
        classes: class names, in output order (the class folders' names).
        image_size: side of the square input; other sizes are resized to it.
        nc: input channels, 1 or 3.
        width: channels of the first conv stage (then 2x, 4x).
        feature_dim: length of the penultimate feature vector (`features`).
    """

    classes: list[str]
    image_size: int = CLASSIFIER_TRAIN.image_size
    nc: int = CLASSIFIER_TRAIN.nc
    width: int = CLASSIFIER_TRAIN.width
    feature_dim: int = CLASSIFIER_TRAIN.feature_dim

    def __post_init__(self) -> None:
        if len(self.classes) < 2:
            raise GantoolsError(f"a classifier needs at least 2 classes, got {self.classes}")
        if self.nc not in (1, 3):
            raise GantoolsError(f"nc={self.nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        if self.image_size < 8:
            raise GantoolsError(f"image size {self.image_size} is too small for the classifier (at least 8)")


def _stage(cin: int, cout: int, convs: int) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(convs):
        layers += [nn.Conv2d(cin if i == 0 else cout, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                   nn.ReLU(inplace=True)]
    return nn.Sequential(*layers)


class Classifier(nn.Module):
    """Three conv stages (two 2x poolings), global average pooling, a hidden layer, then the class logits.

    `features(images)` returns the hidden layer (N x feature_dim), the penultimate layer that eval
    uses for FID/KID/precision-recall; `predict_proba(images)` the class probabilities.
    """

    def __init__(self, config: ClassifierConfig) -> None:
        super().__init__()
        self.config = config
        w = config.width
        self.body = nn.Sequential(
            _stage(config.nc, w, 2), nn.MaxPool2d(2),
            _stage(w, 2 * w, 2), nn.MaxPool2d(2),
            _stage(2 * w, 4 * w, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        )
        self.hidden = nn.Sequential(nn.Linear(4 * w, config.feature_dim), nn.ReLU(inplace=True))
        self.dropout = nn.Dropout(0.2)
        self.head = nn.Linear(config.feature_dim, len(config.classes))

    @property
    def classes(self) -> list[str]:
        """Class names, in output order."""
        return self.config.classes

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        """Float [-1, 1] (or uint8) images of any size -> this classifier's channels and size."""
        if images.dtype == torch.uint8:
            images = from_uint8(images)
        images = images.to(next(self.parameters()).device, torch.float32)
        if images.shape[1] != self.config.nc:
            if self.config.nc == 1:  # RGB -> luma (ITU-R 601, as PIL's "L" conversion)
                weights = torch.tensor([0.299, 0.587, 0.114], device=images.device).view(1, 3, 1, 1)
                images = (images * weights).sum(1, keepdim=True)
            elif images.shape[1] == 1:
                images = images.expand(-1, 3, -1, -1)
            else:
                raise GantoolsError(f"images have {images.shape[1]} channels; the classifier takes {self.config.nc}")
        s = self.config.image_size
        if images.shape[-2:] != (s, s):
            images = F.interpolate(images, size=(s, s), mode="bilinear", align_corners=False, antialias=True)
        return images

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Class logits, N x classes."""
        return self.head(self.dropout(self.hidden(self.body(self._prepare(images)))))

    @torch.no_grad()
    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer features, N x feature_dim (float32, on the classifier's device)."""
        return self.hidden(self.body(self._prepare(images)))

    @torch.no_grad()
    def predict_proba(self, images: torch.Tensor) -> torch.Tensor:
        """Class probabilities, N x classes (rows sum to 1)."""
        return self.forward(images).softmax(dim=1)

    @torch.no_grad()
    def features_and_proba(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """`features` and `predict_proba` from one forward pass (eval mode: dropout is off)."""
        features = self.hidden(self.body(self._prepare(images)))
        return features, self.head(self.dropout(features)).softmax(dim=1)


# ---------------------------------------------------------------------------------------------
# Class folders


def class_folder_files(root: str | os.PathLike) -> tuple[list[Path], list[int], list[str]]:
    """All images of a class-folder dataset: (files, class indices, class names).

    The class of an image is its top-level subfolder under `root` (the layout torchvision's
    ImageFolder reads); class names are the subfolder names in natural order ("2" before "10").
    """
    root = Path(root)
    files = find_images(root)
    classes = sorted({p.relative_to(root).parts[0] for p in files if len(p.relative_to(root).parts) > 1},
                     key=_natural_key)
    if len(classes) < 2:
        raise GantoolsError(f"{root} is not a class-folder dataset: put each class's images in its own "
                            f"subfolder (e.g. {root}/0/*.png, {root}/1/*.png); found {len(classes)} class folder(s)")
    index = {c: i for i, c in enumerate(classes)}
    kept = [p for p in files if len(p.relative_to(root).parts) > 1]
    return kept, [index[p.relative_to(root).parts[0]] for p in kept], classes


@dataclass
class LabeledImages:
    """Decoded class-folder images: uint8 N x nc x S x S, int64 labels, class names, files."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    files: list[Path]


def load_class_folder(root: str | os.PathLike, image_size: int, nc: int, holdout: int = 0, part: str = "train",
                      progress: ProgressCallback | None = None) -> LabeledImages:
    """Decode a class-folder dataset, optionally only its training part or only its held-out part.

    Args:
        root: folder with one subfolder per class.
        image_size, nc: size and channels the images are converted to.
        holdout: images held out as `data.split_holdout` picks them (as `gantools train --holdout`).
        part: "train" (all but the held-out images), "holdout" (only those) or "all".
        progress: callback for decoding progress and skipped-file notices.
    """
    files, labels, classes = class_folder_files(root)
    label_of = dict(zip(files, labels))
    if part not in ("train", "holdout", "all"):
        raise GantoolsError(f"unknown part {part!r}: use train, holdout or all")
    if holdout and part != "all":
        train_files, held = split_holdout(files, holdout)
        files = train_files if part == "train" else held
    folder = ImageFolder(root, image_size, nc, files=files, progress=progress)
    images = folder.images if folder.images is not None else torch.stack([folder[i] for i in range(len(folder))])
    y = torch.tensor([label_of[p] for p in folder.files], dtype=torch.long)
    return LabeledImages(images, y, classes, list(folder.files))


# ---------------------------------------------------------------------------------------------
# Training, saving, loading


@dataclass
class ClassifierTrainResult:
    """What `train_classifier` returns: the classifier (eval mode) and how training went."""

    classifier: Classifier
    train_accuracy: float
    val_accuracy: float | None
    n_train: int
    n_val: int
    epochs: int
    seconds: float
    path: Path | None = None
    per_class_counts: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = {k: v for k, v in asdict(self).items() if k != "classifier"}
        d["path"] = str(self.path) if self.path else None
        d["classes"] = self.classifier.classes
        return d


# The name this result had before results were all called *Result.
ClassifierTraining = ClassifierTrainResult


@dataclass
class ClassifierTrainConfig(Config):
    """How `train_classifier` trains (recorded, with the data, in the classifier file's "training" metadata).

    Args:
        epochs, batch_size, lr: AdamW training settings (one-cycle learning-rate schedule).
        val_fraction: a seeded random share of the training images kept aside to measure accuracy.
        holdout: images held out as `data.split_holdout` picks them (as `gantools train --holdout`) are
            not used at all (evaluate on them later with `evaluate_classifier(..., holdout=N)`).
        augment: random small shifts and scalings during training.
        seed: seeds the split, the initial weights and the batches.
    """

    epochs: int = CLASSIFIER_TRAIN.epochs
    batch_size: int = CLASSIFIER_TRAIN.batch_size
    lr: float = CLASSIFIER_TRAIN.lr
    val_fraction: float = CLASSIFIER_TRAIN.val_fraction
    holdout: int = CLASSIFIER_TRAIN.holdout
    augment: bool = CLASSIFIER_TRAIN.augment
    seed: int = CLASSIFIER_TRAIN.seed

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.batch_size < 1:
            raise GantoolsError("epochs and batch_size must be at least 1")
        if not self.lr > 0:
            raise GantoolsError(f"the learning rate lr must be positive, got {self.lr}")
        if not 0 <= self.val_fraction < 1:
            raise GantoolsError(f"val_fraction must be in [0, 1), got {self.val_fraction}")


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Small random shifts (up to 1/10 of the side) and scalings (0.9-1.1): generated digits are not centred exactly."""
    n = x.shape[0]
    scale = 1 + (torch.rand(n, generator=gen) - 0.5) * 0.2
    shift = (torch.rand(n, 2, generator=gen) - 0.5) * 0.2 * 2  # affine_grid units: the side is 2
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = theta[:, 1, 1] = 1 / scale
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
    # Pad with the background value (-1 in [-1, 1]) by shifting so that zeros padding means background.
    return F.grid_sample(x + 1, grid, align_corners=False, padding_mode="zeros") - 1


def train_classifier(data_dir: str | os.PathLike, image_size: int = CLASSIFIER_TRAIN.image_size,
                     nc: int = CLASSIFIER_TRAIN.nc, out: str | os.PathLike | None = None,
                     epochs: int = CLASSIFIER_TRAIN.epochs, batch_size: int = CLASSIFIER_TRAIN.batch_size,
                     lr: float = CLASSIFIER_TRAIN.lr, width: int = CLASSIFIER_TRAIN.width,
                     feature_dim: int = CLASSIFIER_TRAIN.feature_dim,
                     val_fraction: float = CLASSIFIER_TRAIN.val_fraction, holdout: int = CLASSIFIER_TRAIN.holdout,
                     augment: bool = CLASSIFIER_TRAIN.augment, seed: int = CLASSIFIER_TRAIN.seed,
                     device: "DeviceSpec" = None, progress: ProgressCallback | None = None) -> ClassifierTrainResult:
    """Train a classifier on a class-folder dataset; save it as safetensors when `out` is given.

    Args:
        data_dir: folder with one subfolder of images per class.
        image_size, nc: input size and channels (use the GAN's, so generated images fit directly).
        out: where to write classifier.safetensors (e.g. `models.companion_path(model, "classifier")`).
        epochs, batch_size, lr, val_fraction, holdout, augment, seed: see ClassifierTrainConfig.
        width, feature_dim: network size (see ClassifierConfig).
        device: "cpu", "cuda", "auto" (None: "auto").
        progress: callback (per-epoch loss and accuracy).
    """
    settings = ClassifierTrainConfig(epochs=epochs, batch_size=batch_size, lr=lr, val_fraction=val_fraction,
                                     holdout=holdout, augment=augment, seed=seed)
    if width < 1 or feature_dim < 1:
        raise GantoolsError("width and feature_dim must be at least 1")
    dev = resolve_device(device)
    data = load_class_folder(data_dir, image_size, nc, holdout=holdout, part="train", progress=progress)
    counts = torch.bincount(data.labels, minlength=len(data.classes))
    empty = [c for c, k in zip(data.classes, counts.tolist()) if k == 0]
    if empty:
        raise GantoolsError(f"class(es) {', '.join(empty)} have no training images"
                            + (f" after holding out {holdout} files (the last of each class)" if holdout else ""))
    gen = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(data.labels), generator=gen)
    n_val = int(round(len(perm) * val_fraction))
    val_idx, train_idx = perm[:n_val], perm[n_val:]
    if len(train_idx) < 2:
        raise GantoolsError(f"only {len(train_idx)} training image(s) in {data_dir}")
    torch.manual_seed(seed)
    config = ClassifierConfig(classes=data.classes, image_size=image_size, nc=nc, width=width,
                              feature_dim=feature_dim)
    model = Classifier(config).to(dev)
    x_all = from_uint8(data.images)  # [-1, 1], kept on the CPU; batches move to the device
    start = time.monotonic()
    train_acc = _fit(model, x_all, data.labels, train_idx, val_idx, settings, gen, dev, progress)
    model.eval()
    val_acc = _accuracy(model, x_all[val_idx], data.labels[val_idx], batch_size * 4) if n_val else None
    result = ClassifierTrainResult(model, train_acc, val_acc, len(train_idx), n_val, epochs,
                                   time.monotonic() - start,
                                   per_class_counts={c: int(k) for c, k in zip(data.classes, counts.tolist())})
    # Which images it learnt from: the folder, its size, and how many were held out (as split_holdout
    # picks them), so that evaluate_classifier can tell a held-out score from one on training images.
    training = {"data": str(Path(data_dir).resolve()), "data_files": len(class_folder_files(data_dir)[0]),
                **settings.to_dict(), "n_train": len(train_idx), "n_val": n_val, "val_accuracy": val_acc,
                "train_accuracy": train_acc, "seconds": round(result.seconds, 1)}
    model.training_info = training  # type: ignore[attr-defined]
    if out is not None:
        result.path = save_classifier(model, out, training)
        notice(progress, f"classifier written to {result.path}")
    return result


def _fit(model: Classifier, x_all: torch.Tensor, y_all: torch.Tensor, train_idx: torch.Tensor, val_idx: torch.Tensor,
         s: ClassifierTrainConfig, gen: torch.Generator, dev: torch.device, progress: ProgressCallback | None) -> float:
    """The training epochs (AdamW, one-cycle schedule); returns the last epoch's training accuracy."""
    steps_per_epoch = max(1, len(train_idx) // s.batch_size)
    opt = torch.optim.AdamW(model.parameters(), lr=s.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=s.lr, total_steps=s.epochs * steps_per_epoch)
    train_acc = 0.0
    for epoch in range(s.epochs):
        model.train()
        order = train_idx[torch.randperm(len(train_idx), generator=gen)]
        correct = seen = 0
        loss_sum = 0.0
        for step in range(steps_per_epoch):
            idx = order[step * s.batch_size:(step + 1) * s.batch_size]
            x, y = x_all[idx], y_all[idx]
            if s.augment:
                x = _augment(x, gen)
            x, y = x.to(dev), y.to(dev)
            logits = model(x)
            loss = F.cross_entropy(logits, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            correct += int((logits.argmax(1) == y).sum())
            seen += len(y)
            loss_sum += float(loss.detach()) * len(y)
        train_acc = correct / max(seen, 1)
        metrics = {"loss": loss_sum / max(seen, 1), "acc": train_acc}
        if len(val_idx) and (epoch == s.epochs - 1 or epoch % 2 == 1):
            model.eval()
            metrics["val_acc"] = _accuracy(model, x_all[val_idx], y_all[val_idx], s.batch_size * 4)
        report(progress, "train classifier", epoch + 1, s.epochs, **metrics)
    return train_acc


@torch.no_grad()
def _accuracy(model: Classifier, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> float:
    if len(y) == 0:
        return float("nan")
    correct = 0
    for i in range(0, len(y), batch_size):
        correct += int((model(x[i:i + batch_size]).argmax(1).cpu() == y[i:i + batch_size]).sum())
    return correct / len(y)


def save_classifier(classifier: Classifier, path: str | os.PathLike, training: dict[str, Any] | None = None) -> Path:
    """Write a classifier as safetensors with its config (classes, input size) in the metadata; returns the path."""
    meta: dict[str, Any] = {CONFIG_KEY: classifier.config.to_dict()}
    if training:
        meta["training"] = training
    return save_safetensors(path, {CLASSIFIER_COMPONENT: classifier}, meta)


def load_classifier(path: str | os.PathLike, device: "DeviceSpec" = None) -> Classifier:
    """Load a classifier written by `train_classifier`/`save_classifier`, in eval mode, on `device` (None: "auto")."""
    tensors, meta = read_safetensors(path, "classifier")
    if CONFIG_KEY not in meta:
        raise GantoolsError(f"{path} is not a gantools classifier (no {CONFIG_KEY} in its metadata)")
    model = Classifier(ClassifierConfig.from_dict(meta[CONFIG_KEY]))
    load_state(model, component_state(tensors, CLASSIFIER_COMPONENT), CLASSIFIER_COMPONENT)
    model.training_info = meta.get("training", {})  # type: ignore[attr-defined]
    return model.to(resolve_device(device)).eval()


def resolve_classifier(classifier: "Classifier | str | os.PathLike | None" = None,
                       model: "GAN | str | os.PathLike | None" = None, device: "DeviceSpec" = None) -> Classifier:
    """The classifier to use: `classifier` itself (a Classifier, or a file to load), or the one stored
    beside `model` (classifier.safetensors next to its model file). Give one of the two.

    Args:
        classifier: a loaded Classifier (returned as it is, moved when `device` is given) or a file.
        model: a loaded GAN or a model spec whose companion classifier is wanted.
        device: where a loaded file runs (None: where `model` lives, else "auto").
    """
    if classifier is not None and model is not None:
        raise GantoolsError("give classifier or model (whose classifier.safetensors is used), not both")
    if isinstance(classifier, Classifier):
        return classifier.to(resolve_device(device, classifier)).eval()
    if classifier is None:
        if model is None:
            raise GantoolsError("give classifier (a .safetensors file) or model (whose classifier.safetensors is used)")
        classifier = find_companion(model, CLASSIFIER_COMPONENT)
        if classifier is None:
            name = model.path if isinstance(model, GAN) else model
            raise GantoolsError(f"model {name} has no {CLASSIFIER_COMPONENT}.safetensors beside it: train one with "
                                f"`gantools classifier train`, or give classifier (a file)")
    return load_classifier(classifier, resolve_device(device, model))


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class ClassifierEvalResult:
    """Accuracy of a classifier on a labelled folder, overall and per class.

    Args:
        part: "holdout" (only the held-out images) or "all".
        trained_on: how many of the evaluated images the classifier was trained on (from the
            training record in its file); None when that cannot be told (no record, or another folder).
    """

    accuracy: float
    n: int
    per_class: dict[str, float]
    counts: dict[str, int]
    confusion: list[list[int]]
    data: str
    part: str
    trained_on: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# The name this result had before results were all called *Result.
ClassifierEvaluation = ClassifierEvalResult


@torch.no_grad()
def evaluate_classifier(classifier: "Classifier | str | os.PathLike | None", data_dir: str | os.PathLike,
                        holdout: int = CLASSIFIER_EVAL.holdout, batch_size: int = CLASSIFIER_EVAL.batch_size,
                        device: "DeviceSpec" = None,
                        progress: ProgressCallback | None = None, *,
                        model: "GAN | str | os.PathLike | None" = None) -> ClassifierEvalResult:
    """Accuracy on a class-folder dataset (only its held-out files, as `data.split_holdout` picks them, when holdout > 0).

    Class folders are matched to the classifier's classes by name; a folder the classifier does not
    know is an error. When the classifier was trained on this folder (its file records the folder
    and the holdout it was trained with), a held-out evaluation (holdout > 0) that would include
    training images is an error, and an evaluation of all images warns through `progress` that
    the score is not a held-out one.

    Args:
        classifier: a Classifier or a classifier file; or None with `model` (see `resolve_classifier`).
        data_dir: the class-folder dataset.
        holdout: evaluate only the images `train_classifier(..., holdout=N)` leaves out.
        batch_size: images per forward pass.
        device: where it runs (None: where a loaded classifier lives, else "auto").
        progress: callback (and the warning above).
        model: a model whose companion classifier (classifier.safetensors beside it) is evaluated.
    """
    if batch_size < 1 or holdout < 0:
        raise GantoolsError("batch_size must be at least 1 and holdout at least 0")
    clf = resolve_classifier(classifier, model, device)
    part = "holdout" if holdout else "all"
    data = load_class_folder(data_dir, clf.config.image_size, clf.config.nc, holdout=holdout, part=part,
                             progress=progress)
    unknown = [c for c in data.classes if c not in clf.classes]
    if unknown:
        raise GantoolsError(f"class folder(s) {', '.join(unknown)} are not classes of this classifier "
                            f"({', '.join(clf.classes)})")
    trained_on = training_overlap(clf, data_dir, data.files, progress)
    if trained_on and holdout:
        info = clf.training_info  # type: ignore[attr-defined]
        fix = (f"evaluate with holdout={info['holdout']} (or less)" if info["holdout"]
               else f"train the classifier with holdout={holdout} (or more) to keep them out of its training")
        raise GantoolsError(f"{trained_on} of the {len(data.files)} held-out images asked for (holdout={holdout}) were "
                            f"used to train this classifier (trained with holdout={info['holdout']} on {info['data']}):"
                            f" its accuracy on them is not a held-out score; {fix}")
    if trained_on:
        h = clf.training_info["holdout"]  # type: ignore[attr-defined]
        notice(progress, f"warning: {trained_on} of these {len(data.files)} images were used to train this classifier: "
                         "this accuracy is not a held-out score"
                         + (f" (holdout={h} evaluates on the {h} it never saw)" if h else
                            " (train with holdout=N to keep N images out, then evaluate with the same holdout)"))
    to_model = torch.tensor([clf.classes.index(c) for c in data.classes])
    y = to_model[data.labels]
    k = len(clf.classes)
    confusion = torch.zeros(k, k, dtype=torch.long)
    for i in range(0, len(y), batch_size):
        pred = clf(from_uint8(data.images[i:i + batch_size])).argmax(1).cpu()
        confusion += torch.bincount(y[i:i + batch_size] * k + pred, minlength=k * k).view(k, k)
        report(progress, "classify", min(i + batch_size, len(y)), len(y))
    totals = confusion.sum(1)
    per_class = {c: float(confusion[j, j] / totals[j]) for j, c in enumerate(clf.classes) if totals[j] > 0}
    return ClassifierEvalResult(float(confusion.diag().sum() / max(len(y), 1)), len(y), per_class,
                                {c: int(totals[j]) for j, c in enumerate(clf.classes)}, confusion.tolist(),
                                str(data_dir), part, trained_on)


def training_overlap(classifier: Classifier, data_dir: str | os.PathLike, files: Sequence[Path],
                     progress: ProgressCallback | None = None) -> int | None:
    """How many of `files` (images of the class-folder dataset `data_dir`) the classifier was trained on.

    Read from the training record in the classifier's file (the folder and its holdout: every image
    of that folder but the held-out ones, validation share included, counts as training). None when
    it cannot be told: no record, or `data_dir` is not the folder it was trained on.
    """
    info = getattr(classifier, "training_info", None) or {}
    if "data" not in info or "holdout" not in info:
        return None
    if Path(info["data"]) != Path(data_dir).resolve():
        return None
    all_files = class_folder_files(data_dir)[0]
    then = info.get("data_files")
    if then is not None and then != len(all_files):
        notice(progress, f"{data_dir} had {then} images when the classifier was trained and has {len(all_files)} now: "
                         "which of them it was trained on is judged by the split of the current files")
    try:
        trained, _ = split_holdout(all_files, int(info["holdout"]))
    except GantoolsError:  # the folder shrank below its holdout: its training split cannot be told
        return None
    return len(set(trained) & set(files))


@dataclass
class ClassCoverage:
    """How generated samples spread over the classes, as a classifier sees them.

    Args:
        classes: class names.
        fractions: per class, the share of samples whose most likely class it is (sums to 1).
        confident_fraction: share of samples whose top class probability is >= threshold.
        confident_per_class: per class, the share of all samples confidently classified as it.
        threshold: the confidence threshold (0.9 by default).
        n: number of samples.
    """

    classes: list[str]
    fractions: list[float]
    confident_fraction: float
    confident_per_class: list[float]
    threshold: float
    n: int

    @property
    def min_fraction(self) -> float:
        """The rarest class's share."""
        return min(self.fractions)

    @property
    def max_fraction(self) -> float:
        """The commonest class's share."""
        return max(self.fractions)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d.update(min_fraction=self.min_fraction, max_fraction=self.max_fraction)
        return d


@torch.no_grad()
def class_coverage(classifier: Classifier, images: torch.Tensor, threshold: float = CONFIDENT,
                   batch_size: int = 256) -> ClassCoverage:
    """Class shares and confident share of a set of images (N x C x H x W in [-1, 1]).

    Args:
        classifier: the domain classifier.
        images: generated (or real) images.
        threshold: top-class probability that counts as confident.
        batch_size: images per forward pass.
    """
    probs = torch.cat([classifier.predict_proba(images[i:i + batch_size]).cpu()
                       for i in range(0, len(images), batch_size)])
    return coverage_from_probs(probs, classifier.classes, threshold)


def coverage_from_probs(probs: torch.Tensor, classes: list[str], threshold: float = CONFIDENT) -> ClassCoverage:
    """ClassCoverage from an N x classes probability matrix."""
    n, k = probs.shape
    if n == 0:
        raise GantoolsError("no images to measure class coverage on")
    top, pred = probs.max(1)
    fractions = torch.bincount(pred, minlength=k).double() / n
    sure = top >= threshold
    confident = torch.bincount(pred[sure], minlength=k).double() / n
    return ClassCoverage(list(classes), fractions.tolist(), float(sure.double().mean()), confident.tolist(),
                         threshold, n)
