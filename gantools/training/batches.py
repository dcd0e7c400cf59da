"""The data order of a run and its real images.

The order is an endless stream of per-epoch permutations, each derived from (seed, epoch), so the
batch of any step follows from the step number alone and a resumed run sees exactly the batches it
would have seen.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from ..data import batch_images
from ..utils import ProgressCallback, report

# Materialise generated (built-in) datasets in memory up to this many bytes of uint8 pixels.
MATERIALIZE_LIMIT = 4 * 1024**3


def derived_seed(*values: int) -> int:
    """A seed derived from several values (numpy's SeedSequence): independent streams from one run seed."""
    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1, np.uint64)[0]
               >> 1)


class BatchStream:
    """Indices of real batch b: the slice [b*B, (b+1)*B) of the concatenated epoch permutations.

    Any batch follows from its number alone, so a resumed run sees exactly the batches it would have.
    With several processes (data-parallel training under torchrun), global batch b is the slice
    [b*P*B, (b+1)*P*B) and process r takes its r-th block of B: the processes see disjoint shares of
    every epoch, in one seeded order.
    """

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, processes: int = 1) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.processes = rank, processes
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        """The data order of one epoch (the last few are kept)."""
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(derived_seed(self.seed, 1, epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def batch(self, index: int) -> torch.Tensor:
        """The dataset indices of real batch `index` (this process's share of it)."""
        first = (index * self.processes + self.rank) * self.batch_size
        positions = torch.arange(first, first + self.batch_size)
        epochs, offsets = positions // self.n, positions % self.n
        out = torch.empty_like(positions)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = self.permutation(e)[offsets[sel]]
        return out


class TrainingImages:
    """A run's real images as uint8: one tensor (on the training device when it is CUDA) or a streamed dataset."""

    def __init__(self, dataset: Any, n: int, device: torch.device, progress: ProgressCallback | None) -> None:
        self.dataset, self.n, self.device = dataset, n, device
        images = getattr(dataset, "images", None)
        if not isinstance(images, torch.Tensor):
            size = n * dataset.nc * dataset.image_size**2
            images = self._materialize(dataset, n, progress) if size <= MATERIALIZE_LIMIT else None
        if images is not None:
            images = images[:n]
            if device.type == "cuda":
                images = images.to(device)  # resident on the GPU: no host transfer per batch
        self.images = images

    @staticmethod
    def _materialize(dataset: Any, n: int, progress: ProgressCallback | None) -> torch.Tensor:
        # Generated datasets (scenes) are rendered once instead of once per epoch.
        chunks, chunk = [], 256
        for start in range(0, n, chunk):
            chunks.append(batch_images(dataset, range(start, min(n, start + chunk))))
            report(progress, "load data", min(n, start + chunk), n)
        return torch.cat(chunks)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `indices`, on the training device."""
        if self.images is not None:
            batch = self.images[indices.to(self.images.device)]
        else:
            batch = batch_images(self.dataset, indices)
        return batch.to(self.device, non_blocking=True)


__all__ = ["MATERIALIZE_LIMIT", "BatchStream", "TrainingImages", "derived_seed"]
