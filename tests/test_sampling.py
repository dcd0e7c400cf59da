"""Sampling: grids, interpolation (slerp and lerp), and latent vector arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import gantools
from gantools.models import load_model
from gantools.sampling import (generate, interpolate, interpolate_latents, latent_arithmetic, parse_arithmetic,
                               sample, save_arithmetic, slerp)
from gantools.utils import GantoolsError


@pytest.fixture
def gan(tiny_model_file: Path):
    return load_model(tiny_model_file)


def test_sample_reproducible(gan, tiny_model_file: Path) -> None:
    a = sample(gan, n=10, seed=3)
    assert a.shape == (10, 3, 16, 16) and a.min() >= -1 and a.max() <= 1
    assert torch.equal(a, sample(tiny_model_file, n=10, seed=3))  # a spec string works too
    assert torch.allclose(a[:4], sample(gan, n=4, seed=3), atol=1e-6)  # image i of a seed does not depend on n
    assert not torch.equal(a, sample(gan, n=10, seed=4))
    assert torch.allclose(sample(gan, n=10, seed=3, batch_size=3), a, atol=1e-6)  # batching: same (eval mode)
    assert gantools.sample is sample
    with pytest.raises(GantoolsError):
        sample(gan, n=0)


def test_generate_restores_training_mode(gan) -> None:
    g = gan.generator.train()
    generate(g, torch.zeros(2, 8))
    assert g.training


def test_slerp_properties() -> None:
    torch.manual_seed(0)
    z0, z1 = torch.randn(64), torch.randn(64)
    z1 = z1 / z1.norm() * z0.norm()  # equal norms: slerp stays on the sphere
    path = interpolate_latents(z0, z1, frames=7, method="slerp")
    assert path.shape == (7, 64)
    assert torch.allclose(path[0], z0, atol=1e-5) and torch.allclose(path[-1], z1, atol=1e-5)
    assert torch.allclose(path.norm(dim=1), z0.norm().expand(7), rtol=1e-4)
    lerp = interpolate_latents(z0, z1, frames=3, method="lerp")
    assert torch.allclose(lerp[1], (z0 + z1) / 2)
    assert lerp[1].norm() < path[3].norm() * 0.95  # the straight line cuts through low-norm latents
    # parallel vectors fall back to lerp instead of dividing by sin(0)
    assert torch.allclose(slerp(z0, 2 * z0, 0.5), 1.5 * z0, atol=1e-5)
    with pytest.raises(GantoolsError, match="slerp or lerp"):
        interpolate_latents(z0, z1, method="cubic")
    with pytest.raises(GantoolsError, match="at least 2"):
        interpolate_latents(z0, z1, frames=1)


def test_interpolate_ends_are_the_seeds_images(gan) -> None:
    strip = interpolate(gan, seed=2, seed2=9, frames=5)
    assert strip.shape == (5, 3, 16, 16)
    assert torch.allclose(strip[0], sample(gan, 1, seed=2)[0], atol=1e-5)
    assert torch.allclose(strip[-1], sample(gan, 1, seed=9)[0], atol=1e-5)
    assert not torch.allclose(strip[2], strip[0])
    # seed2 defaults to seed + 1; frames and method are checked before the model is loaded
    assert torch.allclose(interpolate(gan, seed=4, frames=2)[-1], sample(gan, 1, seed=5)[0], atol=1e-5)
    with pytest.raises(GantoolsError, match="slerp or lerp"):
        interpolate("no/such/model", method="cubic")


def test_latent_arithmetic_indices(gan) -> None:
    grid_z = gan.generator.sample_z(64, seed=7, device="cpu")
    r = latent_arithmetic(gan, a=[3, 17, 22], b=[5], c=[10, 11], seed=7, n=4)
    want = grid_z[[3, 17, 22]].mean(0) - grid_z[5] + grid_z[[10, 11]].mean(0)
    assert torch.allclose(r.z, want, atol=1e-6)
    assert torch.equal(r.variations[0], r.z)
    jitter = r.variations[1:] - r.z
    assert jitter.abs().max() <= 0.25 + 1e-6 and jitter.abs().max() > 0.1
    assert r.images.shape == (4, 3, 16, 16)
    assert torch.allclose(r.images[0], generate(gan, r.z[None])[0])
    # group images are exactly those of the sample grid of that seed
    grid = sample(gan, 64, seed=7)
    assert torch.allclose(r.group_images[0], grid[[3, 17, 22]], atol=1e-6)
    assert r.mean_images.shape == (3, 3, 16, 16)


def test_latent_arithmetic_tensors_and_errors(gan) -> None:
    a, b, c = torch.randn(2, 8), torch.randn(3, 8), torch.randn(1, 8)
    r = latent_arithmetic(gan, a, b, c, n=1)
    assert torch.allclose(r.z, a.mean(0) - b.mean(0) + c[0])
    with pytest.raises(GantoolsError, match="group B is empty"):
        latent_arithmetic(gan, [1], [], [2])
    with pytest.raises(GantoolsError, match="nz is 8"):
        latent_arithmetic(gan, torch.randn(2, 5), b, c)


def test_parse_arithmetic() -> None:
    assert parse_arithmetic("3,17,22-5,8+10") == ([3, 17, 22], [5, 8], [10])
    assert parse_arithmetic(" 1 - 2 + 3 ") == ([1], [2], [3])
    for bad in ("1,2+3", "a-b+c", "1-+3"):
        with pytest.raises(GantoolsError):
            parse_arithmetic(bad)


def test_save_arithmetic_layout(gan, tmp_path: Path) -> None:
    r = latent_arithmetic(gan, [0, 1, 2], [3], [4, 5], n=5)
    assert r.nrow == 5  # max(3 images + mean, 5 results)
    assert r.grid().shape == (4 * 5, 3, 16, 16)
    path = save_arithmetic(r, tmp_path / "a.png")
    assert Image.open(path).size == (2 + 5 * 18, 2 + 4 * 18)
    assert r.save(tmp_path / "b.png") == tmp_path / "b.png"
    assert Image.open(tmp_path / "b.png").size == Image.open(path).size
