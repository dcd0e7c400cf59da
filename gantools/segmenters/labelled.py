"""Labelled datasets for segmenters: opening one, and reading its (image, label) pairs into tensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

import torch

from .. import data
from ..utils import GantoolsError, ProgressCallback, report


def require_labelled(dataset: Any) -> None:
    """Refuse a dataset without per-pixel labels (no `concepts`), saying what a labelled one is."""
    if not hasattr(dataset, "concepts"):
        raise GantoolsError(f"{type(dataset).__name__} has no labels: a labelled dataset is 'scenes' or a folder "
                            f"with images/, labels/ and concepts.json (as written by `gantools data scenes`)")


def open_labelled(spec: Any, image_size: int | None = 64, nc: int = 3, n: int | None = None, seed: int = 0,
                  progress: ProgressCallback | None = None) -> Any:
    """A labelled dataset: a dataset object with `concepts` (returned as is), "scenes", or a labelled folder."""
    if not isinstance(spec, (str, os.PathLike)):
        require_labelled(spec)
        return spec
    path = Path(spec)
    if path.is_dir() and ((path / "labels").exists() or (path / "concepts.json").exists()):
        # A (possibly incomplete) labelled layout: LabelledFolder says what is missing or mismatched.
        ds = data.LabelledFolder(path, image_size=image_size, nc=nc, progress=progress)
    else:
        ds = data.open_dataset(spec, image_size=image_size or 64, nc=nc, n=n, seed=seed, progress=progress)
    require_labelled(ds)
    return ds


def load_pairs(dataset: Any, indices: Sequence[int], progress: ProgressCallback | None = None,
               task: str = "") -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and int64 labels of the given items, as two stacked tensors (`task` names the
    progress reports; none when empty)."""
    indices = [int(i) for i in indices]
    total = len(indices)
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):  # in memory (LabelledFolder)
        idx = torch.as_tensor(indices, dtype=torch.long)
        return images[idx], labels[idx].long()
    batch = getattr(dataset, "batch", None)
    out_x, out_y = [], []
    chunk = 250
    for start in range(0, total, chunk):
        part = indices[start:start + chunk]
        if callable(batch):  # Scenes renders a batch at once
            x, y = batch(part)
        else:
            pairs = [dataset[i] for i in part]
            x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        out_x.append(x)
        out_y.append(y.long())
        if task:
            report(progress, task, min(start + chunk, total), total)
    return torch.cat(out_x), torch.cat(out_y)


class TensorPairs:
    """Labelled pairs held in two tensors (e.g. a held-out split), usable by evaluate_segmenter."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, concepts: list[str]) -> None:
        self.images, self.labels, self.concepts = images, labels, concepts
        self.nc, self.image_size = images.shape[1], images.shape[-1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]


__all__ = ["TensorPairs", "load_pairs", "open_labelled", "require_labelled"]
