"""Scoring a segmenter against a labelled dataset's labels: per-concept IoU, mIoU, pixel accuracy."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np
import torch

from ..utils import GantoolsError, ProgressCallback, from_uint8, notice, report, resolve_device
from .config import EVAL_SEED, eval_defaults, is_scenes
from .labelled import load_pairs, open_labelled, require_labelled
from .protocol import Segmenter, check_labels, describe_segmenter
from .resolve import resolve_segmenter

if TYPE_CHECKING:
    from ..types import DeviceSpec, SegmenterSpec


@dataclass
class SegmenterEvalResult:
    """Per-concept IoU of a segmenter on a labelled dataset.

    IoU is dataset-level: the sum over images of intersections over the sum of unions. A concept
    that is neither in the labels nor in the predictions has IoU None and does not count in miou.

    Attributes:
        concepts: the dataset's concept names.
        iou: per concept, IoU or None.
        intersection, union: per concept, pixel counts.
        support: per concept, labelled pixels.
        miou: mean IoU over the concepts that occur.
        pixel_accuracy: fraction of pixels labelled right.
        n: images evaluated.
        segmenter: its description.
    """

    concepts: list[str]
    iou: list[float | None]
    intersection: list[int]
    union: list[int]
    support: list[int]
    miou: float
    pixel_accuracy: float
    n: int
    segmenter: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def per_concept(self) -> dict[str, float | None]:
        """IoU by concept name."""
        return dict(zip(self.concepts, self.iou))


# The name this result had before results were all called *Result.
SegmenterEval = SegmenterEvalResult


def concept_map(seg_concepts: Sequence[str], data_concepts: Sequence[str]) -> torch.Tensor:
    """Segmenter id -> dataset id by name (-1 for a segmenter concept the dataset lacks)."""
    if list(seg_concepts) == list(data_concepts):
        return torch.arange(len(data_concepts))
    index = {c: i for i, c in enumerate(data_concepts)}
    mapping = torch.tensor([index.get(c, -1) for c in seg_concepts])
    if (mapping < 0).all():
        raise GantoolsError(f"the segmenter's concepts ({', '.join(list(seg_concepts)[:6])}...) share no name with "
                            f"the dataset's ({', '.join(list(data_concepts)[:6])}...)")
    return mapping


@dataclass
class _Tally:
    """Pixel counts per dataset concept, summed over batches."""

    k: int
    inter: torch.Tensor = field(init=False)
    union: torch.Tensor = field(init=False)
    support: torch.Tensor = field(init=False)
    correct: int = 0
    total: int = 0

    def __post_init__(self) -> None:
        self.inter, self.union, self.support = (torch.zeros(self.k, dtype=torch.long) for _ in range(3))

    def add(self, pred: torch.Tensor, labels: torch.Tensor) -> None:
        """`pred` in dataset ids (-1: a concept the dataset lacks, always wrong), `labels` the truth."""
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.k):
            raise GantoolsError(f"the dataset has label id {int(labels.max())} outside its {self.k} concepts")
        hit = pred == labels
        self.correct += int(hit.sum())
        self.total += labels.numel()
        lab_count = torch.bincount(labels.flatten(), minlength=self.k)
        pred_count = torch.bincount(pred[pred >= 0].flatten(), minlength=self.k)
        hit_count = torch.bincount(labels[hit].flatten(), minlength=self.k)
        self.inter += hit_count
        self.union += lab_count + pred_count - hit_count
        self.support += lab_count

    def result(self, concepts: list[str], n: int, segmenter: str) -> SegmenterEvalResult:
        iou = [float(i) / float(u) if u > 0 else None for i, u in zip(self.inter.tolist(), self.union.tolist())]
        present = [v for v in iou if v is not None]
        return SegmenterEvalResult(concepts=concepts, iou=iou, intersection=self.inter.tolist(),
                                   union=self.union.tolist(), support=self.support.tolist(),
                                   miou=float(np.mean(present)) if present else float("nan"),
                                   pixel_accuracy=self.correct / max(self.total, 1), n=n, segmenter=segmenter)


def evaluate_segmenter(segmenter: "SegmenterSpec", dataset: Any = "scenes", n: int | None = None,
                       batch_size: int = 64, device: "DeviceSpec" = None, progress: ProgressCallback | None = None,
                       indices: Sequence[int] | None = None, *, seed: int = EVAL_SEED, image_size: int | None = None,
                       nc: int | None = None) -> SegmenterEvalResult:
    """Score a segmenter against a labelled dataset's labels.

    Args:
        segmenter: anything satisfying the Segmenter protocol, or a spec for `resolve_segmenter`.
        dataset: a labelled dataset (items (uint8 image, label), attribute `concepts`), or one to open:
            "scenes" or a labelled folder (see `open_labelled`), with `seed`, `image_size` and `nc`.
        n: evaluate the first n items (default: all; `EVAL_SCENES` of scenes opened here).
        batch_size: images per call of the segmenter.
        device: where the images are put before calling the segmenter (None: where a learned
            segmenter lives, else "auto").
        progress: callback.
        indices: explicit items to evaluate (instead of the first n).
        seed: seed of scenes opened here; a seed the segmenter was trained or validated on gets a warning.
        image_size, nc: of a dataset opened here (default: the segmenter's own, else 64 px and 3 channels).
    """
    seg = resolve_segmenter(segmenter, device=device)
    if isinstance(dataset, (str, os.PathLike)):
        n, dataset = _open_for(seg, dataset, n, seed, image_size, nc, progress)
    require_labelled(dataset)
    concepts = list(dataset.concepts)
    seg_concepts = list(getattr(seg, "concepts", []) or [])
    mapping = concept_map(seg_concepts, concepts)
    if indices is None:
        indices = range(len(dataset) if n is None else min(n, len(dataset)))
    indices = list(indices)
    if not indices:
        raise GantoolsError("no images to evaluate on (n = 0 or an empty dataset)")
    dev = resolve_device(device, seg)
    tally = _Tally(len(concepts))
    for start in range(0, len(indices), batch_size):
        images, labels = load_pairs(dataset, indices[start:start + batch_size])
        x = from_uint8(images).to(dev)
        pred = check_labels(seg(x), x, len(seg_concepts)).cpu()
        tally.add(mapping[pred], labels)
        report(progress, "evaluate segmenter", min(start + batch_size, len(indices)), len(indices))
    return tally.result(concepts, len(indices), describe_segmenter(seg))


def _open_for(seg: Segmenter, data: str | os.PathLike, n: int | None, seed: int, image_size: int | None,
              nc: int | None, progress: ProgressCallback | None) -> tuple[int | None, Any]:
    """(n, dataset) for evaluating `seg` on a dataset named by a spec, with the evaluation defaults."""
    n, size, channels = eval_defaults(str(data), n, image_size, nc, getattr(seg, "config", None))
    training = (getattr(seg, "metadata", None) or {}).get("training") or {}
    if is_scenes(str(data)) and seed in (training.get("seed"), training.get("validation_seed")):
        notice(progress, f"warning: seed {seed} is one this segmenter was trained or validated on; "
                         "use another seed for an unbiased score")
    return n, open_labelled(str(data), image_size=size, nc=channels, n=n, seed=seed, progress=progress)


__all__ = ["SegmenterEval", "SegmenterEvalResult", "concept_map", "evaluate_segmenter"]
