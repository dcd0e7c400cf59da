"""What interventions measure: each concept's average effect with its 95% CI, and the result types.

An effect is the mean over N samples of the per-sample change of a concept's pixel fraction
(after − before, same latent), with the normal 95% interval mean ± 1.96 · sd / √N. `ablate` returns
an `AblationResult` (the effect of every concept, and the curve over k units ablated), `insert` an
`InsertionResult` (also the change inside the region, by what the region showed before).
Under torchrun the pictures of the first samples are taken by rank 0 and shared (`first_samples`), so
that every process returns the same result.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from . import distributed
from .images import save_image
from .reports import colorize_labels, labelled_grid, line_plot, overlay
from .utils import write_json

Z95 = 1.959963984540054  # two-sided 95% normal quantile


@dataclass
class InterventionEffect:
    """The average effect of an intervention on one concept's pixel fraction, over N samples.

    Attributes:
        concept: the concept measured.
        mean: mean over samples of (fraction after − fraction before); the average causal effect.
        sd: standard deviation of the per-sample changes (N − 1 denominator).
        n: number of samples.
        before, after: mean fraction before and after the edit.
    """

    concept: str
    mean: float
    sd: float
    n: int
    before: float
    after: float

    @property
    def half_width(self) -> float:
        """Half the width of the 95% CI (NaN with no samples)."""
        return Z95 * self.sd / math.sqrt(self.n) if self.n > 0 else float("nan")

    @property
    def ci_low(self) -> float:
        """Lower end of the 95% CI."""
        return self.mean - self.half_width

    @property
    def ci_high(self) -> float:
        """Upper end of the 95% CI."""
        return self.mean + self.half_width

    @classmethod
    def from_samples(cls, concept: str, before: torch.Tensor, after: torch.Tensor) -> "InterventionEffect":
        """From per-sample fractions before and after (1-D tensors of the same length)."""
        before, after = before.double().flatten(), after.double().flatten()
        delta = after - before
        n = int(delta.numel())
        if n == 0:
            return cls(concept, float("nan"), float("nan"), 0, float("nan"), float("nan"))
        sd = float(delta.std(unbiased=True)) if n > 1 else 0.0
        return cls(concept, float(delta.mean()), sd, n, float(before.mean()), float(after.mean()))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the mean, CI, sd, N and the mean fractions before and after."""
        return {"concept": self.concept, "mean": self.mean, "ci_low": self.ci_low, "ci_high": self.ci_high,
                "sd": self.sd, "n": self.n, "before": self.before, "after": self.after}


@dataclass
class ContextEffect:
    """Insertion effects for the samples whose insertion region showed `context` before the edit."""

    context: str
    count: int
    effect: InterventionEffect  # the target concept's change over the whole image
    region: InterventionEffect  # the target concept's change inside the insertion region

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: the context, its sample count and both effects."""
        return {"context": self.context, "count": self.count, "effect": self.effect.to_dict(),
                "region": self.region.to_dict()}


@dataclass
class Samples:
    """A few before/after pairs for pictures: images in [-1, 1], labels, optional image-space region."""

    before: torch.Tensor
    after: torch.Tensor
    labels_before: torch.Tensor
    labels_after: torch.Tensor
    region: torch.Tensor | None = None


def first_samples(samples: Samples | None) -> Samples | None:
    """Rank 0's pictures on every process (`samples` itself alone). Under torchrun rank 0 measures
    the first block of batches, so it holds the first samples, the ones a single process would show."""
    return distributed.broadcast_object(samples)


@dataclass
class AblationResult:
    """What `ablate` measured.

    Attributes:
        layer: canonical layer name.
        units: the units ablated, in ranking order.
        concept: the target concept (given, or else the one that lost most pixels).
        concepts: the segmenter's concepts.
        effects: concept -> effect of ablating all `units` (side effects included).
        curve: concept -> one effect per k in `ks` (the first k units ablated).
        ks: numbers of units ablated along the curve (0 … len(units)).
        settings: model, segmenter, value, strength, N, seed, where the units came from.
        samples: before/after pictures of the first few samples.
    """

    layer: str
    units: list[int]
    concept: str
    concepts: list[str]
    effects: dict[str, InterventionEffect]
    curve: dict[str, list[InterventionEffect]]
    ks: list[int]
    settings: dict[str, Any]
    samples: Samples | None = field(default=None, repr=False)

    @property
    def effect(self) -> InterventionEffect:
        """The effect on the target concept."""
        return self.effects[self.concept]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what effect.json holds)."""
        return {"operation": "ablate", "layer": self.layer, "units": self.units, "concept": self.concept,
                "effect": self.effect.to_dict(),
                "effects": {c: e.to_dict() for c, e in self.effects.items()},
                "curve": _curve_dict(self.ks, self.curve), "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write effect.json, curve.json, curve.png, before_after.png and segmentation.png (the last two,
        labelled grids, when samples were kept) into out_dir; returns out_dir."""
        out = Path(out_dir)
        write_json(out / "effect.json", self.to_dict())
        write_json(out / "curve.json", _curve_dict(self.ks, self.curve))
        # The target plus the three concepts that moved most (gained or lost) at full ablation.
        others = sorted((c for c in self.concepts if c != self.concept), key=lambda c: -abs(self.effects[c].mean))
        shown = [self.concept] + others[:3]
        series = {c: (self.ks, [e.mean for e in self.curve[c]]) for c in shown}
        bands = {c: ([e.ci_low for e in self.curve[c]], [e.ci_high for e in self.curve[c]]) for c in shown}
        line_plot(series, out / "curve.png", bands=bands, xlabel="units ablated (k)",
                  ylabel="change in pixel fraction",
                  title=f"Ablating the top-k units of {self.layer} (target: {self.concept}, 95% CI)")
        if self.samples is not None:
            _save_samples(self.samples, out, len(self.concepts),
                          f"{len(self.units)} units of {self.layer} ablated (target: {self.concept})")
        return out


@dataclass
class InsertionResult:
    """What `insert` measured.

    Attributes:
        layer, units, concept, concepts: as for AblationResult.
        effects: concept -> change of its pixel fraction over the whole image.
        region_effect: change of the target concept's fraction inside the insertion region.
        by_context: context concept -> effects for the samples whose insertion region was mostly
            that concept before the edit (counts add up to N), sorted by count.
        location: {"at": [x, y], "patch": k, "cells": [r0, r1, c0, c1]} or {"mask": path}, plus the
            region's size in pixels.
        settings: model, segmenter, value, strength, N, seed, where the units came from.
        samples: before/after pictures of the first few samples (with the region).
    """

    layer: str
    units: list[int]
    concept: str
    concepts: list[str]
    effects: dict[str, InterventionEffect]
    region_effect: InterventionEffect
    by_context: dict[str, ContextEffect]
    location: dict[str, Any]
    settings: dict[str, Any]
    samples: Samples | None = field(default=None, repr=False)

    @property
    def effect(self) -> InterventionEffect:
        """The effect on the target concept."""
        return self.effects[self.concept]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what effect.json holds)."""
        return {"operation": "insert", "layer": self.layer, "units": self.units, "concept": self.concept,
                "location": self.location, "effect": self.effect.to_dict(),
                "region_effect": self.region_effect.to_dict(),
                "by_context": [c.to_dict() for c in self.by_context.values()],
                "effects": {c: e.to_dict() for c, e in self.effects.items()}, "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write effect.json, before_after.png and segmentation.png (the last two, labelled grids, when
        samples were kept) into out_dir; returns out_dir."""
        out = Path(out_dir)
        write_json(out / "effect.json", self.to_dict())
        if self.samples is not None:
            _save_samples(self.samples, out, len(self.concepts),
                          f"{self.concept} inserted: {len(self.units)} units of {self.layer}")
        return out


def _curve_dict(ks: list[int], curve: dict[str, list[InterventionEffect]]) -> dict[str, Any]:
    # curve.json: the k values, then per concept the mean and CI ends along them.
    return {"k": ks, "concepts": {c: {"mean": [e.mean for e in es], "ci_low": [e.ci_low for e in es],
                                      "ci_high": [e.ci_high for e in es]} for c, es in curve.items()}}


def _save_samples(s: Samples, out: Path, num_concepts: int, title: str) -> None:
    """before_after.png (rows: before, after[, the region highlighted on before]) and segmentation.png
    (the segmenter's labels before and after), each labelled: a row label, a column per sample."""
    g = s.before.shape[0]
    rows, names = [s.before, s.after], ["before", "after"]
    if s.region is not None:
        rows.append(overlay(s.before, s.region.cpu().bool().expand(g, -1, -1)))
        names.append("region")
    labels = colorize_labels(torch.cat([s.labels_before, s.labels_after]).cpu(), num_concepts)
    columns = [f"sample {i}" for i in range(g)]
    # Small models' images are enlarged (nearest neighbour, whole pixels) to at least 64 px to be seen.
    side = max(s.before.shape[-2:])
    cell = side * max(1, -(-64 // side))
    save_image(labelled_grid(rows, names, columns, title=title, cell=cell), out / "before_after.png")
    save_image(labelled_grid([labels[:g], labels[g:]], ["segmented\nbefore", "segmented\nafter"], columns,
                             title=title, cell=cell), out / "segmentation.png")
