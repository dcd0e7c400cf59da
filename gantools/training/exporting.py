"""From a run to a model file: `export` writes model.safetensors from a checkpoint.

With ema, the exported generator is the weight average, whose BatchNorm statistics are recomputed
first (`recalibrate_batchnorm`).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from ..models import MODEL_FILE, Generator, fold_spectral_norm, save_model
from ..utils import GantoolsError
from .batches import derived_seed
from .checkpoint import BEST_FILE, CHECKPOINT_FILE, load_checkpoint, models_from_checkpoint


def export(run_dir: str | os.PathLike, best: bool = False, out: str | os.PathLike | None = None,
           half: bool = False) -> Path:
    """Write a run's model as one model.safetensors (G and D, config in the metadata).

    Args:
        run_dir: the run directory (or a checkpoint file).
        best: export best.pt (lowest FID, with eval_every) instead of the latest checkpoint.
        out: destination; default <run_dir>/model.safetensors.
        half: store weights in float16 (half the size).
    """
    run_dir = Path(run_dir)
    path = run_dir if run_dir.is_file() else run_dir / (BEST_FILE if best else CHECKPOINT_FILE)
    if best and not path.is_file():
        raise GantoolsError(f"{run_dir} has no {BEST_FILE}: it is written only by runs with eval_every")
    ckpt = load_checkpoint(path)
    g, d, config = models_from_checkpoint(ckpt)
    if ckpt.get("generator_ema") is not None:
        g.load_state_dict(ckpt["generator_ema"])
        recalibrate_batchnorm(g, seed=config.seed)
    out = Path(out) if out is not None else (run_dir.parent if run_dir.is_file() else run_dir) / MODEL_FILE
    meta = {"training": {"step": int(ckpt["step"]), "data": config.data, "data_version": config.data_version,
                         "seed": config.seed, "recipe": config.recipe, "loss": config.loss,
                         "batch_size": config.batch_size, "lr_g": config.lr_g, "lr_d": config.lr_d,
                         "fid": ckpt.get("fid"), "checkpoint": path.name,
                         "ema": config.ema if ckpt.get("generator_ema") is not None else 0.0,
                         # the whole run config (r1, augment, holdout, ...), so the file says how it was made
                         "config": config.to_dict()}}
    return save_model(out, g.eval(), fold_spectral_norm(d), extra_metadata=meta, half=half)


def recalibrate_batchnorm(g: Generator, seed: int = 0, batches: int = 16, batch_size: int = 64) -> Generator:
    """Recompute G's BatchNorm running statistics from a fixed, seeded set of noise batches.

    An averaged (EMA) generator's weights never produced the running statistics it carries, so they
    are re-estimated as the plain mean over `batches` batches (momentum=None). Returns g in eval mode.
    """
    bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    device = next(g.parameters()).device
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(derived_seed(seed, 4))
    g.train()
    with torch.no_grad():
        for _ in range(batches):
            g(torch.randn(batch_size, g.config.nz, generator=gen).to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return g.eval()


__all__ = ["export", "recalibrate_batchnorm"]
