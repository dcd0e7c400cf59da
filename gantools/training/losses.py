"""The adversarial losses, the R1 penalty and differentiable augmentation (DiffAugment).

Module-level functions, looked up through this module at every step, so that tests can hook them.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from ..utils import GantoolsError
from .config import LOSSES

# Lazy R1 (StyleGAN2): the penalty is computed on every R1_EVERY-th discriminator step and scaled by
# R1_EVERY, which costs a sixteenth of the work for the same regularisation.
R1_EVERY = 16


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss. BCE-with-logits for "nonsaturating" and "minimax": real images labelled 1, generated
    images 0 (summed, as in the DCGAN example). "hinge": mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's loss on D's logits for its images.

    "nonsaturating": -log D(G(z)) (strong gradients early, when D rejects everything);
    "minimax": log(1 - D(G(z))), the original game's objective;
    "hinge": -D(G(z)), the raw logit (Lim & Ye 2017; SAGAN, BigGAN).
    """
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "minimax":
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    raise GantoolsError(f"unknown loss {kind!r}: use {', '.join(LOSSES)}")


def most_real(fake_logits: torch.Tensor, share: float) -> torch.Tensor:
    """The `share` of the logits that D rates most real, at least one (top-k training, Sinha et al.
    2020: G's loss over these alone, so that its worst samples do not pull it)."""
    flat = fake_logits.flatten()
    return flat if share >= 1 else flat.topk(max(1, round(share * flat.numel()))).values


def r1_penalty(discriminator: Any, real: torch.Tensor) -> torch.Tensor:
    """|grad_x D(x)|^2 on real images, summed over pixels and averaged over the batch (R1, without
    gamma / 2). Differentiable with respect to D's weights (create_graph), so it can be minimised."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def diff_augment(x: torch.Tensor, policy: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Differentiable augmentation (DiffAugment): the same random transforms for real and fake images.

    Random numbers come from torch's global generator, which checkpoints save, so resume stays exact.
    Images are in [-1, 1]; translated-in and cut-out pixels become 0, as in the paper.
    """
    n, c, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=dev, dtype=x.dtype)

    if "color" in policy:
        x = x + (rand(n, 1, 1, 1) - 0.5)  # brightness
        if c > 1:
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean  # saturation
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean  # contrast
    batch = torch.arange(n, device=dev)[:, None, None]
    if "translation" in policy:
        sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
        ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=dev)
        tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=dev)
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        # read from a zero border one pixel wide: indices past the image land on it
        gy = (gy[None] + ty + 1).clamp(0, h + 1)
        gx = (gx[None] + tx + 1).clamp(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
        x = padded[batch, gy, gx].permute(0, 3, 1, 2)
    if "cutout" in policy:
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=dev)
        ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=dev)
        gy, gx = torch.meshgrid(torch.arange(ch, device=dev), torch.arange(cw, device=dev), indexing="ij")
        gy = (gy[None] + oy - ch // 2).clamp(0, h - 1)
        gx = (gx[None] + ox - cw // 2).clamp(0, w - 1)
        mask = torch.ones(n, h, w, device=dev, dtype=x.dtype)
        mask[batch, gy, gx] = 0
        x = x * mask[:, None]
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x.contiguous()


__all__ = ["R1_EVERY", "diff_augment", "discriminator_loss", "generator_loss", "r1_penalty"]
