"""Image-quality numbers on the [0, 1] intensity scale, and sample-quality metrics (FID, KID, precision/recall).

PSNR and SSIM use scikit-image with data_range=1, whatever range the models use inside.
"""

from __future__ import annotations

import numpy as np
import torch

from .utils import to_unit


def _unit_numpy(image: torch.Tensor) -> np.ndarray:
    """C x H x W in [-1, 1] -> H x W x C float64 in [0, 1]."""
    return to_unit(image.detach().float().cpu()).permute(1, 2, 0).numpy().astype(np.float64)


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB between two C x H x W images in [-1, 1], on the [0, 1] scale."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _unit_numpy(image), _unit_numpy(target)
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(image: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity between two C x H x W images in [-1, 1], on the [0, 1] scale."""
    from skimage.metrics import structural_similarity

    a, b = _unit_numpy(image), _unit_numpy(target)
    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2  # odd window that fits small images
    return float(structural_similarity(b, a, data_range=1.0, channel_axis=2, win_size=win))
