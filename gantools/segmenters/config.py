"""What a learned segmenter is and how it is trained and evaluated, as plain settings (no torch here).

The CLI reads these defaults for its options and `--help`, so they are stated once, here.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Any, Sequence

from ..utils import Config, GantoolsError

SEGMENTER_COMPONENT = "segmenter"  # segmenter.safetensors, beside a model
CONFIG_KEY = "segmenter_config"  # the config's key in a segmenter file's metadata

DEFAULT_ARCH = "unet"
DEFAULT_ENCODER = "tu-regnetx_002"
DEFAULT_ENCODER_DEPTH = 4
DEFAULT_DECODER_CHANNELS = (64, 32, 16, 16)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Evaluating on scenes: this many images from this seed, which training (seed 0, and its validation
# seed) does not use.
EVAL_SCENES = 1000
EVAL_SEED = 1


@dataclass
class SegmenterConfig(Config):
    """What a learned segmenter is: stored as JSON in its file's metadata.

    Args:
        concepts: concept names (id = index).
        arch: segmentation-models-pytorch architecture ("unet", "fpn", ...).
        encoder: smp encoder name, or "tu-<timm model>".
        encoder_depth: encoder stages used (input size must be divisible by 2**depth).
        decoder_channels: Unet-family decoder widths, one per stage (None: the architecture's default).
        image_size: training resolution; other sizes are resized to it and labels back.
        nc: image channels (1 or 3).
        mean, std: input normalisation applied to images on the [0, 1] scale, per channel
            (0.5/0.5 feeds the [-1, 1] images unchanged; ImageNet values for ImageNet encoder weights).
    """

    concepts: list[str]
    arch: str = DEFAULT_ARCH
    encoder: str = DEFAULT_ENCODER
    encoder_depth: int = DEFAULT_ENCODER_DEPTH
    decoder_channels: list[int] | None = field(default_factory=lambda: list(DEFAULT_DECODER_CHANNELS))
    image_size: int = 64
    nc: int = 3
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def __post_init__(self) -> None:
        if not self.concepts:
            raise GantoolsError("a segmenter needs at least one concept")
        if self.nc not in (1, 3):
            raise GantoolsError(f"nc={self.nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        if len(self.mean) != self.nc or len(self.std) != self.nc:
            self.mean, self.std = list(self.mean[: 1]) * self.nc, list(self.std[: 1]) * self.nc
        if self.image_size % (2 ** self.encoder_depth):
            raise GantoolsError(f"image size {self.image_size} must be divisible by 2**encoder_depth "
                                f"= {2 ** self.encoder_depth}: choose another image_size or a smaller encoder_depth")


@dataclass
class SegmenterTrainConfig(Config):
    """How `train_segmenter` trains (recorded in the segmenter file's "training" metadata).

    Args:
        arch, encoder, encoder_depth, decoder_channels: the network (see SegmenterConfig).
        encoder_weights: an optional local weights file for the encoder (safetensors or torch state
            dict); the input is then normalised with ImageNet statistics. Never downloaded.
        image_size: training resolution (None: the folder's own image size; scenes: 64).
        nc: channels (1 or 3).
        n: scenes to train on (folders use all their images).
        steps, epochs: training length (at most one; default `DEFAULT_STEPS` steps).
        batch_size, lr: Adam with a warm-up and a cosine decay of the learning rate.
        val_n, val_fraction: held-out split size for scenes / folders.
        flip: augment with horizontal flips.
        seed: seed for data, initialisation and batches.
        half: store weights in float16.
    """

    DEFAULT_STEPS = 3000

    arch: str = DEFAULT_ARCH
    encoder: str = DEFAULT_ENCODER
    encoder_weights: str | None = None
    encoder_depth: int = DEFAULT_ENCODER_DEPTH
    decoder_channels: list[int] | None = field(default_factory=lambda: list(DEFAULT_DECODER_CHANNELS))
    image_size: int | None = 64
    nc: int = 3
    n: int = 10000
    steps: int | None = None
    epochs: float | None = None
    batch_size: int = 32
    lr: float = 6e-3
    val_n: int = 500
    val_fraction: float = 0.1
    flip: bool = True
    seed: int = 0
    half: bool = True

    def __post_init__(self) -> None:
        if self.steps is not None and self.epochs is not None:
            raise GantoolsError("give either steps or epochs, not both")
        if self.batch_size < 1 or (self.steps is not None and self.steps < 1) or \
                (self.epochs is not None and self.epochs <= 0):
            raise GantoolsError("batch_size, steps and epochs must be positive")
        if self.nc not in (1, 3):
            raise GantoolsError(f"nc={self.nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        if self.decoder_channels is not None:
            self.decoder_channels = [int(c) for c in self.decoder_channels]
        if self.encoder_weights is not None:
            self.encoder_weights = str(self.encoder_weights)

    def total_steps(self, train_images: int) -> int:
        """Optimisation steps for a training split of this size (steps, or epochs converted)."""
        if self.steps is not None:
            return self.steps
        if self.epochs is not None:
            return max(1, round(self.epochs * math.ceil(train_images / self.batch_size)))
        return self.DEFAULT_STEPS


def parse_decoder_channels(text: str | Sequence[int] | None,
                           encoder_depth: int = DEFAULT_ENCODER_DEPTH) -> list[int] | None:
    """Decoder widths from "64,32,16,16" (one per encoder stage), or None for "default" (the architecture's own)."""
    if text is None or (isinstance(text, str) and text.strip().lower() == "default"):
        return None
    try:
        channels = [int(c) for c in text.split(",") if c.strip()] if isinstance(text, str) else [int(c) for c in text]
    except ValueError:
        raise GantoolsError(f"decoder_channels {text!r}: give integers like 64,32,16,16") from None
    if len(channels) != encoder_depth or min(channels, default=0) < 1:
        raise GantoolsError(f"decoder_channels needs {encoder_depth} positive widths (one per encoder stage), "
                            f"got {text!r}")
    return channels


def eval_defaults(data: str, n: int | None, image_size: int | None, nc: int | None,
                  segmenter_config: Any = None) -> tuple[int | None, int | None, int]:
    """(n, image_size, nc) for evaluating a segmenter on `data`: given values win; else the segmenter's
    training size and channels; scenes are 64 px and `EVAL_SCENES` images; a folder is read whole."""
    size = image_size or getattr(segmenter_config, "image_size", None)
    channels = nc or getattr(segmenter_config, "nc", None) or 3
    if channels not in (1, 3):
        raise GantoolsError(f"nc={channels} is not supported: use 1 (grayscale) or 3 (RGB)")
    if is_scenes(data):
        size, n = size or 64, n or EVAL_SCENES
    return n, size, channels


def is_scenes(data: Any) -> bool:
    """Whether `data` names the built-in scenes (not a folder called "scenes")."""
    return isinstance(data, str) and data == "scenes" and not os.path.exists(data)


__all__ = ["CONFIG_KEY", "DEFAULT_ARCH", "DEFAULT_DECODER_CHANNELS", "DEFAULT_ENCODER", "DEFAULT_ENCODER_DEPTH",
           "EVAL_SCENES", "EVAL_SEED", "IMAGENET_MEAN", "IMAGENET_STD", "SEGMENTER_COMPONENT", "SegmenterConfig",
           "SegmenterTrainConfig", "eval_defaults", "is_scenes", "parse_decoder_channels"]
