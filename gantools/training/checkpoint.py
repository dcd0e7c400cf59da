"""A run directory on disk: its file names, checkpoints (read, RNG state), stats.jsonl, fresh networks.

A run directory holds `config.json`, `stats.jsonl` (one line per logged step), `samples/step_NNNNNN.png`,
`loss_curve.png`, `checkpoint.pt` (+ `best.pt` with eval_every, `snapshots/step_NNNNNN.safetensors` with
snapshot_every) and, at the end, `model.safetensors`.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from ..models import Discriminator, Generator, add_spectral_norm
from ..utils import GantoolsError
from .config import TrainConfig

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
STATS_FILE = "stats.jsonl"
CONFIG_FILE = "config.json"
SNAPSHOTS_DIR = "snapshots"  # model files kept every snapshot_every steps
CHECKPOINT_FORMAT = "gantools-checkpoint/1"


def _data_name(data: str) -> str:
    name = Path(str(data).rstrip("/\\")).name or "data"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def default_run_dir(data: str, root: str | os.PathLike = "runs") -> Path:
    """runs/<nnnnn>-<data>: the next free run number under `root`."""
    root = Path(root)
    numbers = [int(p.name[:5]) for p in root.glob("*") if p.name[:5].isdigit()] if root.is_dir() else []
    return root / f"{max(numbers, default=-1) + 1:05d}-{_data_name(data)}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint.pt (or best.pt, or a run directory's checkpoint) with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise GantoolsError(f"no checkpoint at {path}: is this a gantools run directory?")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign files
        # torch's weights-only message advises weights_only=False, which a user must not do for a
        # file that is not a checkpoint; name the file instead.
        reason = "not a torch checkpoint, or one holding more than tensors" if "Weights only" in str(e) \
            else str(e).splitlines()[0]
        raise GantoolsError(f"cannot read checkpoint {path}: {reason}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise GantoolsError(f"{path} is not a gantools checkpoint")
    return ckpt


def rng_state(noise_gen: torch.Generator) -> dict[str, Any]:
    """The random state a checkpoint keeps: the noise generator's, torch's global CPU and CUDA states."""
    state = {"noise": noise_gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict[str, Any], noise_gen: torch.Generator) -> None:
    """Put back the random state of `rng_state` (CUDA's only on a machine with as many GPUs)."""
    noise_gen.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def build_models(config: TrainConfig) -> tuple[Generator, Discriminator]:
    """A fresh G and D for a run, D spectral-normalised when the config says so."""
    mc = config.model_config()
    g, d = Generator(mc), Discriminator(mc)
    if mc.d_norm == "spectral":
        add_spectral_norm(d)
    return g, d


def models_from_checkpoint(ckpt: dict[str, Any]) -> tuple[Generator, Discriminator, TrainConfig]:
    """G and D with a checkpoint's weights, and the run's config."""
    config = TrainConfig.from_dict(ckpt["config"])
    g, d = build_models(config)
    g.load_state_dict(ckpt["generator"])
    d.load_state_dict(ckpt["discriminator"])
    return g, d, config


def read_stats(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The logged stats of a run (stats.jsonl), one dict per logged step."""
    path = Path(run_dir) / STATS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


__all__ = ["BEST_FILE", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT", "CONFIG_FILE", "SNAPSHOTS_DIR", "STATS_FILE",
           "build_models", "default_run_dir", "load_checkpoint", "models_from_checkpoint", "read_stats", "restore_rng",
           "rng_state"]
