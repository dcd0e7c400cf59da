"""Interventions: the edit's arithmetic, composition, and effects measured against planted generators.

The planted generator is a tiny DCGAN whose output layer reads only units 0 and 1 of layer2 (unit 0
strongly, unit 1 weakly), and the "bright" segmenter labels pixels brighter than 0.5 (on [-1, 1]).
So ablating units 0 and 1 makes every image exactly grey (tanh(0) = 0): the bright fraction drops to
zero, and the average causal effect equals minus the mean bright fraction before, which the tests
compute independently. Units 2..7 have no path to the image: their effects are exactly 0.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch

from conftest import Bright, planted_gan, ship_dissection
from gantools.hooks import Trace, generate_from
from gantools.interventions import (Intervention, InterventionEffect, WeakConceptError, ablate, concept_support,
                                    curve_ks, feature_mask, insert, intervene, layer_units, parse_units, point_region,
                                    rank_units, unit_values)
from gantools.models import GAN
from gantools.ranking import greedy_units, rank_concepts
from gantools.utils import GantoolsError

N = 64
README = Path(__file__).resolve().parent.parent / "README.md"


class BrightDoor(Bright):
    """Bright's labels, and a third concept, "door", that no image ever shows (as scenes64's doors)."""

    concepts = ["dark", "bright", "door"]


@pytest.fixture(scope="module")
def gan() -> GAN:
    return planted_gan()


@pytest.fixture
def z(gan: GAN) -> torch.Tensor:
    return gan.generator.sample_z(6, seed=3)


def layer2(gan: GAN, z: torch.Tensor, *interventions: Intervention) -> torch.Tensor:
    with intervene(*interventions), Trace(gan.generator, 2) as t:  # Trace entered last sees the edits
        gan.generator(z)
    return t.output


# ---------------------------------------------------------------------------------------------
# The edit


def test_ablation_zeroes_exactly_the_chosen_units(gan, z):
    x = layer2(gan, z)
    assert (x[:, [0, 3]] > 0).any()  # there was something to remove
    y = layer2(gan, z, Intervention(gan.generator, 2, [0, 3]))
    assert torch.equal(y[:, [0, 3]], torch.zeros_like(y[:, [0, 3]]))
    others = [1, 2, 4, 5, 6, 7]
    assert torch.equal(y[:, others], x[:, others])
    # The image downstream is the generator run from the edited features.
    with Intervention(gan, "layer2", [0, 3]):
        images = gan.generator(z)
    edited = x.clone()
    edited[:, [0, 3]] = 0
    assert torch.allclose(images, generate_from(gan.generator, 2, edited), atol=1e-6)


def test_running_from_a_layer_matches_the_hooked_generator(gan, z):
    edit = Intervention(gan.generator, 2, [1, 6], value=[0.5, 3.0])
    with torch.no_grad():
        with Trace(gan.generator, 2) as t:
            gan.generator(z)
        with edit:
            hooked = gan.generator(z)
        tail = generate_from(gan.generator, "layer2", edit.apply(t.output))
        assert torch.allclose(tail, hooked, atol=1e-6)
        assert torch.allclose(generate_from(gan.generator, "layer1", t.output.new_zeros(6, 16, 4, 4)),
                              generate_from(gan.generator, "layer1.2", t.output.new_zeros(6, 16, 4, 4)),
                              atol=1e-6)  # "layer1.2" (the block's ReLU) takes the hooked full-network path


def test_strength_half_goes_halfway_to_per_unit_values(gan, z):
    x = layer2(gan, z)
    y = layer2(gan, z, Intervention(gan.generator, 2, [5, 1], value=[2.0, -1.0], strength=0.5))
    assert torch.allclose(y[:, 5], 0.5 * x[:, 5] + 0.5 * 2.0, atol=1e-6)
    assert torch.allclose(y[:, 1], 0.5 * x[:, 1] - 0.5, atol=1e-6)
    assert torch.equal(y[:, [0, 2, 3, 4, 6, 7]], x[:, [0, 2, 3, 4, 6, 7]])
    # strength = 0 changes nothing
    assert torch.equal(layer2(gan, z, Intervention(gan.generator, 2, [5], value=9.0, strength=0.0)), x)


def test_feature_region_restricts_the_edit(gan, z):
    x = layer2(gan, z)
    region = torch.zeros(8, 8, dtype=torch.bool)
    region[2:4, 5:8] = True
    y = layer2(gan, z, Intervention(gan.generator, 2, [4], value=7.0, region=region))
    assert torch.all(y[:, 4][:, region] == 7.0)
    assert torch.equal(y[:, 4][:, ~region], x[:, 4][:, ~region])
    assert torch.equal(y[:, [0, 1, 2, 3, 5, 6, 7]], x[:, [0, 1, 2, 3, 5, 6, 7]])


def test_image_mask_is_max_pooled_to_the_feature_map(gan, z):
    image_mask = torch.zeros(16, 16, dtype=torch.bool)
    image_mask[5, 9] = True  # one pixel -> feature cell (2, 4) of the 8 x 8 map
    image_mask[12:16, 0:3] = True  # rows 12-15, cols 0-2 -> cells rows 6-7, cols 0-1
    m = feature_mask(image_mask, (8, 8))[0, 0]
    expected = torch.zeros(8, 8)
    for i in range(8):
        for j in range(8):
            expected[i, j] = float(image_mask[2 * i:2 * i + 2, 2 * j:2 * j + 2].any())
    assert torch.equal(m, expected)
    assert m.sum() == 1 + 4
    x = layer2(gan, z)
    y = layer2(gan, z, Intervention(gan.generator, 2, [6], value=3.0, region=image_mask))
    assert torch.all(y[:, 6][:, expected.bool()] == 3.0)
    assert torch.equal(y[:, 6][:, ~expected.bool()], x[:, 6][:, ~expected.bool()])
    # A soft mask weights the strength; per-sample masks edit each sample in its own place.
    per_sample = torch.zeros(z.shape[0], 8, 8)
    per_sample[0, 0, 0] = 0.5
    y = layer2(gan, z, Intervention(gan.generator, 2, [6], value=3.0, region=per_sample))
    assert torch.allclose(y[0, 6, 0, 0], 0.5 * x[0, 6, 0, 0] + 1.5)
    assert torch.equal(y[1:], x[1:])


def test_interventions_compose_in_either_order(gan, z):
    G = gan.generator
    x = layer2(gan, z)
    expected = x.clone()
    expected[:, 0] = 0
    expected[:, 1] = 0.5 * x[:, 1] + 0.5 * 2.0
    a = Intervention(G, 2, [0])
    b = Intervention(G, 2, [1], value=2.0, strength=0.5)
    assert torch.allclose(layer2(gan, z, a, b), expected, atol=1e-6)
    assert torch.allclose(layer2(gan, z, b, a), expected, atol=1e-6)
    with a, b:  # plain nesting, around a full generator call
        ab = G(z)
    with b, a:
        ba = G(z)
    assert torch.allclose(ab, ba, atol=1e-6)
    assert torch.allclose(ab, generate_from(G, 2, expected), atol=1e-5)
    # Same unit: they apply in the order entered.
    set2, halve = Intervention(G, 2, [3], value=2.0), Intervention(G, 2, [3], value=0.0, strength=0.5)
    assert torch.allclose(layer2(gan, z, set2, halve)[:, 3], torch.ones_like(x[:, 3]))
    assert torch.equal(layer2(gan, z, halve, set2)[:, 3], torch.full_like(x[:, 3], 2.0))
    # Leaving the block removes the hooks.
    assert torch.equal(layer2(gan, z), x)


def test_a_loaded_gan_is_accepted_wherever_a_generator_is(gan, z):
    assert layer_units(gan, 2) == layer_units(gan.generator, "layer2") == 8
    with Intervention(gan, 2, [0, 1], value=[0.0, 0.0]) as iv:
        images = gan.generator(z)
    assert iv.generator is gan.generator and iv.layer == "layer2"
    x = layer2(gan, z)
    x[:, [0, 1]] = 0
    assert torch.allclose(images, generate_from(gan.generator, 2, x), atol=1e-6)
    assert torch.allclose(images, torch.zeros_like(images), atol=1e-6)  # planted: units 0, 1 off -> grey
    with intervene(Intervention(gan, 2, [0]), Intervention(gan.generator, 2, [1])):
        assert torch.allclose(gan.generator(z), images, atol=1e-6)


def test_readme_intervention_snippet_runs_as_written():
    text = README.read_text()
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    snippet = next(b for b in blocks if "gantools.Intervention(" in b)
    namespace: dict = {}
    exec(compile(snippet, "README.md", "exec"), namespace)
    gan, z, images = namespace["gan"], namespace["z"], namespace["images"]
    assert tuple(images.shape) == (8, 3, 64, 64)
    with torch.no_grad(), Trace(gan.generator, 3) as t:
        plain = gan.generator(z)
    edited = t.output.clone()
    edited[:, [4, 17]] = 0.0
    with torch.no_grad():
        expected = generate_from(gan.generator, 3, edited)
    assert torch.allclose(images, expected, atol=1e-5)  # the edit was active inside the block...
    assert not torch.allclose(images, plain, atol=1e-3)  # ...and changed the images
    with torch.no_grad():
        assert torch.equal(gan.generator(z), plain)  # leaving the block removed the hook


def test_point_region_patch():
    m = point_region((0.3, 0.7), (8, 8))  # x 0.3 -> column 2, y 0.7 -> row 5: a 3 x 3 patch around it
    rows, cols = m.nonzero(as_tuple=True)
    assert (rows.min().item(), rows.max().item(), cols.min().item(), cols.max().item()) == (4, 6, 1, 3)
    assert m.sum() == 9
    corner = point_region("1,1", (8, 8))  # shifted inwards at the border, still 3 x 3
    assert corner[5:, 5:].all() and corner.sum() == 9
    assert point_region((0.0, 0.0), (8, 8), patch=1).nonzero().tolist() == [[0, 0]]
    assert point_region((0.5, 0.5), (4, 4), patch=2)[1:3, 1:3].all()
    with pytest.raises(GantoolsError, match="between 0 and 1"):
        point_region("1.2,0.5", (8, 8))
    with pytest.raises(GantoolsError, match="between 0 and 1"):
        point_region((0.5, -0.1), (8, 8))


def test_intervention_errors(gan):
    with pytest.raises(GantoolsError, match="numbered 0 to 7"):
        Intervention(gan.generator, 2, [3, 8])
    with pytest.raises(GantoolsError, match="unknown layer"):
        Intervention(gan.generator, 9, [0])
    with pytest.raises(GantoolsError, match="one per unit"):
        Intervention(gan.generator, 2, [0, 1], value=[1.0, 2.0, 3.0])
    with pytest.raises(GantoolsError, match="strength must be between 0 and 1"):
        Intervention(gan.generator, 2, [0], strength=1.5)
    assert parse_units("4,17,33") == [4, 17, 33]
    assert parse_units("0-3,9,2") == [0, 1, 2, 3, 9]
    with pytest.raises(GantoolsError, match="unit numbers"):
        parse_units("4,x")
    with pytest.raises(GantoolsError, match="zero, mean, q99"):
        unit_values("large", None, [0])
    with pytest.raises(GantoolsError, match="dissection statistics"):
        unit_values("q99", None, [0])


def test_effect_statistics():
    before = torch.tensor([0.5, 0.25, 0.75, 0.5])
    after = torch.tensor([0.25, 0.25, 0.25, 0.0])
    e = InterventionEffect.from_samples("x", before, after)
    delta = after - before
    assert e.mean == pytest.approx(float(delta.mean()))
    half = 1.959963984540054 * float(delta.std()) / 2
    assert (e.ci_low, e.ci_high) == (pytest.approx(e.mean - half), pytest.approx(e.mean + half))
    assert (e.before, e.after, e.n) == (0.5, 0.1875, 4)
    assert curve_ks(3) == [0, 1, 2, 3]
    ks = curve_ks(100, points=11)
    assert ks[0] == 0 and ks[-1] == 100 and len(ks) == 11


# ---------------------------------------------------------------------------------------------
# Measurements on the planted generator


def bright_fractions(images: torch.Tensor) -> torch.Tensor:
    return (images.mean(1) > 0.5).double().mean(dim=(1, 2))


def test_ablation_effect_matches_planted_truth(gan, tmp_path):
    G = gan.generator
    with torch.no_grad():
        before = bright_fractions(G(G.sample_z(N, seed=5)))
    assert 0.05 < before.mean() < 0.95  # the planted images are neither all dark nor all bright
    steps = []
    result = ablate(gan, 2, [0, 1], concept="bright", segmenter=Bright(), n=N, seed=5, batch_size=24,
                    progress=steps.append)
    e = result.effect
    # Ablating both units leaves exactly grey images: the effect is minus the bright fraction before.
    assert e.mean == pytest.approx(-float(before.mean()), abs=1e-12)
    assert e.sd == pytest.approx(float(before.std()), rel=1e-9)
    assert e.ci_low < -float(before.mean()) < e.ci_high
    assert e.after == 0.0 and e.n == N
    assert result.effects["dark"].mean == pytest.approx(float(before.mean()), abs=1e-12)  # side effect
    # Curve: k = 0 changes nothing; k = 1 (unit 0 alone) removes part; k = 2 removes everything.
    assert result.ks == [0, 1, 2]
    curve = [c.mean for c in result.curve["bright"]]
    assert curve[0] == 0.0 and curve[2] == pytest.approx(e.mean)
    assert e.mean < curve[1] < 0
    assert steps[-1].completed == N and steps[-1].total == N
    assert result.save(tmp_path / "out") == tmp_path / "out"
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["before_after.png", "curve.json", "curve.png", "effect.json", "segmentation.png"]
    saved = json.loads((tmp_path / "out" / "effect.json").read_text())
    assert saved["effect"]["mean"] == pytest.approx(e.mean)
    assert saved["units"] == [0, 1] and saved["layer"] == "layer2"
    assert saved["curve"]["k"] == [0, 1, 2]
    from gantools.data import load_image

    from gantools.utils import to_uint8

    grid = load_image(tmp_path / "out" / "before_after.png")
    # labelled (#22): two rows (before, after) of 8 samples, enlarged 16 -> 64 px, 4 px apart, below the
    # title and column labels and right of the row labels (dark text in those margins)
    top, left = grid.shape[1] - (2 * 64 + 4), grid.shape[2] - (8 * 64 + 7 * 4)
    assert top > 0 and left > 0
    assert bool((grid[:, top:, :left] < 128).any()) and bool((grid[:, :top, left:] < 128).any())
    for row, images in enumerate([result.samples.before, result.samples.after]):
        y, x = top + row * (64 + 4), left + 7 * (64 + 4)
        want = to_uint8(images[7]).expand(3, -1, -1).repeat_interleave(4, -1).repeat_interleave(4, -2)
        assert torch.equal(grid[:, y:y + 64, x:x + 64], want)


def test_ablating_unconnected_units_has_no_effect(gan):
    result = ablate(gan, 2, "2-7", segmenter=Bright(), n=16, seed=1, curve_points=3)
    assert all(e.mean == 0.0 and e.sd == 0.0 for e in result.effects.values())
    assert result.ks == [0, 3, 6]


def test_mean_value_and_strength(gan):
    # Ablating to a fixed level v with a strength: compare with a hand-made edit.
    G = gan.generator
    z = G.sample_z(N, seed=2)
    with torch.no_grad(), Trace(G, 2) as t:
        before = bright_fractions(G(z))
    edited = t.output.clone()
    edited[:, 0] = 0.5 * edited[:, 0] + 0.5 * 0.3
    with torch.no_grad():
        after = bright_fractions(generate_from(G, 2, edited))
    result = ablate(gan, 2, [0], value=0.3, strength=0.5, concept="bright", segmenter=Bright(), n=N, seed=2)
    assert result.effect.mean == pytest.approx(float((after - before).mean()), abs=1e-12)


def test_rank_orders_units_by_planted_effect(gan):
    steps = []
    r = rank_units(gan, 2, "bright", segmenter=Bright(), n=48, seed=4, batch_size=16, max_images=64,
                   progress=steps.append)
    assert r.units[:2] == [0, 1]
    assert r.ace[0] > r.ace[1] > 0
    assert all(r.ace[u] == 0.0 for u in range(2, 8))
    # Each single-unit ACE agrees with a separate ablation of that unit alone (batched = unbatched).
    alone = ablate(gan, 2, [1], concept="bright", segmenter=Bright(), n=48, seed=4)
    assert r.ace[1] == pytest.approx(-alone.effect.mean, abs=1e-12)
    assert r.effects[1].sd == pytest.approx(alone.effect.sd, rel=1e-6)
    assert r.ace_list()[:2] == [r.ace[0], r.ace[1]] and len(r.ace_list()) == 8
    assert steps[-1].completed == steps[-1].total == 48 * 8
    sub = rank_units(gan, 2, "bright", units=[3, 1], segmenter=Bright(), n=8, seed=4)
    assert sub.units == [1, 3] and math.isnan(sub.ace_list()[0])


def test_rank_concepts_is_rank_units_for_each_concept_in_one_pass(gan):
    both = rank_concepts(gan, 2, None, segmenter=Bright(), n=24, seed=4, batch_size=8, max_images=32)
    assert list(both) == ["dark", "bright"] and set(both.to_dict()) == {"dark", "bright"}
    for concept, r in both.items():
        alone = rank_units(gan, 2, concept, segmenter=Bright(), n=24, seed=4, batch_size=8, max_images=32)
        assert r.concept == concept and r.units == alone.units
        assert r.ace == pytest.approx(alone.ace, abs=1e-12)
        assert r.effects[0].sd == pytest.approx(alone.effects[0].sd, rel=1e-9)
    # Every pixel is bright or dark, so ablating a unit moves the two fractions by opposite amounts.
    assert both["dark"].ace[0] == pytest.approx(-both["bright"].ace[0], abs=1e-9) and both["bright"].ace[0] > 0
    assert both["dark"].units[-1] == 0
    with pytest.raises(GantoolsError, match="concepts is empty"):
        rank_concepts(gan, 2, [], segmenter=Bright(), n=4)


def test_ranking_on_top_of_given_units_and_greedy_choice(gan, tmp_path):
    kw = dict(segmenter=Bright(), n=24, seed=4, batch_size=8, max_images=32)
    r = rank_concepts(gan, 2, ["bright"], given=[0], **kw)["bright"]
    assert 0 not in r.units and len(r.units) == 7 and r.units[0] == 1
    assert r.settings["given"] == [0] and "given" not in rank_units(gan, 2, "bright", **kw).settings
    # Each ACE is the effect of ablating the given units together with the ranked one.
    both = ablate(gan, 2, [0, 1], concept="bright", segmenter=Bright(), n=24, seed=4)
    assert r.ace[1] == pytest.approx(-both.effect.mean, abs=1e-12)
    joint = greedy_units(gan, 2, "bright", 2, **kw)
    assert joint == [0, 1] and joint.layer == "layer2" and joint.concept == "bright"
    # Its joint effects are the rankings' own: round 1 is unit 0 alone, round 2 the pair {0, 1}.
    assert joint.joint_ace == pytest.approx([rank_units(gan, 2, "bright", **kw).ace[0], r.ace[1]], abs=1e-12)
    assert joint.to_dict()["units"] == [0, 1] and "given" not in joint.to_dict()["settings"]
    saved = json.loads((joint.save(tmp_path) / "greedy.json").read_text())
    assert saved["units"] == [0, 1] and saved["joint_ace"] == pytest.approx(joint.joint_ace, abs=1e-12)
    assert greedy_units(gan, 2, "bright", 5, units=[3, 1], **kw) == [1, 3]  # stops when none is left
    with pytest.raises(GantoolsError, match="k must be at least 1"):
        greedy_units(gan, 2, "bright", 0, **kw)
    with pytest.raises(GantoolsError, match="no unit left"):
        rank_concepts(gan, 2, ["bright"], units=[0], given=[0], **kw)


def test_insertion_context_breakdown(gan, tmp_path):
    G = gan.generator
    result = insert(gan, 2, [0], concept="bright", at=(0.25, 0.75), value=6.0, segmenter=Bright(), n=N, seed=7,
                    batch_size=20)
    # Cells: x 0.25 -> column 2, y 0.75 -> row 6 of the 8 x 8 map; 3 x 3 patch -> rows 5-7, cols 1-3,
    # i.e. image rows 10-15 and columns 2-7.
    assert result.location["cells"] == [5, 8, 1, 4]
    assert result.location["region_pixels"] == 36
    region = torch.zeros(16, 16, dtype=torch.bool)
    region[10:16, 2:8] = True
    with torch.no_grad():
        labels0 = Bright()(G(G.sample_z(N, seed=7)))
    bright_in_region = labels0[:, region].double().mean(1)
    expected_context = {"bright": int((bright_in_region > 0.5).sum()), "dark": int((bright_in_region <= 0.5).sum())}
    counts = {c: ce.count for c, ce in result.by_context.items()}
    assert sum(counts.values()) == N
    assert counts == {c: k for c, k in expected_context.items() if k}
    assert result.region_effect.mean > 0.2  # forcing unit 0 on brightens the region
    assert result.region_effect.before == pytest.approx(float(bright_in_region.mean()))
    assert result.effect.mean > 0
    # Pixels are added in the region: whole-image change = region change x region share (only near it).
    assert result.effect.mean <= result.region_effect.mean * 36 / 256 + 0.1
    # the context subsets' effects average back to the overall one
    total = sum(ce.count * ce.effect.mean for ce in result.by_context.values()) / N
    assert total == pytest.approx(result.effect.mean, abs=1e-12)
    assert result.save(tmp_path / "ins") == tmp_path / "ins"
    assert sorted(p.name for p in (tmp_path / "ins").iterdir()) == ["before_after.png", "effect.json",
                                                                     "segmentation.png"]
    saved = json.loads((tmp_path / "ins" / "effect.json").read_text())
    assert sum(c["count"] for c in saved["by_context"]) == N


def test_insertion_with_image_mask(gan, tmp_path):
    from gantools.data import save_image

    mask = torch.zeros(1, 16, 16, dtype=torch.uint8)
    mask[:, 0:4, 12:16] = 255
    save_image(mask, tmp_path / "mask.png")
    result = insert(gan, 2, [0], at=None, mask=tmp_path / "mask.png", value=6.0, segmenter=Bright(), n=16)
    assert result.location["region_pixels"] == 16 and result.location["feature_cells"] == 4
    assert result.concept == "bright"  # the concept that gained most
    assert result.region_effect.mean > 0
    with pytest.raises(GantoolsError, match="selects no pixels"):
        insert(gan, 2, [0], mask=torch.zeros(16, 16), value=6.0, segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="not both"):
        insert(gan, 2, [0], value=6.0, segmenter=Bright(), n=4)


def test_measurement_errors(gan):
    with pytest.raises(GantoolsError, match="dark, bright"):
        ablate(gan, 2, [0], concept="tree", segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="numbered 0 to 7"):
        ablate(gan, 2, [12], segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="unknown layer"):
        rank_units(gan, "layer7", "bright", segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="say which units"):
        ablate(gan, 2, segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="between 0 and 1"):
        insert(gan, 2, [0], at="0.5,1.5", value=1.0, segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="at least 2"):  # one sample has no confidence interval
        rank_units(gan, 2, "bright", units=[0], segmenter=Bright(), n=1)


# ---------------------------------------------------------------------------------------------
# With dissection reports


@pytest.fixture(scope="module")
def report(gan):
    from gantools.dissection import dissect

    return dissect(gan, layers=(2,), segmenter=Bright(), n=48, seed=11, top_k=0)


def test_units_from_a_report_and_mean_value(gan, report):
    stats = report.layers["layer2"]
    result = ablate(gan, 2, concept="bright", top=3, value="mean", dissection=report, segmenter=Bright(), n=32, seed=2)
    assert result.units == stats.ranked_units("bright", "iou")[:3]
    assert "top 3 by iou" in result.settings["units_from"]
    # value "mean" sets each unit to its own mean activation from the report: check by hand.
    G = gan.generator
    with torch.no_grad(), Trace(G, 2) as t:
        before = bright_fractions(G(G.sample_z(32, seed=2)))
    edited = t.output.clone()
    for u in result.units:
        edited[:, u] = float(stats.mean[u])
    with torch.no_grad():
        after = bright_fractions(generate_from(G, 2, edited))
    assert result.effect.mean == pytest.approx(float((after - before).mean()), abs=1e-12)
    assert result.settings["value"] == "mean"
    # insertion's default level is each unit's q99
    v = unit_values("q99", stats, [1, 0])
    assert torch.equal(v, torch.stack([stats.q99[1], stats.q99[0]]).float())


def test_dissection_on_the_fly_when_no_report(gan):
    steps = []
    result = ablate(gan, 2, concept="bright", top=2, segmenter=Bright(), n=16, dissect_n=48, progress=steps.append)
    assert any(s.message and "dissecting layer2 on 48 samples" in s.message for s in steps)
    assert "on the fly" in result.settings["units_from"] and len(result.units) == 2


def test_rank_stored_in_report_drives_top_ace(gan, report, tmp_path):
    from gantools.dissection import load_report

    r = rank_units(gan, 2, "bright", dissection=report, segmenter=Bright(), n=32, seed=4)
    r.store(report)
    report.save(tmp_path / "rep", html=False)
    loaded = load_report(tmp_path / "rep")
    assert loaded.layers["layer2"].ranked_units("bright", "ace")[:2] == [0, 1]
    assert loaded.layers["layer2"].ace["bright"] == pytest.approx(r.ace_list())
    result = ablate(gan, 2, concept="bright", top=2, rank="ace", dissection=tmp_path / "rep", segmenter=Bright(), n=8)
    assert result.units == [0, 1]
    with pytest.raises(GantoolsError, match="run gantools rank"):
        ablate(gan, 2, concept="dark", top=2, rank="ace", dissection=loaded, segmenter=Bright(), n=8)


def test_a_ranking_saved_and_recorded_in_a_report_on_disk(gan, report, tmp_path):
    from gantools.dissection import load_report, record_ranking

    report.save(tmp_path / "rep", html=False)
    r = rank_units(gan, 2, "bright", units=[0, 1, 2], dissection=tmp_path / "rep", segmenter=Bright(), n=8)
    assert r.save(tmp_path / "rank") == tmp_path / "rank" and (tmp_path / "rank" / "rank.json").is_file()
    record_ranking(tmp_path / "rep", r.layer, r.concept, r.ace_list(), gan=gan)
    assert load_report(tmp_path / "rep").layers["layer2"].ace["bright"] == pytest.approx(r.ace_list(), nan_ok=True)


def test_partial_ace_ranking_uses_only_the_measured_units(gan, report):
    import copy

    partial = copy.deepcopy(report)
    rank_units(gan, 2, "bright", units=[3, 1], dissection=partial, segmenter=Bright(), n=8, seed=4).store(partial)
    assert sorted(partial.layers["layer2"].ranked_units("bright", "ace")) == [1, 3]
    notes = []
    result = ablate(gan, 2, concept="bright", top=5, rank="ace", dissection=partial, segmenter=Bright(), n=4,
                    progress=notes.append)
    assert sorted(result.units) == [1, 3]
    assert any(m.message and "only 2 units of layer2 are ranked by ace" in m.message for m in notes)


@pytest.fixture
def shipped(gan, report, tmp_path):
    """A model file with a dissection.json beside it whose causal ranking for bright reverses the IoU order."""
    import copy

    from gantools.models import save_model

    path = save_model(tmp_path / "shipped" / "model.safetensors", gan.generator, gan.discriminator)
    result = copy.deepcopy(report)
    stats = result.layers["layer2"]
    by_iou = stats.ranked_units("bright", "iou")
    stats.ace["bright"] = [0.0] * stats.units
    for rank, u in enumerate(by_iou):
        stats.ace["bright"][u] = float(rank + 1)  # the IoU's worst unit has the largest effect
    ship_dissection(result, path)
    return path, by_iou


def test_a_report_shipped_beside_the_model_chooses_the_units(gan, shipped, tmp_path):
    from gantools.models import save_model
    from gantools.units import UnitChoice, shipped_dissection_path

    path, by_iou = shipped
    notes = []
    result = ablate(path, 2, concept="bright", top=2, segmenter=Bright(), n=8, progress=notes.append)
    assert result.units == by_iou[::-1][:2]  # rank "auto": the report holds bright's ace, so ace
    assert "shipped with the model" in result.settings["units_from"] and "by ace" in result.settings["units_from"]
    assert not any(m.message and "dissecting" in m.message for m in notes)
    assert ablate(path, 2, concept="bright", top=2, rank="iou", segmenter=Bright(), n=8).units == by_iou[:2]
    # another layer or another segmenter than the shipped report's: dissected on the fly, as without it
    for layer, seg in ((1, Bright()), (2, "color")):
        notes = []
        concept = "bright" if seg != "color" else "white"
        result = ablate(path, layer, concept=concept, top=2, segmenter=seg, n=8, dissect_n=16, progress=notes.append)
        assert "on the fly" in result.settings["units_from"]
        assert any(m.message and "dissecting" in m.message for m in notes)
    # a report shipped beside other weights is not used, with a notice
    other = planted_gan()
    with torch.no_grad():
        other.generator.layer1[0].weight.mul_(1.01)
    moved = save_model(tmp_path / "other" / "model.safetensors", other.generator, other.discriminator)
    (moved.parent / "dissection.json").write_bytes((path.parent / "dissection.json").read_bytes())
    notes = []
    result = ablate(moved, 2, concept="bright", top=2, segmenter=Bright(), n=8, dissect_n=16, progress=notes.append)
    assert "on the fly" in result.settings["units_from"]
    assert any(m.message and "made for other weights" in m.message for m in notes)
    # rank "ace" without a report is fine when one is shipped, and refused before any work otherwise
    assert shipped_dissection_path(str(path)) == path.parent / "dissection.json"
    assert shipped_dissection_path(gan) is None and shipped_dissection_path("no/such/model") is None
    UnitChoice(concept="bright", rank="ace").check(None, str(path))
    with pytest.raises(GantoolsError, match="rank='ace'"):
        UnitChoice(concept="bright", rank="ace").check(None, gan)


def test_report_for_another_model_is_refused(report):
    other = planted_gan()
    with torch.no_grad():
        other.generator.layer1[0].weight.mul_(1.01)
    with pytest.raises(GantoolsError, match="another model"):
        ablate(other, 2, concept="bright", top=2, dissection=report, segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="another model"):
        rank_units(other, 2, "bright", dissection=report, segmenter=Bright(), n=4)
    with pytest.raises(GantoolsError, match="has no layer1"):
        ablate(planted_gan(), 1, concept="bright", top=2, dissection=report, segmenter=Bright(), n=4)


# ---------------------------------------------------------------------------------------------
# A concept the model does not draw, and values checked before any work


@pytest.fixture(scope="module")
def door_report(gan):
    from gantools.dissection import dissect

    return dissect(gan, layers=(2,), segmenter=BrightDoor(), n=32, seed=11, top_k=0)


def test_concept_support_reads_the_best_iou_and_the_share_of_pixels(gan, door_report):
    stats = door_report.layers["layer2"]
    door = concept_support(door_report, "layer2", "door")
    assert (door.best_iou, door.coverage, door.min_iou) == (0.0, 0.0, 0.04)
    assert door.below_line and door.weak
    bright = concept_support(door_report, "layer2", "bright")
    assert bright.best_iou == pytest.approx(float(stats.iou[:, 1].max()))
    assert bright.best_unit == int(stats.iou[:, 1].argmax())
    assert bright.coverage == pytest.approx(door_report.concept_coverage[1]) and bright.coverage > 0.2
    # The planted concept is drawn (unit 0 causes it) but its best IoU stays under the line: a top-1%
    # unit mask cannot match a concept covering ~40% of the image. It is used, not refused.
    assert bright.below_line and not bright.weak


@pytest.mark.parametrize("op", ["ablate", "insert"])
def test_a_concept_no_unit_draws_is_refused(gan, door_report, op):
    run = (lambda **kw: ablate(gan, 2, **kw)) if op == "ablate" else \
        (lambda **kw: insert(gan, 2, at=(0.5, 0.5), **kw))
    common = dict(dissection=door_report, segmenter=BrightDoor(), n=8, grid=0)
    with pytest.raises(WeakConceptError) as info:
        run(concept="door", top=3, **common)
    e = info.value
    assert (e.concept, e.layer, e.best_iou, e.min_iou, e.coverage) == ("door", "layer2", 0.0, 0.04, 0.0)
    text = str(e)
    for fragment in ("no unit of layer2 matches 'door'", "best IoU is 0.0000", "interpretable line 0.04",
                     "door covers 0.00% of the generated pixels", "may not draw door", "units=[...]",
                     "allow_weak=True"):
        assert fragment in text, text
    assert "--" not in text  # Python parameters, not CLI flags
    assert isinstance(e, GantoolsError)
    # Allowed: the top units by IoU, with a notice, and the settings say so.
    notes = []
    allowed = run(concept="door", top=3, allow_weak=True, progress=notes.append, **common)
    assert allowed.units == door_report.layers["layer2"].ranked_units("door")[:3]
    assert "below the interpretable line (best IoU 0.0000)" in allowed.settings["units_from"]
    assert any(m.message and "may not draw it" in m.message for m in notes)
    assert allowed.effects["door"].before == allowed.effects["door"].after == 0.0
    # Units given explicitly are the user's choice: no check.
    assert run(units=[0], concept="door", value=1.0, **common).units == [0]


def test_a_drawn_concept_below_the_line_goes_ahead_with_a_notice(gan, door_report):
    notes = []
    result = ablate(gan, 2, concept="bright", top=2, dissection=door_report, segmenter=BrightDoor(), n=8, grid=0,
                    progress=notes.append)
    assert result.units == door_report.layers["layer2"].ranked_units("bright")[:2]
    assert any(m.message and "no unit of layer2 reaches the interpretable line for bright" in m.message
               for m in notes)


def test_weak_concept_found_by_a_dissection_on_the_fly(gan, monkeypatch):
    import gantools.interventions as iv

    def no_measurement(*args, **kwargs):
        raise AssertionError("measured a concept the model does not draw")

    monkeypatch.setattr(iv, "batches", no_measurement)
    with pytest.raises(WeakConceptError, match="best IoU is 0.0000"):
        ablate(gan, 2, concept="door", top=2, segmenter=BrightDoor(), n=8, dissect_n=16)


def test_rank_notes_a_concept_the_model_may_not_draw(gan, door_report):
    notes = []
    r = rank_units(gan, 2, "door", units=[0, 1], dissection=door_report, segmenter=BrightDoor(), n=4,
                   progress=notes.append)
    assert r.ace == {0: 0.0, 1: 0.0}
    assert any(m.message and "may not draw it" in m.message and "best IoU 0.0000" in m.message for m in notes)


@pytest.fixture
def no_work(monkeypatch):
    """Any dissection or measurement fails the test: the errors must come before them."""
    import gantools.dissection
    import gantools.interventions as iv
    import gantools.ranking

    def fail(*args, **kwargs):
        raise AssertionError("expensive work started before the values were checked")

    monkeypatch.setattr(gantools.dissection, "dissect", fail)
    # the measurement loops of ablate/insert and of rank_units
    monkeypatch.setattr(iv, "batches", fail)
    monkeypatch.setattr(gantools.ranking, "batches", fail)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=1), "n must be at least 2"),
    (dict(top=0), "top must be at least 1"),
    (dict(units=[0, 12]), "numbered 0 to 7"),
    (dict(units="4,x"), "unit numbers"),
    (dict(concept="tree"), "dark, bright"),
    (dict(layer=9), "unknown layer"),
    (dict(strength=1.5), "strength must be between 0 and 1"),
    (dict(value="large"), "zero, mean, q99"),
    (dict(batch_size=0), "batch_size must be at least 1"),
    (dict(grid=-1), "grid must be"),
    (dict(dissect_n=0), "dissect_n must be at least 1"),
    (dict(rank="ace"), "rank='ace'"),
    (dict(rank="best"), "unknown ranking"),
    (dict(curve_points=1), "curve_points must be at least 2"),
    (dict(concept=None), "say which units"),
])
def test_ablate_checks_values_before_dissecting(gan, no_work, kwargs, message):
    args = dict(layer=2, concept="bright", top=2, segmenter=Bright(), n=8)
    args.update(kwargs)
    with pytest.raises(GantoolsError, match=message):
        ablate(gan, args.pop("layer"), **args)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=1), "n must be at least 2"),
    (dict(top=0), "top must be at least 1"),
    (dict(units=[8]), "numbered 0 to 7"),
    (dict(concept="sky"), "dark, bright"),
    (dict(layer="layer7"), "unknown layer"),
    (dict(strength=-0.1), "strength must be between 0 and 1"),
    (dict(value=[1.0, "x"]), "unknown value"),
    (dict(at="0.5,1.5"), "between 0 and 1"),
    (dict(at=(1.2, 0.5)), "between 0 and 1"),
    (dict(patch=0), "patch must be at least 1"),
    (dict(at=None, mask=torch.zeros(16, 16)), "selects no pixels"),
    (dict(at=None), "one of them"),
    (dict(rank="ace"), "rank='ace'"),
    (dict(grid=-2), "grid must be"),
])
def test_insert_checks_values_before_dissecting(gan, no_work, kwargs, message):
    args = dict(layer=2, concept="bright", top=2, at=(0.5, 0.5), segmenter=Bright(), n=8)
    args.update(kwargs)
    with pytest.raises(GantoolsError, match=message):
        insert(gan, args.pop("layer"), **args)


@pytest.mark.parametrize("kwargs, message", [
    (dict(n=1), "n must be at least 2"),
    (dict(units=[3, 9]), "numbered 0 to 7"),
    (dict(concept="tree"), "dark, bright"),
    (dict(layer=0), "unknown layer"),
    (dict(strength=2.0), "strength must be between 0 and 1"),
    (dict(value="mean"), "needs the dissection statistics"),
    (dict(max_images=0), "max_images must be at least 1"),
    (dict(batch_size=0), "batch_size must be at least 1"),
])
def test_rank_checks_values_before_measuring(gan, no_work, kwargs, message):
    args = dict(layer=2, concept="bright", segmenter=Bright(), n=8)
    args.update(kwargs)
    with pytest.raises(GantoolsError, match=message):
        rank_units(gan, args.pop("layer"), args.pop("concept"), **args)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_a_cuda_model_is_measured_where_it_lives():
    """The one device rule: with device=None a loaded model stays on its device (ablate used to
    move a CUDA GAN to the CPU); an explicit device moves it there."""
    from gantools.sampling import sample

    g = planted_gan().to("cuda")

    def on_cuda() -> bool:
        return next(g.generator.parameters()).device.type == "cuda"

    ablate(g, 2, units=[0, 1], segmenter=Bright(), n=4, grid=0)
    assert on_cuda()
    insert(g, 2, units=[0], value=6.0, at=(0.5, 0.5), segmenter=Bright(), n=4, grid=0)
    assert on_cuda()
    rank_units(g, 2, "bright", units=[0, 1], segmenter=Bright(), n=4)
    assert on_cuda()
    assert sample(g, 2).device.type == "cpu" and on_cuda()
    ablate(g, 2, units=[0], segmenter=Bright(), n=4, grid=0, device="cpu")
    assert not on_cuda()


# ---------------------------------------------------------------------------------------------
# Command line (the colour segmenter: planted images are grey where units 0 and 1 are off, white
# where they are strongly on)


@pytest.fixture(scope="module")
def planted_file(tmp_path_factory, gan) -> Path:
    from gantools.models import save_model

    return save_model(tmp_path_factory.mktemp("planted") / "model.safetensors", gan.generator, gan.discriminator)


def run_cli(*args: str):
    from typer.testing import CliRunner

    from gantools.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


def test_cli_ablate_insert_rank(planted_file, tmp_path):
    from gantools.dissection import dissect, load_report

    common = ["--model", planted_file, "--layer", "2", "--segmenter", "color", "--device", "cpu", "--quiet"]
    res = run_cli("ablate", *common, "--units", "0,1", "--concept", "white", "--n", "24", "--out", tmp_path / "abl")
    assert res.exit_code == 0, res.output
    effect = json.loads((tmp_path / "abl" / "effect.json").read_text())
    assert effect["units"] == [0, 1] and effect["effect"]["mean"] < 0 and effect["effect"]["after"] == 0.0
    assert effect["effects"]["gray"]["mean"] == pytest.approx(-effect["effect"]["mean"], abs=0.05)
    assert (tmp_path / "abl" / "curve.png").is_file() and (tmp_path / "abl" / "before_after.png").is_file()
    assert "white" in res.output

    res = run_cli("insert", *common, "--units", "0", "--value", "6", "--at", "0.5,0.5", "--n", "16", "--json",
                  "--out", tmp_path / "ins")
    assert res.exit_code == 0, res.output
    out = json.loads(res.stdout)
    assert out["concept"] == "white" and sum(c["count"] for c in out["by_context"]) == 16
    assert (tmp_path / "ins" / "effect.json").is_file()

    from gantools.models import load_model

    dissect(load_model(planted_file), layers=(2,), segmenter="color", n=32, top_k=0).save(tmp_path / "rep", html=False)
    res = run_cli("rank", *common, "--concept", "white", "--report", tmp_path / "rep", "--n", "16")
    assert res.exit_code == 0, res.output
    assert load_report(tmp_path / "rep").layers["layer2"].ranked_units("white", "ace")[0] == 0
    res = run_cli("ablate", *common, "--concept", "white", "--top", "2", "--rank", "ace", "--report",
                  tmp_path / "rep", "--n", "8", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["units"] == [0, 1]


def test_cli_takes_units_from_a_shipped_report_with_rank_ace(planted_file, tmp_path):
    import shutil

    from gantools.dissection import dissect
    from gantools.models import load_model

    model = tmp_path / "shipped" / "model.safetensors"
    model.parent.mkdir()
    shutil.copy(planted_file, model)
    result = dissect(load_model(model), layers=(2,), segmenter="color", n=32, top_k=0)
    stats = result.layers["layer2"]
    stats.ace["white"] = [float(u == 5) for u in range(stats.units)]  # unit 5 alone has an effect
    ship_dissection(result, model)
    common = ["--model", model, "--layer", "2", "--segmenter", "color", "--device", "cpu", "--n", "8"]
    res = run_cli("ablate", *common, "--concept", "white", "--top", "1", "--rank", "ace", "--json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["units"] == [5]
    assert "shipped with the model" in res.output


@pytest.mark.parametrize("args, message", [
    (["ablate", "--layer", "9", "--units", "0"], "unknown layer"),
    (["ablate", "--layer", "2", "--units", "8"], "numbered 0 to 7"),
    (["ablate", "--layer", "2", "--units", "0", "--concept", "tree"], "white, gray"),
    (["insert", "--layer", "2", "--units", "0", "--value", "1", "--at", "0.5,1.2"], "between 0 and 1"),
    (["rank", "--layer", "2", "--concept", "sky"], "white, gray"),
])
def test_cli_errors(planted_file, args, message):
    res = run_cli(*args, "--model", planted_file, "--segmenter", "color", "--n", "2", "--device", "cpu")
    assert res.exit_code == 1
    assert message in " ".join(res.output.split())
    assert "Traceback" not in res.output


def test_cli_report_for_another_model(planted_file, tiny_model_file, tmp_path):
    from gantools.dissection import dissect

    dissect(str(tiny_model_file), layers=(2,), segmenter="color", n=8, top_k=0).save(tmp_path / "rep", html=False)
    res = run_cli("ablate", "--model", planted_file, "--layer", "2", "--concept", "white", "--report",
                  tmp_path / "rep", "--segmenter", "color", "--n", "2", "--device", "cpu")
    assert res.exit_code == 1 and "another model" in res.output
