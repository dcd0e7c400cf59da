"""The latent search behind `invert`: for one batch of degraded images, find the latents whose
degraded images match them.

Several restarts per image are folded into one batch and optimised together with Adam (each
latent's objective is independent, so batching does not change the result); the restart with the
lowest final objective wins (`search_restarts`). Restarts begin at E(x) when there is an encoder,
then at the best of many random latents (`starting_latents`); the encoder's start, already near an
optimum, takes smaller steps. `refine_layerwise` then optimises the winner together with an additive
correction to the features of one generator layer (through a `hooks.Trace` edit), which reaches
details outside the generator's range; for noisy inputs that refinement stops when the residual
reaches the noise level (discrepancy principle), since beyond it the extra freedom reproduces the noise.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Callable, Sequence

import torch
from torch import nn

from ..hooks import Trace, layer_output
from ..models import GAN
from .degradations import Degradation
from .objectives import ObjectiveTerms, ObjectiveWeights, latent_prior, perceptual_distance

# The layer-wise refinement starts next to an optimum: it takes smaller steps than the z-only search.
LAYERWISE_LR = 0.25
# So does the encoder's start: at the full rate its first moves overshoot the optimum it lands next to.
# An encoder can carry its own factor (`EncoderConfig.start_rate`): the nearer it lands, the smaller.
ENCODER_LR = 0.25
# Random candidates are scored this many at a time, so that memory stays bounded for large init_samples.
START_CHUNK = 256

# Called after every optimisation step with the step number and that step's terms (progress reports).
StepCallback = Callable[[int, ObjectiveTerms], None]


@dataclass(frozen=True)
class Schedule:
    """How the latents of each image are searched (the same for every batch).

    Args:
        steps: Adam steps of the z-only search.
        restarts: starting points per image, optimised together; the lowest final objective wins.
        lr: Adam learning rate (cosine-decayed to 10%); the encoder's start takes a fraction of it
            (`encoder_rate`: a quarter unless the encoder says), since it begins next to an optimum.
        init_samples: random starts are the best `restarts` of this many random latents per image.
        seed: random starts are seeded per image (image index and seed), so batching changes nothing.
        layer: canonical name of the layer whose features the layer-wise refinement corrects, or None.
        layer_steps: steps of that refinement.
    """

    steps: int
    restarts: int
    lr: float
    init_samples: int
    seed: int
    layer: str | None = None
    layer_steps: int = 0

    @property
    def steps_per_batch(self) -> int:
        """Optimisation steps one batch takes (the z-only search and the refinement)."""
        return self.steps + (self.layer_steps if self.layer is not None else 0)


@dataclass
class FeatureEdit:
    """An additive correction `delta` to the output of generator layer `layer`; `energy` (N,) is the
    layer's mean squared activation per image, the scale the correction's penalty is measured on."""

    layer: str
    delta: torch.Tensor
    energy: torch.Tensor


@dataclass
class Objective:
    """The objective for one row of latents per observation: the model, the operator, the
    observations (N x ...) and the discriminator features of what they look like at generator size."""

    gan: GAN
    degradation: Degradation
    observed: torch.Tensor
    target_features: Sequence[torch.Tensor]
    weights: ObjectiveWeights

    def rows(self, index: torch.Tensor) -> "Objective":
        """The objective for observations `index` (repeated rows give several latents one image)."""
        on_device = index.to(self.observed.device)
        return Objective(self.gan, self.degradation.select(index), self.observed[on_device],
                         [f[on_device] for f in self.target_features], self.weights)

    def terms(self, z: torch.Tensor, edit: FeatureEdit | None = None) -> ObjectiveTerms:
        """Every term of the objective for latents z (one per row), and the images they make."""
        G = self.gan.generator
        if edit is not None:
            with Trace(G, edit.layer, retain_output=False, edit_output=lambda out, _n: out + edit.delta):
                raw = G(z)
        else:
            raw = G(z)
        deg = self.degradation
        pred = deg.observe(raw)
        pixel = deg.pixel_loss(pred, self.observed)
        perceptual = perceptual_distance(self.gan.discriminator, deg.view(pred), self.target_features)
        prior = latent_prior(z)
        total = pixel + self.weights.perceptual * perceptual + self.weights.prior * prior
        correction = None
        if edit is not None:
            correction = edit.delta.pow(2).flatten(1).mean(1) / edit.energy
            total = total + self.weights.features * correction
        return ObjectiveTerms(total=total, pixel=pixel, perceptual=perceptual, prior=prior,
                              mse=deg.mse(pred, self.observed).detach(), raw=raw, correction=correction)


@dataclass
class SearchOutcome:
    """The winning latent of each image of a batch, and how it got there.

    Args:
        z: B x nz, the winner.
        raw: G's output for it (with the feature correction, for the layer-wise refinement).
        losses: its final terms by name (total, pixel, perceptual, prior, mse[, correction]).
        history: (steps + 1) x B, the best objective over restarts before each step, then the final one.
        init_loss, restart_losses, best_restart: z-only: the objective at the winner's start, the final
            objective of every restart (B x K), and the winner's index.
        features: layer-wise: the layer's output for z plus the optimised correction.
    """

    z: torch.Tensor
    raw: torch.Tensor
    losses: dict[str, torch.Tensor]
    history: torch.Tensor
    init_loss: torch.Tensor | None = None
    restart_losses: torch.Tensor | None = None
    best_restart: torch.Tensor | None = None
    features: torch.Tensor | None = None

    def cpu(self) -> "SearchOutcome":
        """The same outcome with every tensor on the CPU."""
        moved = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, dict):
                value = {key: v.cpu() for key, v in value.items()}
            elif isinstance(value, torch.Tensor):
                value = value.cpu()
            moved[f.name] = value
        return SearchOutcome(**moved)


def starting_latents(objective: Objective, encoder: nn.Module | None, seen: torch.Tensor, index: torch.Tensor,
                     schedule: Schedule) -> torch.Tensor:
    """K = schedule.restarts starting latents per image (B*K x nz): E(x) first when there is an
    encoder, then the best of `init_samples` random latents by objective. Image i's random latents
    come from its own seed (seed and i = index[b]), so they do not depend on the batch."""
    nz = objective.gan.config.nz
    k, dev = schedule.restarts, objective.observed.device
    bsz = objective.observed.shape[0]
    out = torch.empty(bsz, k, nz, device=dev)
    first = 0
    if encoder is not None:
        out[:, 0] = encoder(seen).reshape(bsz, nz)
        first = 1
    n_random = k - first
    if n_random > 0:
        m = max(schedule.init_samples, n_random)
        cand = torch.stack([torch.randn(m, nz, generator=torch.Generator().manual_seed(schedule.seed * 1_000_003 + int(i)))
                            for i in index]).to(dev)  # B x m x nz
        rep = torch.arange(bsz).repeat_interleave(m)
        scores = []
        for chunk in torch.arange(bsz * m).split(START_CHUNK):
            terms = objective.rows(rep[chunk]).terms(cand.reshape(-1, nz)[chunk.to(dev)])
            scores.append(terms.total)
        order = torch.cat(scores).view(bsz, m).argsort(1)[:, :n_random]
        out[:, first:] = torch.gather(cand, 1, order[:, :, None].expand(-1, -1, nz))
    return out.reshape(bsz * k, nz)


def encoder_rate(encoder: nn.Module) -> float:
    """The learning-rate factor of an encoder's start: its config's `start_rate`, else ENCODER_LR."""
    return float(getattr(getattr(encoder, "config", None), "start_rate", ENCODER_LR))


def search_restarts(objective: Objective, encoder: nn.Module | None, seen: torch.Tensor, index: torch.Tensor,
                    schedule: Schedule, tick: StepCallback) -> SearchOutcome:
    """The z-only search for a batch: every restart optimised at once, the lowest final objective wins.

    Args:
        objective: the batch's objective (one row per image).
        encoder: gives the first start from `seen` (the observations at generator size), or None.
        index: the images' indices in the whole input (their random starts' seeds).
        schedule: steps, restarts, learning rate and starts.
        tick: called after each step.
    """
    k, steps = schedule.restarts, schedule.steps
    bsz = objective.observed.shape[0]
    dev = objective.observed.device
    per_latent = objective.rows(torch.arange(bsz).repeat_interleave(k))  # latent j belongs to image j // k
    with torch.no_grad():
        z0 = starting_latents(objective, encoder, seen, index, schedule)
        init_terms = per_latent.terms(z0)
    # z = z0 + rate * offset: Adam's steps do not depend on the gradient's scale, so each row's
    # `rate` scales its learning rate (`encoder_rate` for the encoder's start, 1 for random starts).
    rate = torch.ones(bsz, k, 1, device=dev)
    if encoder is not None:
        rate[:, 0] = encoder_rate(encoder)
    rate = rate.reshape(bsz * k, 1)
    offset = torch.zeros_like(z0, requires_grad=True)
    history = adam([(offset, schedule.lr)], lambda: per_latent.terms(z0 + rate * offset), steps, tick)
    with torch.no_grad():
        z = z0 + rate * offset
        final = per_latent.terms(z)
    totals = final.total.view(bsz, k)
    best = totals.argmin(1)
    pick = torch.arange(bsz, device=dev) * k + best.to(dev)
    return SearchOutcome(z=z[pick], raw=final.raw[pick],
                         losses={key: v[pick] for key, v in final.losses().items()},
                         history=torch.cat([history.view(steps, bsz, k), totals[None]]).amin(2),
                         init_loss=init_terms.total[pick], restart_losses=totals, best_restart=best)


def refine_layerwise(objective: Objective, z_start: torch.Tensor, schedule: Schedule,
                     tick: StepCallback) -> SearchOutcome:
    """Optimise z and an additive correction to `schedule.layer`'s features, from the z-only winner.

    Where the degradation knows its noise level, each image stops once its residual reaches it.
    """
    layer, lr = schedule.layer, schedule.lr
    G = objective.gan.generator
    with torch.no_grad():
        base = layer_output(G, layer, z_start)
    energy = base.pow(2).flatten(1).mean(1).clamp_min(1e-8)
    z = z_start.clone().requires_grad_(True)
    edit = FeatureEdit(layer, torch.zeros_like(base, requires_grad=True), energy)
    # The features live on their own scale; step them in proportion to the layer's typical activation.
    feat_lr = lr * float(energy.sqrt().mean())
    floor = objective.degradation.noise_floor()
    stop = None if floor is None else (lambda terms: terms.mse <= floor.to(terms.mse.device))
    history = adam([(z, lr * LAYERWISE_LR), (edit.delta, feat_lr * LAYERWISE_LR)], lambda: objective.terms(z, edit),
                   schedule.layer_steps, tick, stop)
    with torch.no_grad():
        final = objective.terms(z, edit)
        features = layer_output(G, layer, z) + edit.delta
    return SearchOutcome(z=z.detach(), raw=final.raw.detach(), losses=final.losses(),
                         history=torch.cat([history, final.total[None]]), features=features.detach())


def adam(groups: Sequence[tuple[torch.Tensor, float]], objective: Callable[[], ObjectiveTerms], steps: int,
         tick: StepCallback, stop: Callable[[ObjectiveTerms], torch.Tensor] | None = None) -> torch.Tensor:
    """Adam on the summed per-latent objectives, cosine-decaying each group's learning rate to 10%.

    Adam's update is elementwise and each latent only affects its own term, so every latent follows
    the trajectory it would follow alone. Every parameter has one row per latent; on return each row
    holds the best iterate seen for its latent (Adam may overshoot at the end of a run), or, with
    `stop`, the first iterate for which stop(terms) is True (that latent is frozen from then on).
    Returns the objective before each step: steps x N.
    """
    params = [p for p, _ in groups]
    opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in groups])
    best = _BestIterates(params, stop)
    history = []
    for step in range(steps):
        f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))  # big moves first, then settle
        for group, (_, lr) in zip(opt.param_groups, groups):
            group["lr"] = lr * f
        terms = objective()
        total = terms.total.detach()
        best.update(terms)
        opt.zero_grad(set_to_none=True)
        terms.total.sum().backward()
        opt.step()
        best.hold_frozen()
        history.append(total)
        tick(step, terms)
    with torch.no_grad():  # the last step's result, if it beats every earlier iterate
        best.finish(objective().total)
    return torch.stack(history) if history else torch.empty(0)


class _BestIterates:
    """Per latent row: the best iterate seen so far, and (with a stop rule) the rows frozen for good."""

    def __init__(self, params: Sequence[torch.Tensor], stop: Callable[[ObjectiveTerms], torch.Tensor] | None) -> None:
        self.params, self.stop = params, stop
        self.best = [p.detach().clone() for p in params]
        self.best_total: torch.Tensor | None = None
        self.done: torch.Tensor | None = None

    @torch.no_grad()
    def update(self, terms: ObjectiveTerms) -> None:
        """Keep the current iterate of every row that improved (or that has just met the stop rule)."""
        total = terms.total.detach()
        if self.done is None:
            self.done = torch.zeros_like(total, dtype=torch.bool)
        done = self.done
        better = ~done if self.best_total is None else (total < self.best_total) & ~done
        if self.stop is not None:
            better |= self.stop(terms) & ~done
            self.done = done | better & self.stop(terms)
        self.best_total = total.clone() if self.best_total is None else torch.where(better, total, self.best_total)
        for b, p in zip(self.best, self.params):
            b[better] = p.detach()[better]

    @torch.no_grad()
    def hold_frozen(self) -> None:
        """Put frozen rows back where they stopped (Adam's momentum would move them)."""
        for b, p in zip(self.best, self.params):
            p[self.done] = b[self.done]

    @torch.no_grad()
    def finish(self, total: torch.Tensor) -> None:
        """Leave each row at the final iterate if that beats every earlier one, else at its best."""
        if self.best_total is None:
            better = torch.ones_like(total, dtype=torch.bool)
        else:
            better = (total < self.best_total) & ~self.done
        for b, p in zip(self.best, self.params):
            p[~better] = b[~better]
