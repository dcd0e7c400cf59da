"""The terms of the inversion objective, and the discriminator features they (and encoder training) use.

    objective(z) = NLL(A(G(z)) | y, sigma)                      pixel term (`gaussian_nll`)
                 + w_perceptual * D-feature distance             `perceptual_distance`, the model's own D
                 + w_prior * (|z|^2 / nz - 1)^2                  `latent_prior`

Every function returns one number per image (N,), so a batch of independent latents can be
optimised together. This module knows nothing of degradations, inversion or encoders: they import it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from ..utils import Config


@dataclass
class ObjectiveWeights(Config):
    """Weights of the objective's terms (the pixel NLL has weight 1).

    Args:
        perceptual: discriminator-feature distance (per layer, normalised by the target's energy).
        prior: (|z|^2 / nz - 1)^2, the squared relative deviation from the norm of N(0, I) samples.
        features: layer-wise only: mean squared feature correction relative to the layer's energy.
    """

    perceptual: float = 0.5
    prior: float = 1.0
    features: float = 0.05


@dataclass
class ObjectiveTerms:
    """Every term of the objective for a batch of latents (each N,), and the images they make.

    Args:
        total: the weighted sum that is minimised.
        pixel: Gaussian NLL of the observation, per observed value.
        perceptual: discriminator-feature distance to the observation.
        prior: latent norm prior.
        mse: mean squared error over observed values on the [0, 1] scale (detached; for reports and
            the noise-level stopping rule).
        raw: G's output, N x C x S x S.
        correction: layer-wise only: the feature correction's relative energy.
    """

    total: torch.Tensor
    pixel: torch.Tensor
    perceptual: torch.Tensor
    prior: torch.Tensor
    mse: torch.Tensor
    raw: torch.Tensor
    correction: torch.Tensor | None = None

    def losses(self) -> dict[str, torch.Tensor]:
        """The per-image loss terms by name (what `InversionResult.losses` holds), detached."""
        out = {"total": self.total, "pixel": self.pixel, "perceptual": self.perceptual, "prior": self.prior,
               "mse": self.mse}
        if self.correction is not None:
            out["correction"] = self.correction
        return {key: value.detach() for key, value in out.items()}


def masked_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    """Mean of each image's values (N x ...) where `weight` (N|1 x 1 x H x W, 1 = counted) is set: (N,)."""
    if weight is None:
        return values.flatten(1).mean(1)
    w = weight.expand_as(values)
    return (values * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-8)


def gaussian_nll(pred: torch.Tensor, obs: torch.Tensor, sigma: float | torch.Tensor,
                 weight: torch.Tensor | None = None) -> torch.Tensor:
    """Mean Gaussian negative log-likelihood per observed value, one number per image.

    Args:
        pred, obs: N x C x H x W (same scale as sigma).
        sigma: standard deviation, a number or one per image (N,).
        weight: optional N|1 x 1 x H x W mask of observed values (1 = observed).
    """
    sigma_t = torch.as_tensor(sigma, dtype=pred.dtype, device=pred.device).reshape(-1, 1, 1, 1)
    nll = 0.5 * ((pred - obs) / sigma_t) ** 2 + torch.log(sigma_t) + 0.5 * math.log(2 * math.pi)
    return masked_mean(nll, weight)


def discriminator_features(discriminator: torch.nn.Module, images: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of every discriminator block for images in [-1, 1]."""
    _, feats = discriminator(images, return_features=True)
    return feats


def perceptual_distance(discriminator: torch.nn.Module, images: torch.Tensor,
                        target_features: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean over D's blocks of the squared feature difference, each normalised by the target's
    mean squared activation (so every block counts alike): one number per image (N,)."""
    feats = discriminator_features(discriminator, images)
    total = images.new_zeros(images.shape[0])
    for f, t in zip(feats, target_features):
        energy = t.pow(2).flatten(1).mean(1).clamp_min(1e-8)
        total = total + (f - t).pow(2).flatten(1).mean(1) / energy
    return total / max(len(feats), 1)


def latent_prior(z: torch.Tensor) -> torch.Tensor:
    """(|z|^2 / nz - 1)^2 per latent: zero on the shell where N(0, I) samples concentrate."""
    return (z.pow(2).mean(1) - 1) ** 2
