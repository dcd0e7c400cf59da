"""Editing real images: invert layer-wise, switch units off/on, regenerate, blend.

The planted generator (as in test_interventions) lets only units 0 and 1 of layer2 reach the image,
and the "bright" segmenter labels pixels brighter than 0.5. An image the generator made itself is
reconstructed almost exactly by a layer-wise inversion at layer2, so removing "bright" (ablating
units 0 and 1) must take its fraction to ~0, and the blend must leave every other pixel untouched.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import Bright, planted_gan
from gantools.data import load_image, save_image
from gantools.editing import EditResult, edit
from gantools.models import GAN
from gantools.utils import GantoolsError, to_uint8

FAST = dict(steps=40, restarts=1, encoder=None)


@pytest.fixture(scope="module")
def gan() -> GAN:
    return planted_gan()


@pytest.fixture(scope="module")
def photo(gan: GAN) -> torch.Tensor:
    """A generated image with a fair amount of bright pixels, as uint8 (what a PNG would hold)."""
    G = gan.generator
    with torch.no_grad():
        imgs = G(G.sample_z(8, seed=11))
    bright = (imgs.mean(1) > 0.5).float().mean((1, 2))
    return to_uint8(imgs[int(bright.argmax())])


def bright_fraction(img_u8: torch.Tensor) -> float:
    return float(((img_u8.float() / 127.5 - 1).mean(0) > 0.5).float().mean())


def test_remove_planted_concept_and_save(gan, photo, tmp_path):
    path = save_image(photo, tmp_path / "scene.png")
    msgs = []
    r = edit(gan, path, 2, remove="bright", units=[0, 1], segmenter=Bright(), progress=msgs.append, **FAST)
    assert isinstance(r, EditResult) and r.layer == "layer2" and r.units == [0, 1] and r.values == [0.0, 0.0]
    assert r.settings["inverted_at"] == "layer1"  # below the edited layer, by default
    assert torch.equal(r.input, photo)
    assert r.psnr > 30  # the planted generator reconstructs its own image
    before = bright_fraction(photo)
    assert r.before["bright"] == pytest.approx(before) and before > 0.3
    assert r.after["bright"] < 0.5 * before
    assert r.change < 0
    # Outside the region every pixel is the input's; inside, the regenerated one.
    outside = ~r.region
    assert outside.any() and r.region.any()
    assert torch.equal(r.edited[:, outside], photo[:, outside])
    assert torch.equal(r.edited[:, r.region], r.raw_edited[:, r.region])
    assert torch.equal(r.difference[:, outside], torch.zeros_like(photo[:, outside]))
    # The region covers every pixel that was bright in the reconstruction.
    recon_bright = (r.reconstruction.float() / 127.5 - 1).mean(0) > 0.5
    assert bool(r.region[recon_bright].all())
    assert not any("PSNR" in (m.message or "") for m in msgs)

    assert r.save(tmp_path / "out") == tmp_path / "out"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["edit.json", "scene_edited.png", "strip.png"]
    assert torch.equal(load_image(tmp_path / "out" / "scene_edited.png"), r.edited)
    strip = load_image(tmp_path / "out" / "strip.png")
    assert torch.equal(strip, r.strip())
    # Labelled (#22): 16 px enlarged x8 in four cells 4 px apart, below the column labels and right of the
    # row label; the margins hold the labels' dark text, the cells the pictures in order.
    top, left = strip.shape[1] - 128, strip.shape[2] - (4 * 128 + 3 * 4)
    assert top > 0 and left > 0
    assert bool((strip[:, top:, :left] < 128).any()) and bool((strip[:, :top, left:] < 128).any())
    for j, image in enumerate([r.input, r.reconstruction, r.edited, r.difference]):
        x = left + j * (128 + 4)
        assert torch.equal(strip[:, top:, x:x + 128], image.repeat_interleave(8, -1).repeat_interleave(8, -2))
        assert bool((strip[:, :top, x:x + 128] < 128).any())  # each column has its label
    assert r.strip(min_size=16).shape[2] - 4 * 16 - 3 * 4 == left  # min_size 16: the images at their size
    saved = json.loads((tmp_path / "out" / "edit.json").read_text())
    assert saved["action"] == "remove" and saved["concept"] == "bright" and saved["layer"] == "layer2"
    assert saved["fractions"]["bright"]["before"] == pytest.approx(before)
    assert saved["fractions"]["bright"]["after"] == pytest.approx(r.after["bright"])
    assert saved["reconstruction_psnr"] == pytest.approx(r.psnr)


def test_add_at_point_keeps_everything_else(gan, photo):
    # Add "bright" in the top-left corner; q99 levels come from a small dissection on the fly.
    r = edit(gan, photo, 2, add="bright", units=[0, 1], at=(0.1, 0.1), segmenter=Bright(), dissect_n=32, **FAST)
    assert r.name == "image" and r.action == "add"
    assert r.values[0] > 0
    # The region is the 3 x 3 block of layer2 cells (8 x 8 map -> 2 px per cell) in the top-left corner.
    expected = torch.zeros(16, 16, dtype=torch.bool)
    expected[:6, :6] = True
    assert torch.equal(r.region, expected)
    assert torch.equal(r.edited[:, ~expected], photo[:, ~expected])
    assert r.after["bright"] > r.before["bright"]
    bright_in = lambda img: float(((img.float() / 127.5 - 1).mean(0) > 0.5)[expected].float().mean())  # noqa: E731
    assert bright_in(r.edited) > bright_in(photo)


def test_blend_reconstruction_and_mask(gan, photo, tmp_path):
    m = np.zeros((16, 16), np.uint8)
    m[8:, 8:] = 255
    Image.fromarray(m).save(tmp_path / "mask.png")
    r = edit(gan, photo, 2, add="bright", units=[0, 1], mask=tmp_path / "mask.png", segmenter=Bright(),
             blend="reconstruction", dissect_n=32, **FAST)
    inside = torch.from_numpy(m > 0)
    assert torch.equal(r.region, inside)
    assert torch.equal(r.edited[:, ~inside], r.reconstruction[:, ~inside])
    assert r.before["bright"] == pytest.approx(bright_fraction(r.reconstruction))
    out = r.save(tmp_path / "out")
    assert (out / "edited.png").is_file()


def test_low_psnr_warns(gan, photo):
    msgs = []
    edit(gan, photo, 2, remove="bright", units=[0], segmenter=Bright(), psnr_warn=200.0,
         progress=msgs.append, steps=2, restarts=1, encoder=None)
    assert any("PSNR" in (m.message or "") for m in msgs)


def test_removing_an_absent_concept_says_so(gan):
    black = torch.zeros(3, 16, 16, dtype=torch.uint8)
    msgs = []
    r = edit(gan, black, 2, remove="bright", units=[0, 1], segmenter=Bright(), progress=msgs.append, **FAST)
    assert not r.region.any() and torch.equal(r.edited, black)
    assert any("finds no bright" in (m.message or "") for m in msgs)


def test_removal_region_covers_the_inputs_concept_even_where_the_reconstruction_missed_it(gan, photo):
    # Two Adam steps from a random start reconstruct little of the photo; the region must still hold
    # every bright pixel of the input, so the output keeps none of the input's bright pixels unedited.
    r = edit(gan, photo, 2, remove="bright", units=[0, 1], segmenter=Bright(), steps=2, restarts=1, encoder=None,
             dilate=0)
    input_bright = (photo.float() / 127.5 - 1).mean(0) > 0.5
    assert input_bright.any() and bool(r.region[input_bright].all())


def test_errors(gan, photo, tmp_path):
    seg = Bright()
    with pytest.raises(GantoolsError, match="dark, bright"):
        edit(gan, photo, 2, remove="tree", units=[0], segmenter=seg, **FAST)
    with pytest.raises(GantoolsError, match="one of them"):
        edit(gan, photo, 2, units=[0], segmenter=seg, **FAST)
    with pytest.raises(GantoolsError, match="one of them"):
        edit(gan, photo, 2, remove="bright", add="dark", units=[0], segmenter=seg, **FAST)
    with pytest.raises(GantoolsError, match="say where to add"):
        edit(gan, photo, 2, add="bright", units=[0], segmenter=seg, **FAST)
    with pytest.raises(GantoolsError, match="say where to add"):
        edit(gan, photo, 2, add="bright", units=[0], at=(0.5, 0.5), mask=torch.ones(16, 16), segmenter=seg, **FAST)
    Image.fromarray(np.full((10, 12), 255, np.uint8)).save(tmp_path / "bad.png")
    with pytest.raises(GantoolsError, match="12x10 pixels"):
        edit(gan, photo, 2, add="bright", units=[0], mask=tmp_path / "bad.png", segmenter=seg, dissect_n=8, **FAST)
    with pytest.raises(GantoolsError, match="blend"):
        edit(gan, photo, 2, remove="bright", units=[0], segmenter=seg, blend="nope", **FAST)
    with pytest.raises(GantoolsError, match="invert at layer1 or a layer below"):
        edit(gan, photo, 1, remove="bright", units=[0], segmenter=seg, invert_layer=2, **FAST)


class BrightDoor(Bright):
    """Bright's labels, and a third concept, "door", that no image ever shows."""

    concepts = ["dark", "bright", "door"]


@pytest.mark.parametrize("kwargs, message", [
    (dict(at=(1.5, 0.5)), "between 0 and 1"),
    (dict(at="0.5,-0.2"), "between 0 and 1"),
    (dict(patch=0), "patch must be at least 1"),
    (dict(strength=1.2), "strength must be between 0 and 1"),
    (dict(top=0), "top must be at least 1"),
    (dict(rank="ace"), "rank='ace'"),
    (dict(rank="best"), "unknown ranking"),
    (dict(units=[0, 9]), "numbered 0 to 7"),
    (dict(add="tree"), "dark, bright"),
    (dict(layer=9), "unknown layer"),
    (dict(steps=0), "steps and restarts must be at least 1"),
    (dict(restarts=0), "steps and restarts must be at least 1"),
    (dict(dilate=-1), "dilate must be 0 or more"),
    (dict(dissect_n=0), "dissect_n must be at least 1"),
    (dict(encoder="no-such-encoder.safetensors"), "no encoder file"),
    (dict(blend="paste"), "unknown blend"),
])
def test_values_are_checked_before_dissection_and_inversion(gan, photo, no_work, kwargs, message):
    args = dict(layer=2, add="bright", at=(0.5, 0.5), top=2, segmenter=Bright(), steps=5, restarts=1, encoder=None)
    args.update(kwargs)
    with pytest.raises(GantoolsError, match=message):
        edit(gan, photo, args.pop("layer"), **args)


def test_weak_concepts_are_refused_unless_allowed(gan, photo, monkeypatch):
    import gantools.restoration.inversion
    from gantools.dissection import dissect
    from gantools.interventions import WeakConceptError

    report = dissect(gan, layers=(2,), segmenter=BrightDoor(), n=32, seed=11, top_k=0)
    real_invert = gantools.restoration.inversion.invert

    def fail(*args, **kwargs):
        raise AssertionError("inverted before the concept was checked")

    monkeypatch.setattr(gantools.restoration.inversion, "invert", fail)
    for kwargs in (dict(add="door", at=(0.5, 0.5)), dict(remove="door")):
        with pytest.raises(WeakConceptError) as info:
            edit(gan, photo, 2, top=3, dissection=report, segmenter=BrightDoor(), **kwargs, **FAST)
        text = str(info.value)
        assert "best IoU is 0.0000" in text and "may not draw door" in text and "allow_weak=True" in text
        assert (info.value.best_iou, info.value.coverage) == (0.0, 0.0)
    monkeypatch.setattr(gantools.restoration.inversion, "invert", real_invert)
    msgs = []
    r = edit(gan, photo, 2, add="door", at=(0.5, 0.5), top=3, allow_weak=True, dissection=report,
             segmenter=BrightDoor(), progress=msgs.append, **FAST)
    assert r.units == report.layers["layer2"].ranked_units("door")[:3]
    assert "below the interpretable line" in r.settings["units_from"]
    assert any("may not draw it" in (m.message or "") for m in msgs)
    assert r.before["door"] == r.after["door"] == 0.0  # nothing to add: said, not silent
    # Units given explicitly are not checked.
    r = edit(gan, photo, 2, remove="door", units=[0], dissection=report, segmenter=BrightDoor(), **FAST)
    assert r.units == [0]


def test_invert_at_the_edited_layer(gan, photo):
    r = edit(gan, photo, 2, remove="bright", units=[0, 1], segmenter=Bright(), invert_layer=2, **FAST)
    assert r.settings["inverted_at"] == "layer2" and r.psnr > 30
    assert r.after["bright"] < 0.5 * r.before["bright"]


def test_cli_edit(tiny_model_file, tmp_path):
    from typer.testing import CliRunner

    from gantools.cli import app

    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(tmp_path / "in.png")
    runner = CliRunner()
    args = ["edit", str(tmp_path / "in.png"), "--model", str(tiny_model_file), "--layer", "2", "--segmenter", "color",
            "--units", "0,1", "--steps", "3", "--restarts", "1", "--device", "cpu", "--quiet"]
    res = runner.invoke(app, args + ["--remove", "gray", "--out", str(tmp_path / "out"), "--json"])
    assert res.exit_code == 0, res.output
    d = json.loads(res.stdout.strip().splitlines()[-1])
    assert d["concept"] == "gray" and d["units"] == [0, 1] and set(d["fractions"]) >= {"gray", "red", "blue"}
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["edit.json", "in_edited.png", "strip.png"]
    res = runner.invoke(app, args + ["--remove", "tree"])
    assert res.exit_code == 1 and "unknown concept 'tree'" in res.output and "brown" in res.output
    res = runner.invoke(app, args + ["--add", "red"])
    assert res.exit_code != 0 and "--at" in res.output
