"""Encoders for inversion: training reduces the errors, files round-trip beside the model, invert
starts from E(x), and the CLI writes encoder.safetensors where invert finds it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from gantools.models import ModelConfig, companion_path, save_model
from gantools.utils import GantoolsError

sys.path.insert(0, str(Path(__file__).parent))
from test_inversion import calibrated_gan, planted  # noqa: E402


@pytest.fixture(scope="module")
def gan():
    return calibrated_gan(ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8))


@pytest.fixture(scope="module")
def trained(gan):
    from gantools.restoration.encoder import train_encoder

    return train_encoder(gan, steps=150, batch_size=32, width=16, lr=2e-3, seed=0)


def test_training_reduces_latent_and_pixel_error(gan, trained):
    from gantools.restoration.encoder import Encoder, EncoderConfig, encoder_errors

    torch.manual_seed(0)
    untrained = Encoder(EncoderConfig(16, 3, 8, width=16)).eval()
    before, after = encoder_errors(untrained, gan), encoder_errors(trained.encoder, gan)
    assert after["latent"] < 0.6 * before["latent"], (before, after)
    assert after["pixel"] < 0.6 * before["pixel"], (before, after)
    assert trained.history[0]["step"] == 1 and trained.history[-1]["step"] == 150
    assert trained.history[-1]["latent"] < trained.history[0]["latent"]


def test_evaluate_encoder_beside_an_untrained_one(gan, trained):
    from gantools.restoration import EncoderTraining, EncoderTrainResult, evaluate_encoder
    from gantools.restoration.encoder import Encoder, encoder_errors

    assert EncoderTraining is EncoderTrainResult and isinstance(trained, EncoderTrainResult)
    state = torch.random.get_rng_state()
    res = evaluate_encoder(trained.encoder, gan, n=64, seed=7)
    assert torch.equal(torch.random.get_rng_state(), state)  # the untrained encoder's seed stays inside
    after = encoder_errors(trained.encoder, gan, 64, 7)
    assert (res.latent_mse, res.pixel_mse) == (after["latent"], after["pixel"])
    torch.manual_seed(0)
    before = encoder_errors(Encoder(trained.encoder.config), gan, 64, 7)
    assert (res.untrained_latent_mse, res.untrained_pixel_mse) == (before["latent"], before["pixel"])
    assert res.latent_mse < 0.6 * res.untrained_latent_mse
    assert res.to_dict()["samples"] == 64 and evaluate_encoder(trained.encoder, gan, n=64, seed=7) == res
    with pytest.raises(GantoolsError, match="n must be at least 1"):
        evaluate_encoder(trained.encoder, gan, n=0)


def test_encoder_config_is_a_config_and_reads_old_files():
    from gantools.restoration.encoder import EncoderConfig
    from gantools.utils import Config

    config = EncoderConfig(16, 3, 8, width=16)
    assert isinstance(config, Config) and config.to_dict() == {"image_size": 16, "nc": 3, "nz": 8, "width": 16,
                                                         "start_rate": 0.25}
    assert EncoderConfig.from_dict({"image_size": 16, "nc": 3, "nz": 8, "later_key": 1}) == EncoderConfig(16, 3, 8)
    assert config.replace(width=8).width == 8


def test_encoder_dataset_leaves_the_holdout_out(image_folder):
    from gantools.data import find_images, split_holdout
    from gantools.restoration import encoder_dataset

    folder = encoder_dataset(image_folder, 16, 3, holdout=2)
    assert len(folder) == len(split_holdout(find_images(image_folder), 2)[0])
    with pytest.raises(GantoolsError, match="holdout is for a folder"):
        encoder_dataset("scenes", 16, 3, holdout=2)


def test_save_load_roundtrip_and_checks(gan, trained, tmp_path):
    from gantools.restoration.encoder import load_encoder, save_encoder
    from gantools.models import load_model, read_safetensors

    model_path = save_model(tmp_path / "m" / "model.safetensors", gan.generator, gan.discriminator)
    enc_path = save_encoder(trained.encoder, companion_path(model_path, "encoder"), gan, trained.settings)
    assert enc_path == model_path.parent / "encoder.safetensors"
    tensors, meta = read_safetensors(enc_path)
    assert all(k.startswith("encoder.") for k in tensors)
    assert meta["encoder_config"] == {"image_size": 16, "nc": 3, "nz": 8, "width": 16, "start_rate": 0.25}
    loaded_gan = load_model(model_path)
    assert loaded_gan.companion("encoder") == enc_path
    enc = load_encoder(loaded_gan)
    x = planted(gan, n=4)[1]
    with torch.no_grad():
        assert torch.allclose(enc(x), trained.encoder(x), atol=1e-6)

    other = calibrated_gan(ModelConfig(image_size=16, nc=3, nz=6, ngf=8, ndf=8))
    with pytest.raises(GantoolsError, match="nz=8 but the model is 16px, nc=3, nz=6"):
        load_encoder(enc_path, other)
    notes = []
    retrained = calibrated_gan(ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8), seed=5)
    load_encoder(enc_path, retrained, progress=lambda p: notes.append(p.message))
    assert any("other generator weights" in (m or "") for m in notes)
    with pytest.raises(GantoolsError, match="no encoder"):
        load_encoder(calibrated_gan(ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8)))
    bad = tmp_path / "notenc.safetensors"
    save_model(bad, gan.generator, gan.discriminator)
    with pytest.raises(GantoolsError, match="not a gantools encoder"):
        load_encoder(bad)


def test_invert_starts_from_encoder(gan, trained, tmp_path):
    from gantools.restoration.encoder import save_encoder
    from gantools.restoration.inversion import invert
    from gantools.models import load_model

    model_path = save_model(tmp_path / "m" / "model.safetensors", gan.generator, gan.discriminator)
    save_encoder(trained.encoder, companion_path(model_path, "encoder"), gan)
    loaded = load_model(model_path)
    _, target = planted(gan, n=6, seed=31)
    kw = dict(steps=1, restarts=1, init_samples=1, lr=0.0)
    with_enc = invert(loaded, target, **kw)  # encoder="auto" finds encoder.safetensors
    without = invert(loaded, target, encoder=None, **kw)
    assert with_enc.settings["encoder"] and with_enc.record(0)["init"] == "encoder"
    assert not without.settings["encoder"] and without.record(0)["init"] == "random"
    assert with_enc.init_loss.mean() < without.init_loss.mean()
    with torch.no_grad():
        assert torch.allclose(with_enc.z, trained.encoder(with_enc.seen), atol=1e-5)
    # degraded inputs: the encoder sees the mean-filled image
    missing = torch.zeros(16, 16)
    missing[:, 8:] = 1
    inp = invert(loaded, target * (1 - missing), "inpaint", mask=missing, restarts=2, steps=1, lr=0.0)
    assert inp.init == ["encoder", "random"]
    assert torch.allclose(inp.seen[:, :, :, 8:], inp.seen[:, :, :, 8:9].expand(-1, -1, -1, 8))


def test_training_on_real_images_and_augmentation(gan, image_folder):
    from gantools.data import ImageFolder
    from gantools.restoration.encoder import degrade_for_encoder, train_encoder

    x = planted(gan, n=64)[1]
    aug = degrade_for_encoder(x, torch.Generator().manual_seed(0), p=0.5)
    changed = (aug - x).flatten(1).abs().amax(1) > 1e-6
    assert aug.shape == x.shape and 16 < int(changed.sum()) < 48
    assert aug.min() >= -1 and aug.max() <= 1
    res = train_encoder(gan, steps=6, batch_size=4, width=8, data=ImageFolder(image_folder, 16, 3), seed=1)
    assert "real_pixel" in res.history[-1]
    res = train_encoder(gan, steps=2, batch_size=4, width=8, data=str(image_folder), seed=1)
    assert res.settings["data"] == str(image_folder)
    with pytest.raises(GantoolsError, match="1 channel"):
        train_encoder(gan, steps=1, batch_size=4, data=ImageFolder(image_folder, 16, 1))


def test_deformation_moves_real_images_a_little(gan, image_folder):
    from gantools.data import ImageFolder
    from gantools.restoration.encoder import deform_for_encoder, train_encoder

    # a bright square on a dark ground: deformed copies keep its size and stay near where it was
    x = -torch.ones(64, 1, 32, 32)
    x[:, :, 12:20, 10:18] = 1
    out = deform_for_encoder(x, torch.Generator().manual_seed(0), p=0.5)
    moved = (out - x).flatten(1).abs().amax(1) > 1e-4
    assert out.shape == x.shape and 20 < int(moved.sum()) < 44
    assert torch.equal(out[~moved], x[~moved])
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    bright = (out > 0).flatten(1).sum(1).float()
    assert bright.min() > 0.6 * 64 and bright.max() < 1.5 * 64
    ys, xs = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    weight = (out[:, 0] + 1) / 2
    centre_x = (weight * xs).flatten(1).sum(1) / weight.flatten(1).sum(1)
    assert (centre_x - 13.5).abs().max() < 4
    assert torch.equal(deform_for_encoder(x, torch.Generator().manual_seed(0), p=0.5), out)
    assert torch.equal(deform_for_encoder(x, torch.Generator().manual_seed(0), p=0.0), x)

    res = train_encoder(gan, steps=2, batch_size=4, width=8, data=ImageFolder(image_folder, 16, 3), deform=0.5,
                        prior_weight=1.0, seed=1)
    assert res.settings["deform"] == 0.5 and res.settings["prior_weight"] == 1.0
    with pytest.raises(GantoolsError, match="give data"):
        train_encoder(gan, steps=1, batch_size=4, deform=0.5)


def test_prior_weight_pulls_real_latents_onto_the_shell(gan, image_folder):
    from gantools.data import ImageFolder, batch_images
    from gantools.restoration.encoder import train_encoder
    from gantools.restoration.objectives import latent_prior
    from gantools.utils import from_uint8

    data = ImageFolder(image_folder, 16, 3)
    x = from_uint8(batch_images(data, torch.arange(len(data))))
    off_shell = {}
    for weight in (0.0, 10.0):
        enc = train_encoder(gan, steps=30, batch_size=8, width=8, data=data, latent_weight=0.0,
                            prior_weight=weight, seed=1).encoder
        with torch.no_grad():
            off_shell[weight] = float(latent_prior(enc(x)).mean())
    assert off_shell[10.0] < 0.3 * off_shell[0.0]


def test_cli_encoder_train_then_invert(gan, tmp_path, image_folder):
    from typer.testing import CliRunner

    from gantools.cli import app
    from gantools.data import save_image
    from gantools.models import read_safetensors

    model_path = save_model(tmp_path / "m" / "model.safetensors", gan.generator, gan.discriminator)
    runner = CliRunner()
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--steps", "30", "--batch-size", "16",
                              "--width", "8", "--device", "cpu", "--quiet", "--json"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout)
    assert summary["out"] == str(model_path.parent / "encoder.safetensors")
    assert summary["latent_mse"] < summary["untrained_latent_mse"]
    assert (model_path.parent / "encoder.safetensors").is_file()

    img = save_image(planted(gan, n=1)[1][0], tmp_path / "x.png")
    res = runner.invoke(app, ["invert", str(img), "--model", str(model_path), "--steps", "2", "--restarts", "2",
                              "--out", str(tmp_path / "o"), "--json", "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.stdout)["restart_losses"] and "encoder" in (tmp_path / "m" / "encoder.safetensors").name

    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--data", str(image_folder),
                              "--holdout", "4", "--steps", "2", "--batch-size", "4", "--width", "8", "--deform",
                              "0.5", "--prior-weight", "1", "--out", str(tmp_path / "e2.safetensors"), "--device",
                              "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "e2.safetensors").is_file() and "trained" in res.stdout
    settings = read_safetensors(tmp_path / "e2.safetensors", "encoder")[1]["training"]
    assert (settings["deform"], settings["prior_weight"]) == (0.5, 1.0)
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--data", str(image_folder),
                              "--holdout", "99", "--steps", "2", "--device", "cpu", "--quiet"])
    assert res.exit_code == 1 and "leaves none" in res.output


def test_training_continues_from_an_init_encoder(gan, trained, tmp_path):
    from gantools.restoration.encoder import encoder_errors, save_encoder, train_encoder

    first = save_encoder(trained.encoder, tmp_path / "first.safetensors", gan)
    # lr 0: the continued encoder keeps the first one's weights (and its width, not the default's)
    kept = train_encoder(gan, steps=1, batch_size=8, lr=0.0, init=first, seed=3).encoder
    assert kept.config.width == 16
    weights = {k: v for k, v in trained.encoder.state_dict().items() if "running" not in k and "num_batches" not in k}
    assert all(torch.equal(kept.state_dict()[k], v) for k, v in weights.items())
    # a second stage starts where the first ended: far better than a fresh encoder after as many steps
    second = train_encoder(gan, steps=20, batch_size=32, lr=5e-4, init=first, seed=1)
    fresh = train_encoder(gan, steps=20, batch_size=32, width=16, lr=5e-4, seed=1)
    assert second.settings["init"] == str(first) and second.settings["width"] == 16
    assert encoder_errors(second.encoder, gan)["pixel"] < 0.8 * encoder_errors(fresh.encoder, gan)["pixel"]


def test_cli_encoder_train_weights_and_init(gan, trained, tmp_path):
    from typer.testing import CliRunner

    from gantools.cli import app
    from gantools.models import read_safetensors
    from gantools.restoration.encoder import load_encoder, save_encoder

    model_path = save_model(tmp_path / "m" / "model.safetensors", gan.generator, gan.discriminator)
    first = save_encoder(trained.encoder, tmp_path / "first.safetensors", gan)
    runner = CliRunner()
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--steps", "2", "--batch-size", "8",
                              "--init", str(first), "--lr", "1e-4", "--pixel-weight", "20", "--latent-weight", "0.1",
                              "--perceptual-weight", "0.5", "--augment", "0.25",
                              "--out", str(tmp_path / "e.safetensors"), "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    settings = read_safetensors(tmp_path / "e.safetensors", "encoder")[1]["training"]
    assert (settings["pixel_weight"], settings["latent_weight"], settings["perceptual_weight"], settings["augment"],
            settings["width"], settings["init"]) == (20.0, 0.1, 0.5, 0.25, 16, str(first))
    assert load_encoder(tmp_path / "e.safetensors").config.start_rate == 0.25  # the default, kept from --init
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--steps", "1", "--batch-size", "4",
                              "--init", str(tmp_path / "e.safetensors"), "--start-rate", "0.1",
                              "--out", str(tmp_path / "e2.safetensors"), "--device", "cpu", "--quiet"])
    assert res.exit_code == 0, res.output
    assert load_encoder(tmp_path / "e2.safetensors").config.start_rate == 0.1
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--start-rate", "0", "--device", "cpu",
                              "--quiet"])
    assert res.exit_code == 2 and "start-rate" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--init", str(tmp_path / "none.st"),
                              "--device", "cpu", "--quiet"])
    assert res.exit_code == 2 and "no encoder file" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["encoder", "train", "--model", str(model_path), "--deform", "0.5", "--device", "cpu",
                              "--quiet"])
    assert res.exit_code == 2 and "give --data" in res.output and "Traceback" not in res.output
