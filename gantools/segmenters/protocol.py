"""The Segmenter protocol and the checks every segmenter's input and output go through."""

from __future__ import annotations

from typing import Any, Protocol, Sequence, runtime_checkable

import torch

from ..utils import GantoolsError, from_uint8


@runtime_checkable
class Segmenter(Protocol):
    """Anything with `concepts` (names, id = index) that maps images to per-pixel concept ids.

    `segmenter(images)`: images N x C x H x W float in [-1, 1] on any device -> labels N x H x W
    int64 on the same device, at the images' resolution. A plain function works too once it has a
    `concepts` attribute (`fn.concepts = [...]`).
    """

    concepts: list[str]

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def describe_segmenter(segmenter: Any) -> str:
    """A one-line description of a segmenter, for reports (its `description`, else its type)."""
    text = getattr(segmenter, "description", None)
    if isinstance(text, str) and text:
        return text
    name = getattr(segmenter, "__name__", None) or type(segmenter).__name__
    return f"{name} ({len(getattr(segmenter, 'concepts', []))} concepts)"


def check_images(images: torch.Tensor, channels: Sequence[int], who: str) -> torch.Tensor:
    """Validate a batch of images and return it as float in [-1, 1] (uint8 batches are converted)."""
    if not isinstance(images, torch.Tensor):
        raise GantoolsError(f"{who} takes a tensor of images N x C x H x W, got {type(images).__name__}")
    if images.ndim != 4:
        raise GantoolsError(f"{who} takes images N x C x H x W, got a tensor of shape {tuple(images.shape)}")
    if images.shape[1] not in channels:
        want = " or ".join(str(c) for c in channels)
        raise GantoolsError(f"{who} takes {want}-channel images, got {images.shape[1]} channels "
                            f"(shape {tuple(images.shape)})")
    if images.dtype == torch.uint8:
        return from_uint8(images)
    if not images.is_floating_point():
        raise GantoolsError(f"{who} takes float images in [-1, 1] (or uint8), got dtype {images.dtype}")
    return images.float()


def check_labels(labels: Any, images: torch.Tensor, num_concepts: int, who: str = "segmenter") -> torch.Tensor:
    """Check a segmenter's output against the protocol; returns it as int64.

    Raises GantoolsError for a wrong shape or a concept id outside 0..num_concepts-1.
    """
    if not isinstance(labels, torch.Tensor):
        raise GantoolsError(f"{who} returned {type(labels).__name__}, not a tensor of labels N x H x W")
    n, _, h, w = images.shape
    if tuple(labels.shape) != (n, h, w):
        raise GantoolsError(f"{who} returned labels of shape {tuple(labels.shape)}; expected N x H x W = {(n, h, w)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise GantoolsError(f"{who} returned {labels.dtype} labels; concept ids must be integers")
    labels = labels.long()
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_concepts:
            bad = lo if lo < 0 else hi
            raise GantoolsError(f"{who} returned unknown concept id {bad}: it has {num_concepts} concepts "
                                f"(ids 0..{num_concepts - 1})")
    return labels


__all__ = ["Segmenter", "check_images", "check_labels", "describe_segmenter"]
