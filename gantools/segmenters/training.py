"""Training a learned segmenter on a labelled dataset: `train_segmenter`."""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from ..utils import GantoolsError, ProgressCallback, from_uint8, notice, report, resolve_device
from .config import DEFAULT_ARCH, DEFAULT_DECODER_CHANNELS, DEFAULT_ENCODER, DEFAULT_ENCODER_DEPTH, IMAGENET_MEAN, \
    IMAGENET_STD, SegmenterConfig, SegmenterTrainConfig, is_scenes
from .evaluation import SegmenterEvalResult, evaluate_segmenter
from .labelled import TensorPairs, load_pairs, open_labelled
from .learned import LearnedSegmenter, check_arch_encoder, load_encoder_weights, save_segmenter

if TYPE_CHECKING:
    from ..types import DeviceSpec

# Held-out images for scenes come from this seed offset, so they never overlap the training seed.
VALIDATION_SEED_OFFSET = 1_000_003


@dataclass
class SegmenterTrainResult:
    """What `train_segmenter` returns.

    Attributes:
        segmenter: the trained segmenter (eval mode).
        path: the file written, or None.
        validation: its scores on the held-out split.
        steps: optimisation steps taken.
        seconds: training wall time (without data preparation and validation).
        train_images, val_images: sizes of the splits.
        file_bytes: size of the file written (0 when none).
    """

    segmenter: LearnedSegmenter
    path: Path | None
    validation: SegmenterEvalResult
    steps: int
    seconds: float
    train_images: int
    val_images: int
    file_bytes: int = 0


@dataclass
class _Splits:
    """The training and held-out images (uint8) and labels, in memory, with the concept names."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    concepts: list[str]


def train_segmenter(data: Any = "scenes", out: str | os.PathLike | None = None, arch: str = DEFAULT_ARCH,
                    encoder: str = DEFAULT_ENCODER, encoder_weights: str | os.PathLike | None = None,
                    encoder_depth: int = DEFAULT_ENCODER_DEPTH,
                    decoder_channels: Sequence[int] | None = DEFAULT_DECODER_CHANNELS,
                    image_size: int | None = 64, nc: int = 3, n: int = 10000, steps: int | None = None,
                    epochs: float | None = None, batch_size: int = 32, lr: float = 6e-3, val_n: int = 500,
                    val_fraction: float = 0.1, flip: bool = True, seed: int = 0, half: bool = True,
                    device: "DeviceSpec" = None, progress: ProgressCallback | None = None,
                    settings: SegmenterTrainConfig | None = None) -> SegmenterTrainResult:
    """Train a LearnedSegmenter on a labelled dataset and (optionally) save it.

    Training uses Adam, cross-entropy, a cosine learning-rate decay and horizontal flips. The
    held-out split is `val_n` scenes from seed `seed + VALIDATION_SEED_OFFSET` for scenes, or the
    last `val_fraction` of a shuffled folder.

    Args:
        data: "scenes", a folder with images/, labels/ and concepts.json, or a labelled dataset object.
        out: .safetensors file to write (None: don't save).
        arch ... half: the training settings, as in `SegmenterTrainConfig` (which documents them);
            or give them all at once as `settings`, which then replaces these arguments.
        device: "auto", "cpu", "cuda"... (None: "auto").
        progress: callback.
    """
    if settings is None:
        settings = SegmenterTrainConfig(
            arch=arch, encoder=encoder, encoder_weights=encoder_weights, encoder_depth=encoder_depth,
            decoder_channels=list(decoder_channels) if decoder_channels is not None else None,
            image_size=image_size, nc=nc, n=n, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
            val_n=val_n, val_fraction=val_fraction, flip=flip, seed=seed, half=half)
    s = settings
    dev = resolve_device(device)
    check_arch_encoder(s.arch, s.encoder)
    if s.encoder_weights is not None and not Path(s.encoder_weights).is_file():
        raise GantoolsError(f"encoder weights file not found: {s.encoder_weights}")
    splits = _read_splits(data, s, progress)
    seg = _build(splits, s, progress).to(dev).train()
    total = s.total_steps(len(splits.train_x))
    seconds = _optimise(seg, splits, s, total, dev, progress)
    seg.eval()
    validation = evaluate_segmenter(seg, TensorPairs(splits.val_x, splits.val_y, splits.concepts), batch_size=64,
                                    device=dev, progress=progress)
    path, size_bytes = None, 0
    if out is not None:
        record = {"data": str(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__,
                  "seed": s.seed, "validation_seed": s.seed + VALIDATION_SEED_OFFSET if is_scenes(data) else None,
                  "train_images": len(splits.train_x), "val_images": len(splits.val_x), "steps": total,
                  "batch_size": s.batch_size, "lr": s.lr, "seconds": round(seconds, 1),
                  "encoder_weights": s.encoder_weights or None, "val_miou": validation.miou}
        path = save_segmenter(seg, out, half=s.half, extra={"training": record})
        size_bytes = path.stat().st_size
        notice(progress, f"wrote {path} ({size_bytes / 1e6:.2f} MB), held-out mIoU {validation.miou:.4f}")
    return SegmenterTrainResult(seg, path, validation, total, seconds, len(splits.train_x), len(splits.val_x),
                                size_bytes)


def _read_splits(data: Any, s: SegmenterTrainConfig, progress: ProgressCallback | None) -> _Splits:
    """Everything decoded once into memory (10000 scenes at 64 px are 120 MB), and checked."""
    if is_scenes(data):
        train_ds = open_labelled("scenes", s.image_size or 64, s.nc, n=s.n, seed=s.seed)
        val_ds = open_labelled("scenes", s.image_size or 64, s.nc, n=s.val_n, seed=s.seed + VALIDATION_SEED_OFFSET)
        train_x, train_y = load_pairs(train_ds, range(len(train_ds)), progress, "make training scenes")
        val_x, val_y = load_pairs(val_ds, range(len(val_ds)), progress, "make held-out scenes")
        concepts = list(train_ds.concepts)
    else:
        ds = open_labelled(data, s.image_size, s.nc, progress=progress)
        if len(ds) < 2:
            raise GantoolsError(f"{data} has {len(ds)} labelled image(s): need at least 2 "
                                "(a training and a held-out split)")
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(s.seed)).tolist()
        n_val = min(len(ds) - 1, max(1, round(len(ds) * s.val_fraction)))
        x, y = load_pairs(ds, order, progress, "read labelled images")
        train_x, train_y, val_x, val_y = x[n_val:], y[n_val:], x[:n_val], y[:n_val]
        concepts = list(ds.concepts)
    if train_x.shape[1] != s.nc:
        raise GantoolsError(f"the data has {train_x.shape[1]}-channel images but nc={s.nc}")
    if train_x.shape[-2] != train_x.shape[-1]:
        raise GantoolsError(f"training images must be square, got {tuple(train_x.shape[-2:])}")
    if int(train_y.max()) >= len(concepts) or int(train_y.min()) < 0:
        raise GantoolsError(f"label id {int(train_y.max())} is outside the {len(concepts)} concepts")
    if len(concepts) <= 256:
        train_y = train_y.to(torch.uint8)  # 8x less memory; batches are cast back to int64
    return _Splits(train_x, train_y, val_x, val_y, concepts)


def _build(splits: _Splits, s: SegmenterTrainConfig, progress: ProgressCallback | None) -> LearnedSegmenter:
    """A fresh segmenter (seeded) for these images, with local encoder weights when given."""
    mean, std = ((list(IMAGENET_MEAN), list(IMAGENET_STD)) if s.encoder_weights is not None and s.nc == 3
                 else ([0.5] * s.nc, [0.5] * s.nc))
    config = SegmenterConfig(concepts=splits.concepts, arch=s.arch, encoder=s.encoder, encoder_depth=s.encoder_depth,
                             decoder_channels=s.decoder_channels, image_size=int(splits.train_x.shape[-1]), nc=s.nc,
                             mean=mean, std=std)
    torch.manual_seed(s.seed)
    seg = LearnedSegmenter(config)
    if s.encoder_weights is not None:
        load_encoder_weights(seg, s.encoder_weights, progress)
    return seg


def _optimise(seg: LearnedSegmenter, splits: _Splits, s: SegmenterTrainConfig, total: int, dev: torch.device,
              progress: ProgressCallback | None) -> float:
    """`total` Adam steps with a warm-up and a cosine decay; returns the seconds they took."""
    train_x, train_y = splits.train_x, splits.train_y
    opt = torch.optim.Adam(seg.parameters(), lr=s.lr)
    warmup = min(100, max(1, total // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda k: min(1.0, (k + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(k, total) / total)))
    gen = torch.Generator().manual_seed(s.seed)
    start = time.monotonic()
    running = None
    for step in range(1, total + 1):
        idx = torch.randint(0, len(train_x), (min(s.batch_size, len(train_x)),), generator=gen)
        xb, yb = train_x[idx], train_y[idx]
        if s.flip:
            mask = torch.rand(len(idx), generator=gen) < 0.5
            xb[mask] = xb[mask].flip(-1)
            yb[mask] = yb[mask].flip(-1)
        xb, yb = from_uint8(xb.to(dev)), yb.to(dev).long()
        loss = F.cross_entropy(seg.logits(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise GantoolsError(f"training diverged at step {step} (loss {value}); try a smaller lr")
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == total:
            elapsed = time.monotonic() - start
            report(progress, "train segmenter", step, total, loss=running, lr=sched.get_last_lr()[0],
                   img_s=step * len(idx) / max(elapsed, 1e-9))
    return time.monotonic() - start


__all__ = ["VALIDATION_SEED_OFFSET", "SegmenterTrainResult", "train_segmenter"]
