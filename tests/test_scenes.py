"""The built-in scenes dataset: determinism, labels that agree with the geometry, concept
frequencies, the written folder reading back through LabelledFolder, and LabelledFolder's errors."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from gantools.cli import app
from gantools.data import LabeledFolder, LabelledFolder, batch_images, open_dataset, read_label, save_label
from gantools.scenes import CONCEPTS, DESIGNS, VERSION, VERSIONS, Scenes, ScenesWritten, WriteScenesResult, \
    concept_frequencies, render_scene, write_scenes
from gantools.utils import GantoolsError

ID = {name: i for i, name in enumerate(CONCEPTS)}


# ---------------------------------------------------------------------------------------------
# Determinism and basic contract


def test_concepts_and_item_types():
    assert len(CONCEPTS) >= 12 and len(set(CONCEPTS)) == len(CONCEPTS)
    ds = Scenes(n=20, image_size=32, seed=0)
    image, label = ds[3]
    assert ds.concepts == CONCEPTS and len(ds) == 20 and ds.image_size == 32 and ds.nc == 3
    assert image.dtype == torch.uint8 and image.shape == (3, 32, 32)
    assert label.dtype == torch.int64 and label.shape == (32, 32)
    assert 0 <= int(label.min()) and int(label.max()) < len(CONCEPTS)
    gray, gray_label = Scenes(n=20, image_size=32, seed=0, nc=1)[3]
    assert gray.shape == (1, 32, 32) and torch.equal(gray_label, label)
    # luminance of the RGB image (up to rounding of the channels)
    lum = (torch.tensor([0.299, 0.587, 0.114]).view(3, 1, 1) * image.float()).sum(0)
    assert (lum - gray[0].float()).abs().max() <= 1.5


@pytest.mark.parametrize("size", [16, 48, 128])
def test_any_size(size):
    ds = Scenes(n=8, image_size=size, seed=1)
    images, labels = ds.batch(range(8))
    assert images.shape == (8, 3, size, size) and labels.shape == (8, size, size)
    # a horizon in every image: sky at the top row, grass or things standing on it at the bottom
    assert (labels[:, 0, :] != ID["grass"]).all()
    assert (labels[:, -1, :] != ID["sky"]).all()


def test_deterministic_random_access():
    a = Scenes(n=100, image_size=32, seed=7)
    b = Scenes(n=100, image_size=32, seed=7)
    forward = [a[i] for i in (3, 50, 99, 0)]
    backward = [b[i] for i in (0, 99, 50, 3)][::-1]
    for (ia, la), (ib, lb) in zip(forward, backward):
        assert torch.equal(ia, ib) and torch.equal(la, lb)
    again = a[50]
    assert torch.equal(again[0], forward[1][0])
    assert torch.equal(a[-1][0], a[99][0])
    other_seed = Scenes(n=100, image_size=32, seed=8)
    assert not torch.equal(other_seed[50][0], a[50][0])
    assert not torch.equal(a[51][0], a[50][0])
    # scene i of seed s does not depend on the dataset's length either
    assert torch.equal(Scenes(n=1000, image_size=32, seed=7)[50][0], a[50][0])


def test_bad_arguments():
    with pytest.raises(GantoolsError, match="nc"):
        Scenes(nc=2)
    with pytest.raises(GantoolsError, match="size"):
        Scenes(image_size=4)
    with pytest.raises(GantoolsError, match="n must"):
        Scenes(n=0)
    with pytest.raises(GantoolsError, match="seed"):
        Scenes(seed=-1)
    with pytest.raises(IndexError):
        Scenes(n=5)[5]


def test_registered_builtin():
    from gantools.data import BUILTIN_DATASETS, builtin_dataset, dataset_names, dataset_version

    assert "scenes" in BUILTIN_DATASETS and "scenes" in dataset_names()
    assert builtin_dataset("scenes").versions == VERSIONS and dataset_version("scenes") == VERSION
    assert builtin_dataset("no-such-dataset") is None and dataset_version("no-such-dataset") is None
    ds = open_dataset("scenes", image_size=32, nc=1, n=10, seed=3)
    assert isinstance(ds, Scenes) and (len(ds), ds.image_size, ds.nc, ds.seed) == (10, 32, 1, 3)
    batch = batch_images(ds, [1, 4])
    assert batch.shape == (2, 1, 32, 32) and torch.equal(batch[1], ds[4][0])


def test_textured_not_flat():
    ds = Scenes(n=40, image_size=64, seed=2)
    spread = {name: [] for name in ("sky", "grass", "water", "tree")}
    rough = {name: [] for name in spread}
    for i in range(40):
        image, label = ds[i]
        gray = image.float().mean(0)
        for name in spread:
            m = label == ID[name]
            if m.sum() > 30:
                spread[name].append(float(gray[m].std()))  # gradients and texture
                pair = m[:, 1:] & m[:, :-1]
                rough[name].append(float((gray[:, 1:] - gray[:, :-1]).abs()[pair].mean()))  # fine texture
    for name, values in spread.items():
        assert values, name
        assert np.median(values) > 2.0, (name, np.median(values))
    # textures differ between concepts: foliage and grass are rougher than the smooth sky
    assert np.median(rough["tree"]) > 2 * np.median(rough["sky"])
    assert np.median(rough["grass"]) > 2 * np.median(rough["sky"])


# ---------------------------------------------------------------------------------------------
# Labels agree with the geometry


def _covering(box, S):
    x0, y0, x1, y1 = box
    m = np.zeros((S, S), dtype=bool)
    m[y0:y1, x0:x1] = True
    return m


RECT_SHAPES = ("sky", "grass", "wall", "door", "window", "trunk")


@pytest.mark.parametrize("version", VERSIONS)
def test_labels_agree_with_layout(version):
    S, n = 48, 120
    ds = Scenes(n=n, image_size=S, seed=11, version=version)
    design = DESIGNS[version]
    seen = set()
    for i in range(n):
        layout = ds.layout(i)
        _, labels = ds.render(i)
        labels = labels
        hz = layout.horizon
        objs = layout.objects
        rows = np.arange(S)[:, None].repeat(S, 1)
        # sky things only above the horizon, ground things only below it
        for name in ("sky", "cloud", "sun", "mountain"):
            assert (rows[labels == ID[name]] < hz).all(), (i, name)
        for name in ("grass", "water", "road"):
            assert (rows[labels == ID[name]] >= hz).all(), (i, name)
        # every labelled pixel lies inside a box of an object of that concept
        for name in CONCEPTS:
            m = labels == ID[name]
            if m.any():
                seen.add(name)
                cover = np.zeros_like(m)
                for box in layout.boxes(name):
                    cover |= _covering(box, S)
                assert not (m & ~cover).any(), (i, name)
        for k, o in enumerate(objs):
            x0, y0, x1, y1 = o.box
            if o.concept in ("door", "window", "roof"):
                wall = objs[o.parent]
                assert wall.concept == "wall"
                wx0, wy0, wx1, wy1 = wall.box
                if o.concept == "roof":  # on top of its wall, at most a small overhang wider
                    assert y1 == wy0 and x0 <= wx0 and x1 >= wx1, (i, o, wall)
                    assert (wx0 - x0) <= 0.1 * (wx1 - wx0) + 2 and (x1 - wx1) <= 0.1 * (wx1 - wx0) + 2
                else:  # inside the wall's bounding region
                    assert wx0 <= x0 and x1 <= wx1 and wy0 <= y0 and y1 <= wy1, (i, o, wall)
                    if o.concept == "door":
                        assert y1 == wy1  # doors stand on the ground
            if o.concept == "trunk" and o.parent is not None:
                foliage = objs[o.parent]
                assert foliage.concept == "tree" and foliage.box[1] <= y0 < foliage.box[3]
            if o.base is not None:
                assert hz < o.base <= S  # stands on the ground
            # occlusion in depth order: inside a solid rectangle, any other label comes from an
            # object drawn later (nearer), whose box covers that pixel
            if o.concept in RECT_SHAPES:
                box_mask = _covering(o.box, S)
                other = box_mask & (labels != ID[o.concept])
                if other.any():
                    later = np.zeros_like(other)
                    for later_obj in objs[k + 1:]:
                        later |= _covering(later_obj.box, S) & (labels == ID[later_obj.concept])
                    assert not (other & ~later).any(), (i, o)
        # far to near: upright objects are drawn in order of their base row
        bases = [o.base for o in objs if o.concept in ("wall", "trunk")]
        assert bases == sorted(bases)
        # perspective: walls are smaller when they stand closer to the horizon (down to the design's minimum)
        for o in objs:
            if o.concept == "wall" and o.box[2] < S and o.box[0] > 0:
                width = o.box[2] - o.box[0]
                most = max(design.house_width[1] * S * (o.base - hz) / (S - hz), design.house_min_width * S)
                assert width <= most + 2, (i, o)
    assert seen == set(CONCEPTS)


def _digest(scenes, n):
    h = hashlib.sha256()
    for i in range(n):
        image, labels = scenes.render(i)
        h.update(image.tobytes())
        h.update(labels.astype("int64").tobytes())
    return h.hexdigest()[:16]


def test_version_1_renders_exactly_as_it_always_did():
    # digests of the first design, taken before version 2 existed: old runs stay reproducible
    assert _digest(Scenes(n=50, image_size=32, seed=3, version=1), 50) == "71e4678f637263d7"
    assert _digest(Scenes(n=50, image_size=64, seed=3, version=1), 50) == "6cf75d762417676b"
    assert _digest(Scenes(n=5, image_size=32, seed=3), 5) != _digest(Scenes(n=5, image_size=32, seed=3, version=1), 5)
    with pytest.raises(GantoolsError, match="no version 3"):
        Scenes(version=3)
    with pytest.raises(GantoolsError, match="no version 9"):
        open_dataset("scenes", version=9)
    assert open_dataset("scenes", n=4, version=1).version == 1 and open_dataset("scenes", n=4).version == VERSION


def test_version_2_renders_as_it_did_when_scenes_became_a_package():
    # digests taken from the single-module scenes.py before it was split by element (the split keeps
    # every random draw in its order, so every image and label stays byte-identical)
    assert _digest(Scenes(n=50, image_size=32, seed=3, version=2), 50) == "1fbd8af58f69b4d2"
    assert _digest(Scenes(n=50, image_size=64, seed=3, version=2), 50) == "be945c58389e7e32"
    assert _digest(Scenes(n=20, image_size=48, seed=3, nc=1, version=2), 20) == "bb85301a6be20a0c"


def test_scenes_import_nothing_from_data():
    # gantools.data registers the scenes dataset; scenes must not import data back (no import cycle,
    # not even inside a function)
    import ast

    import gantools.scenes

    for path in Path(gantools.scenes.__file__).parent.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom):
                assert node.module not in ("data", "gantools.data"), path.name
            elif isinstance(node, ast.Import):
                assert all(a.name != "gantools.data" for a in node.names), path.name


def test_version_2_draws_every_concept_at_a_learnable_size():
    S, n = 64, 400
    ds = Scenes(n=n, image_size=S, seed=21)
    freq = concept_frequencies(ds, n)
    for name in CONCEPTS:
        assert freq[name]["image_frequency"] >= 0.25, name
    for name in ("door", "window", "sun", "trunk"):
        assert freq[name]["pixel_frequency"] >= 0.009, (name, freq[name])  # >= 1.0% on 5,000 (benchmarks)
    least = {"door": (4, 6), "window": (4, 4), "trunk": (3, 1), "sun": (8, 8)}
    for i in range(n):
        for o in ds.layout(i).objects:
            if o.concept in least:
                x0, y0, x1, y1 = o.box
                assert x1 - x0 >= least[o.concept][0] and y1 - y0 >= least[o.concept][1], (i, o)


def test_render_scene_matches_dataset():
    img, labels, layout = render_scene(5, 9, image_size=32)
    item = Scenes(n=10, image_size=32, seed=5)[9]
    assert np.array_equal(img, item[0].numpy()) and np.array_equal(labels, item[1].numpy())
    assert layout.index == 9 and layout.seed == 5 and layout.palette in ("day", "dusk", "overcast")


# ---------------------------------------------------------------------------------------------
# Frequencies


def test_concept_frequencies_within_bounds():
    ds = Scenes(n=400, image_size=32, seed=123)
    freq = concept_frequencies(ds, 400)
    assert list(freq) == CONCEPTS
    for name, f in freq.items():
        assert 0.1 <= f["image_frequency"] <= 1.0, (name, f)
        assert 0 < f["pixel_frequency"] < 0.6, (name, f)
    assert freq["sky"]["image_frequency"] == 1.0 and freq["grass"]["image_frequency"] == 1.0
    assert abs(sum(f["pixel_frequency"] for f in freq.values()) - 1.0) < 1e-9
    # agrees with counting by hand
    labels = torch.stack([ds[i][1] for i in range(50)])
    small = concept_frequencies(ds, 50)
    for name in ("door", "water", "cloud"):
        present = (labels == ID[name]).flatten(1).any(1).float().mean().item()
        assert small[name]["image_frequency"] == pytest.approx(present)
        assert small[name]["pixel_frequency"] == pytest.approx((labels == ID[name]).float().mean().item())
    with pytest.raises(GantoolsError, match="labelled"):
        concept_frequencies([torch.zeros(3, 8, 8)], 1)


# ---------------------------------------------------------------------------------------------
# Written folders and LabelledFolder


def test_cli_writes_folder_that_reads_back(tmp_path):
    out = tmp_path / "scenes"
    result = CliRunner().invoke(app, ["data", "scenes", str(out), "--n", "12", "--size", "32", "--seed", "4", "-q"])
    assert result.exit_code == 0, result.output
    assert "door" in result.output and "window" in result.output
    assert json.loads((out / "concepts.json").read_text()) == {"concepts": CONCEPTS, "dataset": "scenes",
                                                               "version": VERSION, "seed": 4}
    assert len(list((out / "images").glob("*.png"))) == 12 and len(list((out / "labels").glob("*.png"))) == 12
    with Image.open(out / "labels" / "000000.png") as im:
        assert im.mode == "P"
    with Image.open(out / "preview.png") as im:
        assert im.size[0] > 2 * 4 * 32 and im.size[1] > 3 * 32
    folder = open_dataset(out, image_size=32)
    assert LabeledFolder is LabelledFolder  # the old spelling stays
    assert isinstance(folder, LabelledFolder) and folder.concepts == CONCEPTS and len(folder) == 12
    ds = Scenes(n=12, image_size=32, seed=4)
    for i in range(12):
        image, label = folder[i]
        assert label.dtype == torch.int64
        assert torch.equal(image, ds[i][0]) and torch.equal(label, ds[i][1]), i
    assert torch.equal(batch_images(folder, [2, 5]), torch.stack([ds[2][0], ds[5][0]]))
    # the folder's own size when none is given
    assert LabelledFolder(out).image_size == 32
    # resized on request: images antialiased, labels by nearest neighbour (still concept ids)
    small = LabelledFolder(out, image_size=16)
    assert small[0][0].shape == (3, 16, 16) and small[0][1].shape == (16, 16)
    assert set(small[0][1].unique().tolist()) <= set(ds[0][1].unique().tolist())


def test_cli_json_and_gray(tmp_path):
    out = tmp_path / "gray"
    result = CliRunner().invoke(app, ["data", "scenes", str(out), "--n", "5", "--size", "16", "--nc", "1",
                                      "--json", "-q"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout.strip().splitlines()[-1])
    assert doc["n"] == 5 and doc["concepts"] == CONCEPTS and set(doc["frequencies"]) == set(CONCEPTS)
    ds = Scenes(n=5, image_size=16, seed=0, nc=1)
    folder = LabelledFolder(out, nc=1)
    for i in range(5):
        assert torch.equal(folder[i][0], ds[i][0]) and torch.equal(folder[i][1], ds[i][1])
    bad = CliRunner().invoke(app, ["data", "scenes", str(out), "--nc", "2"])
    assert bad.exit_code != 0


def test_write_scenes_python_api(tmp_path):
    result = write_scenes(tmp_path / "w", n=6, image_size=16, seed=2, preview=4)
    assert isinstance(result, WriteScenesResult) and ScenesWritten is WriteScenesResult  # the old name stays
    assert result.n == 6 and result.preview.is_file()
    freq = concept_frequencies(Scenes(n=6, image_size=16, seed=2))
    assert result.frequencies == freq
    with pytest.raises(GantoolsError, match="preview must be at least 1"):
        write_scenes(tmp_path / "none", n=2, image_size=16, preview=0)


def test_rewriting_a_folder_leaves_exactly_the_new_dataset(tmp_path):
    root = tmp_path / "w"
    write_scenes(root, n=6, image_size=16, seed=2, preview=1)
    (root / "images" / "notes.png").write_bytes(b"")  # not a scene: the user's file stays
    msgs = []
    write_scenes(root, n=2, image_size=32, seed=2, preview=1, progress=msgs.append)
    assert sorted(p.name for p in (root / "images").glob("0*.png")) == ["000000.png", "000001.png"]
    assert sorted(p.name for p in (root / "labels").glob("*.png")) == ["000000.png", "000001.png"]
    assert (root / "images" / "notes.png").exists()
    assert any("removed 4 scene(s)" in (m.message or "") for m in msgs)


def _labelled(tmp_path: Path, n: int = 3, size: int = 16) -> Path:
    root = tmp_path / "lab"
    write_scenes(root, n=n, image_size=size, seed=0, preview=1)
    return root


def test_labelled_folder_missing_label(tmp_path):
    root = _labelled(tmp_path)
    (root / "labels" / "000001.png").unlink()
    with pytest.raises(GantoolsError, match="no label.*000001"):
        LabelledFolder(root)
    (root / "images" / "000001.png").unlink()
    (root / "labels" / "000002.png").rename(root / "labels" / "other.png")
    with pytest.raises(GantoolsError, match="no label|no image"):
        LabelledFolder(root)


def test_labelled_folder_size_mismatch(tmp_path):
    root = _labelled(tmp_path)
    save_label(torch.zeros(8, 8, dtype=torch.long), root / "labels" / "000002.png", len(CONCEPTS))
    with pytest.raises(GantoolsError, match="same size"):
        LabelledFolder(root)


def test_labelled_folder_unknown_concept(tmp_path):
    root = _labelled(tmp_path)
    bad = torch.zeros(16, 16, dtype=torch.long)
    bad[3, 4] = 20
    Image.fromarray(bad.numpy().astype(np.uint8), "L").save(root / "labels" / "000000.png")
    assert int(read_label(root / "labels" / "000000.png")[3, 4]) == 20
    with pytest.raises(GantoolsError, match="concept id 20.*13 concepts"):
        LabelledFolder(root)


def test_labelled_folder_bad_files(tmp_path):
    root = _labelled(tmp_path)
    Image.new("RGB", (16, 16)).save(root / "labels" / "000000.png")
    with pytest.raises(GantoolsError, match="palette"):
        LabelledFolder(root)
    (root / "concepts.json").write_text('{"names": []}')
    with pytest.raises(GantoolsError, match="concepts"):
        LabelledFolder(root)
    (root / "concepts.json").unlink()
    with pytest.raises(GantoolsError, match="concepts.json"):
        LabelledFolder(root)
    # without concepts.json the folder is a plain image folder again
    assert not isinstance(open_dataset(root, image_size=16), LabelledFolder)


def test_save_label_round_trip(tmp_path):
    labels = torch.randint(0, len(CONCEPTS), (9, 11))
    path = save_label(labels, tmp_path / "l.png", len(CONCEPTS))
    assert torch.equal(read_label(path), labels)
    with pytest.raises(GantoolsError, match="label ids"):
        save_label(torch.full((4, 4), 13), tmp_path / "x.png", len(CONCEPTS))
