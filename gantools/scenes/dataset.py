"""The scenes as a dataset: `Scenes` (image i of seed s, rendered on demand) and concept frequencies."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..utils import GantoolsError, ProgressCallback, report
from .canvas import SceneLayout
from .design import CONCEPTS, MAX_SIZE, MIN_SIZE, VERSION, design
from .render import generate, rasterize, scene_layout
from .texture import textures


class Scenes:
    """Procedural outdoor scenes with exact per-pixel labels; image i of seed s is always the same.

    Args:
        n: number of images (the dataset's length; any index below it renders on demand).
        image_size: side in pixels (8 to 1024; 16 to 128 is what the scenes are designed for).
        seed: dataset seed (>= 0); different seeds give different scenes.
        nc: 1 (luminance) or 3 (RGB).
        version: the design version (default: the current one, VERSION); see SceneDesign.

    `scenes[i]` returns (image uint8 nc x S x S, label int64 S x S); `layout(i)` returns the
    scene's geometry (horizon row, palette, object boxes).
    """

    def __init__(self, n: int = 10000, image_size: int = 64, seed: int = 0, nc: int = 3, version: int = VERSION) -> None:
        if int(n) < 1:
            raise GantoolsError(f"scenes: n must be at least 1, got {n}")
        if not MIN_SIZE <= int(image_size) <= MAX_SIZE:
            raise GantoolsError(f"scenes: image_size {image_size} is out of range: use {MIN_SIZE} to {MAX_SIZE} "
                                "(16 to 128 recommended)")
        if nc not in (1, 3):
            raise GantoolsError(f"scenes: nc={nc} is not supported: use 1 (luminance) or 3 (RGB)")
        if int(seed) < 0:
            raise GantoolsError(f"scenes: seed must be >= 0, got {seed}")
        self.n, self.image_size, self.seed, self.nc = int(n), int(image_size), int(seed), int(nc)
        self.version = design(int(version)).version
        self.concepts: list[str] = list(CONCEPTS)
        textures(self.image_size)

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"scene index {index} out of range for {self.n} images")
        return i

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Numpy arrays: (image nc x S x S uint8, labels S x S int64)."""
        b, _, offsets = generate(self.seed, self._index(index), self.image_size, self.version)
        return rasterize(b, offsets, self.nc)

    def layout(self, index: int) -> SceneLayout:
        """The geometry of scene `index` (without rendering it)."""
        i = self._index(index)
        b, info, _ = generate(self.seed, i, self.image_size, self.version)
        return scene_layout(b, info, self.seed, i)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, labels = self.render(index)
        return torch.from_numpy(img), torch.from_numpy(labels)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (images N x nc x S x S uint8, labels N x S x S int64)."""
        pairs = [self.render(i) for i in indices]
        return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))

    def __repr__(self) -> str:
        return (f"Scenes(n={self.n}, image_size={self.image_size}, seed={self.seed}, nc={self.nc}, "
                f"version={self.version})")


# ---------------------------------------------------------------------------------------------
# Concept statistics


class FrequencyCounter:
    """Accumulates per-concept image counts and pixel counts over label maps (`add`), as fractions (`result`)."""

    def __init__(self, num_concepts: int) -> None:
        self.k = num_concepts
        self.images = np.zeros(num_concepts, dtype=np.int64)
        self.pixels = np.zeros(num_concepts, dtype=np.int64)
        self.n = 0
        self.total_pixels = 0

    def add(self, labels: np.ndarray | torch.Tensor) -> None:
        """Count one label map."""
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        counts = np.bincount(labels.reshape(-1), minlength=self.k)[: self.k]
        self.pixels += counts
        self.images += counts > 0
        self.n += 1
        self.total_pixels += labels.size

    def result(self, concepts: Sequence[str]) -> dict[str, dict[str, float]]:
        """{concept: {"image_frequency": ..., "pixel_frequency": ...}} over what was added."""
        n, tp = max(self.n, 1), max(self.total_pixels, 1)
        return {name: {"image_frequency": float(self.images[i] / n), "pixel_frequency": float(self.pixels[i] / tp)}
                for i, name in enumerate(concepts)}


def concept_frequencies(dataset: Any, n: int | None = None,
                        progress: ProgressCallback | None = None) -> dict[str, dict[str, float]]:
    """Per-concept image frequency and pixel frequency over the first n items of a labelled dataset.

    Args:
        dataset: anything indexable returning (image, label) with a `.concepts` list (Scenes,
            LabelledFolder).
        n: how many items (default: all of them).
        progress: callback for progress.

    Returns:
        {concept: {"image_frequency": fraction of images containing it,
                   "pixel_frequency": fraction of all pixels labelled with it}}.
    """
    concepts = getattr(dataset, "concepts", None)
    if not concepts:
        raise GantoolsError("concept frequencies need a labelled dataset (scenes or a folder with labels/)")
    total = len(dataset) if n is None else min(int(n), len(dataset))
    counter = FrequencyCounter(len(concepts))
    render = dataset.render if isinstance(dataset, Scenes) else None
    for i in range(total):
        labels = render(i)[1] if render else dataset[i][1]
        counter.add(labels)
        if i % 256 == 255 or i == total - 1:
            report(progress, "concept frequencies", i + 1, total)
    return counter.result(concepts)
