"""The latent search's step sizes, on a quadratic objective whose gradient is known: Adam's first
step moves every coordinate by exactly its learning rate, so each start's rate can be read off."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch
from torch import nn

from gantools.restoration.objectives import ObjectiveTerms
from gantools.restoration.search import ENCODER_LR, Schedule, search_restarts
from gantools.utils import GantoolsError

NZ = 6


class Quadratic:
    """The objective |z - goal|^2 for every row, shaped like `search.Objective` for search_restarts."""

    def __init__(self, rows: int, goal: float = 50.0) -> None:
        self.observed = torch.zeros(rows, 1, 2, 2)
        self.gan = SimpleNamespace(config=SimpleNamespace(nz=NZ))
        self.goal = goal

    def rows(self, index: torch.Tensor) -> "Quadratic":
        return Quadratic(len(index), self.goal)

    def terms(self, z: torch.Tensor, edit=None) -> ObjectiveTerms:
        total = (z - self.goal).pow(2).sum(1)
        zero = torch.zeros_like(total)
        return ObjectiveTerms(total=total, pixel=total, perceptual=zero, prior=zero, mse=zero.detach(),
                              raw=torch.zeros(len(z), 1, 2, 2))


class FixedEncoder(nn.Module):
    """E(x) = the same latent for every image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.full((x.shape[0], NZ), 0.5)


def first_step(encoder: nn.Module | None, restarts: int) -> torch.Tensor:
    """Each image's winner after one step from far below the goal: how far it moved, per coordinate."""
    schedule = Schedule(steps=1, restarts=restarts, lr=0.2, init_samples=restarts, seed=0)
    objective = Quadratic(rows=3)
    seen = torch.zeros(3, 1, 2, 2)
    start = search_restarts(objective, encoder, seen, torch.arange(3), Schedule(
        steps=0, restarts=restarts, lr=0.2, init_samples=restarts, seed=0), lambda step, terms: None)
    moved = search_restarts(objective, encoder, seen, torch.arange(3), schedule, lambda step, terms: None)
    return moved.z - start.z


def test_the_encoder_start_takes_a_quarter_of_the_rate():
    step = first_step(FixedEncoder(), restarts=1)  # the encoder's start is the only one
    assert torch.allclose(step, torch.full_like(step, 0.2 * ENCODER_LR), atol=1e-5)
    assert ENCODER_LR == 0.25


def test_an_encoder_can_carry_its_own_start_rate():
    from gantools.restoration.encoder import Encoder, EncoderConfig
    from gantools.restoration.search import encoder_rate

    assert encoder_rate(FixedEncoder()) == ENCODER_LR  # no config: the default
    assert encoder_rate(Encoder(EncoderConfig(8, 1, NZ))) == ENCODER_LR
    careful = FixedEncoder()
    careful.config = EncoderConfig(8, 1, NZ, start_rate=0.1)
    step = first_step(careful, restarts=1)
    assert torch.allclose(step, torch.full_like(step, 0.2 * 0.1), atol=1e-5)
    with pytest.raises(GantoolsError, match="start_rate"):
        EncoderConfig(8, 1, NZ, start_rate=0.0)


def test_random_starts_take_the_full_rate():
    step = first_step(None, restarts=2)
    assert torch.allclose(step, torch.full_like(step, 0.2), atol=1e-5)
