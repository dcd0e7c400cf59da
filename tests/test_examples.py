"""The examples in examples/ run (with small settings) and produce what they promise."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest
import torch

from gantools.models import Discriminator, Generator, ModelConfig, load_model, save_model

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, argv: list[str]):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main(argv)


@pytest.fixture
def small_model(tmp_path: Path) -> Path:
    torch.manual_seed(0)
    config = ModelConfig(image_size=32, nc=3, nz=16, ngf=8, ndf=8)
    return save_model(tmp_path / "m" / "model.safetensors", Generator(config).eval(), Discriminator(config).eval())


def test_train_tiny(tmp_path: Path) -> None:
    out = tmp_path / "run"
    model_path = run_example("train_tiny", ["--steps", "6", "--image-size", "16", "--width", "8",
                                            "--data-n", "128", "--out", str(out)])
    gan = load_model(model_path)
    assert gan.config.image_size == 16 and gan.config.ngf == 8
    assert (out / "grid.png").is_file() and (out / "interpolation.png").is_file()
    assert (out / "stats.jsonl").read_text().strip()


def test_dissect_and_ablate(tmp_path: Path, small_model: Path) -> None:
    out = tmp_path / "d"
    summary = run_example("dissect_and_ablate", ["--model", str(small_model), "--layer", "2", "--segmenter", "color",
                                                 "--n", "48", "--top", "3", "--out", str(out)])
    assert len(summary["units"]) == 3 and math.isfinite(summary["effect"])
    assert (out / "dissection" / "report.json").is_file() and (out / "ablation" / "effect.json").is_file()


def test_invert_and_restore(tmp_path: Path, small_model: Path) -> None:
    out = tmp_path / "inv"
    metrics = run_example("invert_and_restore", ["--model", str(small_model), "--steps", "20", "--restarts", "2",
                                                 "--out", str(out)])
    # the image is one the generator can draw, so the prior restores the hole well
    assert metrics["psnr"] > 25 and metrics["ssim"] > 0.9
    assert {p.name for p in out.iterdir()} >= {"example.png", "example_compare.png", "example.latent.pt"}
