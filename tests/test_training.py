"""Training: the run directory, learning signals, bit-exact resume, Ctrl-C, NaN stops, atomic checkpoints,
the FID hook and export. Tiny models (16 px, 8 channels) on tiny folders."""

from __future__ import annotations

import json
import math
import os
import signal
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import gantools
from gantools import metrics, training
from gantools.models import Generator, load_model, read_safetensors
from gantools.training import loop, losses
from gantools.training import TrainConfig, export, load_checkpoint, read_stats, train
from gantools.utils import GantoolsError


@pytest.fixture(scope="module")
def easy_folder(tmp_path_factory) -> Path:
    """An easy domain: a bright square at a random place on a dark background, 16x16."""
    root = tmp_path_factory.mktemp("easy")
    rng = np.random.default_rng(0)
    for i in range(24):
        arr = np.full((16, 16, 3), 30, np.uint8)
        y, x = rng.integers(2, 10, 2)
        arr[y:y + 6, x:x + 6] = (220, 200, 40)
        Image.fromarray(arr).save(root / f"{i:02d}.png")
    return root


def tiny(folder: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=str(folder), image_size=16, nc=3, nz=8, ngf=8, ndf=8, batch_size=5, steps=6,
                log_every=2, sample_every=3, checkpoint_every=0, seed=1, out=str(out))
    base.update(kw)
    return TrainConfig(**base)


def all_state(run_dir: Path) -> dict[str, torch.Tensor]:
    ck = load_checkpoint(run_dir)
    out = {f"G.{k}": v for k, v in ck["generator"].items()}
    out.update({f"D.{k}": v for k, v in ck["discriminator"].items()})
    for name in ("opt_g", "opt_d"):
        for pid, st in ck[name]["state"].items():
            out.update({f"{name}.{pid}.{k}": v for k, v in st.items()})
    out["noise_rng"] = ck["rng"]["noise"]
    return out


def assert_same_state(a: Path, b: Path) -> None:
    sa, sb = all_state(a), all_state(b)
    assert sa.keys() == sb.keys()
    diff = [k for k in sa if not torch.equal(sa[k], sb[k])]
    assert not diff, f"differ: {diff[:5]}"


# ---------------------------------------------------------------------------------------------


def test_config_defaults_and_validation() -> None:
    c = TrainConfig()
    assert (c.lr_g, c.lr_d, c.beta1, c.beta2, c.batch_size, c.loss, c.d_steps) == \
        (2e-4, 2e-4, 0.5, 0.999, 64, "nonsaturating", 1)
    assert (c.recipe, c.d_norm, c.r1, c.data_version) == ("dcgan", "batch", 0.0, 2)
    assert c.eval_every == 0 and c.eval_n == 1000
    with pytest.raises(GantoolsError, match="nonsaturating, minimax, hinge"):
        TrainConfig(loss="wasserstein")
    with pytest.raises(GantoolsError, match="not both"):
        TrainConfig(steps=3, epochs=1)
    with pytest.raises(GantoolsError, match="16, 32, 64, 128"):
        TrainConfig(image_size=20)
    with pytest.raises(GantoolsError, match="d_steps"):
        TrainConfig(d_steps=0)
    assert TrainConfig.from_dict({**c.to_dict(), "unknown": 1}) == c


def test_losses() -> None:
    logits = torch.tensor([-2.0, 0.0, 3.0])
    d = torch.sigmoid(logits)
    ns = training.generator_loss(logits, "nonsaturating")
    mm = training.generator_loss(logits, "minimax")
    assert ns.item() == pytest.approx(-torch.log(d).mean().item(), rel=1e-5)
    assert mm.item() == pytest.approx(torch.log(1 - d).mean().item(), rel=1e-5)
    real, fake = torch.tensor([2.0, 1.0]), torch.tensor([-1.0, 0.5])
    want = -torch.log(torch.sigmoid(real)).mean() - torch.log(1 - torch.sigmoid(fake)).mean()
    assert training.discriminator_loss(real, fake).item() == pytest.approx(want.item(), rel=1e-5)


def test_batch_stream_epochs_are_permutations() -> None:
    s = training.BatchStream(n=7, batch_size=3, seed=0)
    flat = torch.cat([s.batch(i) for i in range(7)])  # 21 positions = 3 epochs, batches cross epochs
    for e in range(3):
        assert sorted(flat[7 * e:7 * e + 7].tolist()) == list(range(7))
    assert not torch.equal(flat[:7], flat[7:14])  # a new order each epoch
    again = training.BatchStream(n=7, batch_size=3, seed=0)
    assert torch.equal(again.batch(5), s.batch(5))  # any batch from its number alone
    assert not torch.equal(training.BatchStream(7, 3, seed=1).batch(0), s.batch(0))


def test_run_directory(easy_folder: Path, tmp_path: Path) -> None:
    seen = []
    result = train(tiny(easy_folder, tmp_path / "run"), progress=seen.append)
    run = tmp_path / "run"
    assert result.run_dir == run and result.step == 6 and not result.interrupted
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["lr_g"] == cfg["lr_d"] == 2e-4 and cfg["model"]["ngf"] == 8 and cfg["train_images"] == 24
    assert cfg["data"] == str(easy_folder.resolve())
    rows = read_stats(run)
    assert [r["step"] for r in rows] == [2, 4, 6]
    for r in rows:
        assert {"Loss_D", "Loss_G", "D(x)", "D(G(z))_before", "D(G(z))_after", "img/s"} <= r.keys()
        assert r["img/s"] > 0 and 0 < r["D(x)"] < 1
    assert sorted(p.name for p in (run / "samples").iterdir()) == ["step_000003.png", "step_000006.png"]
    assert Image.open(run / "samples" / "step_000006.png").size == (8 * 18 + 2, 8 * 18 + 2)
    assert (run / "loss_curve.png").is_file()
    # the checkpoint loads with weights_only=True and holds everything a resume needs
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert {"generator", "discriminator", "opt_g", "opt_d", "step", "config", "fixed_noise", "rng"} <= ck.keys()
    assert ck["step"] == 6 and ck["fixed_noise"].shape == (64, 8) and isinstance(ck["config"], dict)
    # model.safetensors = the final G and D, in eval mode
    gan = load_model(run)
    assert result.model_path == run / "model.safetensors"
    for k, v in gan.generator.state_dict().items():
        assert torch.equal(v, ck["generator"][k])
    _, meta = read_safetensors(result.model_path)
    assert meta["training"]["step"] == 6 and meta["config"]["image_size"] == 16
    # ... and the whole run config, so a shipped file says how it was trained
    assert meta["training"]["config"] == ck["config"]
    # progress: the bar's metrics
    bars = [p for p in seen if p.task == "train"]
    assert bars[-1].completed == 6 and bars[-1].total == 6
    assert {"img/s", "Loss_D", "Loss_G", "D(x)", "D(G(z))"} <= bars[-1].metrics.keys()
    # a second run into the same directory is refused
    with pytest.raises(GantoolsError, match="already holds a run: continue it \\(resume="):
        train(tiny(easy_folder, run))


def test_learning_signals(easy_folder: Path, tmp_path: Path) -> None:
    """On an easy domain, D quickly learns to tell real from fake: D(x) rises, Loss_D falls, and each
    D update lowers D's output on the fakes it was trained on."""
    train(tiny(easy_folder, tmp_path / "run", batch_size=8, steps=40, log_every=5, sample_every=0))
    rows = read_stats(tmp_path / "run")
    first, last = rows[0], rows[-1]
    assert last["D(x)"] > first["D(x)"] + 0.1
    assert last["Loss_D"] < first["Loss_D"] - 0.2
    assert last["D(x)"] > last["D(G(z))_before"] + 0.1
    assert all(r["D(G(z))_after"] < r["D(G(z))_before"] for r in rows)
    assert first["Loss_D"] == pytest.approx(2 * math.log(2), abs=0.15)  # chance level at the start


def test_minimax_and_d_steps(easy_folder: Path, tmp_path: Path) -> None:
    r = train(tiny(easy_folder, tmp_path / "run", loss="minimax", d_steps=2, steps=4, sample_every=0))
    rows = read_stats(tmp_path / "run")
    assert all(row["Loss_G"] < 0 for row in rows)  # log(1 - D(G(z))) is negative
    assert rows[-1]["epoch"] == pytest.approx(4 * 2 * 5 / 24, abs=1e-3)  # 2 real batches per step
    assert r.step == 4


def test_epochs_and_holdout(easy_folder: Path, tmp_path: Path) -> None:
    r = train(tiny(easy_folder, tmp_path / "run", steps=None, epochs=2, holdout=4, sample_every=0))
    assert r.total_steps == math.ceil(2 * 20 / 5) == r.step
    assert json.loads((tmp_path / "run" / "config.json").read_text())["train_images"] == 20
    with pytest.raises(GantoolsError, match="leaves none to train on"):
        train(tiny(easy_folder, tmp_path / "run2", holdout=24))


def test_bit_exact_resume(easy_folder: Path, tmp_path: Path) -> None:
    # batch 5 over 24 images: batches cross epoch boundaries; d_steps 2 draws two real batches per step
    kw = dict(d_steps=2, sample_every=0, checkpoint_every=2)
    train(tiny(easy_folder, tmp_path / "straight", steps=8, **kw))
    first = train(tiny(easy_folder, tmp_path / "resumed", steps=4, **kw))
    assert first.step == 4
    second = train(resume=tmp_path / "resumed", steps=8)
    assert second.step == 8
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    # the stats of the resumed run continue where they stopped
    assert [r["step"] for r in read_stats(tmp_path / "resumed")] == [2, 4, 6, 8]
    # only when/how long may change on resume
    with pytest.raises(GantoolsError, match="lr_g cannot change"):
        train(resume=tmp_path / "resumed", steps=10, lr_g=1e-3)
    done = train(resume=tmp_path / "resumed", steps=8)  # nothing left to do
    assert done.step == 8


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM])
def test_ctrl_c_or_sigterm_saves_and_resumes_exactly(signum, easy_folder: Path, tmp_path: Path) -> None:
    train(tiny(easy_folder, tmp_path / "straight", steps=6, sample_every=0))

    def interrupt_at_3(p):  # a real signal, delivered in the middle of the run
        if p.task == "train" and p.completed == 3:
            os.kill(os.getpid(), signum)

    before = signal.getsignal(signum)
    r = train(tiny(easy_folder, tmp_path / "run", steps=6, sample_every=0), progress=interrupt_at_3)
    assert signal.getsignal(signum) is before  # handler restored
    assert r.interrupted and r.step == 3
    assert load_checkpoint(tmp_path / "run")["step"] == 3
    assert r.model_path.is_file()
    assert [row["step"] for row in read_stats(tmp_path / "run")] == [2, 3]  # the partial window is logged
    r2 = train(resume=tmp_path / "run")
    assert r2.step == 6 and not r2.interrupted
    assert_same_state(tmp_path / "straight", tmp_path / "run")


def test_keyboard_interrupt_from_callback(easy_folder: Path, tmp_path: Path) -> None:
    def raise_at_2(p):
        if p.task == "train" and p.completed == 2:
            raise KeyboardInterrupt

    r = train(tiny(easy_folder, tmp_path / "run", sample_every=0), progress=raise_at_2)
    assert r.interrupted and r.step == 2 and load_checkpoint(tmp_path / "run")["step"] == 2


def test_nan_stops_and_keeps_last_good_checkpoint(easy_folder: Path, tmp_path: Path, monkeypatch) -> None:
    real_loss = training.generator_loss
    calls = {"n": 0}

    def poisoned(logits, kind="nonsaturating"):
        calls["n"] += 1
        loss = real_loss(logits, kind)
        return loss * float("nan") if calls["n"] >= 5 else loss

    monkeypatch.setattr(losses, "generator_loss", poisoned)  # the loop looks it up there at every step
    with pytest.raises(GantoolsError) as e:
        train(tiny(easy_folder, tmp_path / "run", steps=8, checkpoint_every=2, sample_every=0))
    msg = str(e.value)
    assert "NaN" in msg and "step 5" in msg and "step 4" in msg and "lr_g" in msg
    ck = load_checkpoint(tmp_path / "run")
    assert ck["step"] == 4
    assert all(torch.isfinite(v).all() for v in ck["generator"].values() if v.is_floating_point())
    assert not (tmp_path / "run" / "model.safetensors").exists()


def test_absurd_learning_rate_stops_cleanly(easy_folder: Path, tmp_path: Path) -> None:
    with pytest.raises(GantoolsError, match=r"NaN or infinite by step 1 .*no checkpoint had been saved yet"):
        train(tiny(easy_folder, tmp_path / "run", lr_g=1e30, lr_d=1e30, steps=4, checkpoint_every=1, sample_every=0))
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_interrupted_checkpoint_write_keeps_old(easy_folder: Path, tmp_path: Path, monkeypatch) -> None:
    run = tmp_path / "run"
    train(tiny(easy_folder, run, steps=2, sample_every=0))
    old = all_state(run)

    real_save = torch.save

    def dying_save(obj, f, *a, **k):  # write half a file, then die (a kill or full disk mid-write)
        real_save(obj, f, *a, **k)
        f.flush()
        f.truncate(f.tell() // 2)  # utils.torch_save hands torch.save an open file
        raise OSError("no space left on device")

    monkeypatch.setattr(torch, "save", dying_save)
    with pytest.raises(OSError, match="no space"):
        train(resume=run, steps=4)
    monkeypatch.setattr(torch, "save", real_save)
    assert load_checkpoint(run)["step"] == 2
    now = all_state(run)
    assert all(torch.equal(old[k], now[k]) for k in old)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]  # no temp files left behind


def test_eval_hook_keeps_best(easy_folder: Path, tmp_path: Path, monkeypatch) -> None:
    scores = iter([5.0, 3.0, 4.0])
    calls = []

    def fake_fid(generator, data, image_size, nc, n, device, version=None):
        calls.append(dict(data=data, image_size=image_size, nc=nc, n=n, device=str(device),
                          training=generator.training, version=version))
        return next(scores)

    monkeypatch.setattr(metrics, "training_fid", fake_fid, raising=False)
    r = train(tiny(easy_folder, tmp_path / "run", steps=6, eval_every=2, eval_n=10, sample_every=0))
    assert calls[0] == dict(data=str(easy_folder.resolve()), image_size=16, nc=3, n=10, device="cpu",
                            training=False, version=None)
    assert len(calls) == 3 and r.best_fid == 3.0
    fids = [(row["step"], row["fid"]) for row in read_stats(tmp_path / "run") if "fid" in row]
    assert fids == [(2, 5.0), (4, 3.0), (6, 4.0)]
    best = load_checkpoint(tmp_path / "run" / "best.pt")
    assert best["step"] == 4 and best["fid"] == 3.0
    assert load_checkpoint(tmp_path / "run")["step"] == 6
    path = export(tmp_path / "run", best=True, out=tmp_path / "best.safetensors")
    _, meta = read_safetensors(path)
    assert meta["training"]["step"] == 4 and meta["training"]["fid"] == 3.0
    assert (tmp_path / "run" / "fid_curve.png").is_file()


def test_eval_hook_missing_is_a_clear_error(easy_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delattr(metrics, "training_fid", raising=False)
    with pytest.raises(GantoolsError, match="training_fid"):
        train(tiny(easy_folder, tmp_path / "run", eval_every=2))


def test_export_and_errors(easy_folder: Path, tmp_path: Path) -> None:
    train(tiny(easy_folder, tmp_path / "run", steps=2, sample_every=0))
    (tmp_path / "run" / "model.safetensors").unlink()
    path = gantools.export(tmp_path / "run", half=True)
    assert path == tmp_path / "run" / "model.safetensors" and load_model(path).config.ngf == 8
    with pytest.raises(GantoolsError, match="best.pt"):
        export(tmp_path / "run", best=True)
    with pytest.raises(GantoolsError, match="run directory"):
        export(tmp_path)
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(GantoolsError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "junk.pt")


def test_default_run_dir(tmp_path: Path) -> None:
    assert training.default_run_dir("scenes", tmp_path).name == "00000-scenes"
    (tmp_path / "00007-x").mkdir()
    assert training.default_run_dir("/data/my digits/", tmp_path).name == "00008-my_digits"


def test_bad_data(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(GantoolsError, match="no images"):
        train(tiny(tmp_path / "empty", tmp_path / "run"))
    with pytest.raises(GantoolsError, match="no dataset"):
        train(tiny(tmp_path / "missing", tmp_path / "run"))


def test_ema_is_the_weight_average_and_is_exported(easy_folder: Path, tmp_path: Path) -> None:
    decay = 0.5
    seen: list[dict[str, torch.Tensor]] = []
    original = loop._Trainer.update_ema

    def record(self):  # G's parameters after each generator step
        seen.append({k: v.detach().clone() for k, v in self.G.named_parameters()})
        original(self)

    loop._Trainer.update_ema = record
    try:
        r = train(tiny(easy_folder, tmp_path / "run", steps=4, sample_every=0, ema=decay))
    finally:
        loop._Trainer.update_ema = original
    assert len(seen) == 4
    ck = load_checkpoint(r.run_dir)
    torch.manual_seed(1)  # the run's seed builds the run's initial G
    init = dict(Generator(TrainConfig.from_dict(ck["config"]).model_config()).named_parameters())
    for name in ck["generator"]:
        if name not in init:
            continue  # buffers
        expected = init[name].detach()
        for params in seen:
            expected = decay * expected + (1 - decay) * params[name]
        torch.testing.assert_close(ck["generator_ema"][name], expected, rtol=1e-5, atol=1e-6)
    # the exported model carries the average (with recalibrated BatchNorm statistics), not G
    gan = load_model(r.model_path)
    exported = dict(gan.generator.named_parameters())
    name = next(iter(exported))
    torch.testing.assert_close(exported[name].detach(), ck["generator_ema"][name])
    assert not torch.equal(exported[name].detach(), ck["generator"][name])
    bn = next(m for m in gan.generator.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert float(bn.running_var.mean()) != 1.0  # recomputed, not reset
    assert read_safetensors(r.model_path)[1]["training"]["ema"] == decay


def test_ema_resume_is_bit_exact_and_can_start_late(easy_folder: Path, tmp_path: Path) -> None:
    kw = dict(sample_every=0, checkpoint_every=2, ema=0.9)
    train(tiny(easy_folder, tmp_path / "straight", steps=6, **kw))
    train(tiny(easy_folder, tmp_path / "resumed", steps=3, **kw))
    train(resume=tmp_path / "resumed", steps=6)
    a, b = load_checkpoint(tmp_path / "straight"), load_checkpoint(tmp_path / "resumed")
    for k in a["generator_ema"]:
        assert torch.equal(a["generator_ema"][k], b["generator_ema"][k]), k
    # an average switched on at resume starts from the checkpoint's G and leaves training unchanged
    train(tiny(easy_folder, tmp_path / "plain", steps=3, sample_every=0, checkpoint_every=2))
    train(resume=tmp_path / "plain", steps=6, ema=0.9)
    late = load_checkpoint(tmp_path / "plain")
    assert late["config"]["ema"] == 0.9 and late["generator_ema"] is not None
    with pytest.raises(GantoolsError, match="ema must lie"):
        TrainConfig(ema=1.0)


def test_snapshots_keep_each_steps_model_file_and_leave_training_unchanged(easy_folder: Path,
                                                                          tmp_path: Path) -> None:
    # augmentation draws from torch's global generator, as building networks to export them does
    kw = dict(sample_every=0, checkpoint_every=3, ema=0.9, augment="translation,cutout")
    train(tiny(easy_folder, tmp_path / "plain", steps=4, **kw))
    # snapshots every 2 steps: in the middle of a run, off the checkpoint schedule, and on the last step
    train(tiny(easy_folder, tmp_path / "snap", steps=3, snapshot_every=2, **kw))
    r = train(resume=tmp_path / "snap", steps=4)
    assert_same_state(tmp_path / "plain", tmp_path / "snap")  # exporting draws no training randomness
    snaps = sorted(p.name for p in (tmp_path / "snap" / "snapshots").iterdir())
    assert snaps == ["step_000002.safetensors", "step_000004.safetensors"]
    last = load_model(tmp_path / "snap" / "snapshots" / snaps[-1])
    for k, v in load_model(r.model_path).generator.state_dict().items():
        assert torch.equal(v, last.generator.state_dict()[k]), k  # the last is the run's model file
    first = load_model(tmp_path / "snap" / "snapshots" / snaps[0])
    assert read_safetensors(first.path)[1]["training"]["step"] == 2
    assert not torch.equal(next(iter(first.generator.parameters())), next(iter(last.generator.parameters())))
    with pytest.raises(GantoolsError, match="snapshot_every must be 0 or more"):
        TrainConfig(snapshot_every=-1)


def test_diff_augment_translation_cutout_and_color() -> None:
    torch.manual_seed(0)
    x = torch.full((64, 1, 16, 16), -1.0)
    x[:, :, 8, 8] = 1.0  # one bright pixel
    moved = training.diff_augment(x, ["translation"])
    # each image is the input shifted by whole pixels, at most 2 (1/8 of 16) each way; the rest is 0 or -1
    pos = (moved[:, 0] == 1.0).nonzero()
    assert pos.shape[0] == 64 and (pos[:, 1:] - 8).abs().max() <= 2
    assert len({(int(a), int(b)) for a, b in pos[:, 1:]}) > 5  # shifts differ between images
    assert set(moved.unique().tolist()) <= {-1.0, 0.0, 1.0}
    cut = training.diff_augment(torch.ones(32, 3, 16, 16), ["cutout"])
    zeros = (cut == 0).all(1).float().sum((1, 2))
    assert bool(((zeros > 0) & (zeros <= 64)).all())  # an 8x8 square, clipped at the borders
    assert float(zeros.max()) == 64
    colour = training.diff_augment(torch.zeros(8, 3, 4, 4), ["color"])
    assert colour.std() > 0 and torch.allclose(colour, colour[:, :1].expand_as(colour))  # grey stays grey
    g = torch.randn(4, 3, 16, 16, requires_grad=True)
    training.diff_augment(g, ["color", "translation", "cutout"]).sum().backward()
    assert g.grad is not None and float(g.grad.abs().sum()) > 0  # differentiable: G learns through it
    with pytest.raises(GantoolsError, match="unknown augmentation 'flip'"):
        TrainConfig(augment="translation,flip")
    # --augment's help shows "off" as the default, so "off" (and "none") must be accepted as it
    assert [TrainConfig(augment=a).augmentations() for a in ("off", "None", "", " translation ,cutout")] == [
        [], [], [], ["translation", "cutout"]]


def test_augmented_training_resumes_bit_exactly(easy_folder: Path, tmp_path: Path) -> None:
    kw = dict(sample_every=0, checkpoint_every=2, augment="color,translation,cutout")
    train(tiny(easy_folder, tmp_path / "straight", steps=6, **kw))
    train(tiny(easy_folder, tmp_path / "resumed", steps=3, **kw))
    train(resume=tmp_path / "resumed", steps=6)
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    plain = train(tiny(easy_folder, tmp_path / "plain", steps=6, sample_every=0))
    assert not torch.equal(load_checkpoint(plain.run_dir)["generator"]["layer1.0.weight"],
                           load_checkpoint(tmp_path / "straight")["generator"]["layer1.0.weight"])
    with pytest.raises(GantoolsError, match="augment cannot change"):
        train(resume=tmp_path / "resumed", steps=8, augment="")


def test_adaptive_augmentation_probability() -> None:
    # ADA's rule: p rises by images / 500k while D is surer of the reals than the target, falls while less
    assert training.adapted_p(0.5, overfit=0.9, target=0.6, images=50_000) == pytest.approx(0.6)
    assert training.adapted_p(0.5, overfit=0.1, target=0.6, images=50_000) == pytest.approx(0.4)
    assert training.adapted_p(0.5, overfit=0.6, target=0.6, images=50_000) == 0.5
    assert training.adapted_p(0.99, 1.0, 0.6, 50_000) == 1.0 and training.adapted_p(0.01, -1.0, 0.6, 50_000) == 0.0

    x = torch.rand(64, 1, 8, 8) * 2 - 1
    torch.manual_seed(0)
    before = torch.get_rng_state()
    assert torch.equal(training.Augmentation(["translation"], p=0.0)(x), x)
    assert torch.equal(torch.get_rng_state(), before)  # p 0 draws nothing: the same run as no augmentation
    torch.manual_seed(0)
    plain = training.diff_augment(x, ["translation", "cutout"])
    torch.manual_seed(0)
    assert torch.equal(training.Augmentation(["translation", "cutout"], p=1.0)(x), plain)  # p 1 is DiffAugment
    torch.manual_seed(0)
    half = training.Augmentation(["cutout"], p=0.5)(x)
    untouched = (half == x).flatten(1).all(1)  # cutout always blanks a square, so a changed row was augmented
    assert 16 < int(untouched.sum()) < 48

    ada = training.Augmentation(["translation"], p=0.0, target=0.6)
    for _ in range(3):
        ada.observe(torch.ones(25))
    assert ada.p == 0.0  # adjusted only every 4 D steps
    ada.observe(torch.ones(25))
    assert ada.p == pytest.approx(100 / 500_000)
    state = ada.state_dict()
    for _ in range(4):
        ada.observe(-torch.ones(25))
    assert ada.p == 0.0
    ada.load_state_dict(state)
    assert ada.p == pytest.approx(100 / 500_000) and ada.state_dict() == state
    with pytest.raises(GantoolsError, match="augment_target .* give augment too"):
        TrainConfig(augment_target=0.6)
    with pytest.raises(GantoolsError, match="augment_p must lie in"):
        TrainConfig(augment="translation", augment_p=1.5)


def test_top_k_training_takes_g_loss_over_the_fakes_d_rates_most_real(easy_folder: Path, tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[torch.Tensor] = []
    real_loss = losses.generator_loss

    def recording(logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
        seen.append(logits.detach().clone())
        return real_loss(logits, kind)

    monkeypatch.setattr(losses, "generator_loss", recording)
    train(tiny(easy_folder, tmp_path / "top", steps=2, sample_every=0, batch_size=6, g_top_k=0.5))
    assert [len(x) for x in seen] == [3, 3]
    seen.clear()
    train(tiny(easy_folder, tmp_path / "all", steps=2, sample_every=0, batch_size=6))
    assert [len(x) for x in seen] == [6, 6]
    assert losses.most_real(torch.tensor([0.1, 3.0, -2.0, 1.0]), 0.5).tolist() == [3.0, 1.0]
    assert losses.most_real(torch.tensor([0.1, 3.0]), 0.01).tolist() == [3.0]  # at least one
    with pytest.raises(GantoolsError, match="g_top_k must lie in"):
        TrainConfig(g_top_k=0)


def test_adaptive_augmentation_trains_logs_and_resumes_bit_exactly(easy_folder: Path, tmp_path: Path) -> None:
    kw = dict(sample_every=0, checkpoint_every=2, augment="translation,cutout", augment_p=0.5, augment_target=0.6)
    train(tiny(easy_folder, tmp_path / "straight", steps=8, **kw))
    train(tiny(easy_folder, tmp_path / "resumed", steps=3, **kw))
    train(resume=tmp_path / "resumed", steps=8)
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    ckpt = load_checkpoint(tmp_path / "straight")
    assert ckpt["augment"] == load_checkpoint(tmp_path / "resumed")["augment"]
    assert ckpt["augment"]["p"] != 0.5  # two adjustments of 20 images each moved it
    assert abs(ckpt["augment"]["p"] - 0.5) <= 2 * 20 / 500_000 + 1e-12
    rows = read_stats(tmp_path / "straight")
    assert all("augment_p" in r and -1 <= r["sign D(x)"] <= 1 for r in rows)
    # at p 0 the augmentation draws nothing: the run is the plain one
    train(tiny(easy_folder, tmp_path / "p0", steps=4, sample_every=0, augment="translation", augment_p=0.0))
    train(tiny(easy_folder, tmp_path / "plain", steps=4, sample_every=0))
    assert torch.equal(load_checkpoint(tmp_path / "p0")["generator"]["layer1.0.weight"],
                       load_checkpoint(tmp_path / "plain")["generator"]["layer1.0.weight"])


# ---------------------------------------------------------------------------------------------
# Recipes: spectral norm, hinge loss, two time-scale rates, betas, R1, concept tracking


def test_recipes_fill_what_was_not_given() -> None:
    stable = TrainConfig(recipe="stable")
    assert (stable.d_norm, stable.loss, stable.lr_g, stable.lr_d, stable.beta1, stable.beta2) == \
        ("spectral", "hinge", 2e-4, 2e-4, 0.5, 0.999)
    mixed = TrainConfig(recipe="stable", loss="nonsaturating", lr_d=1e-3)
    assert (mixed.d_norm, mixed.loss, mixed.lr_g, mixed.lr_d) == ("spectral", "nonsaturating", 2e-4, 1e-3)
    assert TrainConfig.from_dict(stable.to_dict()) == stable
    with pytest.raises(GantoolsError, match="unknown recipe"):
        TrainConfig(recipe="fast")
    with pytest.raises(GantoolsError, match="unknown d_norm"):
        TrainConfig(d_norm="layer")
    with pytest.raises(GantoolsError, match="r1"):
        TrainConfig(r1=-1.0)
    with pytest.raises(GantoolsError, match="eval_every"):
        TrainConfig(track_concepts="color")


def test_configs_written_before_recipes_load_as_the_paper_recipe_on_scenes_v1() -> None:
    old = {"data": "scenes", "image_size": 64, "lr": 1e-4, "beta1": 0.5, "beta2": 0.999, "loss": "nonsaturating"}
    c = TrainConfig.from_dict(old)
    assert (c.recipe, c.d_norm, c.lr_g, c.lr_d, c.data_version) == ("dcgan", "batch", 1e-4, 1e-4, 1)
    assert TrainConfig(data="scenes").data_version == 2
    assert TrainConfig.from_dict({"data": "photos/"}).data_version is None


# The config.json of a run in progress (showcase scenes64-v2, written before TrainConfig extended
# ModelConfig): the code that resumes it must read it as it was written.
SHOWCASE_CONFIG = {
    "data": "scenes", "data_version": 2, "image_size": 64, "nc": 3, "nz": 100, "ngf": 48, "ndf": 48,
    "batch_size": 64, "recipe": "dcgan", "d_norm": "batch", "loss": "nonsaturating", "lr_g": 0.0002,
    "lr_d": 0.0002, "beta1": 0.5, "beta2": 0.999, "r1": 0.0, "d_steps": 1, "steps": 3000, "epochs": None,
    "seed": 0, "out": "/work/train/showcase/scenes64-v2", "device": "auto", "amp": True, "data_n": 50000,
    "data_seed": 0, "holdout": 0, "log_every": 10, "sample_every": 500, "checkpoint_every": 100,
    "eval_every": 1000, "eval_n": 500, "track_concepts": "/work/train/seg_v2/segmenter.safetensors",
    "n_samples": 64, "augment": "", "ema": 0.999, "threads": 1, "channels_last": True,
    "model": {"image_size": 64, "nc": 3, "nz": 100, "ngf": 48, "ndf": 48, "d_norm": "batch"},
    "train_images": 50000, "total_steps": 3000,
}


def test_a_stored_run_config_reads_back_flat_and_resumes() -> None:
    from gantools.models import ModelConfig
    from gantools.training import resume_config

    c = TrainConfig.from_dict(SHOWCASE_CONFIG)
    stored = {k: v for k, v in SHOWCASE_CONFIG.items() if k not in ("model", "train_images", "total_steps")}
    # every field read as written, and written back flat with the same keys, plus those added since
    # the run was stored, at their defaults (init: no warm start; every image augmented when augment
    # is on, as then; G's loss over the whole batch; no snapshots; float32 on the CPU)
    assert c.to_dict() == {**stored, "init": None, "augment_p": 1.0, "augment_target": 0.0, "g_top_k": 1.0,
                           "snapshot_every": 0, "cpu_amp": False}
    assert c.model_config() == ModelConfig(64, 3, 100, 48, 48, "batch") == ModelConfig.from_dict(SHOWCASE_CONFIG)
    assert type(c.model_config()) is ModelConfig
    longer = resume_config(stored, {"steps": 6000, "threads": 2, "ngf": 48}, SHOWCASE_CONFIG["out"])
    assert (longer.steps, longer.threads, longer.epochs) == (6000, 2, None)
    assert longer.replace(steps=3000, threads=1) == c
    with pytest.raises(GantoolsError, match="ngf cannot change"):
        resume_config(stored, {"ngf": 64}, SHOWCASE_CONFIG["out"])


def test_hinge_losses_match_a_hand_computation() -> None:
    real, fake = torch.tensor([2.0, 0.5, -1.0]), torch.tensor([-3.0, 0.0, 0.5])
    # D: mean relu(1 - real) = (0 + 0.5 + 2) / 3; mean relu(1 + fake) = (0 + 1 + 1.5) / 3
    assert training.discriminator_loss(real, fake, "hinge").item() == pytest.approx(2.5 / 3 + 2.5 / 3)
    assert training.generator_loss(fake, "hinge").item() == pytest.approx((3.0 - 0.0 - 0.5) / 3)


def test_r1_penalty_matches_autograd_on_a_toy_discriminator() -> None:
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]])
    D = lambda x: (x @ w).pow(2).sum(1)  # noqa: E731   grad_x = 2 (x w) w^T
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.5], [0.0, 1.0]])
    grad = 2 * (x @ w) @ w.T
    want = grad.pow(2).sum(1).mean()
    got = training.r1_penalty(D, x)
    assert got.item() == pytest.approx(want.item(), rel=1e-6)
    # differentiable in D's weights: d/dw of the penalty exists and matches a finite difference
    w.requires_grad_(True)
    (dw,) = torch.autograd.grad(training.r1_penalty(D, x), w)
    eps = 1e-3
    bumped = w.detach().clone()
    bumped[0, 1] += eps
    D2 = lambda x: (x @ bumped).pow(2).sum(1)  # noqa: E731
    numeric = (training.r1_penalty(D2, x) - want) / eps
    assert dw[0, 1].item() == pytest.approx(numeric.item(), rel=1e-2)


def test_spectral_norm_bounds_every_d_layer_near_one(easy_folder: Path, tmp_path: Path) -> None:
    from gantools.models import Discriminator

    run = train(tiny(easy_folder, tmp_path / "sn", recipe="stable", steps=12, sample_every=0)).run_dir
    gan = load_model(run)
    assert gan.config.d_norm == "spectral"
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in gan.discriminator.modules())
    # the model file holds plain folded weights: every conv's largest singular value is about 1
    for name, w in gan.discriminator.state_dict().items():
        sigma = torch.linalg.matrix_norm(w.flatten(1), ord=2).item()
        assert sigma == pytest.approx(1.0, abs=0.05), name
    tensors, _ = read_safetensors(run / "model.safetensors")
    assert not any("parametrizations" in k for k in tensors)
    # a BatchNorm D's weights are not normalised
    bn = Discriminator(gan.config.__class__(**{**gan.config.to_dict(), "d_norm": "batch"}))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    # the checkpoint loads with weights_only and keeps the parametrisation for an exact resume
    ck = torch.load(run / "checkpoint.pt", weights_only=True)
    assert any("parametrizations" in k for k in ck["discriminator"])


def test_each_recipe_option_changes_training(easy_folder: Path, tmp_path: Path) -> None:
    def d_weight(**kw):
        r = train(tiny(easy_folder, tmp_path / "_".join(f"{k}{v}" for k, v in kw.items()), steps=3, sample_every=0,
                       **kw))
        return load_checkpoint(r.run_dir)["generator"]["layer1.0.weight"]

    base = d_weight()
    for kw in ({"loss": "hinge"}, {"lr_g": 1e-3}, {"lr_d": 1e-3}, {"beta1": 0.0}, {"r1": 10.0}, {"d_norm": "spectral"}):
        assert not torch.equal(base, d_weight(**kw)), kw


def test_every_option_together_resumes_bit_exactly(easy_folder: Path, tmp_path: Path) -> None:
    kw = dict(recipe="stable", r1=1.0, lr_g=3e-4, beta2=0.95, augment="translation", ema=0.9,
              sample_every=0, checkpoint_every=2)
    train(tiny(easy_folder, tmp_path / "straight", steps=20, **kw))
    train(tiny(easy_folder, tmp_path / "resumed", steps=9, **kw))
    train(resume=tmp_path / "resumed", steps=20)
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    rows = [r for r in read_stats(tmp_path / "resumed") if "R1" in r]
    assert rows and all(r["R1"] >= 0 for r in rows)  # R1 is logged (lazily computed, every 16 D steps)


def test_cpu_amp_trains_under_bfloat16_autocast_and_resumes_bit_exactly(easy_folder: Path, tmp_path: Path,
                                                                        monkeypatch) -> None:
    real_autocast, seen = torch.autocast, []

    def spy(device_type, dtype=None, **kw):
        seen.append((device_type, dtype))
        return real_autocast(device_type, dtype=dtype, **kw)

    monkeypatch.setattr(torch, "autocast", spy)
    kw = dict(sample_every=0, checkpoint_every=2, r1=1.0)
    fp32 = train(tiny(easy_folder, tmp_path / "fp32", steps=4, **kw))
    assert seen == []  # off by default: a CPU run keeps float32
    train(tiny(easy_folder, tmp_path / "straight", steps=4, cpu_amp=True, **kw))
    assert set(seen) == {("cpu", torch.bfloat16)}
    train(tiny(easy_folder, tmp_path / "resumed", steps=2, cpu_amp=True, **kw))
    train(resume=tmp_path / "resumed", steps=4)
    assert_same_state(tmp_path / "straight", tmp_path / "resumed")
    g = "layer1.0.weight"
    assert not torch.equal(load_checkpoint(fp32.run_dir)["generator"][g],
                           load_checkpoint(tmp_path / "straight")["generator"][g])


def test_track_concepts_logs_and_plots_shares(easy_folder: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(metrics, "training_fid", lambda *a, **k: 1.0, raising=False)
    r = train(tiny(easy_folder, tmp_path / "run", steps=4, eval_every=2, eval_n=20, track_concepts="color",
                   sample_every=0))
    rows = [row for row in read_stats(r.run_dir) if "concepts" in row]
    assert [row["step"] for row in rows] == [2, 4]
    for row in rows:
        assert sum(row["concepts"].values()) == pytest.approx(1.0)
        assert sum(row["concepts_real"].values()) == pytest.approx(1.0)
        want = 0.5 * sum(abs(row["concepts"][k] - row["concepts_real"][k]) for k in row["concepts"])
        assert row["concepts_tv"] == pytest.approx(want)
    # the real images are yellow squares on dark grey: the colour segmenter finds those colours there
    real = rows[0]["concepts_real"]
    assert real["yellow"] > 0.05 and real["black"] + real["gray"] > 0.5
    assert (r.run_dir / "concepts_curve.png").is_file()


def test_a_spectral_norm_model_works_in_every_analysis(easy_folder: Path, tmp_path: Path) -> None:
    from gantools.restoration.inversion import discriminator_features, invert

    run = train(tiny(easy_folder, tmp_path / "sn", recipe="stable", steps=6, sample_every=0)).run_dir
    gan = load_model(run)
    image = torch.rand(1, 3, 16, 16) * 2 - 1
    feats = discriminator_features(gan.discriminator, image)
    assert len(feats) == 2 and all(torch.isfinite(f).all() for f in feats)
    result = invert(gan, image, "reconstruct", steps=3, restarts=1, encoder=None)
    assert torch.isfinite(result.images).all() and result.images.shape == (1, 3, 16, 16)
    layer = gantools.dissect(gan, layers=[1], n=4, segmenter="color", batch_size=2).layers["layer1"]
    assert layer.iou.shape[0] == 8 * 2 and torch.isfinite(layer.iou).all()


def test_init_warm_starts_from_another_run(easy_folder: Path, tmp_path: Path) -> None:
    train(tiny(easy_folder, tmp_path / "first", steps=4, sample_every=0))
    first = load_checkpoint(tmp_path / "first")
    # at a negligible learning rate the weights stay where init put them (BatchNorm's statistics still move)
    r = train(tiny(easy_folder, tmp_path / "warm", steps=2, sample_every=0, seed=5, recipe="stable",
                   d_norm="batch", loss="nonsaturating", lr_g=1e-12, lr_d=1e-12, init=str(tmp_path / "first")))
    warm = load_checkpoint(r.run_dir)
    assert warm["step"] == 2 and warm["config"]["init"] == str((tmp_path / "first").resolve())
    for net in ("generator", "discriminator"):
        weights = [k for k in first[net] if k.endswith("weight") or k.endswith("bias")]
        assert weights and all(torch.allclose(first[net][k], warm[net][k], rtol=0, atol=1e-9) for k in weights)
    cold = train(tiny(easy_folder, tmp_path / "cold", steps=2, sample_every=0, seed=5, lr_g=1e-12, lr_d=1e-12))
    assert not torch.allclose(load_checkpoint(cold.run_dir)["generator"]["output.0.weight"],
                              first["generator"]["output.0.weight"], rtol=0, atol=1e-3)
    # init is where the run started: a resume keeps it, and cannot change it
    with pytest.raises(GantoolsError, match="init cannot change"):
        train(resume=r.run_dir, steps=3, init=str(tmp_path / "cold"))


def test_init_errors_name_the_parameter(easy_folder: Path, tmp_path: Path) -> None:
    train(tiny(easy_folder, tmp_path / "first", steps=2, sample_every=0))
    with pytest.raises(GantoolsError, match="^init: no checkpoint at"):
        train(tiny(easy_folder, tmp_path / "a", steps=2, init=str(tmp_path / "missing")))
    with pytest.raises(GantoolsError, match="another architecture"):
        train(tiny(easy_folder, tmp_path / "b", steps=2, ngf=16, init=str(tmp_path / "first")))
