"""gantools.dissection: streaming thresholds and IoU against brute force, planted units, IQR, reports.

Tolerances (stated, and asserted below):
- quantile thresholds: within 0.2% of the unit's activation range of torch.quantile's exact value;
- q99 of the raw maps: the share of values above it is 1% within 0.25 points plus one value;
- IoU: within 0.005 of the explicit count at the exact quantile threshold (the histogram is exact
  except inside the one bin holding the threshold, where it interpolates linearly);
- counts in "fixed" (IQR) mode and the per-unit means are exact up to float rounding.
"""

from __future__ import annotations

import csv
import io
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from gantools.dissection import accumulate
from gantools.dissection import engine as D
from gantools.dissection import (IQR_SEED_OFFSET, DissectionResult, check_model, default_layer, dissect,
                                 information_quality_ratio, load_report, record_ranking, render_examples)
from gantools.dissection.examples import sample_latents
from gantools.dissection.result import IQR_LABEL_RULE, NO_LABEL_RULE
from gantools.dissection.stats import Histogram
from gantools.dissection.upsample import Upsampler
from gantools.hooks import TraceDict
from gantools.models import Generator, ModelConfig, fingerprint, load_model
from gantools.utils import GantoolsError

THRESHOLD_TOL = 0.002  # of each unit's activation range
IOU_TOL = 0.005


# ---------------------------------------------------------------------------------------------
# Helpers: a function segmenter, brute force, and a generator with planted units


def quadrant_segmenter(images: torch.Tensor) -> torch.Tensor:
    """4 concepts from the colours of the image: (red > green) + 2 * (blue > 0)."""
    return (images[:, 0] > images[:, 1]).long() + 2 * (images[:, 2] > 0).long()


quadrant_segmenter.concepts = ["c0", "c1", "c2", "c3"]


def brute_force(generator: nn.Module, names: list[str], segmenter, n: int, seed: int):
    """Every upsampled activation and label of n samples, kept in memory."""
    z = sample_latents(generator, n, seed)
    with torch.no_grad(), TraceDict(generator, names) as td:
        images = generator(z)
    labels = segmenter(images)
    feats = {nm: td[nm].output for nm in names}
    ups = {nm: F.interpolate(f, size=labels.shape[1:], mode="bilinear", align_corners=False) for nm, f in feats.items()}
    return feats, ups, labels


def explicit_iou(up: torch.Tensor, labels: torch.Tensor, thresholds: torch.Tensor, k: int) -> torch.Tensor:
    """IoU(u, c) = sum |A and S| / sum |A or S| by explicit loops over units and concepts."""
    out = torch.zeros(up.shape[1], k, dtype=torch.float64)
    for u in range(up.shape[1]):
        a = up[:, u] > thresholds[u]
        for c in range(k):
            s = labels == c
            union = (a | s).sum()
            out[u, c] = float((a & s).sum()) / float(union) if union else 0.0
    return out


def exact_iqr(a: torch.Tensor, s: torch.Tensor) -> float:
    """IQR of two boolean masks from explicit counts."""
    def t(v):
        return torch.tensor(float(v), dtype=torch.float64)

    return float(information_quality_ratio(t((a & s).sum()), t(a.sum()), t(s.sum()), float(a.numel())))


class _PlantedBlocks(nn.Module):
    """layer1: z (n x 128) -> 6 x 8 x 8 maps. Four random blocks of the 8x8 grid per concept 1..4
    (the ranks of z pick them); unit j < 4 is the indicator of concept j + 1's blocks, unit 4 is
    noise, unit 5 is dead (always 0)."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        n = z.shape[0]
        rank = z[:, :64].argsort(dim=1).argsort(dim=1)  # a random permutation of the 64 blocks
        units = [((rank >= 4 * j) & (rank < 4 * (j + 1))).float() for j in range(4)]
        units += [z[:, 64:128].abs(), torch.zeros(n, 64)]  # noise from other dimensions of z
        return torch.stack(units, dim=1).reshape(n, 6, 8, 8)


class _Render(nn.Module):
    """Image (16 x 16) whose red channel encodes the concept id of each 2x2 block."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        label = sum((j + 1) * x[:, j] for j in range(4))  # n x 8 x 8, 0 = background
        red = F.interpolate(label[:, None], scale_factor=2, mode="nearest") / 4 * 2 - 1
        return torch.cat([red, torch.zeros_like(red), torch.zeros_like(red)], dim=1)


class Planted(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.layer1 = _PlantedBlocks()
        self.output = _Render()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.output(self.layer1(z))

    def sample_z(self, n: int, seed: int | None = None) -> torch.Tensor:
        return torch.randn(n, 128, generator=torch.Generator().manual_seed(seed or 0))


def planted_segmenter(images: torch.Tensor) -> torch.Tensor:
    return ((images[:, 0] + 1) / 2 * 4).round().long()


planted_segmenter.concepts = ["background", "sky", "tree", "door", "water"]


@pytest.fixture
def tiny_gen(tiny_config) -> Generator:
    torch.manual_seed(7)
    return Generator(tiny_config).eval()


# ---------------------------------------------------------------------------------------------
# Correctness against brute force


@pytest.mark.parametrize("q,floor_after", [(0.01, None), (0.15, None), (0.01, 16), (0.15, 16)])
def test_quantile_thresholds_and_iou_match_brute_force(tiny_gen, q, floor_after, monkeypatch):
    if floor_after is not None:  # values below a floor stop being binned after the first batch
        monkeypatch.setattr(accumulate, "FLOOR_AFTER", floor_after)
    n, seed = 72, 3
    result = dissect(tiny_gen, layers=(1, 2), segmenter=quadrant_segmenter, n=n, seed=seed, quantile=q,
                     batch_size=16, top_k=4)
    feats, ups, labels = brute_force(tiny_gen, ["layer1", "layer2"], quadrant_segmenter, n, seed)
    assert list(result.layers) == ["layer1", "layer2"]
    for name, layer in result.layers.items():
        up, f = ups[name], feats[name]
        u = up.shape[1]
        values = up.transpose(0, 1).reshape(u, -1)
        exact_t = torch.quantile(values, 1 - q, dim=1)
        span = values.max(dim=1).values - values.min(dim=1).values
        assert ((layer.threshold - exact_t).abs() <= THRESHOLD_TOL * span + 1e-7).all(), name
        iou_exact = explicit_iou(up, labels, exact_t, 4)
        assert (layer.iou.double() - iou_exact).abs().max() <= IOU_TOL, name
        assert iou_exact.max() > q / 2  # clearly non-zero IoUs: not a vacuous comparison
        # best concept and its IoU
        assert torch.allclose(layer.best_iou.double(), iou_exact.max(dim=1).values, atol=IOU_TOL)
        # raw statistics
        raw = f.transpose(0, 1).reshape(u, -1)
        assert torch.allclose(layer.mean, raw.mean(dim=1), atol=1e-6)
        # q99 by rank (tail order statistics of a small sample are far apart, so compare counts):
        # the share of raw values above it is 1% to within 0.25% + one value.
        above = (raw > layer.q99[:, None]).double().mean(dim=1)
        assert ((above - 0.01).abs() <= 0.0025 + 1 / raw.shape[1]).all()
        # the running top-k are the samples with the highest maximum activation
        peak = f.amax(dim=(2, 3))  # n x u
        for unit in range(u):
            best = peak[:, unit].topk(4)
            assert torch.allclose(layer.top_values[unit], best.values)
            assert set(layer.top_samples[unit].tolist()) == set(best.indices.tolist())
            ex = layer.examples
            j = layer.top_samples[unit, 0]
            assert torch.equal(ex.maps[unit, 0], f[j, unit])
        assert layer.shape == tuple(f.shape[1:])
    assert result.concept_coverage == pytest.approx(
        [float((labels == c).double().mean()) for c in range(4)], abs=1e-12)


def test_one_pass_over_several_layers_equals_separate_runs(tiny_gen):
    both = dissect(tiny_gen, layers=("layer2", 1), segmenter=quadrant_segmenter, n=40, seed=1, batch_size=16)
    assert list(both.layers) == ["layer2", "layer1"]
    for layer in (1, 2):
        alone = dissect(tiny_gen, layers=layer, segmenter=quadrant_segmenter, n=40, seed=1, batch_size=16)
        name = f"layer{layer}"
        assert torch.equal(alone.layers[name].threshold, both.layers[name].threshold)
        assert torch.equal(alone.layers[name].iou, both.layers[name].iou)


def test_inline_bookkeeping_equals_the_worker_thread(tiny_gen, monkeypatch):
    # With a spare core the accumulators run in a worker thread; without one, inline. Same answer.
    monkeypatch.setattr(D.os, "cpu_count", lambda: 64)
    worker = dissect(tiny_gen, layers=(1, 2), segmenter=quadrant_segmenter, n=40, seed=1, batch_size=16)
    monkeypatch.setattr(D.os, "cpu_count", lambda: 1)
    inline = dissect(tiny_gen, layers=(1, 2), segmenter=quadrant_segmenter, n=40, seed=1, batch_size=16)
    for name in ("layer1", "layer2"):
        a, b = worker.layers[name], inline.layers[name]
        assert torch.equal(a.threshold, b.threshold) and torch.equal(a.iou, b.iou)
        assert torch.equal(a.top_samples, b.top_samples) and torch.allclose(a.mean, b.mean)


def test_deterministic_and_seed_dependent(tiny_gen):
    a = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=32, seed=5)
    b = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=32, seed=5)
    c = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=32, seed=6)
    a.settings.pop("seconds"), b.settings.pop("seconds"), c.settings.pop("seconds")
    assert a == b
    assert not torch.equal(a.layers["layer2"].threshold, c.layers["layer2"].threshold)


def test_batch_size_does_not_change_the_answer_beyond_tolerance(tiny_gen):
    a = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=48, seed=2, batch_size=48)
    b = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=48, seed=2, batch_size=5)
    la, lb = a.layers["layer2"], b.layers["layer2"]
    assert (la.iou - lb.iou).abs().max() <= 2 * IOU_TOL
    assert la.top_samples.tolist() == lb.top_samples.tolist()


def assert_layer2_top1_matches_brute_force(result, generator, n: int, seed: int) -> None:
    """layer2's top-1% thresholds and IoUs agree with torch.quantile and explicit IoU."""
    _, ups, labels = brute_force(generator, ["layer2"], quadrant_segmenter, n, seed)
    up = ups["layer2"]
    values = up.transpose(0, 1).reshape(up.shape[1], -1)
    exact_t = torch.quantile(values, 0.99, dim=1)
    span = values.max(dim=1).values - values.min(dim=1).values
    layer = result.layers["layer2"]
    assert ((layer.threshold - exact_t).abs() <= THRESHOLD_TOL * span).all()
    assert (layer.iou.double() - explicit_iou(up, labels, exact_t, 4)).abs().max() <= IOU_TOL


def test_a_floor_above_the_threshold_is_redone(tiny_gen, monkeypatch):
    # A floor at the level of the top 0.5% lies above the top-1% threshold: the bins below it are
    # incomplete, so the layer must be redone without a floor, and still match brute force.
    monkeypatch.setattr(accumulate, "FLOOR_AFTER", 16)
    monkeypatch.setattr(accumulate, "FLOOR_MARGIN", 0.5)
    notes = []
    result = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=64, seed=4, batch_size=16,
                     progress=lambda p: notes.append(p.message) if p.message else None)
    assert any("again" in m for m in notes)
    assert_layer2_top1_matches_brute_force(result, tiny_gen, 64, 4)


def test_first_batch_misestimate_is_redone(tiny_config):
    # The first batch's activations are 25x the rest: the histograms' lower bounds, set on it, are
    # far too high, so the layer must be redone (and still match brute force).
    class Skewed(Generator):
        def sample_z(self, n, seed=None, device=None):
            z = super().sample_z(n, seed, device="cpu")
            z[:16] *= 25
            return z

    torch.manual_seed(7)
    gen = Skewed(tiny_config).eval()
    notes = []
    result = dissect(gen, layers=2, segmenter=quadrant_segmenter, n=96, seed=0, quantile=0.01, batch_size=16,
                     progress=lambda p: notes.append(p.message) if p.message else None)
    assert any("again" in m for m in notes)
    assert_layer2_top1_matches_brute_force(result, gen, 96, 0)


# ---------------------------------------------------------------------------------------------
# Planted units


@pytest.mark.parametrize("threshold", ["quantile", "iqr"])
def test_planted_units_get_iou_one_and_right_labels(threshold):
    # Each concept covers 4 of 64 blocks in every image: the top 1/16 of a planted unit is its concept.
    result = dissect(Planted(), layers=1, segmenter=planted_segmenter, n=64, seed=0, quantile=4 / 64,
                     threshold=threshold, batch_size=16, min_iou=0.2)
    layer = result.layers["layer1"]
    assert layer.label[:4] == ["sky", "tree", "door", "water"]
    assert (layer.best_iou[:4] >= 0.99).all(), layer.best_iou
    assert float(layer.best_iou[4]) < 0.1  # noise
    assert float(layer.best_iou[5]) == 0.0 and float(layer.threshold[5]) == 0.0  # dead unit
    assert layer.interpretable == [0, 1, 2, 3]  # IoU 1 each (ties in unit order); noise and dead unit out
    for j, concept in enumerate(["sky", "tree", "door", "water"]):
        assert layer.ranked_units(concept)[0] == j
        assert layer.units_for(concept) == [j]
    assert result.summary()["layer1"]["sky"] == [0]
    if threshold == "iqr":
        # Inside values are >= 0.5625, outside ones <= 0.4375 (0.375 when no pixel has three inside
        # neighbours): the IQR is 1 on that whole plateau, and its middle is chosen.
        assert ((layer.threshold[:4] >= 0.46) & (layer.threshold[:4] < 0.5625)).all(), layer.threshold


# ---------------------------------------------------------------------------------------------
# IQR thresholds


def iqr_brute_force(up: torch.Tensor, labels: torch.Tensor, k: int, positive_only: bool = True,
                    min_share: float = 0.001) -> tuple[torch.Tensor, torch.Tensor]:
    """One unit's best IQR per concept over every mask `up > t` (t in each gap between two distinct
    upsampled values of the whole stored maps): (iqr, t) per concept, t the gap's lower end.

    With positive_only (the IQR rules): only levels above 0, concepts with at least `min_share` of
    the pixels, and pairs with P(concept | mask) > P(concept) on exact counts; a concept with no
    such pair gets (-1, nan). Without it, every (t, concept) pair counts (the rule before the fix).
    """
    v = up.flatten().double()
    order = v.argsort(descending=True)
    vs, onehot = v[order], F.one_hot(labels.flatten()[order], k).double()
    inter = onehot.cumsum(0)[:-1]  # row i: counts among the i + 1 largest values
    mask = torch.arange(1, v.numel(), dtype=torch.float64)[:, None]
    concept = onehot.sum(0)[None]
    total = float(v.numel())
    iqr = information_quality_ratio(inter, mask, concept, total)
    ok = (vs[:-1] > vs[1:])[:, None].expand_as(iqr)  # some t separates value i from value i + 1
    if positive_only:
        ok = ok & (vs[:-1] > 0)[:, None] & (concept >= min_share * total) & (inter * total > mask * concept)
    best, row = torch.where(ok, iqr, -1.0).max(dim=0)
    t = torch.where(best >= 0, vs[1:][row], torch.full_like(best, float("nan")))
    return best, t


def lift(a: torch.Tensor, s: torch.Tensor) -> float:
    """P(s | a) / P(s) from explicit counts (0 for an empty mask)."""
    n_a = int(a.sum())
    return float((a & s).sum()) * a.numel() / (n_a * float(s.sum())) if n_a and s.any() else 0.0


def assert_iqr_matches_brute_force(result, generator, name: str, segmenter, k: int, n: int, seed: int) -> int:
    """Check an IQR dissection against brute force on the stored maps and segmentations of its
    selection samples, with the IQR rules (levels above 0, concepts with at least 0.1% of the pixels,
    only pairs where the mask raises the concept's probability), and its IoUs against explicit counts
    on the main samples. Returns how many units the rule before the fix got wrong."""
    layer = result.layers[name]
    assert result.settings["threshold"] == "iqr" and result.settings["iqr_seed"] == seed + IQR_SEED_OFFSET
    _, ups, labels = brute_force(generator, [name], segmenter, n, seed + IQR_SEED_OFFSET)
    up = ups[name]
    wrong_before = 0
    for u in range(up.shape[1]):
        per_concept, _ = iqr_brute_force(up[:, u], labels, k)
        # the rule before the fix: the best of all pairs, often a mask of where a concept is not
        q_any, t_any = iqr_brute_force(up[:, u], labels, k, positive_only=False)
        c_any = int(q_any.argmax())
        wrong_before += float(t_any[c_any]) <= 0 or lift(up[:, u] > t_any[c_any], labels == c_any) <= 1
        best = float(per_concept.max())
        if best < 0:  # no positively associated pair above 0
            assert layer.label[u] == "" and float(layer.best_iou[u]) == 0.0, u
            continue
        c, t = layer.concept_index(layer.label[u]), float(layer.threshold[u])
        a, s = up[:, u] > t, labels == c
        assert t > 0, (u, t)
        assert lift(a, s) > 1, (u, layer.label[u], lift(a, s))
        assert float(s.double().mean()) >= 0.001
        # within 10% of the optimum: the histogram's levels are its bin edges, brute force tries every
        # gap between two values. So the concept is the best one unless another is within 10% of it.
        ours, runner_up = exact_iqr(a, s), float(per_concept.topk(2).values[1])
        assert ours >= 0.9 * best, (u, ours, best)
        if runner_up < 0.9 * best:
            assert c == int(per_concept.argmax()), (u, c, per_concept)
    # IoU counted exactly on the main samples at those thresholds; each unit's IoU is its label's
    _, ups, labels = brute_force(generator, [name], segmenter, n, seed)
    iou = explicit_iou(ups[name], labels, layer.threshold, k)
    assert torch.allclose(layer.iou.double(), iou, atol=1e-6)
    for u, concept in enumerate(layer.label):
        expected = float(iou[u, layer.concept_index(concept)]) if concept else 0.0
        assert float(layer.best_iou[u]) == pytest.approx(expected, abs=1e-6)
    return wrong_before


def test_iqr_thresholds_and_labels_match_brute_force_positive_pairs(tiny_gen):
    n, seed = 48, 4
    result = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=n, seed=seed, threshold="iqr",
                     batch_size=16)
    wrong_before = assert_iqr_matches_brute_force(result, tiny_gen, "layer2", quadrant_segmenter, 4, n, seed)
    assert wrong_before >= 2  # this model has units that the rule before the fix got wrong
    layer = result.layers["layer2"]
    assert len([c for c in layer.label if c]) >= layer.units // 2


class _AntiSkyUnits(nn.Module):
    """layer1 of `AntiSky`: unit 0 fires (at 1) exactly where sky is absent, and at 2 on door's 4
    blocks and on 4 background blocks; unit 1 is sky's indicator."""

    def forward(self, blocks: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        sky, door = blocks[:, 0], blocks[:, 2]
        rank = z[:, :64].argsort(dim=1).argsort(dim=1).reshape(-1, 8, 8)  # the ranks that place the blocks
        extra = ((rank >= 16) & (rank < 20)).float()  # 4 background blocks
        return torch.stack([1 - sky + door + extra, sky], dim=1)


class AntiSky(Planted):
    """Planted's images (and concepts), with `_AntiSkyUnits` as layer1."""

    def __init__(self) -> None:
        super().__init__()
        self.blocks = _PlantedBlocks()
        self.layer1 = _AntiSkyUnits()

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        blocks = self.blocks(z)
        self.layer1(blocks, z)
        return self.output(blocks)


def test_iqr_does_not_label_a_unit_by_where_a_concept_is_absent():
    # Unit 0's lowest level marks exactly where sky is not: that mask has the highest IQR of all
    # (with sky, negatively), and its best IoU is background's (0.8), the complement by accident.
    # Among positively associated pairs its best is door (its strong level: door and 4 other blocks).
    result = dissect(AntiSky(), layers=1, segmenter=planted_segmenter, n=64, seed=0, threshold="iqr",
                     batch_size=16, min_iou=0.2)
    layer = result.layers["layer1"]
    assert layer.label[0] not in ("sky", "background")
    assert layer.label == ["door", "sky"]
    assert 1.0 < float(layer.threshold[0]) < 2.0, layer.threshold  # between the weak and the strong level
    assert 0.4 <= float(layer.best_iou[0]) <= 0.55  # door's 4 blocks of the 8 strong ones
    assert float(layer.best_iou[1]) >= 0.99
    # the chosen pair raises door's probability on the main samples too
    _, ups, labels = brute_force(AntiSky(), ["layer1"], planted_segmenter, 64, 0)
    assert lift(ups["layer1"][:, 0] > layer.threshold[0], labels == 3) > 4
    assert [r == IQR_LABEL_RULE for r in layer.label_rules] == [True, True]
    assert assert_iqr_matches_brute_force(result, AntiSky(), "layer1", planted_segmenter, 5, 64, 0) >= 1


def test_best_iqr_skips_rare_concepts_and_levels_at_or_below_zero():
    # 20,000 pixels of concepts 0 (common), 1 (10%) and 2 (10 pixels: 0.05%).
    lab = torch.zeros(20_000, dtype=torch.long)
    lab[:2000], lab[2000:2010] = 1, 2
    # unit 0: 3 on the rare concept (a perfect match), 2 on concept 1, 0.5 elsewhere;
    # unit 1: -1 on concept 1, 0 elsewhere (positive pairs only at levels below 0: none allowed)
    unit0 = torch.where(lab == 2, 3.0, torch.where(lab == 1, 2.0, 0.5))
    unit1 = torch.where(lab == 1, -1.0, 0.0)
    h = Histogram(torch.tensor([0.5, -1.0]), torch.tensor([3.0, 0.0]), 64, 3)
    scaled = h.scale_labels(lab)[None]
    h.add(torch.tensor([0]), unit0[None], None, None, scaled)
    h.add(torch.tensor([1]), unit1[None], None, None, scaled)
    h.flush()
    totals = torch.bincount(lab, minlength=3)
    t, concept, iqr = h.best_iqr(20_000.0, totals)
    assert concept.tolist() == [1, -1]
    assert 0.5 <= float(t[0]) < 2.0 and float(iqr[0]) == pytest.approx(
        exact_iqr(unit0 > float(t[0]), lab == 1), abs=1e-9)
    assert float(iqr[1]) == 0.0
    # with a lower minimum share, the rare concept's perfect match wins
    t, concept, _ = h.best_iqr(20_000.0, totals, min_share=1e-4)
    assert int(concept[0]) == 2 and 2.0 <= float(t[0]) < 3.0


@pytest.mark.parametrize("below_lo", [False, True])
def test_dense_counting_equals_the_generic_histogram(below_lo):
    # add_dense bins bin coordinates upsampled from the raw maps; add bins the upsampled values.
    # Same counts (up to values within float rounding of a bin edge), ReLU zeros and all; with
    # values below lo (the first batch's minimum) the clamped path must not spill into other units.
    torch.manual_seed(0)
    feat = torch.randn(6, 5, 8, 8).relu()
    if below_lo:
        feat[3, 2] -= 4.0
    labels = torch.randint(0, 3, (6, 32, 32))
    up = Upsampler((5, 8, 8), (32, 32), torch.device("cpu"))
    lo, hi = torch.zeros(5), feat.amax(dim=(0, 2, 3)) * 1.25
    dense, generic = Histogram(lo, hi, 64, 3), Histogram(lo, hi, 64, 3)
    dense.add_dense(up, feat, dense.scale_labels(labels))
    for unit, a, d, lab in up.values(feat, generic.scale_labels(labels), None, 3 * generic.label_stride):
        generic.add(unit, a, d, None, lab)
    generic.flush()
    assert int(dense.counts.sum()) == int(generic.counts.sum()) == 6 * 5 * 32 * 32
    assert (dense.tail() - generic.tail()).abs().max() <= 2  # values a rounding away from an edge
    assert dense.tail()[:, 0].sum() > 1000  # not vacuous: many values above lo
    ups = F.interpolate(feat, size=(32, 32), mode="bilinear", align_corners=False)
    above_edge = (ups > (lo + 10 * dense.width.float()).view(1, -1, 1, 1))
    explicit = torch.stack([(above_edge & (labels[:, None] == c)).sum(dim=(0, 2, 3)) for c in range(3)], 1)
    assert (dense.tail()[:, 10] - explicit).abs().max() <= 2


def test_information_quality_ratio_values():
    # identical masks -> 1; independent masks -> 0
    def t(v):
        return torch.tensor(v, dtype=torch.float64)

    assert float(information_quality_ratio(t(25.0), t(25.0), t(25.0), 100.0)) == pytest.approx(1.0)
    assert float(information_quality_ratio(t(25.0), t(50.0), t(50.0), 100.0)) == pytest.approx(0.0, abs=1e-12)
    a = torch.zeros(10, 10, dtype=torch.bool)
    a[:3] = True
    s = torch.zeros(10, 10, dtype=torch.bool)
    s[:, :4] = True
    s[2, 5] = True
    inter, na, ns = float((a & s).sum()), float(a.sum()), float(s.sum())
    p = torch.tensor([[((~a) & (~s)).sum(), ((~a) & s).sum()], [(a & ~s).sum(), (a & s).sum()]],
                     dtype=torch.float64) / 100
    joint = -sum(float(v * v.log()) for v in p.flatten() if v > 0)
    pa, ps = p.sum(1), p.sum(0)
    mi = sum(float(p[i, j] * (p[i, j] / (pa[i] * ps[j])).log()) for i in range(2) for j in range(2) if p[i, j] > 0)
    got = float(information_quality_ratio(t(inter), t(na), t(ns), 100.0))
    assert got == pytest.approx(mi / joint, rel=1e-9)


# ---------------------------------------------------------------------------------------------
# Building blocks


@pytest.mark.parametrize("h,w,s", [(4, 4, 16), (8, 8, 16), (5, 5, 15), (16, 16, 16), (2, 2, 16), (6, 6, 16),
                                   (4, 8, 16), (8, 2, 16), (4, 6, 16)])
def test_upsampler_candidates_cover_every_value_above_the_level(h, w, s):
    # factors 4, 2, 3 (odd), 1, 8, non-integer (dense path), and different factors along y and x
    torch.manual_seed(h * 31 + w * 7 + s)
    feat = torch.randn(3, 5, h, w).relu() + torch.randn(3, 5, h, w) * 0.1
    labels = torch.randint(0, 4, (3, s, s))
    up = F.interpolate(feat, size=(s, s), mode="bilinear", align_corners=False)
    # levels near the 0.9 quantile but halfway between two distinct values: many upsampled values
    # are exactly equal (repeated borders), and a level equal to one of them would make the test
    # depend on the last bit of float rounding
    lo = torch.empty(5)
    for u in range(5):
        v = up[:, u].flatten().unique()
        k = int(0.9 * len(v))
        while v[k + 1] - v[k] < 1e-4:
            k += 1
        lo[u] = (v[k] + v[k + 1]) / 2
    sampler = Upsampler((5, h, w), (s, s), torch.device("cpu"))
    assert torch.allclose(torch.cat([u for _, u in sampler.dense(feat)]), up, atol=1e-6)
    got: dict[tuple[int, int], list[float]] = {}
    for unit, a, d, lab in sampler.values(feat, labels, lo, dump=4):
        vals = a if d is None else a + d * sampler.lam
        lab = lab.reshape(vals.shape)  # dense chunks give their labels as a broadcast view
        keep = (vals >= lo[unit][:, None]) & (lab < 4)
        for key, v in zip(zip(unit[:, None].expand_as(vals)[keep].tolist(), lab[keep].tolist()), vals[keep].tolist()):
            got.setdefault(key, []).append(v)
    want: dict[tuple[int, int], list[float]] = {}
    for u in range(5):
        m = up[:, u] >= lo[u]
        for key, v in zip(zip([u] * int(m.sum()), labels[m].tolist()), up[:, u][m].tolist()):
            want.setdefault(key, []).append(v)
    assert sum(map(len, want.values())) > 0
    assert {k: len(v) for k, v in got.items()} == {k: len(v) for k, v in want.items()}  # each pixel once
    for key in want:
        assert torch.allclose(torch.tensor(sorted(got[key])), torch.tensor(sorted(want[key])), atol=1e-5), key


def test_histogram_growth_and_levels():
    torch.manual_seed(0)
    hist = Histogram(torch.zeros(2), torch.ones(2), 64, 3)
    chunks = [torch.rand(2, 500) * s for s in (1.0, 3.0, 10.0)]  # the range grows twice
    for values in chunks:
        hist.grow(values.max(dim=1).values)
        labels = torch.randint(0, 3, values.shape)
        hist.add(torch.arange(2), values, None, None, hist.scale_labels(labels))
    allv = torch.cat(chunks, dim=1)
    assert int(hist.counts[:, 1:, :3].sum()) == allv.numel()  # nothing lost in merging
    t, ok = hist.level(0.1 * allv.shape[1])
    assert ok.all()
    exact = torch.quantile(allv, 0.9, dim=1).double()
    assert ((t - exact).abs() <= hist.width).all()
    above = hist.above(t).sum(1)
    assert torch.allclose(above, torch.full((2,), 0.1 * allv.shape[1], dtype=torch.float64), atol=1e-6)


def test_histogram_atom_at_lower_bound():
    # 99.5% zeros (a ReLU unit that rarely fires): the 1% level is 0 and the mask is "> 0".
    values = torch.zeros(1, 1000)
    values[0, :5] = torch.tensor([1.0, 2.0, 3.0, 4.0, 5.0])
    hist = Histogram(torch.zeros(1), torch.full((1,), 6.0), 32, 1)
    hist.add(torch.zeros(1, dtype=torch.long), values, None, None, torch.zeros_like(values, dtype=torch.long))
    t, ok = hist.level(10.0)
    assert ok.all() and float(t) == 0.0
    assert float(hist.above(t).sum()) == 5.0


# ---------------------------------------------------------------------------------------------
# Results, reports, round trips


@pytest.fixture
def small_result(tiny_model_file) -> DissectionResult:
    return dissect(str(tiny_model_file), layers=(1, 2), segmenter=quadrant_segmenter, n=40, seed=0, batch_size=16)


def test_save_and_load_round_trip(small_result, tmp_path, tiny_model_file):
    assert small_result.save(tmp_path / "rep") == tmp_path / "rep"
    assert {p.name for p in (tmp_path / "rep").iterdir()} == {"report.json", "units.csv", "report.html"}
    loaded = load_report(tmp_path / "rep")
    assert loaded == small_result
    assert loaded.to_dict() == small_result.to_dict()
    assert load_report(tmp_path / "rep" / "report.json") == small_result
    for name, layer in small_result.layers.items():
        other = loaded.layers[name]
        for key in ("threshold", "iou", "mean", "q99", "top_samples", "top_values"):
            assert torch.equal(getattr(layer, key), getattr(other, key)), key
        assert other.examples is None
    data = json.loads((tmp_path / "rep" / "report.json").read_text())
    unit0 = data["layers"]["layer2"]["units"][0]
    assert set(unit0) >= {"threshold", "label", "iou", "top3", "interpretable", "mean", "q99"}
    assert len(unit0["top3"]) == 3 and unit0["top3"][0][0] == unit0["label"]
    for concept, entry in data["layers"]["layer2"]["concepts"].items():
        assert entry["iou"] == sorted(entry["iou"], reverse=True)
        assert all(data["layers"]["layer2"]["units"][u]["label"] == concept for u in entry["units"])
    assert data["settings"]["n"] == 40 and data["settings"]["model"] == str(tiny_model_file)
    # units.csv: one row per unit, loadable by csv readers
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "units.csv").read_text())))
    assert len(rows) == sum(layer.units for layer in small_result.layers.values())
    row = next(r for r in rows if r["layer"] == "layer2" and r["unit"] == "3")
    layer2 = small_result.layers["layer2"]
    assert row["label"] == layer2.label[3]
    assert float(row["iou"]) == pytest.approx(float(layer2.best_iou[3]), abs=1e-6)
    assert float(row["threshold"]) == pytest.approx(float(layer2.threshold[3]), rel=1e-5)
    # how labels were chosen: the best-IoU concept at the top-1% level
    assert data["layers"]["layer2"]["label_rule"] == unit0["label_rule"] == "top-1% quantile level, best IoU"
    assert data["layers"]["layer2"]["label_by"] == "iou"


def test_iqr_report_keeps_the_chosen_labels(tiny_gen, tmp_path):
    # An IQR label need not be the best-IoU concept: report.json, units.csv and a loaded report keep it.
    result = dissect(tiny_gen, layers=2, segmenter=quadrant_segmenter, n=32, seed=1, threshold="iqr",
                     batch_size=16, top_k=2)
    layer = result.layers["layer2"]
    assert layer.label_concept is not None and layer.label_rule == IQR_LABEL_RULE
    layer.label_concept[0] = int(layer.iou[0].argmin())  # a label other than the best IoU's
    layer.label_concept[1] = -1  # and an unlabelled unit
    result.save(tmp_path / "rep", html=False)
    loaded = load_report(tmp_path / "rep")
    assert loaded == result
    other = loaded.layers["layer2"]
    assert torch.equal(other.label_concept, layer.label_concept) and other.label_rule == IQR_LABEL_RULE
    assert other.label[0] == layer.concepts[int(layer.iou[0].argmin())] != layer.top_concepts(0, 1)[0][0]
    assert float(other.best_iou[0]) == float(layer.iou[0].min())
    assert other.label[1] == "" and float(other.best_iou[1]) == 0.0 and 1 not in other.interpretable
    data = json.loads((tmp_path / "rep" / "report.json").read_text())["layers"]["layer2"]
    assert data["label_by"] == "iqr" and data["label_rule"] == IQR_LABEL_RULE
    assert [u["label"] for u in data["units"]] == layer.label
    assert data["units"][1]["label_rule"] == NO_LABEL_RULE and data["units"][0]["label_rule"] == IQR_LABEL_RULE
    assert data["units"][0]["iou"] == pytest.approx(float(layer.iou[0].min()))
    assert all(1 not in entry["units"] for entry in data["concepts"].values())
    rows = list(csv.DictReader(io.StringIO((tmp_path / "rep" / "units.csv").read_text())))
    assert [r["label"] for r in rows] == layer.label
    assert rows[0]["concept2"] == layer.top_concepts(0, 1)[0][0]  # the next concepts leave the label out
    assert layer.label[0] not in (rows[0]["concept2"], rows[0]["concept3"])
    assert rows[1]["interpretable"] == "0"


def test_settings_and_check_model(small_result, tiny_model_file, tiny_config):
    gan = load_model(tiny_model_file)
    assert small_result.settings["model_fingerprint"] == fingerprint(gan.generator)
    check_model(small_result, gan)
    check_model(small_result, gan.generator)
    other = Generator(tiny_config)
    with pytest.raises(GantoolsError, match="another model"):
        check_model(small_result, other)


def test_ranked_units_and_ace(small_result):
    layer = small_result.layer(2)
    assert layer is small_result.layer("layer2") is small_result.layer("2")
    k = layer.concept_index("c1")
    ranked = layer.ranked_units("c1")
    assert sorted(ranked) == list(range(layer.units))
    assert [float(layer.iou[u, k]) for u in ranked] == sorted(layer.iou[:, k].tolist(), reverse=True)
    with pytest.raises(GantoolsError, match="gantools rank"):
        layer.ranked_units("c1", rank="ace")
    with pytest.raises(GantoolsError, match="c0, c1, c2, c3"):
        layer.ranked_units("sky")
    with pytest.raises(GantoolsError, match="iou or ace"):
        layer.ranked_units("c1", rank="nope")
    with pytest.raises(GantoolsError, match="no layer"):
        small_result.layer(9)
    layer.ace["c1"] = [float(u % 3) - u * 0.01 for u in range(layer.units)]
    assert layer.ranked_units("c1", "ace")[:2] == [2, 5]
    assert DissectionResult.from_dict(small_result.to_dict()).layer(2).ace["c1"] == layer.ace["c1"]


def test_load_report_errors(tmp_path):
    with pytest.raises(GantoolsError, match="no dissection report"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text("{not json")
    with pytest.raises(GantoolsError, match="not a readable dissection report"):
        load_report(tmp_path)
    (tmp_path / "report.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(GantoolsError, match="not a gantools dissection report"):
        load_report(tmp_path)


def test_render_examples_regenerates_the_top_samples(small_result, tmp_path, tiny_model_file):
    small_result.save(tmp_path / "r")
    loaded = load_report(tmp_path / "r")
    render_examples(loaded, load_model(tiny_model_file))
    for name, layer in small_result.layers.items():
        a, b = layer.examples, loaded.layers[name].examples
        assert (a.images.int() - b.images.int()).abs().max() <= 1
        assert torch.allclose(a.maps, b.maps, atol=1e-5)


def test_record_ranking_updates_a_saved_report(small_result, tmp_path, tiny_model_file, tiny_config):
    small_result.save(tmp_path / "rep")
    files = {p.name: p.read_text() for p in (tmp_path / "rep").iterdir()}
    units = small_result.layer(2).units
    ace = [0.1 * u for u in range(units)]
    ace[3] = float("nan")  # a unit not measured
    # every check comes before any file is written
    for args, kwargs, match in [((9, "c1", ace), {}, "no layer"), ((2, "sky", ace), {}, "unknown concept"),
                                ((2, "c1", ace[:3]), {}, f"ace has 3 values, but layer2 has {units} units"),
                                ((2, "c1", ace), {"gan": Generator(tiny_config)}, "another model")]:
        with pytest.raises(GantoolsError, match=match):
            record_ranking(tmp_path / "rep", *args, **kwargs)
    assert {p.name: p.read_text() for p in (tmp_path / "rep").iterdir()} == files
    gan = load_model(tiny_model_file)
    assert record_ranking(tmp_path / "rep" / "report.json", "layer2", "c1", ace, gan=gan) == tmp_path / "rep"
    layer = load_report(tmp_path / "rep").layer(2)
    assert layer.ace["c1"][:3] == ace[:3] and math.isnan(layer.ace["c1"][3])
    assert layer.ranked_units("c1", "ace")[:2] == [units - 1, units - 2] and 3 not in layer.ranked_units("c1", "ace")
    page = (tmp_path / "rep" / "report.html").read_text()
    assert "causal effect of ablating it alone: c1 +0.1000" in page
    assert page.count('<img class="strip"') == sum(ld.units for ld in small_result.layers.values())  # redrawn
    # a report saved without report.html is not given one
    small_result.save(tmp_path / "bare", html=False)
    record_ranking(tmp_path / "bare", 2, "c1", ace)
    assert not (tmp_path / "bare" / "report.html").exists() and load_report(tmp_path / "bare").layer(2).ace["c1"]


def test_default_layer(tiny_model_file, tiny_gen):
    # layer 3, or the last hidden layer of a smaller generator (a 16 px model has two)
    assert default_layer(str(tiny_model_file)) == default_layer(tiny_gen) == 2
    assert default_layer(load_model(tiny_model_file)) == 2
    assert default_layer(Generator(ModelConfig(image_size=64, nz=8, ngf=4, ndf=4))) == 3
    assert default_layer(nn.Conv2d(1, 1, 1)) == 3
    assert list(dissect(tiny_gen, segmenter=quadrant_segmenter, n=4).layers) == ["layer2"]


def test_default_segmenter_is_color(tiny_model_file):
    result = dissect(str(tiny_model_file), layers=2, n=8, seed=0, batch_size=8)
    assert result.settings["segmenter"].startswith("color")
    assert len(result.concepts) == 11
    assert result.layers["layer2"].iou.shape == (8, 11)


def test_user_errors(tiny_gen):
    seg = quadrant_segmenter
    for kwargs, match in [({"threshold": "median"}, "quantile or iqr"), ({"n": 0}, "at least 1"),
                          ({"quantile": 0.0}, "between 0 and 1"), ({"quantile": 1.0}, "between 0 and 1"),
                          ({"min_iou": 2.0}, "between 0 and 1"), ({"batch_size": 0}, "at least 1"),
                          ({"layers": (7,)}, "unknown layer"), ({"layers": ()}, "at least one layer")]:
        args = {"layers": (2,), "segmenter": seg, "n": 4, **kwargs}
        with pytest.raises(GantoolsError, match=match):
            dissect(tiny_gen, **args)

    def no_concepts(x):
        return x[:, 0].long()

    with pytest.raises(GantoolsError, match="concepts"):
        dissect(tiny_gen, layers=2, segmenter=no_concepts, n=4)

    def wrong_shape(x):
        return torch.zeros(x.shape[0], 4, 4, dtype=torch.long)

    wrong_shape.concepts = ["a", "b"]
    with pytest.raises(GantoolsError, match="shape"):
        dissect(tiny_gen, layers=2, segmenter=wrong_shape, n=4)

    def out_of_range(x):
        return torch.full(x.shape[:1] + x.shape[2:], 5, dtype=torch.long)

    out_of_range.concepts = ["a", "b"]
    with pytest.raises(GantoolsError, match="concept id 5"):
        dissect(tiny_gen, layers=2, segmenter=out_of_range, n=4)
    with pytest.raises(GantoolsError):
        dissect(42, layers=2, segmenter=seg, n=4)


def test_generator_mode_restored(tiny_gen):
    tiny_gen.train()
    dissect(tiny_gen, layers=1, segmenter=quadrant_segmenter, n=4)
    assert tiny_gen.training


def test_cli_dissect(tiny_model_file, tmp_path):
    from typer.testing import CliRunner

    from gantools.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["dissect", "-m", str(tiny_model_file), "--layer", "1", "--layer", "2", "--n", "24",
                              "--seed", "3", "--segmenter", "color", "--out", str(out), "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    data = json.loads(res.stdout.strip().splitlines()[-1])
    assert data["html"] == str(out / "report.html") and (out / "report.html").is_file()
    assert set(data["layers"]) == {"layer1", "layer2"}
    loaded = load_report(out)
    assert loaded.settings["n"] == 24 and loaded.settings["seed"] == 3
    assert data["layers"]["layer2"]["interpretable"] == len(loaded.layers["layer2"].interpretable)
    res = runner.invoke(app, ["dissect", "-m", str(tiny_model_file), "--layer", "2", "--n", "8", "--min-iou", "0",
                              "--out", str(tmp_path / "t"), "-q"])
    assert res.exit_code == 0, res.output
    assert "interpretable units per concept" in res.stdout and "report.html" in res.stdout
    res = runner.invoke(app, ["dissect", "-m", str(tiny_model_file), "--threshold", "iqr", "--quantile", "0.02"])
    assert res.exit_code == 2 and "--quantile is for" in res.output
    res = runner.invoke(app, ["dissect", "-m", str(tiny_model_file), "--layer", "9", "--n", "8"])
    assert res.exit_code == 1 and "unknown layer" in res.output and "Traceback" not in res.output
    # no --layer: layer 3, or on this 16px model (two hidden layers) its last one
    res = runner.invoke(app, ["dissect", "-m", str(tiny_model_file), "--n", "8", "--json", "-q",
                              "--out", str(tmp_path / "d")])
    assert res.exit_code == 0, res.output
    assert set(json.loads(res.stdout.strip().splitlines()[-1])["layers"]) == {"layer2"}
