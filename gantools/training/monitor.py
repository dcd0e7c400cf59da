"""Watching a run: the curves drawn from stats.jsonl, and concept tracking through a segmenter."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Iterable

import torch

from ..models import Generator
from ..utils import from_uint8
from .batches import TrainingImages
from .checkpoint import read_stats


def plot_losses(run_dir: str | os.PathLike) -> Path | None:
    """Draw loss_curve.png (Loss_D and Loss_G against the step) from stats.jsonl; FID in fid_curve.png."""
    from ..reports import line_plot  # matplotlib, only when drawing

    run_dir = Path(run_dir)
    rows = [r for r in read_stats(run_dir) if "Loss_D" in r]
    if not rows:
        return None
    steps = [float(r["step"]) for r in rows]

    def col(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    path = line_plot({"Loss_D": (steps, col("Loss_D")), "Loss_G": (steps, col("Loss_G")),
                      "D(x)": (steps, col("D(x)")), "D(G(z))": (steps, col("D(G(z))_before"))},
                     run_dir / "loss_curve.png", title=f"{run_dir.name}: losses and D outputs",
                     xlabel="step")
    fids = [r for r in read_stats(run_dir) if r.get("fid") is not None]
    if fids:
        line_plot({"FID": ([float(r["step"]) for r in fids], [float(r["fid"]) for r in fids])},
                  run_dir / "fid_curve.png", title=f"{run_dir.name}: FID", xlabel="step", ylabel="FID")
    return path


def plot_concepts(run_dir: str | os.PathLike) -> Path | None:
    """Draw concepts_curve.png: each concept's share of generated pixels against the step, as a
    fraction of its share in real images (1 = as often as in the data), from the tracked evaluations."""
    from ..reports import line_plot  # matplotlib, only when drawing

    run_dir = Path(run_dir)
    rows = [r for r in read_stats(run_dir) if r.get("concepts")]
    if not rows:
        return None
    real = rows[-1]["concepts_real"]
    steps = [float(r["step"]) for r in rows]
    series = {name: (steps, [r["concepts"][name] / real[name] if real[name] > 0 else float("nan") for r in rows])
              for name in real}
    return line_plot(series, run_dir / "concepts_curve.png", xlabel="step", ylabel="generated / real share",
                     title=f"{run_dir.name}: concept pixel shares")


class ConceptTracker:
    """Each concept's pixel share in generated images, through a segmenter, at every evaluation.

    The same seeded latents every time and the real shares measured once on as many training images
    (through the same segmenter), so successive evaluations compare with each other and with the data.

    Args:
        segmenter: a segmenter spec (see segmenters.resolve_segmenter), e.g. TrainConfig.track_concepts.
        n: generated (and at most as many real) images per measurement.
        device: where the segmenter runs.
    """

    SEED = 20240607

    def __init__(self, segmenter: Any, n: int, device: torch.device) -> None:
        from ..segmenters import resolve_segmenter  # a learned segmenter needs segmentation-models-pytorch

        self.n, self.device = n, device
        self.segmenter = resolve_segmenter(segmenter, device=device)
        self.concepts = list(self.segmenter.concepts)
        self.real: list[float] | None = None

    def _shares(self, batches: Iterable[torch.Tensor]) -> list[float]:
        counts = torch.zeros(len(self.concepts), dtype=torch.float64)
        for images in batches:
            with torch.no_grad():
                labels = self.segmenter(images.to(self.device).float())
            counts += torch.bincount(labels.reshape(-1).cpu(), minlength=len(self.concepts))[:len(self.concepts)]
        return (counts / counts.sum().clamp_min(1)).tolist()

    def real_shares(self, images: TrainingImages) -> list[float]:
        """The concepts' pixel shares in (up to n of) the training images, measured once."""
        if self.real is None:
            n = min(self.n, images.n)
            self.real = self._shares(from_uint8(images.get(torch.arange(i, min(i + 100, n))))
                                     for i in range(0, n, 100))
        return self.real

    def measure(self, generator: Generator, images: TrainingImages) -> dict[str, Any]:
        """The stats.jsonl fields of one evaluation: generated and real shares, and their TV distance."""
        n = self.n
        z = generator.sample_z(n, self.SEED, device="cpu")
        with torch.no_grad():
            fake = self._shares(generator(z[i:i + 100].to(self.device)).float() for i in range(0, n, 100))
        real = self.real_shares(images)
        tv = 0.5 * sum(abs(a - b) for a, b in zip(fake, real))
        return {"concepts": dict(zip(self.concepts, fake)), "concepts_real": dict(zip(self.concepts, real)),
                "concepts_tv": tv}


__all__ = ["ConceptTracker", "plot_concepts", "plot_losses"]
