"""The architecture of a DCGAN pair (`ModelConfig`), without torch.

It lives apart from `models` (the networks and the model file) so that reading its defaults costs no
torch import: the CLI builds its `--help` from them, and `training.TrainConfig` extends it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .utils import Config, GantoolsError

SUPPORTED_SIZES = (16, 32, 64, 128)
# How D normalises its hidden layers: BatchNorm (the DCGAN paper), spectral normalisation of every
# convolution (Miyato et al. 2018; no BatchNorm), or nothing. A model file always holds plain weights:
# a spectral-norm D is saved with the normalisation folded in (see models.fold_spectral_norm).
D_NORMS = ("batch", "spectral", "none")


@dataclass
class ModelConfig(Config):
    """Architecture of a DCGAN pair.

    Args:
        image_size: side of the square images, one of 16, 32, 64, 128.
        nc: image channels, 1 (grayscale) or 3 (RGB).
        nz: length of the latent vector z.
        ngf: generator width (channels of its last hidden layer).
        ndf: discriminator width (channels of its first layer).
        d_norm: D's normalisation, one of D_NORMS ("batch" for files written before it existed).
    """

    image_size: int = 64
    nc: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    d_norm: str = "batch"

    def __post_init__(self) -> None:
        if self.image_size not in SUPPORTED_SIZES:
            raise GantoolsError(f"image size {self.image_size} is not supported: choose one of {SUPPORTED_SIZES}")
        if self.nc not in (1, 3):
            raise GantoolsError(f"nc={self.nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        for name in ("nz", "ngf", "ndf"):
            if getattr(self, name) < 1:
                raise GantoolsError(f"{name} must be positive, got {getattr(self, name)}")
        if self.d_norm not in D_NORMS:
            raise GantoolsError(f"unknown d_norm {self.d_norm!r}: use {', '.join(D_NORMS)}")

    @property
    def num_layers(self) -> int:
        """K, the number of hidden blocks: a 4x4 start doubled K-1 times, then the output doubles once more."""
        return int(math.log2(self.image_size)) - 2


__all__ = ["D_NORMS", "SUPPORTED_SIZES", "ModelConfig"]
