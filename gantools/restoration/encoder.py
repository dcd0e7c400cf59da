"""Encoders E(x) -> z that give inversion a starting latent (In-Domain GAN Inversion, ECCV 2020).

An encoder is trained for one generator on its own samples (the true z is known, so the latent
error is supervised), and optionally on real images (where only the reconstruction G(E(x)) ≈ x can
be asked for). Inputs are randomly degraded the way inversion shows degraded images to the encoder
(mean-filled holes, noise, grayscale, blurry upsampled low-res), so E also starts inpainting,
denoising, colorization and super-resolution from a sensible latent. Real images can also be
randomly deformed (`deform_for_encoder`): with a few thousand of them, an encoder otherwise learns
those images rather than the mapping, and starts unseen ones much further from their optimum.

It is stored with its model: `<model dir>/encoder.safetensors` (`models.companion_path`), tensors
prefixed "encoder.", its config and the generator's fingerprint in the metadata. `evaluate_encoder`
measures one on fresh generated samples, beside an untrained encoder of the same shape.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from ..data import ImageFolder, batch_images, find_images, open_dataset, split_holdout
from ..defaults import ENCODER_TRAIN
from ..models import (GAN, companion_path, component_state, fingerprint, init_weights, load_model, load_state,
                      read_safetensors, save_safetensors)
from ..types import DeviceSpec
from ..utils import Config, GantoolsError, ProgressCallback, from_uint8, luminance, notice, report, resolve_device
from .objectives import discriminator_features, latent_prior, perceptual_distance
from .search import ENCODER_LR


@dataclass
class EncoderConfig(Config):
    """Architecture of an encoder, and how inversion steps from its start.

    Args:
        image_size, nc, nz: the generator's resolution, channels and latent length.
        width: channels of the first conv block (doubled per block down to 4x4).
        start_rate: the learning-rate factor of inversion's steps from this encoder's start
            (`search.encoder_rate`; files without one use `search.ENCODER_LR`): the nearer an
            encoder lands to the optimum, the smaller the first steps it wants
            (`benchmarks/encoder_start.py --start-rates` measures it).
    """

    image_size: int
    nc: int
    nz: int
    width: int = ENCODER_TRAIN.width
    start_rate: float = ENCODER_LR

    def __post_init__(self) -> None:
        if not 0 < self.start_rate <= 1:
            raise GantoolsError(f"start_rate must be in (0, 1], got {self.start_rate}")


class Encoder(nn.Module):
    """Image (N x nc x S x S, [-1, 1]) -> latent (N x nz).

    Strided convolutions halve the resolution down to 4x4 (as in the DCGAN discriminator), then a
    linear layer maps the flattened features to z.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        blocks: list[nn.Module] = []
        ch, size = config.nc, config.image_size
        out = config.width
        while size > 4:
            blocks += [nn.Conv2d(ch, out, 4, 2, 1, bias=False), nn.BatchNorm2d(out), nn.LeakyReLU(0.2)]
            ch, size, out = out, size // 2, min(out * 2, 512)
        self.features = nn.Sequential(*blocks)
        self.head = nn.Linear(ch * 16, config.nz)
        init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x).flatten(1))


@dataclass
class EncoderTrainResult:
    """What `train_encoder` returns.

    Args:
        encoder: the trained encoder (eval mode).
        history: per logged step: step, latent (MSE of E(G(z)) vs z), pixel (MSE of G(E(x)) vs x on
            the [0, 1] scale, generated images), real_pixel (the same on real images, with data).
        settings: training parameters.
        path: where it was saved, or None.
    """

    encoder: Encoder
    history: list[dict[str, float]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None


EncoderTraining = EncoderTrainResult  # the former name, kept for existing code


@dataclass(frozen=True)
class EncoderLossWeights:
    """Weights of encoder training's terms.

    Args:
        latent: |E(G(z)) - z|^2 (generated images only: their z is known).
        pixel: |G(E(x)) - x|^2.
        perceptual: the discriminator-feature distance between G(E(x)) and x (0 skips it).
        prior: the inversion objective's latent prior (|E(x)|^2 / nz - 1)^2 (real images only), which
            keeps E(x) on the shell where the inversion's optimum lies.
    """

    latent: float = 1.0
    pixel: float = 1.0
    perceptual: float = 0.1
    prior: float = 0.0


def degrade_for_encoder(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Randomly degrade a batch (N x C x S x S, [-1, 1], CPU) the way inversion shows degraded
    inputs to the encoder: a mean-filled rectangular hole, Gaussian noise, grayscale (RGB), or a
    bilinearly upsampled low-res version. Each image keeps its clean self with probability 1 - p."""
    n, c, s, _ = x.shape
    out = x.clone()
    r = torch.rand(n, generator=gen)
    kind = torch.randint(0, 4, (n,), generator=gen)
    for i in range(n):
        if r[i] >= p:
            continue
        k = int(kind[i])
        if k == 0:  # hole with mean fill
            h, w = (torch.randint(s // 4, s // 2 + 1, (2,), generator=gen)).tolist()
            top = torch.randint(0, s - h + 1, (1,), generator=gen).item()
            left = torch.randint(0, s - w + 1, (1,), generator=gen).item()
            known = torch.ones(1, s, s)
            known[:, top:top + h, left:left + w] = 0
            mean = (x[i] * known).flatten(1).sum(1) / known.sum()
            out[i] = x[i] * known + mean[:, None, None] * (1 - known)
        elif k == 1:  # noise, sigma up to 0.2 on the [0, 1] scale
            sigma = 2 * 0.2 * torch.rand(1, generator=gen).item()
            out[i] = (x[i] + sigma * torch.randn(x[i].shape, generator=gen)).clamp(-1, 1)
        elif k == 2 and c == 3:  # grayscale, BT.601
            out[i] = luminance(x[i : i + 1])[0].expand(3, -1, -1)
        else:  # low resolution, shown upsampled
            f = 4 if s >= 16 and torch.rand(1, generator=gen).item() < 0.5 else 2
            low = F.avg_pool2d(x[i : i + 1], f)
            out[i] = F.interpolate(low, scale_factor=f, mode="bilinear", align_corners=False)[0]
    return out


def deform_for_encoder(x: torch.Tensor, gen: torch.Generator, p: float) -> torch.Tensor:
    """Randomly deform a batch (N x C x S x S, [-1, 1], CPU): each image, with probability p, is
    rotated by up to 12 degrees, scaled by up to 10%, sheared by up to 0.15 and shifted by up to 8% of
    its size, edge pixels filling in. Small enough that a digit stays the same digit."""
    n = x.shape[0]
    on = torch.rand(n, generator=gen) < p

    def uniform(limit: float) -> torch.Tensor:
        return (torch.rand(n, generator=gen) * 2 - 1) * limit

    angle, scale, shear = uniform(math.radians(12)), 1 + uniform(0.1), uniform(0.15)
    shift_x, shift_y = uniform(0.16), uniform(0.16)  # affine_grid's coordinates span 2: 8% of the image
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, shear - sin, shift_x], 1), torch.stack([sin, cos, shift_y], 1)], 1)
    theta = torch.where(on[:, None, None], theta, torch.eye(2, 3).expand(n, 2, 3))
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def train_encoder(model: GAN | str | os.PathLike, steps: int = ENCODER_TRAIN.steps,
                  batch_size: int = ENCODER_TRAIN.batch_size, data: Any = None, width: int = ENCODER_TRAIN.width,
                  lr: float = ENCODER_TRAIN.lr, latent_weight: float = ENCODER_TRAIN.latent_weight,
                  pixel_weight: float = ENCODER_TRAIN.pixel_weight,
                  perceptual_weight: float = ENCODER_TRAIN.perceptual_weight, augment: float = ENCODER_TRAIN.augment,
                  deform: float = ENCODER_TRAIN.deform, prior_weight: float = ENCODER_TRAIN.prior_weight,
                  out: str | os.PathLike | None = None, device: DeviceSpec = None, seed: int = ENCODER_TRAIN.seed,
                  progress: ProgressCallback | None = None, init: str | os.PathLike | Encoder | None = None,
                  start_rate: float | None = None) -> EncoderTrainResult:
    """Train an encoder for a generator.

    Args:
        model: a loaded GAN or a model spec.
        steps: optimisation steps.
        batch_size: generated images per step (and real images per step with `data`).
        data: optional real images: a dataset name ("scenes"), a folder, or an ImageDataset (see
            `encoder_dataset` for a folder with held-out images left out).
        width: first conv block's channels.
        lr: Adam learning rate (cosine-decayed).
        latent_weight, pixel_weight, perceptual_weight: weights of |E(G(z)) - z|^2, |G(E(x)) - x|^2
            and the discriminator-feature distance between G(E(x)) and x.
        augment: probability that an input is randomly degraded (see module docstring).
        deform: probability that a real image is randomly deformed first (`deform_for_encoder`): more
            real images than the data holds, for small datasets such as digits.
        prior_weight: weight of the latent prior on E(x) for real images (see `EncoderLossWeights`).
        out: save the encoder here (e.g. `models.companion_path(model_path, "encoder")`).
        device: where to train; None: where a loaded model lives, or 'auto' for a model loaded here.
        seed, progress: as usual.
        init: continue from this encoder (a file or an Encoder; its width replaces `width`) instead
            of a fresh one: a second, lower-rate stage of training.
        start_rate: the trained encoder's `EncoderConfig.start_rate`; None keeps init's, or the default.
    """
    if steps < 1:
        raise GantoolsError(f"steps must be at least 1, got {steps}")
    if batch_size < 2:
        raise GantoolsError(f"batch_size must be at least 2, got {batch_size}")
    if data is None and (deform or prior_weight):
        raise GantoolsError("deform and prior_weight act on real images: give data")
    dev = resolve_device(device, model if isinstance(model, GAN) else None)
    gan = model if isinstance(model, GAN) else load_model(model, dev)
    gan.to(dev)
    G, D = gan.generator.eval(), gan.discriminator.eval()
    for p in list(G.parameters()) + list(D.parameters()):
        p.requires_grad_(False)
    cfg = gan.config
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    if init is None:
        enc = Encoder(EncoderConfig(cfg.image_size, cfg.nc, cfg.nz, width))
    else:
        enc = init if isinstance(init, Encoder) else load_encoder(init, gan, device=dev, progress=progress)
        width = enc.config.width
    if start_rate is not None:
        enc.config = enc.config.replace(start_rate=start_rate)
    enc = enc.to(dev).train()
    dataset = _open_data(data, cfg.image_size, cfg.nc, seed, progress) if data is not None else None
    weights = EncoderLossWeights(latent_weight, pixel_weight, perceptual_weight, prior_weight)
    t0 = time.monotonic()
    history = _fit(gan, enc, dataset, gen, weights, steps=steps, batch_size=batch_size, lr=lr, augment=augment,
                   deform=deform, progress=progress)
    enc.eval()
    settings = {"steps": steps, "batch_size": batch_size, "width": width, "lr": lr, "seed": seed,
                "latent_weight": latent_weight, "pixel_weight": pixel_weight,
                "perceptual_weight": perceptual_weight, "augment": augment, "deform": deform,
                "prior_weight": prior_weight,
                "data": _describe(data), "seconds": round(time.monotonic() - t0, 1),
                "model": str(gan.path) if gan.path else None, "init": _describe(init)}
    result = EncoderTrainResult(enc, history, settings)
    if out is not None:
        result.path = save_encoder(enc, out, gan, settings)
        notice(progress, f"encoder saved to {result.path}")
    return result


def _describe(source: Any) -> str | None:
    """How the settings name a data or init argument: its path, else its type's name (None for None)."""
    if source is None:
        return None
    return str(source) if isinstance(source, (str, Path)) else type(source).__name__


def _fit(gan: GAN, enc: Encoder, dataset: Any, gen: torch.Generator, weights: EncoderLossWeights, *, steps: int,
         batch_size: int, lr: float, augment: float, deform: float,
         progress: ProgressCallback | None) -> list[dict[str, float]]:
    """The training loop: Adam with a cosine-decayed learning rate; returns the logged history."""
    dev = gan.device
    opt = torch.optim.Adam(enc.parameters(), lr=lr, betas=(0.9, 0.999))
    history: list[dict[str, float]] = []
    log_every = max(1, min(50, steps // 20))
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        z = torch.randn(batch_size, gan.config.nz, generator=gen).to(dev)
        loss, latent, pixel = _generated_loss(gan, enc, z, gen, augment, weights)
        real_pixel = None
        if dataset is not None:
            idx = torch.randint(len(dataset), (batch_size,), generator=gen)
            real = from_uint8(batch_images(dataset, idx))
            real = (deform_for_encoder(real, gen, deform) if deform > 0 else real).to(dev)
            loss, rp = _add_real_loss(loss, gan, enc, real, gen, augment, weights)
            real_pixel = float(rp.detach()) / 4
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            rec = {"step": step + 1, "latent": float(latent.detach()), "pixel": float(pixel.detach()) / 4}
            if real_pixel is not None:
                rec["real_pixel"] = real_pixel
            history.append(rec)
            report(progress, "train encoder", step + 1, steps, **{k: v for k, v in rec.items() if k != "step"})
    return history


def _generated_loss(gan: GAN, enc: Encoder, z: torch.Tensor, gen: torch.Generator, augment: float,
                    weights: EncoderLossWeights) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The loss on G(z) (whose z is known): (weighted loss, latent MSE, pixel MSE on the model scale)."""
    G, D = gan.generator, gan.discriminator
    with torch.no_grad():
        x = G(z)
    x_in = degrade_for_encoder(x.cpu(), gen, augment).to(x.device) if augment > 0 else x
    z_hat = enc(x_in)
    x_hat = G(z_hat)
    latent = (z_hat - z).pow(2).mean()
    pixel = (x_hat - x).pow(2).mean()
    loss = weights.latent * latent + weights.pixel * pixel
    if weights.perceptual > 0:
        with torch.no_grad():
            feats = discriminator_features(D, x)
        loss = loss + weights.perceptual * perceptual_distance(D, x_hat, feats).mean()
    return loss, latent, pixel


def _add_real_loss(loss: torch.Tensor, gan: GAN, enc: Encoder, real: torch.Tensor, gen: torch.Generator,
                   augment: float, weights: EncoderLossWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """`loss` plus the reconstruction loss on real images (no z known there); also their pixel MSE."""
    G, D = gan.generator, gan.discriminator
    real_in = degrade_for_encoder(real.cpu(), gen, augment).to(real.device) if augment > 0 else real
    z_hat = enc(real_in)
    real_hat = G(z_hat)
    rp = (real_hat - real).pow(2).mean()
    loss = loss + weights.pixel * rp
    if weights.prior > 0:
        loss = loss + weights.prior * latent_prior(z_hat).mean()
    if weights.perceptual > 0:
        with torch.no_grad():
            rfeats = discriminator_features(D, real)
        loss = loss + weights.perceptual * perceptual_distance(D, real_hat, rfeats).mean()
    return loss, rp


def _open_data(data: Any, image_size: int, nc: int, seed: int, progress: ProgressCallback | None) -> Any:
    if isinstance(data, (str, Path)):
        return open_dataset(data, image_size, nc, n=10000, seed=seed, progress=progress)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise GantoolsError("data must be a dataset name, a folder of images, or a dataset object")
    if getattr(data, "image_size", image_size) != image_size or getattr(data, "nc", nc) != nc:
        raise GantoolsError(f"the data's images are {data.image_size}px with {data.nc} channel(s) but the model "
                            f"makes {image_size}px with {nc}")
    return data


def encoder_dataset(data: str | os.PathLike, image_size: int, nc: int, *, holdout: int = ENCODER_TRAIN.holdout,
                    seed: int = ENCODER_TRAIN.seed, progress: ProgressCallback | None = None) -> Any:
    """The real images to train an encoder on, as `train_encoder(data=...)` takes them.

    Args:
        data: a folder of images (searched recursively) or a built-in dataset name ("scenes").
        image_size, nc: the model's resolution and channels.
        holdout: folders only: leave this many images out, split as `data.split_holdout` splits
            them for training a model (the last by sorted file name, per class folder), so the
            encoder never sees the images a model was evaluated on.
        seed: the training seed; a built-in dataset is drawn with seed + 1, so its images are not
            made from the same random numbers as the generated ones.
        progress: notices (unreadable files...).
    """
    path = Path(data)
    if path.is_dir():
        files, _ = split_holdout(find_images(path), holdout)
        return ImageFolder(path, image_size, nc, files=files, progress=progress)
    if holdout:
        raise GantoolsError("holdout is for a folder of images, not a built-in dataset")
    return open_dataset(str(data), image_size, nc, seed=seed + 1, progress=progress)


def save_encoder(encoder: Encoder, path: str | os.PathLike, gan: GAN | None = None,
                 settings: dict[str, Any] | None = None) -> Path:
    """Write an encoder as safetensors (config, training settings and generator fingerprint in
    metadata); returns the path written."""
    meta: dict[str, Any] = {"encoder_config": encoder.config.to_dict(), "training": settings or {}}
    if gan is not None:
        meta["generator_fingerprint"] = fingerprint(gan.generator)
    return save_safetensors(path, {"encoder": encoder}, meta)


def load_encoder(spec: str | os.PathLike | GAN, gan: GAN | None = None, device: DeviceSpec = None,
                 progress: ProgressCallback | None = None) -> Encoder:
    """Load an encoder in eval mode.

    Args:
        spec: an encoder .safetensors file, or a GAN (its companion encoder.safetensors).
        gan: the model it will be used with: its shape is checked (GantoolsError on mismatch), and a
            notice says when the encoder was trained for different generator weights.
        device: where to put it; None: where `gan` (or the GAN given as spec) lives, else 'auto'.
        progress: receives that notice.
    """
    if isinstance(spec, GAN):
        gan = gan or spec
        path = spec.companion("encoder")
        if path is None:
            where = companion_path(spec.path, "encoder") if spec.path else "beside the model"
            raise GantoolsError(f"this model has no encoder ({where} not found): train one with train_encoder "
                                "(`gantools encoder train`)")
    else:
        path = Path(spec)
    tensors, meta = read_safetensors(path, "encoder")
    if "encoder_config" not in meta:
        raise GantoolsError(f"{path} is not a gantools encoder (no encoder_config in its metadata)")
    config = EncoderConfig.from_dict(meta["encoder_config"])
    enc = Encoder(config)
    load_state(enc, component_state(tensors, "encoder"), "encoder")
    if gan is not None:
        c = gan.config
        if (config.image_size, config.nc, config.nz) != (c.image_size, c.nc, c.nz):
            raise GantoolsError(f"encoder {path} is for {config.image_size}px, nc={config.nc}, nz={config.nz} but the "
                                f"model is {c.image_size}px, nc={c.nc}, nz={c.nz}: train one for it with "
                                "train_encoder (`gantools encoder train`)")
        fp = meta.get("generator_fingerprint")
        if fp and fp != fingerprint(gan.generator):
            notice(progress, f"encoder {path.name} was trained for other generator weights; using it only as a start")
    return enc.to(resolve_device(device, gan)).eval()


def encoder_errors(encoder: Encoder, model: GAN, n: int = 256, seed: int = 12345) -> dict[str, float]:
    """How well an encoder inverts fresh generated samples: latent MSE and pixel MSE ([0, 1] scale).

    The encoder is moved to the model's device and put in eval mode.
    """
    dev = model.device
    z = torch.randn(n, model.config.nz, generator=torch.Generator().manual_seed(seed)).to(dev)
    with torch.no_grad():
        x = model.generator(z)
        z_hat = encoder.to(dev).eval()(x)
        x_hat = model.generator(z_hat)
    return {"latent": float((z_hat - z).pow(2).mean()), "pixel": float((x_hat - x).pow(2).mean() / 4)}


@dataclass
class EncoderEvalResult:
    """What `evaluate_encoder` measured, on `samples` fresh generated samples (seeded by `seed`).

    Args:
        latent_mse, pixel_mse: the encoder's latent MSE and pixel MSE ([0, 1] scale) (see `encoder_errors`).
        untrained_latent_mse, untrained_pixel_mse: the same for an untrained encoder of the same
            architecture, the reference a trained one has to beat.
        samples, seed: the generated samples used.
    """

    latent_mse: float
    pixel_mse: float
    untrained_latent_mse: float
    untrained_pixel_mse: float
    samples: int
    seed: int

    def to_dict(self) -> dict[str, Any]:
        """The numbers as a JSON-ready dict."""
        return asdict(self)


def evaluate_encoder(encoder: Encoder, model: GAN, n: int = 256, seed: int = 12345,
                     untrained_seed: int = 0) -> EncoderEvalResult:
    """How well an encoder inverts fresh generated samples, beside an untrained one of its shape.

    Args:
        encoder: the encoder (moved to the model's device and put in eval mode).
        model: the GAN it inverts.
        n, seed: how many generated samples, and their seed.
        untrained_seed: seeds the untrained encoder's initial weights (torch's global random state
            is left as it was).
    """
    if n < 1:
        raise GantoolsError(f"n must be at least 1, got {n}")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(untrained_seed)
        untrained = Encoder(encoder.config)
    before = encoder_errors(untrained, model, n, seed)
    after = encoder_errors(encoder, model, n, seed)
    return EncoderEvalResult(latent_mse=after["latent"], pixel_mse=after["pixel"],
                             untrained_latent_mse=before["latent"], untrained_pixel_mse=before["pixel"],
                             samples=n, seed=seed)
