"""Sample-quality metrics: FID, KID, precision/recall, extractors, the reference cache, evaluate, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from gantools import metrics as M
from gantools.cli import app
from gantools.data import split_folder
from gantools.metrics import evaluation, reference
from gantools.utils import GantoolsError


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    """Every test gets its own empty statistics cache (and no in-process memo)."""
    monkeypatch.setenv("GANTOOLS_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(reference, "_MEMO", {})


def smooth_images(n: int, seed: int, size: int = 16) -> torch.Tensor:
    """Random low-frequency RGB images in [-1, 1]: 4x4 noise upsampled."""
    g = torch.Generator().manual_seed(seed)
    small = torch.rand(n, 3, 4, 4, generator=g) * 2 - 1
    return torch.nn.functional.interpolate(small, size=(size, size), mode="bilinear", align_corners=False)


# ---------------------------------------------------------------------------------------------
# FID


def test_fid_of_a_set_with_itself_is_zero():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(300, 16)) @ rng.normal(size=(16, 16))
    assert M.fid(a, a) == pytest.approx(0.0, abs=1e-8)
    # singular covariances (fewer samples than dimensions) too
    b = rng.normal(size=(20, 64))
    assert M.fid(b, b) == pytest.approx(0.0, abs=1e-8)


def test_fid_sample_space_path_matches_covariance_path():
    # fewer samples than dimensions: fid() works with the N x M cross matrix; same value as the D x D route
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=(30, 50)), rng.normal(size=(40, 50)) * 1.5 + 0.1
    via_cov = M.frechet_distance(*M.feature_stats(a), *M.feature_stats(b))
    # (the D x D route takes square roots of ~1e-15 rounding-error eigenvalues of the singular
    # covariances, so the two agree to ~1e-8 relative, not to machine precision)
    assert M.fid(a, b) == pytest.approx(via_cov, rel=1e-7)


def test_fid_closed_form_between_gaussians():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.normal(size=4), rng.normal(size=4)
    # commuting (diagonal) covariances: d^2 = |mu1-mu2|^2 + sum (sqrt(a) - sqrt(b))^2
    a, b = rng.uniform(0.5, 2, 4), rng.uniform(0.5, 2, 4)
    expected = ((mu1 - mu2) ** 2).sum() + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum()
    assert M.frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)
    # general covariances: the textbook formula with scipy's sqrtm
    import scipy.linalg

    A, B = rng.normal(size=(4, 4)), rng.normal(size=(4, 4))
    s1, s2 = A @ A.T + 0.1 * np.eye(4), B @ B.T + 0.1 * np.eye(4)
    ref = ((mu1 - mu2) ** 2).sum() + np.trace(s1 + s2 - 2 * scipy.linalg.sqrtm(s1 @ s2).real)
    assert M.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(ref, rel=1e-8)
    # and from samples of those Gaussians, the estimate approaches the closed form
    x = rng.multivariate_normal(mu1, s1, size=20000)
    y = rng.multivariate_normal(mu2, s2, size=20000)
    assert M.fid(x, y) == pytest.approx(ref, rel=0.05)


def test_fid_agrees_with_torchmetrics():
    fidmod = pytest.importorskip("torchmetrics.image.fid")

    class Identity(torch.nn.Module):
        num_features = 8

        def forward(self, x):
            return x

    rng = np.random.default_rng(2)
    a, b = rng.normal(size=(400, 8)), rng.normal(size=(300, 8)) * 1.3 + 0.2
    tm = fidmod.FrechetInceptionDistance(feature=Identity(), normalize=True)
    tm.update(torch.tensor(a), real=True)
    tm.update(torch.tensor(b), real=False)
    assert M.fid(a, b) == pytest.approx(float(tm.compute()), rel=1e-6)


def test_fid_grows_monotonically_with_noise():
    # on features
    rng = np.random.default_rng(3)
    real, fake = rng.normal(size=(500, 12)), rng.normal(size=(500, 12))
    values = [M.fid(real, fake + s * rng.normal(size=fake.shape)) for s in (0, 0.25, 0.5, 1, 2)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    # on images, through the random-conv extractor
    fx = M.random_conv_extractor(3)
    ref = fx(smooth_images(200, seed=0))
    other = smooth_images(200, seed=1)
    g = torch.Generator().manual_seed(9)
    noise = torch.randn(other.shape, generator=g)
    values = [M.fid(ref, fx((other + s * noise).clamp(-1, 1))) for s in (0, 0.05, 0.1, 0.2, 0.4)]
    assert all(a < b for a, b in zip(values, values[1:])), values
    assert values[-1] > 2 * values[0]


# ---------------------------------------------------------------------------------------------
# KID


def test_kid_unbiased_on_small_sets():
    rng = np.random.default_rng(4)
    unbiased, biased = [], []
    for _ in range(300):
        x, y = rng.normal(size=(10, 8)), rng.normal(size=(10, 8))
        unbiased.append(M.mmd2_polynomial(x, y))
        biased.append(M.mmd2_polynomial(x, y, unbiased=False))
    se = np.std(unbiased) / np.sqrt(len(unbiased))
    assert abs(np.mean(unbiased)) < 3 * se  # mean over draws ~ 0 for equal distributions
    assert np.mean(biased) > 10 * se and min(biased) > 0  # the V-statistic is biased upwards
    # KID (mean over subsets) on same-distribution sets is near 0, and clearly positive for shifted ones
    a, b = rng.normal(size=(200, 8)), rng.normal(size=(200, 8))
    same, same_std = M.kid(a, b, subsets=50, subset_size=50)
    shifted, _ = M.kid(a, b + 1.0, subsets=50, subset_size=50)
    assert abs(same) < 3 * same_std / np.sqrt(50) + 1e-3 and shifted > 20 * same_std


def test_kid_agrees_with_torchmetrics_poly_mmd():
    kidmod = pytest.importorskip("torchmetrics.image.kid")
    rng = np.random.default_rng(5)
    a, b = rng.normal(size=(60, 5)), rng.normal(size=(60, 5)) + 0.3
    ref = float(kidmod.poly_mmd(torch.tensor(a), torch.tensor(b)))
    # one subset of all samples: a permutation of the full sets, so the same statistic
    mean, std = M.kid(a, b, subsets=1, subset_size=60)
    assert mean == pytest.approx(ref, rel=1e-9) and std == 0.0


# ---------------------------------------------------------------------------------------------
# Precision / recall


def test_precision_recall_sanity():
    rng = np.random.default_rng(6)
    real = rng.normal(size=(100, 6))
    assert M.precision_recall(real, real) == (1.0, 1.0)
    assert M.precision_recall(real, real + 100.0) == (0.0, 0.0)
    # half of the generated samples on the real data, half far away: precision exactly 1/2
    fake = np.concatenate([real[:50], rng.normal(size=(50, 6)) + 100.0])
    p, r = M.precision_recall(real, fake)
    assert p == 0.5 and 0.5 <= r < 1.0
    # mode dropping: real data in two far-apart clusters, generated samples from one of them only:
    # precision stays 1, recall falls to 1/2
    two_modes = np.concatenate([real[:50], real[50:] + 50.0])
    p, r = M.precision_recall(two_modes, real[:50])
    assert p == 1.0 and r == 0.5
    with pytest.raises(GantoolsError, match="more than 3"):
        M.precision_recall(real[:3], real)


# ---------------------------------------------------------------------------------------------
# Extractors and the cache


def test_cache_key_depends_on_dataset_and_extractor(tmp_path, image_folder):
    sig = M.dataset_signature(image_folder, 16, 3, n=100)
    other_data = M.dataset_signature(tmp_path, 16, 3, n=100)
    fx3, fx1 = M.random_conv_extractor(3), M.random_conv_extractor(1)
    assert fx3.fingerprint == M.random_conv_extractor(3).fingerprint  # seeded: the same every time
    assert fx3.fingerprint != fx1.fingerprint
    key = M.cache_key("features", sig, fx3.fingerprint)
    assert key == M.cache_key("features", dict(sig), fx3.fingerprint)
    assert key != M.cache_key("features", sig, fx1.fingerprint)
    assert key != M.cache_key("features", other_data, fx3.fingerprint)
    assert key != M.cache_key("features", M.dataset_signature(image_folder, 16, 3, n=50), fx3.fingerprint)


def test_a_labelled_folders_reference_is_its_images_only(tmp_path):
    from gantools.scenes import write_scenes

    root = write_scenes(tmp_path / "sc", n=6, image_size=16, preview=2).out
    assert M.dataset_signature(root, 16, 3, n=100)["files"] == 6  # not labels/ nor preview.png
    held = split_folder(root, 2)[1]  # the held-out reference (holdout=2) is images too
    assert M.dataset_signature(root, 16, 3, n=100, holdout=2)["files"] == 2
    assert [f.parent.name for f in held] == ["images", "images"] and [f.stem for f in held] == ["000004", "000005"]


def test_reference_features_are_cached_per_extractor(image_folder, monkeypatch):
    fx = M.random_conv_extractor(3)
    first = M.reference_features(image_folder, fx, 16, 3, n=100)
    assert first.shape == (12, 480)
    files = list(M.cache_dir().glob("*.pt"))
    assert len(files) == 1

    def no_decoding(*a, **k):
        raise AssertionError("the cache should have answered")

    monkeypatch.setattr(reference, "_MEMO", {})
    monkeypatch.setattr(reference, "_open_reference", no_decoding)
    assert torch.equal(M.reference_features(image_folder, fx, 16, 3, n=100), first)
    with pytest.raises(AssertionError, match="cache should have answered"):  # another extractor: a miss
        M.reference_features(image_folder, M.random_conv_extractor(1), 16, 1, n=100)


def test_inception_needs_a_local_weights_file(tmp_path):
    for weights in (None, tmp_path / "missing.pth"):
        with pytest.raises(GantoolsError, match=r"inception_v3\(weights='DEFAULT'\)") as e:
            M.inception_extractor(weights)
        assert "inception_weights" in str(e.value) and "never downloads" in str(e.value)
    wrong = tmp_path / "wrong.pth"
    torch.save({"conv.weight": torch.zeros(3, 3)}, wrong)
    with pytest.raises(GantoolsError, match="does not fit"):
        M.inception_extractor(wrong)


def test_inception_from_a_local_state_dict(tmp_path):
    import torchvision

    net = torchvision.models.inception_v3(weights=None, aux_logits=True, init_weights=False)
    path = tmp_path / "inception.pth"
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    assert M.extractor_file_kind(path) == "inception"  # what --extractor PATH does with a .pth file
    # the smallest input inception takes, to keep the test fast (299 by default)
    small = M.inception_extractor(path, size=75)
    assert small.name == "inception" and "75 px" in small.description
    feats = small(torch.rand(2, 1, 16, 16) * 2 - 1)  # grey, small: repeated to RGB and resized
    assert feats.shape == (2, 2048) and torch.isfinite(feats).all()


class TwoToneSegmenter:
    """A stand-in for a learned segmenter: dark vs light pixels, and mean colour as 'encoder features'."""

    concepts = ["dark", "light"]

    def __call__(self, images):
        return (images.mean(1) > 0).long()

    def features(self, images):
        return images.mean(dim=(2, 3))


def test_segmenter_extractor_and_unknown_extractor():
    fx = M.segmenter_extractor(TwoToneSegmenter())
    assert fx.name == "segmenter" and fx(torch.zeros(3, 3, 8, 8)).shape == (3, 3)
    with pytest.raises(GantoolsError, match="no encoder features"):
        M.segmenter_extractor(object())
    with pytest.raises(GantoolsError, match="unknown extractor"):
        M.resolve_extractor("nonsense")
    with pytest.raises(GantoolsError, match="no classifier.safetensors"):
        M.resolve_extractor("classifier", gan=None)


# ---------------------------------------------------------------------------------------------
# evaluate and the training hook


def test_evaluate_records_extractor_and_uses_cache(tiny_model_file, image_folder):
    r1 = M.evaluate(tiny_model_file, data=image_folder, n=40, extractor="random", kid_subsets=5)
    assert r1.extractor["name"] == "random-conv" and r1.extractor["dim"] == 480
    assert set(r1.metrics) == {"fid", "kid", "kid_std", "precision", "recall"}
    assert r1.metrics["fid"] > 0 and r1.n_real == 12 and r1.n_generated == 40
    assert r1.cache["misses"] == ["features"]
    r2 = M.evaluate(tiny_model_file, data=image_folder, n=40, extractor="random", kid_subsets=5)
    assert r2.cache["hits"] == ["features"] and r2.metrics == r1.metrics
    json.dumps(r2.to_dict())  # serialisable


def test_evaluate_with_companion_classifier_and_concepts(tiny_model_file, image_folder):
    from gantools.classifier import Classifier, ClassifierConfig, save_classifier

    torch.manual_seed(0)
    clf = Classifier(ClassifierConfig(classes=["a", "b", "c"], image_size=16, nc=3, width=4, feature_dim=8)).eval()
    save_classifier(clf, tiny_model_file.parent / "classifier.safetensors")
    r = M.evaluate(tiny_model_file, data=image_folder, n=30, metrics="auto,concepts", segmenter=TwoToneSegmenter(),
                   kid_subsets=3)
    assert r.extractor["name"] == "classifier" and r.extractor["dim"] == 8  # the companion is the default
    cov = r.class_coverage
    assert cov is not None and cov.n == 30 and sum(cov.fractions) == pytest.approx(1.0)
    con = r.concepts
    assert con.concepts == ["dark", "light"]
    assert sum(con.generated) == pytest.approx(1.0) and sum(con.real) == pytest.approx(1.0)
    assert con.tv_distance == pytest.approx(abs(con.generated[0] - con.real[0]))
    assert M.tv_distance([1, 0], [0, 1]) == 1.0 and M.tv_distance([0.2, 0.8], [0.2, 0.8]) == 0.0
    # ground truth (when the data has labels) is mapped by concept name, and only when the names match
    entry = {"truth": torch.tensor([6.0, 2.0, 2.0] + [0.0] * 5), "data_concepts": json.dumps(["sky", "tree", "road"])}
    assert evaluation._truth_frequencies(entry, ["road", "sky", "tree"]) == pytest.approx([0.2, 0.6, 0.2])
    assert evaluation._truth_frequencies(entry, ["dark", "light"]) is None
    with pytest.raises(GantoolsError, match="unknown metric"):
        M.evaluate(tiny_model_file, data=image_folder, n=10, metrics="fid,bogus")


def test_real_floor_scores_two_disjoint_halves_of_the_real_data():
    g = torch.Generator().manual_seed(0)
    real = torch.randn(40, 6, generator=g)
    floor = M.real_floor(real, k=3, kid_subsets=4, kid_subset_size=10, seed=5)
    order = torch.randperm(40, generator=torch.Generator().manual_seed(5))
    a, b = real[order[:20]], real[order[20:]]
    assert floor["n"] == 20
    assert floor["fid"] == pytest.approx(M.fid(a, b))
    assert (floor["kid"], floor["kid_std"]) == pytest.approx(M.kid(a, b, 4, 10, 5))
    assert (floor["precision"], floor["recall"]) == pytest.approx(M.precision_recall(a, b, 3))
    assert 0.5 < floor["precision"] <= 1 and 0.5 < floor["recall"] <= 1  # one distribution: mostly inside
    # a shifted "model" is far above that floor
    assert M.fid(real, real + 3) > 10 * floor["fid"]
    # too few images for a metric: it is left out, not made up
    few = M.real_floor(real[:7], k=3)
    assert few["n"] == 3 and "fid" in few and "precision" not in few
    assert M.real_floor(real[:3]) == {"n": 1}


def test_evaluate_reports_the_real_vs_real_floor_and_explains_each_number(tiny_model_file, image_folder):
    r = M.evaluate(tiny_model_file, data=image_folder, n=20, extractor="random", kid_subsets=3)
    real = M.reference_features(image_folder, M.random_conv_extractor(3), 16, 3, n=20)
    assert r.n_real == 12 and r.floor["n"] == 6
    assert r.floor == pytest.approx(M.real_floor(real, k=3, kid_subsets=3, kid_subset_size=1000, seed=0))
    assert set(r.floor) == {"n", "fid", "kid", "kid_std", "precision", "recall"}
    assert r.floor["fid"] < r.metrics["fid"]  # random images against each other beat an untrained model
    meaning = r.explain()
    assert set(meaning) == {"fid", "kid", "precision", "recall"}
    assert f"{r.floor['fid']:.4g}" in meaning["fid"] and "random-conv" in meaning["fid"]
    assert f"{r.floor['recall']:.3f}" in meaning["recall"]
    d = r.to_dict()
    assert d["floor"] == r.floor and d["meaning"] == meaning
    json.dumps(d)
    # 5 real images: halves of 2, enough for FID and KID but not for 3-NN precision/recall (a notice says so)
    notes = []
    r5 = M.evaluate(tiny_model_file, data=image_folder, n=20, extractor="random", kid_subsets=3, holdout=5,
                    progress=lambda p: notes.append(p.message) if p.message else None)
    assert r5.floor["n"] == 2 and "fid" in r5.floor and "precision" not in r5.floor
    assert any("too few" in m and "precision" in m for m in notes)
    assert "real images score" not in r5.explain()["precision"]
    assert M.evaluate(tiny_model_file, data=image_folder, n=20, extractor="random", kid_subsets=3,
                      floor=False).floor == {}


def test_training_fid_is_repeatable_and_restores_mode(tiny_config, image_folder):
    from gantools.models import Generator

    g = Generator(tiny_config).train()
    a = M.training_fid(g, str(image_folder), 16, 3, n=30)
    b = M.training_fid(g, str(image_folder), 16, 3, n=30)
    assert g.training and a == b and a > 0 and np.isfinite(a)
    assert list(M.cache_dir().glob("*.pt"))  # the reference features were cached


def test_cli_eval(tiny_model_file, image_folder):
    runner = CliRunner()
    args = ["eval", "--model", str(tiny_model_file), "--data", str(image_folder), "--n", "20", "--device", "cpu",
            "--kid-subsets", "3", "--quiet"]
    r = runner.invoke(app, args + ["--json"])
    assert r.exit_code == 0, r.output
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["extractor"]["name"] == "random-conv" and out["metrics"]["fid"] > 0
    assert out["floor"]["n"] == 6 and out["floor"]["fid"] < out["metrics"]["fid"]
    assert set(out["meaning"]) == {"fid", "kid", "precision", "recall"}
    r = runner.invoke(app, args)
    assert r.exit_code == 0 and "FID" in r.stdout and "random-conv" in r.stdout
    assert "real vs real (6 + 6)" in r.stdout
    lines = r.stdout.splitlines()
    for name, key in (("FID", "fid"), ("KID", "kid"), ("precision", "precision"), ("recall", "recall")):
        assert f"{name}: {out['meaning'][key]}" in lines  # one line each
    r = runner.invoke(app, args + ["--holdout", "5", "--json"])  # only the folder's last 5 images
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout.strip().splitlines()[-1])["n_real"] == 5
    r = runner.invoke(app, args + ["--extractor", "inception"])
    assert r.exit_code == 1 and "inception_v3(weights='DEFAULT')" in r.output
    r = runner.invoke(app, args + ["--metrics", "classes"])
    assert r.exit_code == 1 and "classifier" in r.output
