"""The segmenters that need no training: colour terms, and a labelled dataset's own ground truth."""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from ..utils import GantoolsError, ProgressCallback, report, to_uint8
from .labelled import require_labelled
from .protocol import check_images


# The 11 basic colour terms (Berlin & Kay) with a typical sRGB prototype each. Pixels go to the
# nearest prototype in CIELAB, where Euclidean distance roughly follows perceived difference.
COLOR_PROTOTYPES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (200, 25, 30),
    "orange": (245, 135, 20),
    "yellow": (250, 225, 30),
    "green": (40, 155, 50),
    "blue": (35, 80, 210),
    "purple": (120, 45, 150),
    "pink": (245, 150, 190),
    "brown": (120, 75, 35),
}
COLOR_TERMS: list[str] = list(COLOR_PROTOTYPES)


def _rgb2lab(rgb01: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb01, channel_axis=-1).astype(np.float32)


class ColorSegmenter:
    """Labels each pixel with the nearest of the 11 basic colour terms in CIELAB; needs no training.

    Works for 3-channel (RGB) and 1-channel (grayscale) images; grayscale pixels can only be
    black, white or gray. Concepts: black, white, gray, red, orange, yellow, green, blue, purple,
    pink, brown.
    """

    description = "color (11 basic colour terms, nearest CIELAB prototype)"

    def __init__(self) -> None:
        self.concepts: list[str] = list(COLOR_TERMS)
        protos = np.array([COLOR_PROTOTYPES[c] for c in self.concepts], dtype=np.float64) / 255.0
        self.prototypes_lab = torch.from_numpy(_rgb2lab(protos[None])[0])  # 11 x 3

    def __repr__(self) -> str:
        return "ColorSegmenter()"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, (1, 3), "the color segmenter")
        device = images.device
        rgb = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
        if rgb.shape[1] == 1:
            rgb = rgb.expand(-1, 3, -1, -1)
        lab = torch.from_numpy(_rgb2lab(rgb.permute(0, 2, 3, 1).numpy().astype(np.float64)))  # N H W 3
        d = (lab.unsqueeze(-2) - self.prototypes_lab).pow(2).sum(-1)  # N H W 11
        return d.argmin(-1).to(device)


def _content_key(image_uint8: torch.Tensor) -> bytes:
    t = image_uint8.detach().cpu().contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.digest()


class GroundTruthSegmenter:
    """The exact labels of a labelled dataset's own images, found by content.

    Built from a dataset whose items are (uint8 image, int64 label) pairs and which has `concepts`
    (scenes, a labelled folder). Calling it with images of that dataset (as [-1, 1] floats or
    uint8) returns their true labels; any other image raises GantoolsError. Used to validate the
    learned segmenter and the evaluation code.

    Args:
        dataset: the labelled dataset.
        n: index only its first n items (default: all).
        progress: callback for indexing progress.
    """

    def __init__(self, dataset: Any, n: int | None = None, progress: ProgressCallback | None = None) -> None:
        require_labelled(dataset)
        self.dataset = dataset
        self.concepts: list[str] = list(dataset.concepts)
        total = len(dataset) if n is None else min(n, len(dataset))
        self._index: dict[bytes, int] = {}
        for i in range(total):
            image, _ = dataset[i]
            self._index.setdefault(_content_key(image), i)
            if i % 256 == 0 or i == total - 1:
                report(progress, "index ground truth", i + 1, total)
        self.description = f"ground truth of {type(dataset).__name__} ({total} images)"

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"GroundTruthSegmenter({type(self.dataset).__name__}, {len(self)} images)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, (getattr(self.dataset, "nc", images.shape[1]),), "the ground-truth segmenter")
        u8 = images if images.dtype == torch.uint8 else to_uint8(x)
        out = []
        for k, image in enumerate(u8):
            i = self._index.get(_content_key(image))
            if i is None:
                raise GantoolsError(f"the ground-truth segmenter does not know image {k} of this batch: it only labels "
                                    f"the {len(self)} images of its dataset, unchanged and at their own size")
            out.append(torch.as_tensor(self.dataset[i][1]).long())
        return torch.stack(out).to(images.device)


__all__ = ["COLOR_PROTOTYPES", "COLOR_TERMS", "ColorSegmenter", "GroundTruthSegmenter"]
