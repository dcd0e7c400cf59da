"""Causal interventions on generator units: ablation and insertion, and their measured effects.

Dissection finds units whose activations *correlate* with a concept; an intervention tests whether
they *cause* it (Bau et al., GAN Dissection §4, ICLR 2019; PNAS 2020). An `Intervention` edits one
layer's output on the way through the generator:

    x'[u] = (1 - s·m) · x[u] + s·m · v[u]        for each chosen unit u

where s is the strength (0..1), v is a scalar or one level per unit and m is a spatial mask (1
everywhere by default; a feature-map mask, or an image-space mask max-pooled down to the feature
map). With s = 1, v = 0 it
zeroes the units (ablation); with v = a high activation level inside a small region it forces the
units on there (insertion). Interventions are context managers around any generator call and they
compose (nest them, or pass several to `intervene`). They take a generator or a loaded GAN:

    gan = load_model("scenes64")
    with Intervention(gan, 3, [4, 17]):                   # hooks gan.generator
        images = gan.generator(z)

Measurements sample N latents, generate each image twice (unedited and edited, same z), segment
both, and average the per-image change in every concept's pixel fraction:

    effect = mean_i (frac_after_i - frac_before_i),   95% CI = effect ± 1.96 · sd / √N.

- `ablate` also measures the effect of ablating the first k = 0…K units (the curve).
- `insert` also measures the change inside the insertion region, broken down by the concept the
  segmenter saw there before the edit (the context).
- `rank_units` measures every unit ablated alone (batched: the batch's features are repeated once
  per unit of a chunk, each copy with a different unit zeroed) and stores the result in a
  dissection report's `ace[concept]` so that `--top` can rank by causal effect.

Sign conventions: effects are signed changes (after − before; ablation effects are negative for
concepts the units draw). The ACE stored in a report is the *reduction* (before − after) of the
concept's pixel fraction when the unit alone is zeroed, so that, as with IoU, larger means "this unit
causes the concept" and rankings sort in descending order.

Units chosen by concept (no `units`) must have something to act on: when no unit of the layer
reaches the dissection's interpretable line for the concept (best IoU below `min_iou`) and the
concept covers under RARE_CONCEPT (1%) of the generated pixels, the model may not draw it at all and
its "top" units are arbitrary, so `ablate`, `insert` and `edit` refuse (`WeakConceptError`, which
shows the best IoU) unless `units` are given or `allow_weak=True`. A concept below the line that the
model does draw (a top-1% unit mask cannot reach a high IoU with a concept much larger than it)
goes ahead with a notice. Every value is checked before the expensive work (a dissection on the fly,
the inversion, the measurement) starts.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .hooks import Trace, generate_from, layer_name, resolve_layer
from .models import load_model
from .segmenters import load_segmenter
from .utils import GantoolsError, ProgressCallback, get_device, notice, parse_point, report

if TYPE_CHECKING:
    from .dissection import DissectionResult, LayerDissection
    from .models import GAN

Z95 = 1.959963984540054  # two-sided 95% normal quantile
DEFAULT_PATCH = 3  # --at inserts into a 3 x 3 patch of feature-map cells centred on the point
DEFAULT_DISSECT_N = 1000  # samples for a dissection computed on the fly (to choose units / get levels)
# A concept below the interpretable line that covers less than this share of the generated pixels
# may not be drawn at all: choosing its "top" units is refused (WeakConceptError) unless allowed.
RARE_CONCEPT = 0.01

Value = float | int | str | torch.Tensor | Sequence[float]


# ---------------------------------------------------------------------------------------------
# The intervention itself


def layer_units(generator: nn.Module | GAN, layer: int | str) -> int:
    """Number of units (channels) in a layer's output, for a generator or a GAN.

    Read from the block's last conv/BatchNorm; falls back to one eval-mode forward pass.
    """
    generator = _generator(generator)
    _, module = resolve_layer(generator, layer)
    for m in reversed(list(module.modules())):
        for attr in ("num_features", "out_channels"):
            if isinstance(getattr(m, attr, None), int):
                return int(getattr(m, attr))
    nz = getattr(getattr(generator, "config", None), "nz", None)
    if nz is None:
        raise GantoolsError(f"cannot tell how many units layer {layer!r} has")
    with _eval_mode(generator), torch.no_grad(), Trace(generator, layer, stop=True) as t:
        generator(torch.zeros(1, nz, device=_device_of(generator)))
    assert t.output is not None
    return int(t.output.shape[1])


def parse_units(text: str | Sequence[int]) -> list[int]:
    """'4,17,33' or '0-7' or '0-3,9' (or a list of ints) -> unit indices, in the order given, without repeats."""
    if not isinstance(text, str):
        values = [int(u) for u in text]
    else:
        values = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    values.extend(range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))
                else:
                    values.append(int(part))
            except ValueError as e:
                raise GantoolsError(f"units {text!r} must be unit numbers like 4,17,33 or a range like 0-7") from e
    if not values:
        raise GantoolsError(f"no units in {text!r}: give unit numbers like 4,17,33")
    return list(dict.fromkeys(values))


def check_units(units: Sequence[int], count: int, layer: str) -> list[int]:
    """Raise a GantoolsError naming the valid range when a unit index is outside [0, count)."""
    bad = [u for u in units if not 0 <= int(u) < count]
    if bad:
        raise GantoolsError(f"unit {bad[0]} is out of range for {layer}: it has {count} units, "
                            f"numbered 0 to {count - 1}")
    return [int(u) for u in units]


def feature_mask(region: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """A spatial mask at feature-map resolution: (1 or N) x 1 x h x w float in [0, 1].

    Args:
        region: H x W, 1 x H x W, N x H x W or N x 1 x H x W, bool or float in [0, 1]. A mask of the
            feature map's size is used as is; any other size (an image-space mask) is max-pooled
            (F.adaptive_max_pool2d) to the feature map, so a cell is edited when any of its pixels is
            in the region.
        size: (h, w) of the feature map.
    """
    m = region.detach()
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None]
    elif m.dim() != 4 or m.shape[1] != 1:
        raise GantoolsError(f"a region mask must be H x W or N x H x W, got shape {tuple(region.shape)}")
    m = m.float()
    if tuple(m.shape[-2:]) != tuple(size):
        m = F.adaptive_max_pool2d(m, size)
    return m.clamp(0, 1)


def point_region(at: tuple[float, float] | str, size: tuple[int, int], patch: int = DEFAULT_PATCH) -> torch.Tensor:
    """A feature-map mask (h x w bool) of a patch x patch block of cells centred on a point.

    Args:
        at: (x, y) as fractions of the image width and height, or the text "x,y".
        size: (h, w) of the feature map.
        patch: side of the block in cells; it is shifted inwards at the borders so it always holds
            patch x patch cells (smaller when the feature map itself is smaller).
    """
    x, y = check_point(at, patch)
    h, w = size
    ph, pw = min(patch, h), min(patch, w)
    # Top-left cell of the block whose cell centres are nearest the point (for an odd patch: the
    # block centred on the cell that contains the point).
    r0 = min(max(math.floor(y * h - ph / 2 + 0.5), 0), h - ph)
    c0 = min(max(math.floor(x * w - pw / 2 + 0.5), 0), w - pw)
    mask = torch.zeros(h, w, dtype=torch.bool)
    mask[r0:r0 + ph, c0:c0 + pw] = True
    return mask


def check_point(at: tuple[float, float] | str, patch: int = DEFAULT_PATCH) -> tuple[float, float]:
    """(x, y) from a position (a pair or the text "x,y"), checked to lie inside the image; and patch >= 1."""
    try:
        x, y = parse_point(at) if isinstance(at, str) else (float(at[0]), float(at[1]))
    except (TypeError, ValueError, IndexError):
        raise GantoolsError(f"at {at!r} must be a position (x, y) in fractions of the image, e.g. (0.5, 0.7)") from None
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise GantoolsError(f"position {x},{y} must lie inside the image: x and y between 0 and 1")
    if patch < 1:
        raise GantoolsError(f"patch must be at least 1 cell, got {patch}")
    return x, y


def check_strength(strength: float) -> float:
    """The edit strength as a float, or a GantoolsError when it is outside [0, 1]."""
    s = float(strength)
    if not 0 <= s <= 1:
        raise GantoolsError(f"strength must be between 0 and 1, got {strength}")
    return s


def _edit_units(x: torch.Tensor, units: torch.Tensor, value: torch.Tensor,
                weight: torch.Tensor | float) -> torch.Tensor:
    """x with channels `units` replaced by (1 - weight)·x + weight·value (a new tensor)."""
    sel = x.index_select(1, units)
    # (1 - m)·x + m·v rather than x + m·(v - x): exact at m = 0 (x) and at m = 1 (v).
    new = (1 - weight) * sel + weight * value
    out = x.clone()
    out[:, units] = new.to(x.dtype)
    return out


class Intervention(contextlib.AbstractContextManager):
    """Edit units of one layer: x' = (1 − s)·x + s·v per unit (s: the strength), optionally only inside a region.

    Use as a context manager around any call of the generator; several compose (they apply in the
    order they were entered when they share a layer, which does not matter when they touch
    different units).

        gan = load_model("scenes64")
        with Intervention(gan, 3, [4, 17], value=0.0):        # ablate units 4 and 17 of layer3
            images = gan.generator(z)

    Args:
        generator: the generator, or a GAN (its generator is hooked; call `gan.generator(z)`).
        layer: number or dotted name of the layer.
        units: unit (channel) indices.
        value: v, a scalar or one level per unit (sequence or 1-D tensor, in `units` order).
        strength: s in [0, 1]; 1 replaces the units by v, 0.5 goes halfway.
        region: where to edit (default everywhere): a feature-map mask, or an image-space mask that
            is max-pooled to the feature map (see `feature_mask`); H x W or N x H x W, bool or float.
    """

    def __init__(self, generator: nn.Module | GAN, layer: int | str, units: Sequence[int] | torch.Tensor,
                 value: float | Sequence[float] | torch.Tensor = 0.0, strength: float = 1.0,
                 region: torch.Tensor | None = None) -> None:
        self.generator = _generator(generator)
        self.layer = layer_name(self.generator, layer)
        units = [int(u) for u in (units.tolist() if isinstance(units, torch.Tensor) else units)]
        if len(set(units)) != len(units):
            raise GantoolsError(f"units {units} repeat an index: give each unit once")
        self.units = check_units(units, layer_units(self.generator, self.layer), self.layer)
        v = torch.as_tensor(value, dtype=torch.float32).flatten()
        if v.numel() not in (1, len(self.units)):
            raise GantoolsError(f"value has {v.numel()} levels for {len(self.units)} units: "
                                "give one level, or one per unit")
        self.value = v
        self.strength = check_strength(strength)
        self.region = region
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]] = {}
        self._trace: Trace | None = None

    def _operands(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | float]:
        key = (x.device, x.dtype, tuple(x.shape[-2:]))
        if key not in self._cache:
            units = torch.tensor(self.units, dtype=torch.long, device=x.device)
            value = self.value.to(x.device, x.dtype).view(1, -1, 1, 1)
            weight: torch.Tensor | float = self.strength
            if self.region is not None:
                weight = self.strength * feature_mask(self.region.to(x.device), tuple(x.shape[-2:])).to(x.dtype)
            self._cache[key] = (units, value, weight)
        return self._cache[key]

    def apply(self, x: torch.Tensor) -> torch.Tensor:
        """The edited copy of a layer output x (N x C x H x W)."""
        if x.shape[1] <= max(self.units):
            raise GantoolsError(f"unit {max(self.units)} is out of range: the output of {self.layer} has "
                                f"{x.shape[1]} units, numbered 0 to {x.shape[1] - 1}")
        units, value, weight = self._operands(x)
        if isinstance(weight, torch.Tensor) and weight.shape[0] not in (1, x.shape[0]):
            raise GantoolsError(f"the region has {weight.shape[0]} masks for a batch of {x.shape[0]}")
        return _edit_units(x, units, value, weight)

    def __enter__(self) -> "Intervention":
        if self._trace is not None:
            raise RuntimeError("this Intervention is already active")
        self._trace = Trace(self.generator, self.layer, retain_output=False,
                            edit_output=lambda x, _name: self.apply(x))
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        if self._trace is not None:
            self._trace.close()
            self._trace = None
        return False

    def __repr__(self) -> str:
        v = self.value.tolist()
        return (f"Intervention({self.layer}, units={self.units}, value={v[0] if len(v) == 1 else v}, "
                f"strength={self.strength}{', region' if self.region is not None else ''})")


@contextlib.contextmanager
def intervene(*interventions: Intervention) -> Iterator[list[Intervention]]:
    """Apply several interventions at once (entered in the order given)."""
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(i) for i in interventions]


# ---------------------------------------------------------------------------------------------
# Measured effects


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
        return Z95 * self.sd / math.sqrt(self.n) if self.n > 0 else float("nan")

    @property
    def ci_low(self) -> float:
        return self.mean - self.half_width

    @property
    def ci_high(self) -> float:
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
        return {"operation": "ablate", "layer": self.layer, "units": self.units, "concept": self.concept,
                "effect": self.effect.to_dict(),
                "effects": {c: e.to_dict() for c, e in self.effects.items()},
                "curve": _curve_dict(self.ks, self.curve), "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write effect.json, curve.json, curve.png, before_after.png and segmentation.png into out_dir."""
        from .reports import line_plot
        from .utils import write_json

        out = Path(out_dir)
        paths = [write_json(out / "effect.json", self.to_dict()),
                 write_json(out / "curve.json", _curve_dict(self.ks, self.curve))]
        # The target plus the three concepts that moved most (gained or lost) at full ablation.
        others = sorted((c for c in self.concepts if c != self.concept), key=lambda c: -abs(self.effects[c].mean))
        shown = [self.concept] + others[:3]
        series = {c: (self.ks, [e.mean for e in self.curve[c]]) for c in shown}
        bands = {c: ([e.ci_low for e in self.curve[c]], [e.ci_high for e in self.curve[c]]) for c in shown}
        paths.append(line_plot(series, out / "curve.png", bands=bands, xlabel="units ablated (k)",
                               ylabel="change in pixel fraction",
                               title=f"Ablating the top-k units of {self.layer} (target: {self.concept}, 95% CI)"))
        if self.samples is not None:
            paths += _save_samples(self.samples, out, len(self.concepts))
        return paths


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
        return self.effects[self.concept]

    def to_dict(self) -> dict[str, Any]:
        return {"operation": "insert", "layer": self.layer, "units": self.units, "concept": self.concept,
                "location": self.location, "effect": self.effect.to_dict(),
                "region_effect": self.region_effect.to_dict(),
                "by_context": [c.to_dict() for c in self.by_context.values()],
                "effects": {c: e.to_dict() for c, e in self.effects.items()}, "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write effect.json, before_after.png and segmentation.png into out_dir."""
        from .utils import write_json

        out = Path(out_dir)
        paths = [write_json(out / "effect.json", self.to_dict())]
        if self.samples is not None:
            paths += _save_samples(self.samples, out, len(self.concepts))
        return paths


@dataclass
class RankResult:
    """Units of one layer ranked by the causal effect of ablating each alone (`rank_units`).

    Attributes:
        layer, concept: what was measured.
        units: the units measured, best first (largest reduction of the concept first).
        ace: unit -> reduction of the concept's pixel fraction when that unit alone is ablated
            (before − after, mean over N; positive: the unit helps draw the concept).
        effects: unit -> the signed InterventionEffect (after − before) with its CI.
        num_units: units in the layer.
        settings: model, segmenter, N, seed.
    """

    layer: str
    concept: str
    units: list[int]
    ace: dict[int, float]
    effects: dict[int, InterventionEffect]
    num_units: int
    settings: dict[str, Any]

    def ace_list(self) -> list[float]:
        """One ACE per unit of the layer (NaN for units not measured), as stored in reports."""
        return [self.ace.get(u, float("nan")) for u in range(self.num_units)]

    def store(self, dissection: DissectionResult) -> None:
        """Put the ranking into a dissection result's `layers[layer].ace[concept]` (save it afterwards)."""
        if self.layer not in dissection.layers:
            have = ", ".join(dissection.layers) or "none"
            raise GantoolsError(f"the report has no {self.layer} (it has {have}): "
                                f"run gantools dissect --layer {self.layer} first")
        dissection.layers[self.layer].ace[self.concept] = self.ace_list()

    def to_dict(self) -> dict[str, Any]:
        return {"operation": "rank", "layer": self.layer, "concept": self.concept, "ranked_units": self.units,
                "ace": {str(u): self.ace[u] for u in self.units},
                "effects": {str(u): self.effects[u].to_dict() for u in self.units}, "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> list[Path]:
        """Write rank.json into out_dir."""
        from .utils import write_json

        return [write_json(Path(out_dir) / "rank.json", self.to_dict())]


def _curve_dict(ks: list[int], curve: dict[str, list[InterventionEffect]]) -> dict[str, Any]:
    return {"k": ks, "concepts": {c: {"mean": [e.mean for e in es], "ci_low": [e.ci_low for e in es],
                                      "ci_high": [e.ci_high for e in es]} for c, es in curve.items()}}


def _save_samples(s: Samples, out: Path, num_concepts: int) -> list[Path]:
    """before_after.png (rows: before, after[, the region highlighted on before]) and segmentation.png."""
    from .data import save_grid
    from .reports import colorize_labels, overlay
    from .utils import to_uint8

    g = s.before.shape[0]
    rows = [to_uint8(s.before), to_uint8(s.after)]
    if s.region is not None:
        region = s.region.cpu().bool().expand(g, -1, -1)
        rows = [r if r.shape[1] == 3 else r.expand(-1, 3, -1, -1) for r in rows] + [overlay(s.before, region)]
    images = torch.cat(rows)
    labels = colorize_labels(torch.cat([s.labels_before, s.labels_after]).cpu(), num_concepts)
    # Small models' images are enlarged (nearest neighbour, whole pixels) to at least 64 px to be seen.
    scale = max(1, 64 // images.shape[-1])
    if scale > 1:
        images = images.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
        labels = labels.repeat_interleave(scale, -1).repeat_interleave(scale, -2)
    return [save_grid(images, out / "before_after.png", nrow=g), save_grid(labels, out / "segmentation.png", nrow=g)]


# ---------------------------------------------------------------------------------------------
# Shared plumbing


def _generator(model: Any) -> nn.Module:
    return model.generator if hasattr(model, "generator") and isinstance(model.generator, nn.Module) else model


def _device_of(module: nn.Module) -> torch.device:
    p = next(module.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(module: nn.Module) -> Iterator[None]:
    # Measurements repeat and edit batches; BatchNorm in training mode would make every image depend
    # on its batch-mates (and update running statistics), so measure in eval mode and restore.
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def check_concept(concept: str, concepts: Sequence[str], where: str = "the segmenter") -> int:
    """Index of `concept`; a GantoolsError listing the known concepts when it is unknown."""
    if concept not in concepts:
        hint = " (another segmenter: --segmenter color, or a segmenter file)" if where == "the segmenter" else ""
        raise GantoolsError(f"unknown concept {concept!r}: {where} knows {', '.join(concepts)}{hint}")
    return list(concepts).index(concept)


def _fractions(labels: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """N x H x W labels (ids 0..num_concepts-1) -> N x C pixel fractions (float64, CPU)."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1).long()
    offsets = torch.arange(n, device=flat.device).unsqueeze(1) * num_concepts
    counts = torch.bincount((flat + offsets).flatten(), minlength=n * num_concepts).view(n, num_concepts)
    return counts.double().cpu() / flat.shape[1]


def _segment(segmenter: Any, images: torch.Tensor) -> torch.Tensor:
    from .segmenters import check_labels

    return check_labels(segmenter(images), images, len(segmenter.concepts))


def _check_sampling(n: int, batch_size: int, grid: int = 0, dissect_n: int = DEFAULT_DISSECT_N) -> None:
    """The measurement's sizes (checked before any work)."""
    if dissect_n < 1:
        raise GantoolsError(f"dissect_n must be at least 1, got {dissect_n}")
    if n < 2:
        raise GantoolsError(f"n must be at least 2 (the effects come with a 95% CI over samples), got {n}")
    if batch_size < 1:
        raise GantoolsError(f"batch_size must be at least 1, got {batch_size}")
    if grid < 0:
        raise GantoolsError(f"grid must be 0 or more pictures, got {grid}")


def _check_value(value: Value) -> None:
    """A level's spelling (zero, mean, q99, a number, or numbers), before any work."""
    if isinstance(value, str):
        if not _needs_stats(value):
            unit_values(value, None, [])
        return
    try:
        torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise GantoolsError(f"unknown value {value!r}: use zero, mean, q99, a number or one number per unit") from None


def _check_selection(units: Any, concept: str | None, top: int, rank: str, dissection: Any) -> list[int] | None:
    """Which units were asked for, checked before any work: the parsed `units`, or None to take the
    `top` units of `concept` by `rank` (ranges are checked once the layer is known)."""
    chosen = parse_units(units) if units is not None else None
    if chosen is None and concept is None:
        raise GantoolsError("say which units: give units (e.g. [4, 17, 33] or \"4,17,33\") or a concept to take "
                            "the top units of")
    if rank not in ("iou", "ace"):
        raise GantoolsError(f"unknown ranking {rank!r}: use iou or ace")
    if chosen is None:
        if top < 1:
            raise GantoolsError(f"top must be at least 1, got {top}")
        if rank == "ace" and dissection is None:
            raise GantoolsError(f"rank='ace' reads the causal ranking of {concept!r} from a dissection report: give "
                                "dissection (a report where gantools rank stored it), or rank='iou'")
    return chosen


def _batches(n: int, batch_size: int) -> Iterator[tuple[int, int]]:
    _check_sampling(n, batch_size)
    for start in range(0, n, batch_size):
        yield start, min(n, start + batch_size)


def _load_dissection(dissection: Any, gan: GAN) -> DissectionResult:
    from .dissection import check_model, load_report

    result = load_report(dissection) if isinstance(dissection, (str, os.PathLike)) else dissection
    check_model(result, gan)
    return result


def report_segmenter(segmenter: Any, dissection: Any, gan: GAN, device: torch.device,
                     progress: ProgressCallback | None = None) -> tuple[Any, Any]:
    """(segmenter, dissection): with no segmenter given, the one the report was made with (when it
    can be reloaded), else the model's own; the report is loaded once and returned for reuse."""
    if dissection is not None:
        dissection = _load_dissection(dissection, gan)
        source = dissection.settings.get("segmenter_source")
        if segmenter is None and source is not None and (source == "color" or Path(source).is_file()):
            seg = load_segmenter(source, gan=gan, device=device)
            if source != "color" and gan.companion("segmenter") != Path(source):
                notice(progress, f"segmenter: {source} (the dissection report's)")
            return seg, dissection
    return load_segmenter(segmenter, gan=gan, device=device), dissection


def _layer_of(result: DissectionResult, layer: str) -> LayerDissection:
    if layer not in result.layers:
        have = ", ".join(result.layers) or "none"
        raise GantoolsError(f"the dissection report has no {layer} (it has {have}): "
                            f"run gantools dissect --layer {layer.removeprefix('layer')} first")
    return result.layers[layer]


class WeakConceptError(GantoolsError):
    """Units were to be chosen by a concept that the model may not draw.

    No unit of the layer reaches the dissection's interpretable line for the concept (its best IoU is
    below `min_iou`) and the concept is rare in the generated images (under `RARE_CONCEPT` of their
    pixels, or the dissection did not record how much), so its "top" units would be arbitrary. The
    message names the Python parameters; `describe` words it for other front ends (the CLI names
    its flags).

    Attributes:
        concept, layer: what was asked for.
        best_iou, best_unit: the concept's best IoU at the layer, and the unit that has it.
        min_iou: the interpretable line of the dissection.
        coverage: the concept's share of the generated pixels in the dissection (None: not recorded).
        interpretable: the concepts that have interpretable units labelled with them at the layer.
    """

    def __init__(self, concept: str, layer: str, best_iou: float, best_unit: int, min_iou: float,
                 coverage: float | None, interpretable: Sequence[str]) -> None:
        self.concept, self.layer, self.best_iou, self.best_unit = concept, layer, best_iou, best_unit
        self.min_iou, self.coverage, self.interpretable = min_iou, coverage, list(interpretable)
        super().__init__(self.describe("units=[...]", "allow_weak=True"))

    def describe(self, units_hint: str, allow_hint: str) -> str:
        strong = ", ".join(self.interpretable) or "none"
        share = "" if self.coverage is None else \
            f" and {self.concept} covers {100 * self.coverage:.2f}% of the generated pixels"
        return (f"no unit of {self.layer} matches {self.concept!r}: its best IoU is {self.best_iou:.4f} "
                f"(unit {self.best_unit}), below the interpretable line {self.min_iou:g}{share}, so the model "
                f"may not draw {self.concept} (concepts with interpretable units in {self.layer}: {strong}); "
                f"give the units yourself ({units_hint}) or accept weak units ({allow_hint})")


@dataclass
class ConceptSupport:
    """How well a layer's units match a concept, from a dissection (see `concept_support`)."""

    concept: str
    layer: str
    best_iou: float  # the concept's best IoU over the layer's units (NaN counts as 0)
    best_unit: int
    min_iou: float  # the dissection's interpretable line
    coverage: float | None  # the concept's share of the generated pixels; None when not recorded
    interpretable: list[str]  # concepts with interpretable units labelled with them in the layer

    @property
    def below_line(self) -> bool:
        """No unit reaches the interpretable line for the concept."""
        return self.best_iou < self.min_iou

    @property
    def weak(self) -> bool:
        """Below the line and rare in the generated images (or of unknown share): the model may not draw it.

        Concepts the model does draw can stay below the line (a unit's mask is its top 1% of
        activations, so a concept covering much more of the image cannot reach a high IoU), and
        their units are still causal: those are used, with a notice."""
        return self.below_line and (self.coverage is None or self.coverage < RARE_CONCEPT)

    def error(self) -> WeakConceptError:
        return WeakConceptError(self.concept, self.layer, self.best_iou, self.best_unit, self.min_iou,
                                self.coverage, self.interpretable)

    def note(self) -> str:
        share = "" if self.coverage is None else f", {100 * self.coverage:.2f}% of the generated pixels"
        return (f"no unit of {self.layer} reaches the interpretable line for {self.concept} (best IoU "
                f"{self.best_iou:.4f} < {self.min_iou:g}{share})")


def concept_support(result: DissectionResult, layer: str, concept: str) -> ConceptSupport:
    """A concept's best IoU at a layer, the interpretable line, and its share of the generated pixels."""
    stats = _layer_of(result, layer)
    column = torch.nan_to_num(stats.iou[:, stats.concept_index(concept)].float(), nan=0.0)
    best = int(column.argmax()) if column.numel() else 0
    best_iou = float(column[best]) if column.numel() else 0.0
    coverage = None
    shares = list(getattr(result, "concept_coverage", None) or [])
    if concept in result.concepts and len(shares) == len(result.concepts):
        value = float(shares[list(result.concepts).index(concept)])
        coverage = value if math.isfinite(value) else None
    strong = [c for c in stats.concepts if stats.units_for(c)]
    return ConceptSupport(concept, layer, best_iou, best, float(stats.min_iou), coverage, strong)


def check_concept_drawn(result: DissectionResult, layer: str, concept: str) -> ConceptSupport:
    """The concept's support at the layer; a WeakConceptError when the model may not draw it."""
    support = concept_support(result, layer, concept)
    if support.weak:
        raise support.error()
    return support


@dataclass
class _Plan:
    units: list[int]
    stats: LayerDissection | None
    source: str


def _plan_units(gan: GAN, layer: str, segmenter: Any, units: Any, concept: str | None, top: int, rank: str,
                dissection: Any, need_stats: bool, dissect_n: int, seed: int, device: torch.device,
                batch_size: int, progress: ProgressCallback | None, allow_weak: bool = False) -> _Plan:
    """Choose the units (given, or the top ones for a concept) and find their statistics when needed.

    Units chosen by a concept no unit matches (see `check_concept_drawn`) are refused unless
    `allow_weak`. Everything but the dissection itself is checked before it is computed.
    """
    chosen = _check_selection(units, concept, top, rank, dissection)
    if chosen is not None:
        chosen = check_units(chosen, layer_units(gan.generator, layer), layer)
    if chosen is not None and not need_stats and dissection is None:
        return _Plan(chosen, None, "given")
    if dissection is not None:
        result = _load_dissection(dissection, gan)
        source = f"report {dissection}" if isinstance(dissection, (str, os.PathLike)) else "dissection result"
    else:
        from .dissection import dissect

        notice(progress, f"no dissection report given: dissecting {layer} on {dissect_n} samples "
                         f"(seed {seed + 1}) to {'choose units' if chosen is None else 'get unit levels'}")
        # seed + 1: choose the units on other samples than the ones the effect is measured on.
        # top_k=0: the report's image strips are not needed here.
        result = dissect(gan, layers=(layer,), segmenter=segmenter, n=dissect_n, seed=seed + 1,
                         batch_size=batch_size, device=device, progress=progress, top_k=0)
        source = f"dissection on the fly (n={dissect_n}, seed={seed + 1})"
    stats = _layer_of(result, layer)
    if chosen is not None and not need_stats:
        return _Plan(chosen, None, "given")  # a report given anyway was checked against the model
    if chosen is None:
        assert concept is not None
        check_concept(concept, result.concepts, "the dissection report")
        support = concept_support(result, layer, concept)
        if support.weak and not allow_weak:
            raise support.error()
        if support.below_line:
            notice(progress, "note: " + support.note() + (": the model may not draw it; using its top units "
                             "anyway, as allowed" if support.weak else ": using its top units"))
            source += f", below the interpretable line (best IoU {support.best_iou:.4f})"
        ranked = [int(u) for u in stats.ranked_units(concept, rank)]
        if len(ranked) < top:
            notice(progress, f"only {len(ranked)} units of {layer} are ranked by {rank} for {concept}: using those "
                             f"(rank more with gantools rank --units)")
        chosen = ranked[:top]
        source += f", top {len(chosen)} by {rank}"
    return _Plan(chosen, stats, source)


def unit_values(value: Value, stats: LayerDissection | None, units: Sequence[int]) -> torch.Tensor:
    """The level v for each unit: 'zero', 'mean' or 'q99' (from the dissection statistics), or a number.

    Args:
        value: a number, a per-unit sequence/tensor, or the name of a statistic.
        stats: the layer's dissection (needed for 'mean' and 'q99').
        units: the units, in order.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("zero", "0"):
            return torch.zeros(len(units))
        if text in ("mean", "q99"):
            if stats is None:
                raise GantoolsError(f"value {text!r} needs the dissection statistics: give a report or a number")
            table = torch.as_tensor(getattr(stats, text), dtype=torch.float32).flatten()
            return table[torch.as_tensor(list(units), dtype=torch.long)]
        try:
            return torch.full((len(units),), float(text))
        except ValueError:
            raise GantoolsError(f"unknown value {value!r}: use zero, mean, q99 or a number") from None
    v = torch.as_tensor(value, dtype=torch.float32).flatten()
    if v.numel() == 1:
        return v.expand(len(units)).clone()
    if v.numel() != len(units):
        raise GantoolsError(f"{v.numel()} values for {len(units)} units: give one, or one per unit")
    return v


def _needs_stats(value: Value) -> bool:
    return isinstance(value, str) and value.strip().lower() in ("mean", "q99")


def _settings(gan: GAN, segmenter: Any, **extra: Any) -> dict[str, Any]:
    from .models import fingerprint
    from .segmenters import describe_segmenter

    return {"model": str(gan.path) if gan.path is not None else None, "model_fingerprint": fingerprint(gan.generator),
            "segmenter": describe_segmenter(segmenter), **extra}


def _value_json(value: Value, v: torch.Tensor) -> Any:
    return value.strip().lower() if isinstance(value, str) else v.tolist()


# ---------------------------------------------------------------------------------------------
# Ablation


def curve_ks(k_max: int, points: int = 21) -> list[int]:
    """k values for the ablation curve: every k up to `points - 1` units, else `points` evenly spaced."""
    if k_max + 1 <= points:
        return list(range(k_max + 1))
    return sorted({round(i * k_max / (points - 1)) for i in range(points)})


def ablate(model: Any, layer: int | str, units: str | Sequence[int] | None = None, *, concept: str | None = None,
           top: int = 10, rank: str = "iou", value: Value = "zero", strength: float = 1.0,
           dissection: Any = None, segmenter: Any = None, n: int = 500, seed: int = 0, batch_size: int = 50,
           curve_points: int = 21, grid: int = 8, dissect_n: int = DEFAULT_DISSECT_N, allow_weak: bool = False,
           device: str | torch.device = "cpu", progress: ProgressCallback | None = None) -> AblationResult:
    """Ablate units and measure the average causal effect on every concept, and the top-k curve.

    Args:
        model: a GAN or a model spec for load_model.
        layer: number or dotted name of the layer.
        units: the units ("4,17,33", "0-7" or a list); else the `top` units for `concept`.
        concept: the target concept (ranks the units when `units` is None).
        top: how many units to take from the ranking.
        rank: "iou" (dissection) or "ace" (causal ranking stored by `rank_units`).
        value: v, "zero" (default), "mean" (each unit's mean activation, from the dissection) or a number.
        strength: s, the strength of the edit (1 = replace by v).
        dissection: a DissectionResult or a report path; computed on the fly (dissect_n samples,
            seed + 1) when units must be chosen or levels looked up and none is given.
        segmenter: a Segmenter, a spec for load_segmenter, or None: the dissection report's segmenter
            when it records one, else the model's own, else colours.
        n: samples measured; seed: their latent seed; batch_size: images per forward pass.
        curve_points: at most this many k values on the curve (k = 0…K).
        grid: before/after pairs kept for pictures.
        allow_weak: take the top units of a concept that no unit matches (best IoU below the
            interpretable line) instead of raising WeakConceptError.
        device: where to run.
        progress: progress callback.

    Every value is checked before the work starts; with no `dissection`, the concept is checked
    against the one computed on the fly before anything is measured.
    """
    _check_sampling(n, batch_size, grid, dissect_n)
    if curve_points < 2:
        raise GantoolsError(f"curve_points must be at least 2 (k = 0 and all units), got {curve_points}")
    strength = check_strength(strength)
    _check_value(value)
    _check_selection(units, concept, top, rank, dissection)
    gan = load_model(model, get_device(device))
    dev = _device_of(gan.generator)
    G = gan.generator
    name = layer_name(G, layer)
    seg, dissection = report_segmenter(segmenter, dissection, gan, dev, progress)
    concepts = list(seg.concepts)
    if concept is not None:
        check_concept(concept, concepts)
    plan = _plan_units(gan, name, seg, units, concept, top, rank, dissection, _needs_stats(value), dissect_n,
                       seed, dev, batch_size, progress, allow_weak)
    v = unit_values(value, plan.stats, plan.units)
    ks = curve_ks(len(plan.units), curve_points)
    nc = len(concepts)
    after: dict[int, list[torch.Tensor]] = {k: [] for k in ks}
    befores = []
    samples = None
    z_all = G.sample_z(n, seed, device="cpu") if n > 0 else None
    task = f"ablate {name}"
    edits = {k: Intervention(G, name, plan.units[:k], v[:k], strength) for k in ks[1:]}
    with _eval_mode(G), torch.no_grad():
        for start, end in _batches(n, batch_size):
            z = z_all[start:end].to(dev)
            with Trace(G, name) as t:
                images0 = G(z)
            labels0 = _segment(seg, images0)
            f0 = _fractions(labels0, nc)
            befores.append(f0)
            after[0].append(f0)  # k = 0: nothing ablated, nothing changes
            last = (images0, labels0)
            for k in ks[1:]:
                # Same as running G(z) inside `with edits[k]:`, without recomputing the earlier blocks.
                images = generate_from(G, name, edits[k].apply(t.output))
                labels = _segment(seg, images)
                after[k].append(_fractions(labels, nc))
                last = (images, labels)
            if samples is None and grid > 0:
                g = min(grid, end - start)
                samples = Samples(images0[:g].cpu(), last[0][:g].cpu(), labels0[:g].cpu(), last[1][:g].cpu())
            report(progress, task, end, n)
    before = torch.cat(befores)
    after_t = {k: torch.cat(a) for k, a in after.items()}
    k_max = ks[-1]
    effects = {c: InterventionEffect.from_samples(c, before[:, i], after_t[k_max][:, i])
               for i, c in enumerate(concepts)}
    curve = {c: [InterventionEffect.from_samples(c, before[:, i], after_t[k][:, i]) for k in ks]
             for i, c in enumerate(concepts)}
    target = concept if concept is not None else min(concepts, key=lambda c: effects[c].mean)
    settings = _settings(gan, seg, value=_value_json(value, v), strength=strength, n=n, seed=seed,
                         units_from=plan.source)
    return AblationResult(name, plan.units, target, concepts, effects, curve, ks, settings, samples)


# ---------------------------------------------------------------------------------------------
# Insertion


def _image_region(mask: Any, size: int) -> tuple[torch.Tensor, str]:
    """An image-space mask (S x S bool) from a PNG path or a tensor; non-zero/bright pixels are inside."""
    if isinstance(mask, (str, os.PathLike)):
        from .data import read_mask

        m = read_mask(mask)
        if tuple(m.shape) != (size, size):
            # Nearest-neighbour keeps the mask binary; the loader's antialiased resize would blur it.
            m = F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0, 0]
        region = m > 127
        what = str(mask)
    else:
        m = torch.as_tensor(mask)
        if m.dim() != 2:
            raise GantoolsError(f"an insertion mask must be H x W, got shape {tuple(m.shape)}")
        if tuple(m.shape) != (size, size):
            m = F.interpolate(m[None, None].float(), size=(size, size), mode="nearest")[0, 0]
        region = m > 0.5 if m.is_floating_point() else m.bool()
        what = "tensor"
    if not region.any():
        raise GantoolsError(f"the insertion mask {what} selects no pixels: white (or non-zero) pixels mark the region")
    return region, what


def insert(model: Any, layer: int | str, units: str | Sequence[int] | None = None, *, concept: str | None = None,
           top: int = 10, rank: str = "iou", at: tuple[float, float] | str | None = None, mask: Any = None,
           patch: int = DEFAULT_PATCH, value: Value = "q99", strength: float = 1.0, dissection: Any = None,
           segmenter: Any = None, n: int = 500, seed: int = 0, batch_size: int = 50, grid: int = 8,
           dissect_n: int = DEFAULT_DISSECT_N, allow_weak: bool = False, device: str | torch.device = "cpu",
           progress: ProgressCallback | None = None) -> InsertionResult:
    """Force units on inside a region and measure the concept pixels added, by context.

    Args:
        model, layer, units, concept, top, rank, dissection, segmenter, n, seed, batch_size, grid,
            dissect_n, allow_weak, device, progress: as for `ablate`.
        at: (x, y) in fractions of the image (or "x,y"): insert into a patch x patch block of
            feature-map cells centred there.
        mask: instead of `at`, an image-space mask (PNG path or H x W tensor; white = inside),
            max-pooled to the feature map.
        patch: side of the block of cells for `at` (default 3: a 3 x 3 block).
        value: v, "q99" (each unit's 0.99 quantile, from the dissection; default), "mean" or a number.
        strength: s, the strength of the edit.
    """
    if (at is None) == (mask is None):
        raise GantoolsError("say where to insert: give at (a position x, y) or mask (a PNG or tensor), "
                            "one of them, not both")
    if at is not None:
        at = check_point(at, patch)
    _check_sampling(n, batch_size, grid, dissect_n)
    strength = check_strength(strength)
    _check_value(value)
    _check_selection(units, concept, top, rank, dissection)
    gan = load_model(model, get_device(device))
    dev = _device_of(gan.generator)
    G = gan.generator
    name = layer_name(G, layer)
    seg, dissection = report_segmenter(segmenter, dissection, gan, dev, progress)
    concepts = list(seg.concepts)
    if concept is not None:
        check_concept(concept, concepts)
    # Feature-map and image sizes from one cheap forward pass.
    with _eval_mode(G), torch.no_grad(), Trace(G, name) as t:
        probe = G(G.sample_z(1, seed, device=dev))
    fh, fw = t.output.shape[-2:]
    size = probe.shape[-1]
    if at is not None:
        cells = point_region(at, (fh, fw), patch)
        region_feat = cells
        # The cells' footprint in the image: where the segmenter looks for context and added pixels.
        region_img = F.interpolate(cells[None, None].float(), size=tuple(probe.shape[-2:]), mode="nearest")[0, 0] > 0
        rows, cols = cells.nonzero(as_tuple=True)
        location = {"at": [float(at[0]), float(at[1])], "patch": patch,
                    "cells": [int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1],
                    "feature_size": [int(fh), int(fw)]}
    else:
        region_img, what = _image_region(mask, size)
        region_feat = region_img  # max-pooled to the feature map by the Intervention
        location = {"mask": what, "feature_cells": int((feature_mask(region_img, (fh, fw)) > 0).sum()),
                    "feature_size": [int(fh), int(fw)]}
    location["region_pixels"] = int(region_img.sum())
    plan = _plan_units(gan, name, seg, units, concept, top, rank, dissection, _needs_stats(value), dissect_n,
                       seed, dev, batch_size, progress, allow_weak)
    v = unit_values(value, plan.stats, plan.units)
    edit = Intervention(G, name, plan.units, v, strength, region=region_feat)
    nc = len(concepts)
    region_dev = region_img.to(dev)
    area = float(region_img.sum())
    f0s, f1s, r0s, r1s, contexts = [], [], [], [], []
    samples = None
    z_all = G.sample_z(n, seed, device="cpu") if n > 0 else None
    with _eval_mode(G), torch.no_grad():
        for start, end in _batches(n, batch_size):
            z = z_all[start:end].to(dev)
            with Trace(G, name) as t:
                images0 = G(z)
            labels0 = _segment(seg, images0)
            images1 = generate_from(G, name, edit.apply(t.output))
            labels1 = _segment(seg, images1)
            f0s.append(_fractions(labels0, nc))
            f1s.append(_fractions(labels1, nc))
            # Per-concept pixel counts inside the region: the context is the majority concept before.
            inside0 = torch.where(region_dev, labels0, nc)  # label nc = outside the region
            inside1 = torch.where(region_dev, labels1, nc)
            c0 = _fractions(inside0, nc + 1)[:, :nc] * (labels0[0].numel() / area)
            c1 = _fractions(inside1, nc + 1)[:, :nc] * (labels0[0].numel() / area)
            r0s.append(c0)
            r1s.append(c1)
            contexts.append(c0.argmax(dim=1))
            if samples is None and grid > 0:
                g = min(grid, end - start)
                samples = Samples(images0[:g].cpu(), images1[:g].cpu(), labels0[:g].cpu(), labels1[:g].cpu(),
                                  region=region_img.cpu())
            report(progress, f"insert {name}", end, n)
    f0, f1, r0, r1 = (torch.cat(x) for x in (f0s, f1s, r0s, r1s))
    context = torch.cat(contexts)
    effects = {c: InterventionEffect.from_samples(c, f0[:, i], f1[:, i]) for i, c in enumerate(concepts)}
    target = concept if concept is not None else max(concepts, key=lambda c: effects[c].mean)
    ti = concepts.index(target)
    region_effect = InterventionEffect.from_samples(target, r0[:, ti], r1[:, ti])
    by_context = {}
    counts = torch.bincount(context, minlength=nc)
    for ci in sorted(range(nc), key=lambda i: (-int(counts[i]), i)):
        if counts[ci] == 0:
            continue
        sel = context == ci
        by_context[concepts[ci]] = ContextEffect(
            concepts[ci], int(counts[ci]), InterventionEffect.from_samples(target, f0[sel, ti], f1[sel, ti]),
            InterventionEffect.from_samples(target, r0[sel, ti], r1[sel, ti]))
    settings = _settings(gan, seg, value=_value_json(value, v), strength=strength, n=n, seed=seed,
                         units_from=plan.source)
    return InsertionResult(name, plan.units, target, concepts, effects, region_effect, by_context, location,
                           settings, samples)


# ---------------------------------------------------------------------------------------------
# Ranking units by causal effect


def rank_units(model: Any, layer: int | str, concept: str, *, units: str | Sequence[int] | None = None,
               value: Value = "zero", strength: float = 1.0, dissection: Any = None, segmenter: Any = None,
               n: int = 200, seed: int = 0, batch_size: int = 32, max_images: int = 256,
               device: str | torch.device = "cpu", progress: ProgressCallback | None = None) -> RankResult:
    """Rank a layer's units by the causal effect on `concept` of ablating each one alone.

    For each batch of latents, the layer's features are computed once; then chunks of units are
    measured together by repeating the batch once per unit of the chunk, each copy with its own unit
    ablated, and running the rest of the generator and the segmenter on all copies at once. Memory
    does not grow with N (running sums).

    Args:
        model: a GAN or a model spec.
        layer: number or dotted name of the layer.
        concept: the concept whose pixel fraction is measured.
        units: only these units (default: all units of the layer).
        value, strength: the ablation (default: zero, fully).
        dissection: a DissectionResult or report path; checked against the model, and used for
            `value="mean"`. Store the result in it with `RankResult.store`.
        segmenter: a Segmenter, a spec, or None: the dissection report's segmenter
            when it records one, else the model's own, else colours.
        n: samples; seed: their latent seed; batch_size: latents per batch.
        max_images: at most this many images per generator call (chunk size = max_images // batch).
        device, progress: where to run, and the progress callback.

    Every unit is measured, so a concept that no unit matches by IoU is not refused; with a
    dissection, a notice says so (its ACEs will be near 0 when the model does not draw it).
    """
    _check_sampling(n, batch_size)
    if max_images < 1:
        raise GantoolsError(f"max_images must be at least 1, got {max_images}")
    strength = check_strength(strength)
    _check_value(value)
    if _needs_stats(value) and dissection is None:
        raise GantoolsError(f"value {value!r} needs the dissection statistics: give dissection (a report) or a number")
    units_asked = parse_units(units) if units is not None else None
    gan = load_model(model, get_device(device))
    dev = _device_of(gan.generator)
    G = gan.generator
    name = layer_name(G, layer)
    seg, dissection = report_segmenter(segmenter, dissection, gan, dev, progress)
    concepts = list(seg.concepts)
    ci = check_concept(concept, concepts)
    count = layer_units(G, name)
    todo = check_units(units_asked, count, name) if units_asked is not None else list(range(count))
    stats = None
    if dissection is not None:
        # Checked before the long computation: the report must fit the model and hold the layer
        # and the concept, since the ranking is stored there.
        result = _load_dissection(dissection, gan)
        stats = _layer_of(result, name)
        check_concept(concept, result.concepts, "the dissection report")
        support = concept_support(result, name, concept)
        if support.weak:
            notice(progress, f"note: {support.note()}: the model may not draw it, and every ACE may be near 0")
    v_all = unit_values(value, stats, todo)
    chunk = max(1, max_images // max(1, min(batch_size, n)))
    sums = torch.zeros(len(todo), dtype=torch.float64)
    sumsq = torch.zeros(len(todo), dtype=torch.float64)
    before_sum = 0.0
    z_all = G.sample_z(n, seed, device="cpu") if n > 0 else None
    total = n * len(todo)
    done = 0
    with _eval_mode(G), torch.no_grad():
        for start, end in _batches(n, batch_size):
            b = end - start
            z = z_all[start:end].to(dev)
            with Trace(G, name) as t:
                images0 = G(z)
            feats = t.output
            f0 = _fractions(_segment(seg, images0), len(concepts))[:, ci]
            before_sum += float(f0.sum())
            for c0 in range(0, len(todo), chunk):
                idx = list(range(c0, min(len(todo), c0 + chunk)))
                x = feats.repeat(len(idx), 1, 1, 1)
                for j, k in enumerate(idx):
                    unit = torch.tensor([todo[k]], device=dev)
                    x[j * b:(j + 1) * b] = _edit_units(x[j * b:(j + 1) * b], unit, v_all[k].to(dev, x.dtype),
                                                          strength)
                images = generate_from(G, name, x)
                f1 = _fractions(_segment(seg, images), len(concepts))[:, ci].view(len(idx), b)
                delta = f1 - f0.view(1, b)
                sums[idx] += delta.sum(1)
                sumsq[idx] += (delta ** 2).sum(1)
                done += b * len(idx)
                report(progress, f"rank {name} units", done, total)
    mean = sums / n
    var = (sumsq - n * mean ** 2) / (n - 1) if n > 1 else torch.zeros_like(mean)
    sd = var.clamp_min(0).sqrt()
    before = before_sum / n
    effects = {u: InterventionEffect(concept, float(mean[k]), float(sd[k]), n, before, before + float(mean[k]))
               for k, u in enumerate(todo)}
    ace = {u: 0.0 - effects[u].mean for u in todo}  # 0.0 - x: no "-0.0" in reports
    ranked = sorted(todo, key=lambda u: (-ace[u], u))
    settings = _settings(gan, seg, value=_value_json(value, v_all), strength=strength, n=n, seed=seed)
    return RankResult(name, concept, ranked, ace, effects, count, settings)
