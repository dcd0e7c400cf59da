"""The domain classifier: trains on class folders, saves/loads, features, coverage, holdout, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gantools.classifier import (
    Classifier,
    ClassifierConfig,
    class_coverage,
    class_folder_files,
    coverage_from_probs,
    evaluate_classifier,
    load_classifier,
    split_holdout,
    train_classifier,
)
from gantools.cli import app
from gantools.utils import GantoolsError

COLOURS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (40, 50, 220)}


def write_colour_folders(root: Path, per_class: int = 16, size: int = 16, seed: int = 0) -> Path:
    """Solid-colour images with brightness jitter and pixel noise, one folder per colour."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    for name, rgb in COLOURS.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            base = np.array(rgb, dtype=np.float64) * rng.uniform(0.6, 1.1)
            arr = np.clip(base + rng.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(arr, "RGB").save(root / name / f"{name}{i:02d}.png")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return write_colour_folders(tmp_path_factory.mktemp("colours") / "data")


@pytest.fixture(scope="module")
def trained(colours, tmp_path_factory):
    out = tmp_path_factory.mktemp("clf") / "classifier.safetensors"
    result = train_classifier(colours, image_size=16, nc=3, out=out, epochs=6, batch_size=8, lr=5e-3, width=8,
                              feature_dim=16, val_fraction=0.25, seed=0)
    return result


def test_trains_to_high_accuracy_on_solid_colours(trained, colours):
    assert trained.val_accuracy is not None and trained.val_accuracy >= 0.9
    assert trained.n_val == 12 and trained.n_train == 36
    ev = evaluate_classifier(trained.classifier, colours)
    assert ev.n == 48 and ev.accuracy >= 0.9
    assert ev.trained_on == 48  # no holdout: every image of the folder was a training (or validation) image
    assert set(ev.per_class) == set(COLOURS)
    assert sum(map(sum, ev.confusion)) == 48


def test_save_load_roundtrip_keeps_classes_and_outputs(trained):
    clf = load_classifier(trained.path)
    assert clf.classes == ["blue", "green", "red"]  # natural order of the folder names
    assert clf.config.image_size == 16 and clf.config.nc == 3
    assert clf.training_info["epochs"] == 6
    x = torch.rand(5, 3, 16, 16) * 2 - 1
    p1, p2 = trained.classifier.predict_proba(x), clf.predict_proba(x)
    assert torch.allclose(p1, p2, atol=1e-6)
    assert torch.allclose(p2.sum(1), torch.ones(5), atol=1e-6)
    f = clf.features(x)
    assert f.shape == (5, 16)
    f2, p3 = clf.features_and_proba(x)  # eval's one-pass path gives the same numbers
    assert torch.allclose(f, f2) and torch.allclose(p2, p3)
    # other sizes are resized to the classifier's own; uint8 input is accepted
    assert clf.features(torch.rand(2, 3, 32, 32) * 2 - 1).shape == (2, 16)
    assert clf.predict_proba(torch.full((1, 3, 16, 16), 200, dtype=torch.uint8)).shape == (1, 3)


def test_class_coverage_of_pure_colour_images(trained):
    red = torch.tensor([220, 30, 30], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    blue = torch.tensor([40, 50, 220], dtype=torch.float32).view(1, 3, 1, 1) / 127.5 - 1
    images = torch.cat([red.expand(6, 3, 16, 16), blue.expand(2, 3, 16, 16)])
    cov = class_coverage(trained.classifier, images, threshold=0.5)
    shares = dict(zip(cov.classes, cov.fractions))
    assert shares["red"] == pytest.approx(0.75) and shares["blue"] == pytest.approx(0.25)
    assert shares["green"] == 0.0 and cov.n == 8
    assert cov.confident_fraction == 1.0


def test_coverage_from_probs_exact():
    probs = torch.tensor([[0.95, 0.05], [0.6, 0.4], [0.1, 0.9], [0.02, 0.98]])
    cov = coverage_from_probs(probs, ["a", "b"], threshold=0.9)
    assert cov.fractions == [0.5, 0.5]
    assert cov.confident_fraction == 0.75
    assert cov.confident_per_class == [0.25, 0.5]
    assert cov.min_fraction == 0.5 and cov.to_dict()["max_fraction"] == 0.5


def test_holdout_is_stratified_like_training(colours, trained):
    # the same split as `gantools train --holdout`: the last files of each class folder
    files, labels, classes = class_folder_files(colours)
    k = len(classes)
    kept, held = split_holdout(files, 2 * k)
    assert len(held) == 2 * k and len(kept) == len(files) - 2 * k
    assert sorted(p.parent.name for p in held) == sorted(classes * 2)
    # `trained` saw every image: a "held-out" score on the last 2 per class would be a training score
    with pytest.raises(GantoolsError, match=r"6 of the 6 held-out images .* used to train this classifier"):
        evaluate_classifier(trained.classifier, colours, holdout=2 * k)
    with pytest.raises(GantoolsError, match="trained with holdout=0"):
        evaluate_classifier(load_classifier(trained.path), colours, holdout=2 * k)  # the file records it too
    held_out = train_classifier(colours, image_size=16, nc=3, holdout=2 * k, epochs=1, width=4, feature_dim=4,
                                batch_size=8, seed=0)
    ev = evaluate_classifier(held_out.classifier, colours, holdout=2 * k)
    assert ev.n == 2 * k and ev.part == "holdout" and all(ev.counts[c] == 2 for c in classes)
    assert ev.trained_on == 0
    assert evaluate_classifier(held_out.classifier, colours, holdout=k).trained_on == 0  # a part of the held-out set
    with pytest.raises(GantoolsError, match=r"3 of the 9 held-out images .* evaluate with holdout=6"):
        evaluate_classifier(held_out.classifier, colours, holdout=3 * k)
    notes: list[str] = []
    ev_all = evaluate_classifier(held_out.classifier, colours, progress=lambda p: notes.append(p.message or ""))
    assert ev_all.trained_on == 48 - 2 * k
    assert any(f"{48 - 2 * k} of these 48 images were used to train" in m and "holdout=6" in m for m in notes)
    # another folder: what it was trained on cannot be told, so nothing is claimed
    other = write_colour_folders(colours.parent / "other", per_class=4, seed=1)
    assert evaluate_classifier(held_out.classifier, other, holdout=k).trained_on is None
    with pytest.raises(GantoolsError, match="leaves none"):
        train_classifier(colours, image_size=16, nc=3, holdout=len(files) - 1, epochs=1, width=8)


def test_flat_folder_and_bad_config_are_user_errors(tmp_path):
    from conftest import write_images

    write_images(tmp_path / "flat", 4)
    with pytest.raises(GantoolsError, match="class-folder"):
        train_classifier(tmp_path / "flat", image_size=16, nc=3)
    with pytest.raises(GantoolsError, match="at least 2 classes"):
        Classifier(ClassifierConfig(classes=["only"]))
    with pytest.raises(GantoolsError, match="not a gantools classifier"):
        from gantools.models import save_safetensors

        save_safetensors(tmp_path / "x.safetensors", {"m": torch.nn.Linear(2, 2)}, {})
        load_classifier(tmp_path / "x.safetensors")


def test_cli_classifier_train_and_eval(colours, tmp_path):
    runner = CliRunner()
    out = tmp_path / "c.safetensors"
    r = runner.invoke(app, ["classifier", "train", "--data", str(colours), "--out", str(out), "--image-size", "16",
                            "--nc", "3", "--epochs", "4", "--lr", "1e-2", "--val-fraction", "0", "--batch-size", "8", "--width", "8", "--feature-dim", "8",
                            "--device", "cpu", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["classes"] == ["blue", "green", "red"] and Path(info["path"]) == out and out.is_file()
    r = runner.invoke(app, ["classifier", "eval", "--data", str(colours), "--classifier", str(out), "--json",
                            "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    ev = json.loads(r.stdout.strip().splitlines()[-1])
    assert ev["n"] == 48 and ev["accuracy"] >= 0.8
    r = runner.invoke(app, ["classifier", "eval", "--data", str(colours), "--classifier", str(out), "--device", "cpu"])
    assert r.exit_code == 0 and "accuracy" in r.stdout
    r = runner.invoke(app, ["classifier", "eval", "--data", str(colours)])
    assert r.exit_code != 0
    # trained without --holdout: a --holdout evaluation would measure training images, and says so
    r = runner.invoke(app, ["classifier", "eval", "--data", str(colours), "--classifier", str(out), "--holdout", "6",
                            "--device", "cpu", "--quiet"])
    assert r.exit_code == 1 and "used to train this classifier" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["classifier", "eval", "--data", str(colours), "--classifier", str(out), "--device", "cpu"])
    assert r.exit_code == 0 and "48 of these 48 images were used to train" in r.output
    assert "not a held-out score" in " ".join(r.stdout.split())  # the table's title (wrapped)
    # -c means --concept elsewhere; here the classifier is --classifier only
    r = runner.invoke(app, ["classifier", "eval", "--data", str(colours), "-c", str(out)])
    assert r.exit_code == 2 and "No such option" in r.output
