"""Ranking a layer's units by causal effect: each unit ablated alone, its effect on one concept.

`rank_units` measures, for every unit of a layer, the average causal effect (ACE) on a concept's
pixel fraction of ablating that unit alone. Batched: the layer's features are computed once per
batch of latents, then repeated once per unit of a chunk, each copy with its own unit ablated, and
the rest of the generator and the segmenter run on all copies at once; memory does not grow with N
(running sums). Under torchrun each process measures its block of the batches and the sums are
added over the processes (all_reduce), so every process returns the same ranking.

The ACE is the *reduction* (before − after) of the concept's pixel fraction, so that, as with IoU,
larger means "this unit causes the concept" and rankings sort in descending order. Stored in a
dissection report's `ace[concept]` (`RankResult.store` in memory, `gantools.dissection.record_ranking`
on disk), it lets `ablate`,
`insert` and `edit` take a concept's top units with rank="ace".
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch

from . import distributed
from .effects import InterventionEffect
from .hooks import Trace, generate_from
from .units import (LayerSetup, Value, batches, check_concept, check_sampling, check_strength, check_units,
                    check_value, concept_fractions, concept_support, dissection_layer, eval_mode, layer_units,
                    needs_stats, parse_units, run_settings, sample_block, segment, set_units, setup_layer,
                    unit_values, value_json)
from .utils import GantoolsError, ProgressCallback, notice, report, write_json

if TYPE_CHECKING:
    from .dissection import DissectionResult
    from .types import DeviceSpec, ModelSpec, SegmenterSpec


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
                                f"dissect layer {self.layer.removeprefix('layer')} first")
        dissection.layers[self.layer].ace[self.concept] = self.ace_list()

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what rank.json holds)."""
        return {"operation": "rank", "layer": self.layer, "concept": self.concept, "ranked_units": self.units,
                "ace": {str(u): self.ace[u] for u in self.units},
                "effects": {str(u): self.effects[u].to_dict() for u in self.units}, "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write rank.json into out_dir; returns out_dir."""
        write_json(Path(out_dir) / "rank.json", self.to_dict())
        return Path(out_dir)


class RankResults(dict):
    """Several concepts' rankings of one layer (what `rank_concepts` returns): a dict concept -> RankResult."""

    def to_dict(self) -> dict[str, Any]:
        """What rank.json holds: one concept's summary as `RankResult.to_dict`, several keyed by concept."""
        if len(self) == 1:
            return next(iter(self.values())).to_dict()
        return {c: r.to_dict() for c, r in self.items()}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write rank.json into out_dir; returns out_dir."""
        write_json(Path(out_dir) / "rank.json", self.to_dict())
        return Path(out_dir)


@dataclass
class _Ablations:
    """What each copy of a batch gets: one unit of `units` set to its level, at `strength`."""

    units: list[int]
    levels: torch.Tensor
    strength: float
    chunk: int  # units measured per generator call
    given: list[int] = field(default_factory=list)  # ablated in every copy, besides its own unit
    given_levels: torch.Tensor | None = None


@dataclass
class _Sums:
    """Running sums of the per-sample changes (unit x concept, or per unit for one concept), and of
    each concept's fraction before."""

    delta: torch.Tensor
    delta_sq: torch.Tensor
    before: Any = 0.0


def rank_units(model: ModelSpec, layer: int | str, concept: str, *, units: str | Sequence[int] | None = None,
               value: Value = "zero", strength: float = 1.0, dissection: Any = None,
               segmenter: SegmenterSpec | None = None, n: int = 200, seed: int = 0, batch_size: int = 32,
               max_images: int = 256, device: DeviceSpec = None,
               progress: ProgressCallback | None = None) -> RankResult:
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
            `value="mean"`. Store the result in it with `RankResult.store` (in memory) or
            `gantools.dissection.record_ranking` (a saved report).
        segmenter: a Segmenter, a spec, or None: the dissection report's segmenter
            when it records one, else the model's own, else colours.
        n: samples; seed: their latent seed; batch_size: latents per batch.
        max_images: at most this many images per generator call (chunk size = max_images // batch).
        device: where to run (default: where a loaded model lives; 'auto' for a spec).
        progress: the progress callback.

    Every unit is measured, so a concept that no unit matches by IoU is not refused; with a
    dissection, a notice says so (its ACEs will be near 0 when the model does not draw it).
    Several concepts: `rank_concepts`, for the price of one.
    """
    return rank_concepts(model, layer, [concept], units=units, value=value, strength=strength,
                         dissection=dissection, segmenter=segmenter, n=n, seed=seed, batch_size=batch_size,
                         max_images=max_images, device=device, progress=progress)[concept]


def rank_concepts(model: ModelSpec, layer: int | str, concepts: Sequence[str] | None = None, *,
                  units: str | Sequence[int] | None = None, value: Value = "zero", strength: float = 1.0,
                  dissection: Any = None, segmenter: SegmenterSpec | None = None, n: int = 200, seed: int = 0,
                  batch_size: int = 32, max_images: int = 256, given: Sequence[int] = (), device: DeviceSpec = None,
                  progress: ProgressCallback | None = None) -> RankResults:
    """`rank_units` for several concepts (default: every concept of the segmenter) in one pass.

    One segmentation of each ablated image gives every concept's pixel fraction, so ranking all
    concepts costs what ranking one does. Arguments as in `rank_units`; returns a RankResults, a dict
    concept -> RankResult, each equal to what `rank_units` returns for that concept alone.

    `given`: units ablated in every copy together with the one measured, so each ACE is the effect of
    ablating them with it (against the unedited images); they are not ranked themselves. This is
    one round of `greedy_units`.
    """
    check_sampling(n, batch_size)
    if max_images < 1:
        raise GantoolsError(f"max_images must be at least 1, got {max_images}")
    strength = check_strength(strength)
    check_value(value)
    if needs_stats(value) and dissection is None:
        raise GantoolsError(f"value {value!r} needs the dissection statistics: give dissection (a report) or a number")
    units_asked = parse_units(units) if units is not None else None
    setup = setup_layer(model, layer, segmenter, dissection, device, progress)
    names = list(setup.concepts) if concepts is None else list(dict.fromkeys(concepts))
    if not names:
        raise GantoolsError("concepts is empty: name at least one, or give None for every concept")
    cis = [check_concept(c, setup.concepts) for c in names]
    count = layer_units(setup.generator, setup.layer)
    todo = check_units(units_asked, count, setup.layer) if units_asked is not None else list(range(count))
    fixed = check_units(list(given), count, setup.layer) if given else []
    todo = [u for u in todo if u not in fixed]
    if not todo:
        raise GantoolsError("no unit left to rank: every unit asked for is in given")
    stats = _checked_stats(setup, names[0], progress)  # the layer's statistics, the same for every concept
    for c in names[1:]:
        _checked_stats(setup, c, progress)  # every concept is checked before the work starts
    chunk = max(1, max_images // max(1, min(batch_size, n)))
    ablations = _Ablations(todo, unit_values(value, stats, todo), strength, chunk, fixed,
                           unit_values(value, stats, fixed) if fixed else None)
    sums = _measure(setup, cis, ablations, n, seed, batch_size, progress)
    settings = run_settings(setup.gan, setup.segmenter, value=value_json(value, ablations.levels), strength=strength,
                            n=n, seed=seed)
    if fixed:  # these ACEs are joint effects: say so wherever the ranking is saved
        settings["given"] = fixed
    results = RankResults()
    for j, c in enumerate(names):
        effects = _effects(c, _Sums(sums.delta[:, j], sums.delta_sq[:, j], float(sums.before[j])), todo, n)
        ace = {u: 0.0 - effects[u].mean for u in todo}  # 0.0 - x: no "-0.0" in reports
        ranked = sorted(todo, key=lambda u: (-ace[u], u))
        results[c] = RankResult(setup.layer, c, ranked, ace, effects, count, dict(settings))
    return results


class JointUnits(list):
    """A concept's units chosen jointly (what `greedy_units` returns): a list of units in the order chosen.

    Attributes:
        layer, concept: what was measured.
        joint_ace: after each round, the pixel fraction of the concept lost when the units chosen so far
            are ablated together (before − after, mean over N); joint_ace[-1] is the whole set's effect.
        settings: model, segmenter, N, seed of the rankings.
    """

    def __init__(self, layer: str, concept: str, units: Sequence[int] = (), joint_ace: Sequence[float] = (),
                 settings: dict[str, Any] | None = None) -> None:
        super().__init__(units)
        self.layer, self.concept = layer, concept
        self.joint_ace = list(joint_ace)
        self.settings = dict(settings or {})

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what greedy.json holds)."""
        return {"operation": "greedy", "layer": self.layer, "concept": self.concept, "units": list(self),
                "joint_ace": self.joint_ace, "settings": self.settings}

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write greedy.json into out_dir; returns out_dir."""
        write_json(Path(out_dir) / "greedy.json", self.to_dict())
        return Path(out_dir)


def greedy_units(model: ModelSpec, layer: int | str, concept: str, k: int, *,
                 units: str | Sequence[int] | None = None, value: Value = "zero", strength: float = 1.0,
                 dissection: Any = None, segmenter: SegmenterSpec | None = None, n: int = 200, seed: int = 0,
                 batch_size: int = 32, max_images: int = 256, device: DeviceSpec = None,
                 progress: ProgressCallback | None = None) -> JointUnits:
    """The k units whose ablation together removes most of `concept`, chosen greedily.

    Each round ranks the remaining units by the effect of ablating each together with those already
    chosen (`rank_concepts(given=...)`) and adds the best. Single-unit ACEs do not add up when units
    compensate for each other; GAN Dissection chooses a concept's units jointly (by optimising a
    per-unit coefficient), and this is the discrete, k-pass version of that. Arguments as in
    `rank_units`; returns a JointUnits, the units in the order chosen (the first is `rank_units`' best)
    with the joint effect after each round.
    """
    if k < 1:
        raise GantoolsError(f"k must be at least 1, got {k}")
    units_chosen: list[int] = []
    joint_ace: list[float] = []
    for _ in range(k):
        r = rank_concepts(model, layer, [concept], units=units, value=value, strength=strength,
                          dissection=dissection, segmenter=segmenter, n=n, seed=seed, batch_size=batch_size,
                          max_images=max_images, given=list(units_chosen), device=device, progress=progress)[concept]
        units_chosen.append(r.units[0])
        joint_ace.append(r.ace[r.units[0]])  # measured with the given units ablated too: the joint effect
        if len(r.units) == 1:  # that was the last unit left
            break
    # The settings of the last round, less its `given`: the whole choice is in the units.
    settings = {key: v for key, v in r.settings.items() if key != "given"}
    return JointUnits(r.layer, concept, units_chosen, joint_ace, settings)


def _checked_stats(setup: LayerSetup, concept: str, progress: ProgressCallback | None) -> Any:
    """The layer's dissection statistics (None without a dissection), checked before the long
    computation: the report must hold the layer and the concept, since the ranking is stored there."""
    if setup.dissection is None:
        return None
    stats = dissection_layer(setup.dissection, setup.layer)
    check_concept(concept, setup.dissection.concepts, "the dissection report")
    support = concept_support(setup.dissection, setup.layer, concept)
    if support.weak:
        notice(progress, f"note: {support.note()}: the model may not draw it, and every ACE may be near 0")
    return stats


def _measure(setup: LayerSetup, cis: list[int], ablations: _Ablations, n: int, seed: int, batch_size: int,
             progress: ProgressCallback | None) -> _Sums:
    """Running sums of each unit's per-sample change of each concept in `cis` over n samples."""
    G, name, dev = setup.generator, setup.layer, setup.device
    todo, nc, k = ablations.units, len(setup.concepts), len(cis)
    sums = _Sums(torch.zeros(len(todo), k, dtype=torch.float64), torch.zeros(len(todo), k, dtype=torch.float64),
                 torch.zeros(k, dtype=torch.float64))
    z_all = G.sample_z(n, seed, device="cpu") if n > 0 else None
    block = sample_block(n, batch_size)
    total, done = len(block) * len(todo), 0
    with eval_mode(G), torch.no_grad():
        for start, end in batches(n, batch_size, block):
            b = end - start
            with Trace(G, name) as t:
                images0 = G(z_all[start:end].to(dev))
            feats = t.output
            if ablations.given:  # the fixed part of every copy's edit; f0 stays the unedited images'
                levels = ablations.given_levels.to(dev, feats.dtype).view(1, -1, 1, 1)
                feats = set_units(feats, torch.tensor(ablations.given, device=dev), levels, ablations.strength)
            f0 = concept_fractions(segment(setup.segmenter, images0), nc)[:, cis]
            sums.before += f0.sum(0).double().cpu()
            for c0 in range(0, len(todo), ablations.chunk):
                idx = list(range(c0, min(len(todo), c0 + ablations.chunk)))
                images = generate_from(G, name, _ablated_copies(feats, idx, ablations, dev))
                f1 = concept_fractions(segment(setup.segmenter, images), nc)[:, cis]
                delta = f1.view(len(idx), b, k) - f0.view(1, b, k)
                sums.delta[idx] += delta.sum(1).double().cpu()
                sums.delta_sq[idx] += (delta ** 2).sum(1).double().cpu()
                done += b * len(idx)
                report(progress, f"rank {name} units", done, total)
    return _summed(sums)


def _summed(sums: _Sums) -> _Sums:
    """The sums over every process's samples (one all_reduce under torchrun; `sums` itself alone).
    Added in another order than one process adds them: equal to it up to float rounding."""
    if not distributed.active():
        return sums
    shape = sums.delta.shape
    flat = distributed.all_reduce_sum(torch.cat([sums.delta.flatten(), sums.delta_sq.flatten(), sums.before]))
    m = sums.delta.numel()
    return _Sums(flat[:m].view(shape), flat[m:2 * m].view(shape), flat[2 * m:])


def _ablated_copies(feats: torch.Tensor, idx: list[int], ablations: _Ablations, dev: torch.device) -> torch.Tensor:
    """The batch's features repeated once per unit index in `idx`, copy j with unit idx[j] ablated."""
    b = feats.shape[0]
    x = feats.repeat(len(idx), 1, 1, 1)
    for j, k in enumerate(idx):
        unit = torch.tensor([ablations.units[k]], device=dev)
        x[j * b:(j + 1) * b] = set_units(x[j * b:(j + 1) * b], unit, ablations.levels[k].to(dev, x.dtype),
                                         ablations.strength)
    return x


def _effects(concept: str, sums: _Sums, todo: list[int], n: int) -> dict[int, InterventionEffect]:
    """Each unit's effect (mean, sd over n samples, mean fractions before and after) from the sums."""
    mean = sums.delta / n
    var = (sums.delta_sq - n * mean ** 2) / (n - 1) if n > 1 else torch.zeros_like(mean)
    sd = var.clamp_min(0).sqrt()
    before = sums.before / n
    return {u: InterventionEffect(concept, float(mean[k]), float(sd[k]), n, before, before + float(mean[k]))
            for k, u in enumerate(todo)}
