"""GAN inversion with a degradation inside the loss: reconstruction, inpainting, colorization,
denoising and super-resolution with the generator as the image prior.

The user passes the real *degraded* image y. We look for a latent z whose image G(z), degraded by
the same operator A, matches y:

    objective(z) = NLL(A(G(z)) | y, sigma)                      pixel term (Gaussian, per observed value)
                 + w_perceptual * D-feature distance             perceptual term, the model's own discriminator
                 + w_prior * (|z|^2 / nz - 1)^2                  keeps z on the shell where N(0, I) samples live

This module holds `invert`, which reads the inputs, then searches batch by batch and assembles the
result. The parts live beside it:

- `degradations`: the operators A (identity, mask, luminance, noise, area downsampling);
- `observations`: reading degraded inputs, masks and clean targets of any size and mode;
- `objectives`: the terms above;
- `search`: restarts optimised together with Adam, their starts, and the layer-wise refinement;
- `result`: `InversionResult`, scoring against clean images and classical baselines, output files.

Pixel scales: models work in [-1, 1]; noise sigmas are given on the [0, 1] scale (as scikit-image
does) and doubled for the model's scale.

Under torchrun (`gantools.distributed`) every process reads the inputs and inverts its own contiguous
block of the batches a single process would run (so each batch, and each image's seeded starts, are
the same, and so are the results, bit for bit); `on_batch` sees that process's batches, and the
returned result, gathered from all processes, covers every image.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn

from .. import distributed
from ..defaults import INVERT
from ..hooks import layer_name
from ..models import GAN, fingerprint, load_model
from ..types import DeviceSpec, ImageSource
from ..utils import GantoolsError, ProgressCallback, notice, report, resolve_device
from .baselines import mean_chroma
from .degradations import TASKS, Colorize, Degradation, SuperResolution, estimate_noise_sigma, make_degradation
from .encoder import Encoder, load_encoder
from .objectives import ObjectiveTerms, ObjectiveWeights, discriminator_features
from .observations import Observations, load_mask, load_observations, load_targets
from .result import InversionResult, score, warn_if_worse
from .search import Objective, Schedule, SearchOutcome, StepCallback, refine_layerwise, search_restarts

# These names lived here before the package was split; they stay importable from this module for
# the code written against it (the CLI, `gantools._EXPORTS`, figures). New code imports them from
# `gantools.restoration` or the module named.
from .degradations import DEFAULT_PIXEL_SIGMA, Denoise, Inpaint, Reconstruct  # noqa: F401  (re-exported)
from .result import compare_strip, save_outputs  # noqa: F401  (re-exported)

__all__ = ["DEFAULT_PIXEL_SIGMA", "TASKS", "Colorize", "Degradation", "Denoise", "Inpaint", "InversionResult",
           "InversionSettings", "ObjectiveWeights", "Reconstruct", "SuperResolution", "compare_strip",
           "discriminator_features", "invert", "make_degradation", "save_outputs"]

# Images whose mean chroma is the colorization baseline's colour prior (seeded samples of the model).
CHROMA_SAMPLES = 256
CHROMA_SEED = 0


@dataclass(frozen=True)
class InversionSettings:
    """What `invert` was asked to do, besides the inputs.

    Args:
        task: reconstruct, inpaint, colorize, denoise or superres.
        schedule: how each image's latents are searched.
        weights: the objective's weights.
        composite: paste known information back into the results.
        batch_size: images per batch.
        scale: superres factor (recorded for superres only).
    """

    task: str
    schedule: Schedule
    weights: ObjectiveWeights
    composite: bool
    batch_size: int
    scale: int

    def init_kinds(self, encoder: nn.Module | None) -> list[str]:
        """How each restart starts: "encoder" (the first, when there is one), then "random"."""
        k = self.schedule.restarts
        return ((["encoder"] if encoder is not None else []) + ["random"] * k)[:k]


@dataclass
class InversionInputs:
    """The inputs, read and checked before any optimisation.

    Args:
        observations: the degraded images as the model sees them.
        degradation: the task's operator, for every image.
        noise_sigma: denoise: each image's noise sigma ([0, 1] scale), given or estimated.
        mask: inpaint: the hole at generator resolution (N|1 x 1 x S x S, 1 = missing).
        clean: the clean targets for scoring, aligned with the images, or None.
    """

    observations: Observations
    degradation: Degradation
    noise_sigma: torch.Tensor | None = None
    mask: torch.Tensor | None = None
    clean: list[torch.Tensor | None] | None = None


@dataclass
class BatchOutcome:
    """One batch's results, on the CPU: the z-only winner and, when it ran, the layer-wise one."""

    seen: torch.Tensor
    search: SearchOutcome
    images: torch.Tensor
    layerwise: SearchOutcome | None = None
    layer_images: torch.Tensor | None = None


def invert(model: GAN | str | os.PathLike, images: ImageSource | Sequence[str | os.PathLike],
           task: str = INVERT.task, *,
           mask: str | os.PathLike | torch.Tensor | None = None, scale: int = INVERT.scale,
           noise_sigma: float | Sequence[float] | None = None, steps: int = INVERT.steps,
           restarts: int = INVERT.restarts, layerwise: int | str | None = None, layer_steps: int | None = None,
           composite: bool = INVERT.composite, encoder: str | os.PathLike | Encoder | None = "auto",
           target: ImageSource | None = None, names: Sequence[str] | None = None,
           batch_size: int = INVERT.batch_size, lr: float = INVERT.lr, weights: ObjectiveWeights | None = None,
           init_samples: int = INVERT.init_samples, device: DeviceSpec = None, seed: int = INVERT.seed,
           progress: ProgressCallback | None = None,
           on_batch: Callable[[InversionResult], None] | None = None,
           targets: ImageSource | None = None) -> InversionResult:
    """Find latents whose degraded images match the given degraded images, and restore them.

    Args:
        model: a loaded GAN or a model spec (file, run directory, pretrained name).
        images: the degraded inputs: image paths and folders, or a tensor N x C x H x W (uint8 or [-1, 1]).
            Converted to the generator's channels and resolution (superres: exactly size / scale).
        task: reconstruct, inpaint, colorize, denoise or superres.
        mask: inpaint: PNG path or tensor with the inputs' size, nonzero = missing (one for all, or
            N x 1 x H x W).
        scale: superres factor.
        noise_sigma: denoise: noise std on the [0, 1] scale; estimated per image when None.
        steps: Adam steps of the z-only optimisation.
        restarts: K starting points per image, optimised together; the lowest final objective wins.
        layerwise: also refine the features of this generator layer (number or name).
        layer_steps: steps of the layer-wise refinement (default: steps).
        composite: paste known information back (inpaint: known pixels; colorize: input luminance;
            superres: each block's mean made the input pixel's).
        encoder: "auto" (the model's companion encoder.safetensors if present), a path, an Encoder,
            or None for random starts only.
        target: clean images (a file for one input, a folder matched by stem, paths, or a tensor)
            aligned with `images`. Each result is then scored (PSNR/SSIM, see `score`) beside the
            degraded input itself and the task's classical baseline (`restoration.baselines`), and a
            notice warns when the result is worse than either.
        names: stems for tensor inputs.
        batch_size: images per batch (each with `restarts` latents).
        lr: Adam learning rate (cosine-decayed to 10%); the encoder's start takes a fraction of it
            (its `start_rate`, a quarter by default), since it begins next to an optimum.
        weights: objective weights.
        init_samples: random starts are the best `restarts` of this many random latents per image.
        device: where to run; None: where a loaded model lives, or 'auto' (CUDA when present)
            for a model that is loaded here.
        seed: random starts are seeded per image, so results do not depend on batching.
        progress: progress callback (notices: resized inputs, estimated sigmas, results worse than
            the input or the baseline).
        on_batch: called with each batch's result (an InversionResult of that batch's images,
            scored when a target is given) as soon as it is done, e.g. `lambda part: part.save(out)`, so
            a long run that is stopped keeps its finished batches.
        targets: the former spelling of `target` (deprecated).
    """
    target = _target_keyword(target, targets)
    if task not in TASKS:
        raise GantoolsError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    for name, value in (("steps", steps), ("restarts", restarts), ("batch_size", batch_size)):
        if value < 1:
            raise GantoolsError(f"{name} must be at least 1, got {value}")
    dev = distributed.local_device(resolve_device(device, model if isinstance(model, GAN) else None))
    distributed.start(dev)
    gan = model if isinstance(model, GAN) else load_model(model, dev)
    gan.to(dev)
    G, D = gan.generator.eval(), gan.discriminator.eval()
    layer = _check_model(gan, task, scale, layerwise)
    schedule = Schedule(steps=steps, restarts=restarts, lr=lr, init_samples=init_samples, seed=seed, layer=layer,
                        layer_steps=steps if layer_steps is None else layer_steps)
    settings = InversionSettings(task=task, schedule=schedule, weights=weights or ObjectiveWeights(),
                                 composite=composite, batch_size=batch_size, scale=scale)
    inputs = _read_inputs(gan, images, settings, names=names, mask=mask, noise_sigma=noise_sigma, target=target,
                          progress=progress)
    enc = _resolve_encoder(encoder, gan, dev, progress)
    with _frozen(G, D, enc):
        return _run(gan, enc, settings, inputs, dev, progress, on_batch)


def _target_keyword(target: ImageSource | None, targets: ImageSource | None) -> ImageSource | None:
    """`target`, or the deprecated `targets` (with a DeprecationWarning)."""
    if targets is None:
        return target
    if target is not None:
        raise GantoolsError("give target (the clean images), not both target and targets")
    warnings.warn("invert(targets=...) is now invert(target=...)", DeprecationWarning, stacklevel=3)
    return targets


def _check_model(gan: GAN, task: str, scale: int, layerwise: int | str | None) -> str | None:
    """Fail early, before reading files, when the model cannot do the task; the refined layer's name."""
    cfg = gan.config
    if task == "colorize":
        Colorize(cfg.image_size, cfg.nc)  # raises for a grayscale model
    if task == "superres":
        SuperResolution(cfg.image_size, cfg.nc, scale)  # raises for a scale that does not fit the model
    layer = layer_name(gan.generator, layerwise) if layerwise is not None else None
    if layer == "output":
        raise GantoolsError(f"layerwise needs a hidden layer (1..{cfg.num_layers}), not the output")
    return layer


def _read_inputs(gan: GAN, images: ImageSource | Sequence[str | os.PathLike], settings: InversionSettings, *,
                 names: Sequence[str] | None, mask: str | os.PathLike | torch.Tensor | None,
                 noise_sigma: float | Sequence[float] | None, target: ImageSource | None,
                 progress: ProgressCallback | None) -> InversionInputs:
    """Read the degraded images, the clean targets and the mask, and build the task's operator."""
    cfg, task = gan.config, settings.task
    obs_set = load_observations(images, cfg.image_size, cfg.nc, task, settings.scale, names, progress)
    n = obs_set.images.shape[0]
    clean = None
    if target is not None:  # read them now: a wrong path should fail before the optimisation, not after
        clean = load_targets(target, obs_set.names, cfg.image_size, cfg.nc, progress)
    hole = None
    if task == "inpaint":
        if mask is None:
            raise GantoolsError("inpainting needs a mask (nonzero pixels = missing)")
        hole = load_mask(mask, [tuple(o.shape[-2:]) for o in obs_set.originals], cfg.image_size)
        if hole.shape[0] not in (1, n):
            raise GantoolsError(f"{hole.shape[0]} masks for {n} images: give one mask, or one per image")
    sigma = _noise_sigmas(obs_set.images, noise_sigma, progress) if task == "denoise" else None
    deg = make_degradation(task, cfg.image_size, cfg.nc, mask=hole, scale=settings.scale, noise_sigma=sigma)
    return InversionInputs(obs_set, deg, noise_sigma=sigma, mask=hole, clean=clean)


def _noise_sigmas(observed: torch.Tensor, noise_sigma: float | Sequence[float] | None,
                  progress: ProgressCallback | None) -> torch.Tensor:
    """One noise sigma per image: the given one(s), or estimated from each image (with a notice)."""
    n = observed.shape[0]
    if noise_sigma is None:
        sigma = estimate_noise_sigma(observed)
        notice(progress, "estimated noise sigma ([0,1] scale): "
               + ", ".join(f"{s:.3f}" for s in sigma[:8]) + (" ..." if n > 8 else ""))
        return sigma
    sigma = torch.as_tensor(noise_sigma, dtype=torch.float32).reshape(-1)
    if len(sigma) not in (1, n):
        raise GantoolsError(f"{len(sigma)} noise sigmas for {n} images: give one, or one per image")
    return sigma.expand(n).clone()


def _resolve_encoder(encoder: str | os.PathLike | Encoder | None, gan: GAN, device: torch.device,
                     progress: ProgressCallback | None) -> Encoder | None:
    """The encoder to start from: given, found beside the model ("auto"), loaded from a path, or None."""
    if encoder is None or encoder is False:
        return None
    if isinstance(encoder, Encoder):
        return encoder.to(device).eval()
    if isinstance(encoder, str) and encoder == "auto":
        path = gan.companion("encoder")
        if path is None:
            return None
        return load_encoder(path, gan, device=device, progress=progress)
    return load_encoder(encoder, gan, device=device, progress=progress)


@contextlib.contextmanager
def _frozen(*modules: nn.Module | None) -> Iterator[None]:
    """No gradients for the networks' weights while inverting (only latents are optimised); restored after."""
    params = [p for m in modules if m is not None for p in m.parameters()]
    saved = [p.requires_grad for p in params]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, r in zip(params, saved):
            p.requires_grad_(r)


# ---------------------------------------------------------------------------------------------
# The batches


def _run(gan: GAN, enc: Encoder | None, settings: InversionSettings, inputs: InversionInputs, dev: torch.device,
         progress: ProgressCallback | None, on_batch: Callable[[InversionResult], None] | None) -> InversionResult:
    """Invert batch by batch (under torchrun, this process's block of the batches), handing each
    finished batch to `on_batch`, and score against clean targets; the result covers every image."""
    n = len(inputs.observations.names)
    part = distributed.world().shard_batches(n, settings.batch_size) if distributed.active() else range(n)
    starts = range(part.start, part.stop, settings.batch_size)
    counter = _StepCounter(progress, len(starts) * settings.schedule.steps_per_batch)
    clean = inputs.clean
    # The colorization baseline's domain colours: the mean chroma of the model's own samples.
    chroma = _model_chroma(gan, dev) if clean is not None and settings.task == "colorize" else None
    outcomes: list[BatchOutcome] = []
    metrics: list[dict[str, Any]] = []
    for b, start in enumerate(starts):
        index = torch.arange(start, min(part.stop, start + settings.batch_size))
        outcomes.append(_invert_batch(gan, enc, settings, inputs, index, dev, counter.batch(b)))
        if on_batch is not None:  # e.g. write this batch's files now, so a killed run keeps them
            done = _result(gan, enc, settings, inputs, outcomes[-1:], start)
            if clean is not None:
                done.metrics = score(done, clean[start:start + len(index)], progress, chroma=chroma)
                metrics += done.metrics
                warn_if_worse(done, progress)
            on_batch(done)
    mine = _result(gan, enc, settings, inputs, outcomes, part.start) if outcomes else None
    if clean is not None and on_batch is None and mine is not None:  # else scored batch by batch already
        metrics = mine.metrics = score(mine, clean[part.start:part.stop], progress, chroma=chroma)
        warn_if_worse(mine, progress)
    if distributed.active():
        gathered = distributed.gather_objects((outcomes, metrics))
        outcomes = [o for rank_outcomes, _ in gathered for o in rank_outcomes]
        metrics = [m for _, rank_metrics in gathered for m in rank_metrics]
        mine = _result(gan, enc, settings, inputs, outcomes, 0)
    assert mine is not None  # alone, there is at least one image
    if clean is not None:
        mine.metrics = metrics
    return mine


class _StepCounter:
    """Counts optimisation steps over all batches and reports them (every 10th step of a search)."""

    def __init__(self, progress: ProgressCallback | None, total: int) -> None:
        self.progress, self.total, self.done = progress, total, 0

    def batch(self, b: int) -> Callable[[int, int], StepCallback]:
        """For batch b: a maker of step callbacks for a search of `steps` steps with `restarts` rows per image."""
        def search(steps: int, restarts: int) -> StepCallback:
            def tick(step: int, terms: ObjectiveTerms) -> None:
                self.done += 1
                if step % 10 == 0 or step == steps - 1:
                    loss = float(terms.total.detach().view(-1, restarts).amin(1).mean())  # best restart per image
                    report(self.progress, "invert", self.done, self.total, loss=loss, batch=b + 1)
            return tick
        return search


def _invert_batch(gan: GAN, enc: Encoder | None, settings: InversionSettings, inputs: InversionInputs,
                  index: torch.Tensor, dev: torch.device, ticker: Callable[[int, int], StepCallback]) -> BatchOutcome:
    """The z-only search for images `index`, then (when asked) the layer-wise refinement of the winners."""
    schedule = settings.schedule
    obs = inputs.observations.images[index].to(dev)
    deg = inputs.degradation.select(index)
    seen = deg.view(obs)
    with torch.no_grad():
        target_feats = [f.detach() for f in discriminator_features(gan.discriminator, seen)]
    objective = Objective(gan, deg, obs, target_feats, settings.weights)
    found = search_restarts(objective, enc, seen, index, schedule, ticker(schedule.steps, schedule.restarts))
    images = deg.finish(found.raw, obs, settings.composite).clamp(-1, 1).cpu()
    if schedule.layer is None:
        return BatchOutcome(seen.cpu(), found.cpu(), images)
    refined = refine_layerwise(objective, found.z, schedule, ticker(schedule.layer_steps, 1))
    layer_images = deg.finish(refined.raw, obs, settings.composite).clamp(-1, 1).cpu()
    return BatchOutcome(seen.cpu(), found.cpu(), images, refined.cpu(), layer_images)


def _model_chroma(gan: GAN, dev: torch.device) -> torch.Tensor:
    """Per-pixel mean chroma of CHROMA_SAMPLES seeded samples of the model (1 x 3 x S x S, CPU)."""
    G = gan.generator
    z = G.sample_z(CHROMA_SAMPLES, CHROMA_SEED, device=dev)
    with torch.no_grad():
        images = torch.cat([G(chunk).clamp(-1, 1).cpu() for chunk in z.split(64)])
    return mean_chroma(images)


# ---------------------------------------------------------------------------------------------
# The result


def _result(gan: GAN, enc: Encoder | None, settings: InversionSettings, inputs: InversionInputs,
            outcomes: Sequence[BatchOutcome], start: int) -> InversionResult:
    """The result for the images of `outcomes` (consecutive batches), the first of them image `start`."""
    end = start + sum(len(o.images) for o in outcomes)
    obs_set, hole = inputs.observations, inputs.mask
    found = [o.search for o in outcomes]
    layered = settings.schedule.layer is not None
    refined = [o.layerwise for o in outcomes] if layered else []
    per_image_mask = hole is not None and hole.shape[0] > 1
    return InversionResult(
        task=settings.task, names=obs_set.names[start:end], observed=obs_set.images[start:end],
        seen=torch.cat([o.seen for o in outcomes]), z=torch.cat([s.z for s in found]),
        raw=torch.cat([s.raw for s in found]), images=torch.cat([o.images for o in outcomes]),
        losses=_cat_losses([s.losses for s in found]), init_loss=torch.cat([s.init_loss for s in found]),
        restart_losses=torch.cat([s.restart_losses for s in found]),
        best_restart=torch.cat([s.best_restart for s in found]), init=settings.init_kinds(enc),
        history=torch.cat([s.history for s in found], 1),
        layer=settings.schedule.layer,
        layer_z=torch.cat([r.z for r in refined]) if layered else None,
        features=torch.cat([r.features for r in refined]) if layered else None,
        layer_raw=torch.cat([r.raw for r in refined]) if layered else None,
        layer_images=torch.cat([o.layer_images for o in outcomes]) if layered else None,
        layer_losses=_cat_losses([r.losses for r in refined]) if layered else None,
        layer_history=torch.cat([r.history for r in refined], 1) if layered else None,
        settings=_settings_record(gan, enc, settings, inputs, start, end),
        originals=obs_set.originals[start:end], missing=hole[start:end] if per_image_mask else hole,
        sources=obs_set.sources[start:end],
    )


def _cat_losses(parts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def _settings_record(gan: GAN, enc: Encoder | None, settings: InversionSettings, inputs: InversionInputs,
                     start: int, end: int) -> dict[str, Any]:
    """`InversionResult.settings` for images start..end: the parameters used, JSON-ready."""
    schedule, task, sigma = settings.schedule, settings.task, inputs.noise_sigma
    return {"model": str(gan.path) if gan.path else None, "model_fingerprint": fingerprint(gan.generator),
            "task": task, "steps": schedule.steps, "restarts": schedule.restarts, "layerwise": schedule.layer,
            "layer_steps": schedule.layer_steps if schedule.layer else None, "composite": settings.composite,
            "encoder": enc is not None, "lr": schedule.lr, "seed": schedule.seed,
            "weights": settings.weights.to_dict(), "init_samples": schedule.init_samples,
            "batch_size": settings.batch_size, "scale": settings.scale if task == "superres" else None,
            "noise_sigma": [float(s) for s in sigma[start:end]] if sigma is not None else None,
            "resized": inputs.observations.resized[start:end], "degradation": inputs.degradation.describe()}
