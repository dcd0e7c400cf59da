"""DCGAN architecture: shapes for every size and channel count, the DCGAN guidelines, init statistics,
the model file format and reproducible latents."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gantools.hooks import resolve_layer
from gantools.models import (Discriminator, Generator, ModelConfig, load_model, read_safetensors, save_model)
from gantools.utils import GantoolsError


@pytest.mark.parametrize("size", [16, 32, 64, 128])
@pytest.mark.parametrize("nc", [1, 3])
def test_output_shapes(size: int, nc: int) -> None:
    cfg = ModelConfig(image_size=size, nc=nc, nz=8, ngf=4, ndf=4)
    g, d = Generator(cfg), Discriminator(cfg)
    k = cfg.num_layers
    assert k == {16: 2, 32: 3, 64: 4, 128: 5}[size]
    z = torch.randn(3, 8)
    x = g(z)
    assert x.shape == (3, nc, size, size)
    assert x.min() >= -1 and x.max() <= 1  # Tanh output
    logits, feats = d(x, return_features=True)
    assert logits.shape == (3,)
    assert len(feats) == k
    for i, f in enumerate(feats):  # each D block halves the resolution and doubles the width
        assert f.shape == (3, 4 * 2**i, size // 2 ** (i + 1), size // 2 ** (i + 1))
    assert torch.equal(d(x), logits)
    # G's blocks: layer1 is 4x4, each next one doubles, widths halve down to ngf.
    assert g.layer_names == [f"layer{i + 1}" for i in range(k)]
    h = z.reshape(3, 8, 1, 1)
    for i, name in enumerate(g.layer_names):
        h = getattr(g, name)(h)
        assert h.shape == (3, 4 * 2 ** (k - 1 - i), 4 * 2**i, 4 * 2**i)


def test_dcgan_guidelines(tiny_config: ModelConfig) -> None:
    g, d = Generator(tiny_config), Discriminator(tiny_config)
    for net in (g, d):
        kinds = {type(m) for m in net.modules()}
        assert not kinds & {nn.Linear, nn.MaxPool2d, nn.AvgPool2d, nn.AdaptiveAvgPool2d}
    # G: transposed convs + BN + ReLU in every block, Tanh and no BN at the output.
    for name in g.layer_names:
        types = [type(m) for m in getattr(g, name)]
        assert types == [nn.ConvTranspose2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in g.output] == [nn.ConvTranspose2d, nn.Tanh]
    # D: strided convs, LeakyReLU(0.2), no BN on the input layer.
    assert [type(m) for m in d.layer1] == [nn.Conv2d, nn.LeakyReLU]
    for name in d.layer_names[1:]:
        assert [type(m) for m in getattr(d, name)] == [nn.Conv2d, nn.BatchNorm2d, nn.LeakyReLU]
    for m in d.modules():
        if isinstance(m, nn.LeakyReLU):
            assert m.negative_slope == 0.2
        if isinstance(m, nn.Conv2d) and m is not d.output:
            assert m.stride == (2, 2)


def test_init_statistics() -> None:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=64, nc=3, nz=100, ngf=64, ndf=64)
    convs, bn_w, bn_b = [], [], []
    for net in (Generator(cfg), Discriminator(cfg)):
        for m in net.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                convs.append(m.weight.detach().flatten())
            elif isinstance(m, nn.BatchNorm2d):
                bn_w.append(m.weight.detach())
                bn_b.append(m.bias.detach())
    w = torch.cat(convs)
    assert abs(w.mean().item()) < 1e-3
    assert w.std().item() == pytest.approx(0.02, rel=0.02)
    bw = torch.cat(bn_w)
    assert len(bw) > 1000
    assert bw.mean().item() == pytest.approx(1.0, abs=0.003)
    assert bw.std().item() == pytest.approx(0.02, rel=0.1)
    assert torch.count_nonzero(torch.cat(bn_b)) == 0


@pytest.mark.parametrize("bad", [dict(image_size=48), dict(nc=2), dict(nz=0)])
def test_bad_config(bad: dict) -> None:
    with pytest.raises(GantoolsError) as e:
        ModelConfig(**bad)
    assert any(s in str(e.value) for s in ("16, 32, 64, 128", "1 (grayscale) or 3", "positive"))


def test_layer_names_resolve(tiny_config: ModelConfig) -> None:
    g = Generator(tiny_config)
    for spec in (2, "2", "layer2"):
        name, module = resolve_layer(g, spec)
        assert name == "layer2" and module is g.layer2
    with pytest.raises(GantoolsError, match="layer1"):
        resolve_layer(g, 7)


def test_sample_z_reproducible_and_prefix_stable(tiny_config: ModelConfig) -> None:
    g = Generator(tiny_config)
    a = g.sample_z(64, seed=5)
    assert torch.equal(a, g.sample_z(64, seed=5))
    assert not torch.equal(a, g.sample_z(64, seed=6))
    # latent i of a seed does not depend on how many were drawn (the grid's image i = sample_z(i+1)[i])
    for n in (1, 2, 3, 17, 63):
        assert torch.equal(g.sample_z(n, seed=5), a[:n])
    assert a.std().item() == pytest.approx(1.0, abs=0.1)


def test_save_load_roundtrip(tmp_path, tiny_config: ModelConfig) -> None:
    torch.manual_seed(3)
    g, d = Generator(tiny_config), Discriminator(tiny_config)
    # Make BN running stats non-trivial so that buffers must round-trip too.
    g.train()
    g(torch.randn(8, tiny_config.nz))
    path = save_model(tmp_path / "m" / "model.safetensors", g, d)
    gan = load_model(tmp_path / "m")  # a run directory works as a spec
    assert gan.config == tiny_config
    assert not gan.generator.training
    z = torch.randn(4, tiny_config.nz)
    g.eval()
    assert torch.equal(gan.generator(z), g(z))
    x = torch.rand(2, 3, 16, 16) * 2 - 1
    d.eval()
    assert torch.equal(gan.discriminator(x), d(x))
    _, meta = read_safetensors(path)
    assert meta["config"] == tiny_config.to_dict()
    half = save_model(tmp_path / "h.safetensors", g, d, half=True)
    assert half.stat().st_size < path.stat().st_size * 0.6
    gh = load_model(half).generator
    assert torch.allclose(gh(z), g(z), atol=2e-2)


def test_load_model_errors(tmp_path) -> None:
    with pytest.raises(GantoolsError, match="no model"):
        load_model(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(GantoolsError, match="folder without a model"):
        load_model(tmp_path / "empty")
    (tmp_path / "empty" / "checkpoint.pt").write_bytes(b"")  # a run directory that was never exported
    with pytest.raises(GantoolsError, match="gantools export"):
        load_model(tmp_path / "empty")
    with pytest.raises(GantoolsError, match="training checkpoint"):
        load_model(tmp_path / "empty" / "checkpoint.pt")
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a safetensors file")
    with pytest.raises(GantoolsError, match="not a readable"):
        load_model(bad)


def test_load_model_passes_a_loaded_gan_through(tiny_model_file):
    from gantools.models import load_model

    gan = load_model(tiny_model_file)
    assert load_model(gan, "cpu") is gan
