"""Sampling: grids, interpolation (slerp and lerp), and latent vector arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

import gantools
from gantools.models import load_model
from gantools.sampling import (figure_cell, generate, interpolate, interpolate_latents, interpolation_figure,
                               latent_arithmetic, parse_arithmetic, sample, save_arithmetic, save_interpolation, slerp)
from gantools.utils import GantoolsError, to_uint8

GAP = 4  # labelled_grid's default gap between cells


def cells_at(figure: torch.Tensor, rows: int, columns: int, cell: int) -> tuple[int, int]:
    """The label margins (left, top) of a labelled figure whose image cells fill its bottom-right."""
    top = figure.shape[1] - (rows * cell + (rows - 1) * GAP)
    left = figure.shape[2] - (columns * cell + (columns - 1) * GAP)
    return left, top


def cell_image(figure: torch.Tensor, left: int, top: int, cell: int, row: int, column: int) -> torch.Tensor:
    """The pixels of one cell of a labelled figure."""
    y, x = top + row * (cell + GAP), left + column * (cell + GAP)
    return figure[:, y:y + cell, x:x + cell]


def enlarged(image: torch.Tensor, factor: int) -> torch.Tensor:
    """An image in [-1, 1] as uint8, scaled up by a whole factor (nearest), as the figures draw it."""
    return to_uint8(image).repeat_interleave(factor, -1).repeat_interleave(factor, -2)


def has_text(region: torch.Tensor) -> bool:
    """Labels are black text on white: a margin holding a label has dark pixels."""
    return bool((region < 128).any())


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
    r = latent_arithmetic(gan, [0, 1, 2], [3], [4, 5], n=5, seed=2)
    assert r.nrow == 5  # max(mean + 3 images, 5 results)
    rows = r.rows()  # the raw images: per group its mean then its images, then the result and variations
    assert [len(row) for row in rows] == [4, 2, 3, 5]
    assert torch.equal(rows[0][0], r.mean_images[0]) and torch.equal(rows[0][1:], r.group_images[0])
    assert torch.equal(rows[3], r.images)
    assert r.indices == [[0, 1, 2], [3], [4, 5]] and r.seed == 2
    assert r.row_labels() == ["A: samples 0, 1, 2", "B: samples 3", "C: samples 4, 5",
                              "A - B + C,\nthen 4 variations"]
    assert figure_cell(r.images) == 96  # 16 px images enlarged x6
    grid = r.grid(cell=32)  # labelled: 3 x H x W uint8, 16 px images enlarged x2
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    left, top = cells_at(grid, 4, 5, 32)
    assert left > 0 and top > 0  # the row labels' column and the title and column labels' rows
    assert has_text(grid[:, top:, :left]) and has_text(grid[:, :top, left:])
    # the images sit in their cells: A's mean first in row 0, the result under it, B's row padded white
    assert torch.equal(cell_image(grid, left, top, 32, 0, 0), enlarged(r.mean_images[0], 2))
    assert torch.equal(cell_image(grid, left, top, 32, 0, 3), enlarged(r.group_images[0][2], 2))
    assert torch.equal(cell_image(grid, left, top, 32, 3, 0), enlarged(r.images[0], 2))
    assert torch.equal(cell_image(grid, left, top, 32, 3, 4), enlarged(r.images[4], 2))
    assert bool((cell_image(grid, left, top, 32, 1, 2) == 255).all())
    path = save_arithmetic(r, tmp_path / "a.png", cell=32)
    assert path == tmp_path / "a.png" and Image.open(path).size == (grid.shape[2], grid.shape[1])
    assert r.save(tmp_path / "b.png") == tmp_path / "b.png"
    assert Image.open(tmp_path / "b.png").size == (left + 5 * 96 + 4 * GAP, top + 4 * 96 + 3 * GAP)
    # latents given directly are labelled by their count
    t = latent_arithmetic(gan, torch.randn(2, 8), torch.randn(1, 8), torch.randn(3, 8), n=1)
    assert t.row_labels() == ["A: 2 latents", "B: 1 latents", "C: 3 latents", "A - B + C"]


def test_interpolation_figure_is_labelled(gan, tmp_path: Path) -> None:
    strip = interpolate(gan, seed=2, seed2=9, frames=4)
    figure = interpolation_figure(strip, seed=2, seed2=9, cell=32)
    left, top = cells_at(figure, 1, 4, 32)
    assert left > 0 and top > 0 and has_text(figure[:, top:, :left]) and has_text(figure[:, :top, left:])
    for j in range(4):  # the frames in order, enlarged x2
        assert torch.equal(cell_image(figure, left, top, 32, 0, j), enlarged(strip[j], 2))
    # a label per frame: each column's top margin holds text
    assert all(has_text(figure[:, :top, left + j * (32 + GAP):left + j * (32 + GAP) + 32]) for j in range(4))
    path = save_interpolation(strip, tmp_path / "s.png", seed=2, seed2=9)
    assert path == tmp_path / "s.png"
    wide = Image.open(path).size  # the default cell: 96
    assert wide[0] > 4 * 96 + 3 * GAP and wide[1] > 96
    with pytest.raises(GantoolsError, match="at least 2 frames"):
        interpolation_figure(strip[:1])


def test_sample_command_writes_labelled_pictures(tiny_model_file: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from gantools.cli import app

    runner = CliRunner()
    out = tmp_path / "strip.png"
    r = runner.invoke(app, ["sample", "-m", str(tiny_model_file), "--interpolate", "--seed", "2", "--seed2", "9",
                            "--frames", "4", "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    gan = load_model(tiny_model_file)
    want = interpolation_figure(interpolate(gan, seed=2, seed2=9, frames=4), seed=2, seed2=9)
    assert Image.open(out).size == (want.shape[2], want.shape[1])
    out = tmp_path / "arith.png"
    r = runner.invoke(app, ["sample", "-m", str(tiny_model_file), "--arithmetic", "0,1-2+3", "--seed", "5",
                            "-o", str(out), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    want = latent_arithmetic(gan, [0, 1], [2], [3], seed=5).grid()
    assert Image.open(out).size == (want.shape[2], want.shape[1])
