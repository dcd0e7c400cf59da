"""Encoders E(x) -> z that give inversion a starting latent (In-Domain GAN Inversion, ECCV 2020).

An encoder is trained for one generator on its own samples (the true z is known, so the latent
error is supervised), and optionally on real images (where only the reconstruction G(E(x)) ≈ x can
be asked for). Inputs are randomly degraded the way inversion shows degraded images to the encoder
(mean-filled holes, noise, grayscale, blurry upsampled low-res), so E also starts inpainting,
denoising, colorization and super-resolution from a sensible latent.

It is stored with its model: `<model dir>/encoder.safetensors` (`models.companion_path`), tensors
prefixed "encoder.", its config and the generator's fingerprint in the metadata.
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

from ..models import (GAN, companion_path, component_state, fingerprint, init_weights, load_model, load_state,
                     read_safetensors, save_safetensors)
from ..utils import GantoolsError, ProgressCallback, from_uint8, get_device, notice, report


@dataclass
class EncoderConfig:
    """Architecture of an encoder.

    Args:
        image_size, nc, nz: the generator's resolution, channels and latent length.
        width: channels of the first conv block (doubled per block down to 4x4).
    """

    image_size: int
    nc: int
    nz: int
    width: int = 32

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "EncoderConfig":
        return cls(**{k: d[k] for k in ("image_size", "nc", "nz", "width") if k in d})


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
class EncoderTraining:
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


def _degrade_for_encoder(x: torch.Tensor, gen: torch.Generator, p: float = 0.5) -> torch.Tensor:
    """Randomly degrade a batch the way inversion shows degraded inputs to the encoder: a
    mean-filled rectangular hole, Gaussian noise, grayscale (RGB), or a bilinearly upsampled
    low-res version. Each image keeps its clean self with probability 1 - p."""
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
            top, left = torch.randint(0, s - h + 1, (1,), generator=gen).item(), torch.randint(0, s - w + 1, (1,), generator=gen).item()
            known = torch.ones(1, s, s)
            known[:, top:top + h, left:left + w] = 0
            mean = (x[i] * known).flatten(1).sum(1) / known.sum()
            out[i] = x[i] * known + mean[:, None, None] * (1 - known)
        elif k == 1:  # noise, sigma up to 0.2 on the [0, 1] scale
            sigma = 2 * 0.2 * torch.rand(1, generator=gen).item()
            out[i] = (x[i] + sigma * torch.randn(x[i].shape, generator=gen)).clamp(-1, 1)
        elif k == 2 and c == 3:  # grayscale, BT.601
            from ..utils import luminance

            out[i] = luminance(x[i : i + 1])[0].expand(3, -1, -1)
        else:  # low resolution, shown upsampled
            f = 4 if s >= 16 and torch.rand(1, generator=gen).item() < 0.5 else 2
            low = F.avg_pool2d(x[i : i + 1], f)
            out[i] = F.interpolate(low, scale_factor=f, mode="bilinear", align_corners=False)[0]
    return out


def train_encoder(model: GAN | str | os.PathLike, steps: int = 2000, batch_size: int = 64,
                  data: Any = None, width: int = 32, lr: float = 1e-3, latent_weight: float = 1.0,
                  pixel_weight: float = 1.0, perceptual_weight: float = 0.1, augment: float = 0.5,
                  out: str | os.PathLike | None = None, device: str | torch.device = "cpu", seed: int = 0,
                  progress: ProgressCallback | None = None) -> EncoderTraining:
    """Train an encoder for a generator.

    Args:
        model: a loaded GAN or a model spec.
        steps: optimisation steps.
        batch_size: generated images per step (and real images per step with `data`).
        data: optional real images: a dataset name ("scenes"), a folder, or an ImageDataset.
        width: first conv block's channels.
        lr: Adam learning rate (cosine-decayed).
        latent_weight, pixel_weight, perceptual_weight: weights of |E(G(z)) - z|^2, |G(E(x)) - x|^2
            and the discriminator-feature distance between G(E(x)) and x.
        augment: probability that an input is randomly degraded (see module docstring).
        out: save the encoder here (e.g. `models.companion_path(model_path, "encoder")`).
        device, seed, progress: as usual.
    """
    from .inversion import discriminator_features, perceptual_distance

    if steps < 1 or batch_size < 2:
        raise GantoolsError("encoder training needs steps >= 1 and batch size >= 2")
    dev = get_device(device)
    gan = model if isinstance(model, GAN) else load_model(model, dev)
    gan.to(dev)
    G, D = gan.generator.eval(), gan.discriminator.eval()
    for p in list(G.parameters()) + list(D.parameters()):
        p.requires_grad_(False)
    cfg = gan.config
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    enc = Encoder(EncoderConfig(cfg.image_size, cfg.nc, cfg.nz, width)).to(dev).train()
    dataset = _open_data(data, cfg.image_size, cfg.nc, seed, progress) if data is not None else None
    opt = torch.optim.Adam(enc.parameters(), lr=lr, betas=(0.9, 0.999))
    history: list[dict[str, float]] = []
    t0 = time.monotonic()
    log_every = max(1, min(50, steps // 20))
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * step / steps)))
        z = torch.randn(batch_size, cfg.nz, generator=gen).to(dev)
        with torch.no_grad():
            x = G(z)
        x_in = _degrade_for_encoder(x.cpu(), gen, augment).to(dev) if augment > 0 else x
        z_hat = enc(x_in)
        x_hat = G(z_hat)
        latent = (z_hat - z).pow(2).mean()
        pixel = (x_hat - x).pow(2).mean()
        loss = latent_weight * latent + pixel_weight * pixel
        if perceptual_weight > 0:
            with torch.no_grad():
                feats = discriminator_features(D, x)
            loss = loss + perceptual_weight * perceptual_distance(D, x_hat, feats).mean()
        real_pixel = None
        if dataset is not None:
            from ..data import batch_images

            idx = torch.randint(len(dataset), (batch_size,), generator=gen)
            xr = from_uint8(batch_images(dataset, idx)).to(dev)
            xr_in = _degrade_for_encoder(xr.cpu(), gen, augment).to(dev) if augment > 0 else xr
            xr_hat = G(enc(xr_in))
            rp = (xr_hat - xr).pow(2).mean()
            loss = loss + pixel_weight * rp
            if perceptual_weight > 0:
                with torch.no_grad():
                    rfeats = discriminator_features(D, xr)
                loss = loss + perceptual_weight * perceptual_distance(D, xr_hat, rfeats).mean()
            real_pixel = float(rp.detach()) / 4
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step % log_every == 0 or step == steps - 1:
            rec = {"step": step + 1, "latent": float(latent.detach()), "pixel": float(pixel.detach()) / 4}
            if real_pixel is not None:
                rec["real_pixel"] = real_pixel
            history.append(rec)
            metrics = {k: v for k, v in rec.items() if k != "step"}
            report(progress, "train encoder", step + 1, steps, **metrics)
    enc.eval()
    settings = {"steps": steps, "batch_size": batch_size, "width": width, "lr": lr, "seed": seed,
                "latent_weight": latent_weight, "pixel_weight": pixel_weight,
                "perceptual_weight": perceptual_weight, "augment": augment,
                "data": str(data) if isinstance(data, (str, Path)) else (type(data).__name__ if data is not None else None),
                "seconds": round(time.monotonic() - t0, 1), "model": str(gan.path) if gan.path else None}
    result = EncoderTraining(enc, history, settings)
    if out is not None:
        result.path = save_encoder(enc, out, gan, settings)
        notice(progress, f"encoder saved to {result.path}")
    return result


def _open_data(data: Any, image_size: int, nc: int, seed: int, progress: ProgressCallback | None):
    if isinstance(data, (str, Path)):
        from ..data import open_dataset

        return open_dataset(data, image_size, nc, n=10000, seed=seed, progress=progress)
    if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
        raise GantoolsError("data must be a dataset name, a folder of images, or a dataset object")
    if getattr(data, "image_size", image_size) != image_size or getattr(data, "nc", nc) != nc:
        raise GantoolsError(f"the data's images are {data.image_size}px with {data.nc} channel(s) but the model "
                            f"makes {image_size}px with {nc}")
    return data


def save_encoder(encoder: Encoder, path: str | os.PathLike, gan: GAN | None = None,
                 settings: dict[str, Any] | None = None) -> Path:
    """Write an encoder as safetensors (config, training settings and generator fingerprint in metadata)."""
    meta: dict[str, Any] = {"encoder_config": encoder.config.to_dict(), "training": settings or {}}
    if gan is not None:
        meta["generator_fingerprint"] = fingerprint(gan.generator)
    return save_safetensors(path, {"encoder": encoder}, meta)


def load_encoder(spec: str | os.PathLike | GAN, gan: GAN | None = None, device: str | torch.device = "cpu",
                 progress: ProgressCallback | None = None) -> Encoder:
    """Load an encoder in eval mode.

    Args:
        spec: an encoder .safetensors file, or a GAN (its companion encoder.safetensors).
        gan: the model it will be used with: its shape is checked (GantoolsError on mismatch), and a
            notice says when the encoder was trained for different generator weights.
        device: where to put it.
        progress: receives that notice.
    """
    if isinstance(spec, GAN):
        gan = gan or spec
        path = spec.companion("encoder")
        if path is None:
            where = companion_path(spec.path, "encoder") if spec.path else "beside the model"
            raise GantoolsError(f"this model has no encoder ({where} not found): run `gantools encoder train --model ...`")
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
                                f"model is {c.image_size}px, nc={c.nc}, nz={c.nz}: train one with `gantools encoder train`")
        fp = meta.get("generator_fingerprint")
        if fp and fp != fingerprint(gan.generator):
            notice(progress, f"encoder {path.name} was trained for other generator weights; using it only as a start")
    return enc.to(get_device(device)).eval()


def encoder_errors(encoder: Encoder, model: GAN, n: int = 256, seed: int = 12345) -> dict[str, float]:
    """How well an encoder inverts fresh generated samples: latent MSE and pixel MSE ([0, 1] scale)."""
    dev = model.device
    z = torch.randn(n, model.config.nz, generator=torch.Generator().manual_seed(seed)).to(dev)
    with torch.no_grad():
        x = model.generator(z)
        z_hat = encoder.to(dev).eval()(x)
        x_hat = model.generator(z_hat)
    return {"latent": float((z_hat - z).pow(2).mean()), "pixel": float((x_hat - x).pow(2).mean() / 4)}
