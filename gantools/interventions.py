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
- Under torchrun each process measures its contiguous block of the batches (`units.sample_block`)
  and the per-sample fractions are gathered in order, so every process returns exactly the result
  of one process (rank 0's first samples make the pictures).
- `rank_units` (in `gantools.ranking`) measures every unit ablated alone (batched: the batch's
  features are repeated once per unit of a chunk, each copy with a different unit zeroed); stored
  in a dissection report's `ace[concept]`, it lets `top` rank by causal effect (rank="ace").

The unit-selection helpers shared with `editing` live in `gantools.units`, the effect and result
types in `gantools.effects`; their public names are re-exported here.

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
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from .effects import Z95, AblationResult, ContextEffect, InsertionResult, InterventionEffect, Samples, first_samples
from .hooks import Trace, generate_from, layer_name
from .images import read_mask
from .ranking import RankResult, rank_units
from .units import (DEFAULT_DISSECT_N, RARE_CONCEPT, ConceptSupport, LayerSetup, UnitChoice, UnitPlan, Value,
                    WeakConceptError, batches, check_concept, check_concept_drawn, check_sampling, check_strength,
                    check_units, check_value, concept_fractions, concept_support, eval_mode, gathered, generator_of,
                    layer_units, needs_stats, parse_units, plan_units, report_segmenter, run_settings, sample_block,
                    segment, set_units, setup_layer, unit_values, value_json)
from .utils import GantoolsError, ProgressCallback, parse_point, report

if TYPE_CHECKING:
    from .models import GAN
    from .types import DeviceSpec, ModelSpec, SegmenterSpec

# Public names of this module, including those that live in units, effects and ranking and are
# re-exported here so that `from gantools.interventions import ...` keeps working.
__all__ = ["DEFAULT_DISSECT_N", "DEFAULT_PATCH", "RARE_CONCEPT", "AblationResult", "ConceptSupport", "ContextEffect",
           "InsertionResult", "Intervention", "InterventionEffect", "RankResult", "Samples", "Value",
           "WeakConceptError", "Z95", "ablate", "check_concept", "check_concept_drawn", "check_point", "check_strength",
           "check_units", "concept_support", "curve_ks", "feature_mask", "insert", "intervene", "layer_units",
           "parse_units", "point_region", "rank_units", "report_segmenter", "unit_values"]

DEFAULT_PATCH = 3  # `at` inserts into a 3 x 3 patch of feature-map cells centred on the point


# ---------------------------------------------------------------------------------------------
# The intervention itself


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
        self.generator = generator_of(generator)
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
        return set_units(x, units, value, weight)

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
# Measuring: shared steps


@dataclass
class _Sampling:
    """How a measurement samples: n latents of `seed`, batch_size per pass, `grid` pictures kept."""

    n: int
    seed: int
    batch_size: int
    grid: int

    def latents(self, generator: nn.Module) -> torch.Tensor | None:
        """The n latents, made on the CPU so that they do not depend on the device."""
        return generator.sample_z(self.n, self.seed, device="cpu") if self.n > 0 else None


def _check_request(choice: UnitChoice, value: Value, strength: float, dissection: Any, model: Any) -> float:
    """The edit's values, checked before any work; returns the strength as a float."""
    strength = check_strength(strength)
    check_value(value)
    choice.check(dissection, model)
    return strength


def _plan(setup: LayerSetup, choice: UnitChoice, value: Value, sampling: _Sampling, dissect_n: int,
          progress: ProgressCallback | None) -> tuple[UnitPlan, torch.Tensor]:
    """The units to edit (see `plan_units`) and the level of each."""
    plan = plan_units(setup, choice, need_stats=needs_stats(value), dissect_n=dissect_n, seed=sampling.seed,
                      batch_size=sampling.batch_size, progress=progress)
    return plan, unit_values(value, plan.stats, plan.units)


# ---------------------------------------------------------------------------------------------
# Ablation


def curve_ks(k_max: int, points: int = 21) -> list[int]:
    """k values for the ablation curve: every k up to `points - 1` units, else `points` evenly spaced."""
    if k_max + 1 <= points:
        return list(range(k_max + 1))
    return sorted({round(i * k_max / (points - 1)) for i in range(points)})


def ablate(model: ModelSpec, layer: int | str, units: str | Sequence[int] | None = None, *,
           concept: str | None = None, top: int = 10, rank: str = "auto", value: Value = "zero",
           strength: float = 1.0, dissection: Any = None, segmenter: SegmenterSpec | None = None, n: int = 500,
           seed: int = 0, batch_size: int = 50, curve_points: int = 21, grid: int = 8,
           dissect_n: int = DEFAULT_DISSECT_N, allow_weak: bool = False, device: DeviceSpec = None,
           progress: ProgressCallback | None = None) -> AblationResult:
    """Ablate units and measure the average causal effect on every concept, and the top-k curve.

    Args:
        model: a GAN or a model spec for load_model.
        layer: number or dotted name of the layer.
        units: the units ("4,17,33", "0-7" or a list); else the `top` units for `concept`.
        concept: the target concept (ranks the units when `units` is None).
        top: how many units to take from the ranking.
        rank: "iou" (dissection), "ace" (causal ranking stored by `rank_units`) or "auto" (ace where
            the report holds the concept's causal ranking, else iou).
        value: v, "zero" (default), "mean" (each unit's mean activation, from the dissection) or a number.
        strength: s, the strength of the edit (1 = replace by v).
        dissection: a DissectionResult or a report path. Without one, the report shipped beside the
            model when it holds the layer (`units.shipped_dissection`; with the model's own
            segmenter), else one computed on the fly (dissect_n samples, seed + 1) when units must be
            chosen or levels looked up.
        segmenter: a Segmenter, a spec for load_segmenter, or None: the dissection report's segmenter
            when it records one, else the model's own, else colours.
        n: samples measured; seed: their latent seed; batch_size: images per forward pass.
        curve_points: at most this many k values on the curve (k = 0…K).
        grid: before/after pairs kept for pictures.
        allow_weak: take the top units of a concept that no unit matches (best IoU below the
            interpretable line) instead of raising WeakConceptError.
        device: where to run (default: where a loaded model lives; 'auto' for a spec).
        progress: progress callback.

    Every value is checked before the work starts; with no `dissection`, the concept is checked
    against the one computed on the fly before anything is measured.
    """
    check_sampling(n, batch_size, grid, dissect_n)
    if curve_points < 2:
        raise GantoolsError(f"curve_points must be at least 2 (k = 0 and all units), got {curve_points}")
    choice = UnitChoice(units, concept, top, rank, allow_weak)
    strength = _check_request(choice, value, strength, dissection, model)
    setup = setup_layer(model, layer, segmenter, dissection, device, progress)
    if concept is not None:
        check_concept(concept, setup.concepts)
    sampling = _Sampling(n, seed, batch_size, grid)
    plan, v = _plan(setup, choice, value, sampling, dissect_n, progress)
    ks = curve_ks(len(plan.units), curve_points)
    edits = {k: Intervention(setup.generator, setup.layer, plan.units[:k], v[:k], strength) for k in ks[1:]}
    before, after, samples = _measure_ablation(setup, edits, ks, sampling, progress)
    concepts = setup.concepts
    effects = {c: InterventionEffect.from_samples(c, before[:, i], after[ks[-1]][:, i])
               for i, c in enumerate(concepts)}
    curve = {c: [InterventionEffect.from_samples(c, before[:, i], after[k][:, i]) for k in ks]
             for i, c in enumerate(concepts)}
    target = concept if concept is not None else min(concepts, key=lambda c: effects[c].mean)
    settings = run_settings(setup.gan, setup.segmenter, value=value_json(value, v), strength=strength, n=n,
                            seed=seed, units_from=plan.source)
    return AblationResult(setup.layer, plan.units, target, concepts, effects, curve, ks, settings, samples)


def _measure_ablation(setup: LayerSetup, edits: dict[int, Intervention], ks: list[int], sampling: _Sampling,
                      progress: ProgressCallback | None
                      ) -> tuple[torch.Tensor, dict[int, torch.Tensor], Samples | None]:
    """Per-sample concept fractions before, and after ablating the first k units for each k in `ks`.
    Under torchrun each process measures its block of the batches, and every process gets them all."""
    G, name, seg, nc = setup.generator, setup.layer, setup.segmenter, len(setup.concepts)
    parts: list[dict[int, torch.Tensor]] = []  # per batch: k -> fractions after (k = 0: before)
    samples = None
    z_all = sampling.latents(G)
    block = sample_block(sampling.n, sampling.batch_size)
    with eval_mode(G), torch.no_grad():
        for start, end in batches(sampling.n, sampling.batch_size, block):
            with Trace(G, name) as t:
                images0 = G(z_all[start:end].to(setup.device))
            labels0 = segment(seg, images0)
            fractions = {0: concept_fractions(labels0, nc)}  # k = 0: nothing ablated, nothing changes
            last = (images0, labels0)
            for k in ks[1:]:
                # Same as running G(z) inside `with edits[k]:`, without recomputing the earlier blocks.
                images = generate_from(G, name, edits[k].apply(t.output))
                labels = segment(seg, images)
                fractions[k] = concept_fractions(labels, nc)
                last = (images, labels)
            parts.append(fractions)
            if start == 0 and sampling.grid > 0:  # the pictures show the first samples
                g = min(sampling.grid, end - start)
                samples = Samples(images0[:g].cpu(), last[0][:g].cpu(), labels0[:g].cpu(), last[1][:g].cpu())
            report(progress, f"ablate {name}", end - block.start, len(block))
    parts = gathered(parts)  # every process's batches, in sample order
    after = {k: torch.cat([part[k] for part in parts]) for k in ks}
    return after[0], after, first_samples(samples)


# ---------------------------------------------------------------------------------------------
# Insertion


def _image_region(mask: Any, size: int) -> tuple[torch.Tensor, str]:
    """An image-space mask (S x S bool) from a PNG path or a tensor; non-zero/bright pixels are inside."""
    if isinstance(mask, (str, os.PathLike)):
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


@dataclass
class _Region:
    """Where an insertion edits: the feature-map mask, the image-space region, and its description."""

    feature: torch.Tensor  # given to the Intervention (a feature-map mask, or an image mask it max-pools)
    image: torch.Tensor  # S x S bool: where the segmenter looks for context and added pixels
    location: dict[str, Any]


@dataclass
class _InsertionFractions:
    """Per-sample fractions: whole image (f) and inside the region (r), before (0) and after (1)."""

    f0: torch.Tensor
    f1: torch.Tensor
    r0: torch.Tensor
    r1: torch.Tensor
    context: torch.Tensor  # per sample, the concept the region showed most before the edit
    samples: Samples | None


def insert(model: ModelSpec, layer: int | str, units: str | Sequence[int] | None = None, *,
           concept: str | None = None, top: int = 10, rank: str = "auto", at: tuple[float, float] | str | None = None,
           mask: Any = None, patch: int = DEFAULT_PATCH, value: Value = "q99", strength: float = 1.0,
           dissection: Any = None, segmenter: SegmenterSpec | None = None, n: int = 500, seed: int = 0,
           batch_size: int = 50, grid: int = 8, dissect_n: int = DEFAULT_DISSECT_N, allow_weak: bool = False,
           device: DeviceSpec = None, progress: ProgressCallback | None = None) -> InsertionResult:
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
    check_sampling(n, batch_size, grid, dissect_n)
    choice = UnitChoice(units, concept, top, rank, allow_weak)
    strength = _check_request(choice, value, strength, dissection, model)
    setup = setup_layer(model, layer, segmenter, dissection, device, progress)
    if concept is not None:
        check_concept(concept, setup.concepts)
    region = _insertion_region(setup, at, mask, patch, seed)
    sampling = _Sampling(n, seed, batch_size, grid)
    plan, v = _plan(setup, choice, value, sampling, dissect_n, progress)
    edit = Intervention(setup.generator, setup.layer, plan.units, v, strength, region=region.feature)
    fractions = _measure_insertion(setup, edit, region.image, sampling, progress)
    concepts = setup.concepts
    effects = {c: InterventionEffect.from_samples(c, fractions.f0[:, i], fractions.f1[:, i])
               for i, c in enumerate(concepts)}
    target = concept if concept is not None else max(concepts, key=lambda c: effects[c].mean)
    ti = concepts.index(target)
    region_effect = InterventionEffect.from_samples(target, fractions.r0[:, ti], fractions.r1[:, ti])
    settings = run_settings(setup.gan, setup.segmenter, value=value_json(value, v), strength=strength, n=n,
                            seed=seed, units_from=plan.source)
    return InsertionResult(setup.layer, plan.units, target, concepts, effects, region_effect,
                           _by_context(concepts, ti, fractions), region.location, settings, fractions.samples)


def _insertion_region(setup: LayerSetup, at: tuple[float, float] | None, mask: Any, patch: int, seed: int) -> _Region:
    """The region from `at` (a block of cells) or `mask` (an image-space mask), with its description."""
    G = setup.generator
    # Feature-map and image sizes from one cheap forward pass.
    with eval_mode(G), torch.no_grad(), Trace(G, setup.layer) as t:
        probe = G(G.sample_z(1, seed, device=setup.device))
    fh, fw = t.output.shape[-2:]
    if at is not None:
        cells = point_region(at, (fh, fw), patch)
        # The cells' footprint in the image: where the segmenter looks for context and added pixels.
        image = F.interpolate(cells[None, None].float(), size=tuple(probe.shape[-2:]), mode="nearest")[0, 0] > 0
        rows, cols = cells.nonzero(as_tuple=True)
        location = {"at": [float(at[0]), float(at[1])], "patch": patch,
                    "cells": [int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1],
                    "feature_size": [int(fh), int(fw)]}
        feature = cells
    else:
        image, what = _image_region(mask, probe.shape[-1])
        feature = image  # max-pooled to the feature map by the Intervention
        location = {"mask": what, "feature_cells": int((feature_mask(image, (fh, fw)) > 0).sum()),
                    "feature_size": [int(fh), int(fw)]}
    location["region_pixels"] = int(image.sum())
    return _Region(feature, image, location)


def _measure_insertion(setup: LayerSetup, edit: Intervention, region_img: torch.Tensor, sampling: _Sampling,
                       progress: ProgressCallback | None) -> _InsertionFractions:
    """Concept fractions over the image and inside the region, before and after the edit, per sample."""
    G, name, seg, nc = setup.generator, setup.layer, setup.segmenter, len(setup.concepts)
    region_dev = region_img.to(setup.device)
    area = float(region_img.sum())
    parts = []
    samples = None
    z_all = sampling.latents(G)
    block = sample_block(sampling.n, sampling.batch_size)
    with eval_mode(G), torch.no_grad():
        for start, end in batches(sampling.n, sampling.batch_size, block):
            with Trace(G, name) as t:
                images0 = G(z_all[start:end].to(setup.device))
            labels0 = segment(seg, images0)
            images1 = generate_from(G, name, edit.apply(t.output))
            labels1 = segment(seg, images1)
            # Per-concept pixel counts inside the region: the context is the majority concept before.
            inside0 = torch.where(region_dev, labels0, nc)  # label nc = outside the region
            inside1 = torch.where(region_dev, labels1, nc)
            c0 = concept_fractions(inside0, nc + 1)[:, :nc] * (labels0[0].numel() / area)
            c1 = concept_fractions(inside1, nc + 1)[:, :nc] * (labels0[0].numel() / area)
            parts.append((concept_fractions(labels0, nc), concept_fractions(labels1, nc), c0, c1, c0.argmax(dim=1)))
            if start == 0 and sampling.grid > 0:  # the pictures show the first samples
                g = min(sampling.grid, end - start)
                samples = Samples(images0[:g].cpu(), images1[:g].cpu(), labels0[:g].cpu(), labels1[:g].cpu(),
                                  region=region_img.cpu())
            report(progress, f"insert {name}", end - block.start, len(block))
    # under torchrun: every process's batches, in sample order, and the pictures of the one that had sample 0
    f0, f1, r0, r1, context = (torch.cat(x) for x in zip(*gathered(parts)))
    return _InsertionFractions(f0, f1, r0, r1, context, first_samples(samples))


def _by_context(concepts: list[str], ti: int, fr: _InsertionFractions) -> dict[str, ContextEffect]:
    """The target's effects for the samples of each context, the most frequent context first."""
    nc = len(concepts)
    by_context = {}
    counts = torch.bincount(fr.context, minlength=nc)
    for ci in sorted(range(nc), key=lambda i: (-int(counts[i]), i)):
        if counts[ci] == 0:
            continue
        sel = fr.context == ci
        by_context[concepts[ci]] = ContextEffect(
            concepts[ci], int(counts[ci]),
            InterventionEffect.from_samples(concepts[ti], fr.f0[sel, ti], fr.f1[sel, ti]),
            InterventionEffect.from_samples(concepts[ti], fr.r0[sel, ti], fr.r1[sel, ti]))
    return by_context
