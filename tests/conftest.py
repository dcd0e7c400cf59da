"""Shared fixtures: tiny seeded models and tiny image folders, so the suite runs on 2 CPU cores.

Nothing here needs ../shared or the network.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from torch import nn

from gantools.models import GAN, Discriminator, Generator, ModelConfig, save_model


# One thread for the whole session (module-scoped fixtures included): the models are tiny, and on a
# loaded 2-core machine two OpenMP threads per process thrash (10x slower).
torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _deterministic():
    torch.manual_seed(0)
    torch.set_num_threads(1)  # a test may have changed it
    yield


@pytest.fixture
def tiny_config() -> ModelConfig:
    """16 px RGB, 8 channels: the smallest DCGAN the toolkit supports."""
    return ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8)


@pytest.fixture
def tiny_model_file(tmp_path: Path, tiny_config: ModelConfig) -> Path:
    """An untrained tiny model written as model.safetensors (seeded, so always the same weights)."""
    torch.manual_seed(1)
    g, d = Generator(tiny_config), Discriminator(tiny_config)
    return save_model(tmp_path / "tiny" / "model.safetensors", g.eval(), d.eval())


def write_images(folder: Path, n: int, size: int = 20, mode: str = "RGB", seed: int = 0,
                 classes: int = 0) -> list[Path]:
    """Write n small random PNGs (in class subfolders when classes > 0); returns their paths."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        sub = folder / str(i % classes) if classes else folder
        sub.mkdir(parents=True, exist_ok=True)
        channels = {"L": 1, "RGB": 3, "RGBA": 4}[mode]
        arr = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
        img = Image.fromarray(arr[:, :, 0] if channels == 1 else arr, mode)
        path = sub / f"img{i:03d}.png"
        img.save(path)
        paths.append(path)
    return paths


@pytest.fixture
def image_folder(tmp_path: Path) -> Path:
    """12 random 20x20 RGB PNGs in 3 class folders."""
    root = tmp_path / "images"
    write_images(root, 12, classes=3)
    return root


class Bright:
    """A segmenter defined here: 'bright' where the mean over channels exceeds 0.5, else 'dark'."""

    concepts = ["dark", "bright"]
    description = "bright pixels (test)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return (images.mean(1) > 0.5).long()


def planted_gan() -> GAN:
    torch.manual_seed(0)
    cfg = ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8)
    g = Generator(cfg)
    for m in g.modules():
        if isinstance(m, nn.ConvTranspose2d):
            nn.init.normal_(m.weight, 0.0, 0.5)
    with torch.no_grad():
        w = g.output[0].weight  # in (8) x out (3) x 4 x 4
        w.zero_()
        w[0] = 0.25  # unit 0 drives brightness strongly
        w[1] = 0.06  # unit 1 weakly; units 2..7 not at all
    return GAN(g.eval(), Discriminator(cfg).eval(), cfg)


def ship_dissection(result, model_file: Path) -> Path:
    """Store a dissection result beside a model file as its shipped dissection.json (what
    `units.shipped_dissection` reads); returns that file."""
    import shutil
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        result.save(tmp, html=False)
        return Path(shutil.copy(Path(tmp) / "report.json", Path(model_file).parent / "dissection.json"))


@pytest.fixture
def no_work(monkeypatch):
    """A dissection or an inversion fails the test: value errors must come before any of them."""
    import gantools.dissection
    import gantools.restoration.inversion

    def fail(*args, **kwargs):
        raise AssertionError("expensive work started before the values were checked")

    monkeypatch.setattr(gantools.dissection, "dissect", fail)
    monkeypatch.setattr(gantools.restoration.inversion, "invert", fail)
