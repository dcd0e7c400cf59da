"""How much of what D sees is augmented: every image, a fixed share of them, or a share that adapts
to D's overfitting (ADA, Karras et al. 2020).

With a small dataset and no augmentation, D learns the training images by heart: its logits on
held-out real images fall to those of fakes. Augmenting every image keeps D honest but also keeps it
from seeing fine defects. ADA augments each image with probability p and steers p by the overfitting
heuristic r_t = E[sign D(x_real)]: p rises while r_t is above a target (D too sure of the reals) and
falls while it is below.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from .. import distributed
from .losses import diff_augment

# D steps between two adjustments of p (ADA's interval).
ADAPT_INTERVAL = 4
# Real images over which p can move all the way from 0 to 1 (ADA's speed, 500k images).
ADAPT_IMAGES = 500_000


def adapted_p(p: float, overfit: float, target: float, images: int) -> float:
    """ADA's update of the augmentation probability: `p` moves up by images / ADAPT_IMAGES when the
    overfitting measure `overfit` (r_t) is above `target`, down by as much when below; kept in [0, 1]."""
    direction = (overfit > target) - (overfit < target)
    return min(1.0, max(0.0, p + direction * images / ADAPT_IMAGES))


class Augmentation:
    """The augmentation of a run: `policy` (DiffAugment names) applied to each image with probability
    `p`; with `target` > 0, p adapts (see `observe`). Random numbers come from torch's global generator
    (checkpointed), and `state_dict` holds the rest, so a resumed run stays bit-exact. At p = 1 it
    draws exactly what plain DiffAugment draws, and at p = 0 nothing."""

    def __init__(self, policy: Sequence[str], p: float = 1.0, target: float = 0.0) -> None:
        self.policy, self.p, self.target = list(policy), float(p), float(target)
        # since the last adjustment, over all processes: the sum of sign D(x) and the count of reals
        self.totals = torch.zeros(2)
        self.steps = 0  # D steps since the last adjustment

    @property
    def adaptive(self) -> bool:
        return bool(self.policy) and self.target > 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if not self.policy or self.p <= 0:
            return x
        augmented = diff_augment(x, self.policy)
        if self.p >= 1:
            return augmented
        chosen = torch.rand(x.shape[0], 1, 1, 1, device=x.device) < self.p
        return torch.where(chosen, augmented, x)

    def observe(self, real_logits: torch.Tensor) -> None:
        """Count one D step's logits on (augmented) real images; every ADAPT_INTERVAL steps, adjust p
        by the mean sign over those steps. Under torchrun the counts are summed over the processes at
        every step, so every process (and the checkpoint rank 0 writes) holds the same state."""
        if not self.adaptive:
            return
        logits = real_logits.detach().float()
        counts = torch.stack([torch.sign(logits).sum(), logits.new_tensor(float(logits.numel()))])
        self.totals = self.totals.to(counts.device) + distributed.all_reduce_sum(counts)
        self.steps += 1
        if self.steps < ADAPT_INTERVAL:
            return
        overfit, images = float(self.totals[0] / self.totals[1]), int(self.totals[1])
        self.p = adapted_p(self.p, overfit, self.target, images)
        self.totals, self.steps = torch.zeros(2, device=counts.device), 0

    def state_dict(self) -> dict[str, Any]:
        return {"p": self.p, "sign_sum": float(self.totals[0]), "seen": int(self.totals[1]), "steps": self.steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.p, self.steps = float(state["p"]), int(state["steps"])
        self.totals = torch.tensor([float(state["sign_sum"]), float(state["seen"])])
