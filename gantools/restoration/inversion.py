"""GAN inversion with a degradation inside the loss: reconstruction, inpainting, colorization,
denoising and super-resolution with the generator as the image prior.

The user passes the real *degraded* image y. We look for a latent z whose image G(z), degraded by
the same operator A, matches y:

    objective(z) = NLL(A(G(z)) | y, sigma)                      pixel term (Gaussian, per observed value)
                 + w_perceptual * D-feature distance             perceptual term, the model's own discriminator
                 + w_prior * (|z|^2 / nz - 1)^2                  keeps z on the shell where N(0, I) samples live

A is identity (reconstruct), a pixel mask (inpaint), BT.601 luminance (colorize), identity with known
Gaussian noise (denoise: the NLL uses the noise sigma, so the optimiser knows how far to trust pixels)
or area downsampling (superres). Several restarts per image are folded into one batch and optimised
together with Adam (each latent's objective is independent, so batching does not change the
result); the restart with the lowest final objective wins. With `layerwise`, the winner is refined
further by optimising z together with an additive correction to the features of one generator layer
(through a `hooks.Trace` edit), which reaches details outside the generator's range; for noisy
inputs that refinement stops when the residual reaches the noise level (discrepancy principle), since
beyond it the extra freedom reproduces the noise.

Pixel scales: models work in [-1, 1]; noise sigmas are given on the [0, 1] scale (as scikit-image
does) and doubled for the model's scale.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..hooks import Trace, layer_name, layer_output
from ..models import GAN, load_model
from ..utils import GantoolsError, ProgressCallback, from_uint8, get_device, luminance, notice, report, to_uint8, \
    transfer_luminance

if TYPE_CHECKING:
    from .encoder import Encoder

TASKS = ("reconstruct", "inpaint", "colorize", "denoise", "superres")


# Gaussian sigma (model scale) of the pixel term for tasks without a noise model: how far a good
# reconstruction typically is from the image. Denoising replaces it by the noise's own sigma.
DEFAULT_PIXEL_SIGMA = 0.1
# The layer-wise refinement starts next to an optimum: it takes smaller steps than the z-only search.
LAYERWISE_LR = 0.25

ImageSource = torch.Tensor | Sequence[str | os.PathLike]


# ---------------------------------------------------------------------------------------------
# Degradation operators. Each maps generator images (N x C x S x S, [-1, 1]) to the observation
# space of the user's image, differentiably.


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
    return _masked_mean(nll, weight)


def _masked_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.flatten(1).mean(1)
    w = weight.expand_as(values)
    return (values * w).flatten(1).sum(1) / w.flatten(1).sum(1).clamp_min(1e-8)


def _rows(t: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-image parameters: a single row is shared by every image, otherwise rows are indexed."""
    return t if t.shape[0] == 1 else t[index.to(t.device)]


class Degradation:
    """Base class: the identity operator (used by `reconstruct`).

    Subclasses override `observe` (A), `view` (an observation shown in image space: what the
    encoder and the perceptual loss see), `finish` (the output image from G's raw output) and
    `select` (per-image parameters for a subset of the batch).
    """

    task = "reconstruct"

    def __init__(self, image_size: int, nc: int) -> None:
        self.image_size, self.nc = image_size, nc

    @property
    def obs_size(self) -> int:
        """Side of the observation the user passes."""
        return self.image_size

    @property
    def obs_channels(self) -> int:
        return self.nc

    def sigma_model(self) -> float | torch.Tensor:
        """Sigma of the Gaussian pixel term on the model's [-1, 1] scale (a number or one per image)."""
        return DEFAULT_PIXEL_SIGMA

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        """A(x): degrade generator images into the observation space."""
        return x

    def noise_floor(self) -> torch.Tensor | None:
        """Expected mean squared residual ([0, 1] scale) of a perfect fit, when the observation is noisy.

        Layer-wise refinement stops each image there (Morozov's discrepancy principle): past that
        point it would start reproducing the noise.
        """
        return None

    def weight(self) -> torch.Tensor | None:
        """Mask of observed values (N|1 x 1 x h x w, 1 = known), or None when all are observed."""
        return None

    def pixel_loss(self, pred: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Gaussian NLL of the observation given A(G(z)), per observed value: (N,)."""
        w = self.weight()
        return gaussian_nll(pred, obs, self.sigma_model(), None if w is None else w.to(pred.device))

    def mse(self, pred: torch.Tensor, obs: torch.Tensor) -> torch.Tensor:
        """Mean squared error over observed values on the [0, 1] scale: (N,)."""
        w = self.weight()
        return _masked_mean(((pred - obs) / 2) ** 2, None if w is None else w.to(pred.device))

    def view(self, obs: torch.Tensor) -> torch.Tensor:
        """The observation as an image at generator resolution (encoder input, perceptual loss, display)."""
        return obs

    def finish(self, raw: torch.Tensor, obs: torch.Tensor, composite: bool = True) -> torch.Tensor:
        """The restored image from G's raw output (compositing known information back when asked)."""
        return raw

    def select(self, index: torch.Tensor) -> "Degradation":
        """The same operator for images `index` of the batch (per-image masks and sigmas follow)."""
        return self

    def describe(self) -> dict[str, Any]:
        return {"task": self.task}


class Reconstruct(Degradation):
    """Identity: plain inversion."""


class Inpaint(Degradation):
    """Missing pixels: the loss sees only known pixels; known pixels are composited back.

    Args:
        image_size, nc: generator resolution and channels.
        missing: N|1 x 1 x S x S, nonzero = missing (the hole).
    """

    task = "inpaint"

    def __init__(self, image_size: int, nc: int, missing: torch.Tensor) -> None:
        super().__init__(image_size, nc)
        missing = _as_mask(missing)
        if missing.shape[-2:] != (image_size, image_size):
            raise GantoolsError(f"mask is {missing.shape[-1]}x{missing.shape[-2]} but the images are "
                                f"{image_size}x{image_size}")
        self.known = (missing == 0).float()
        if (self.known.flatten(1).sum(1) == 0).any():
            raise GantoolsError("the mask covers the whole image: nothing is known to invert from")

    def weight(self) -> torch.Tensor:
        return self.known

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.known.to(x.device)

    def view(self, obs: torch.Tensor) -> torch.Tensor:
        # Mean fill: the hole takes the mean colour of the known pixels, a neutral guess for the encoder.
        known = self.known.to(obs.device)
        mean = (obs * known).flatten(2).sum(2) / known.flatten(2).sum(2).clamp_min(1)
        return obs * known + mean[:, :, None, None] * (1 - known)

    def finish(self, raw: torch.Tensor, obs: torch.Tensor, composite: bool = True) -> torch.Tensor:
        if not composite:
            return raw
        known = self.known.to(raw.device)
        return obs * known + raw * (1 - known)

    def select(self, index: torch.Tensor) -> "Inpaint":
        out = Inpaint.__new__(Inpaint)
        out.image_size, out.nc, out.known = self.image_size, self.nc, _rows(self.known, index)
        return out

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "missing_fraction": float(1 - self.known.mean())}


class Colorize(Degradation):
    """Grayscale observation: the loss compares BT.601 luminance; the output keeps the input's
    luminance exactly and takes its colour (YCbCr chroma) from G(z)."""

    task = "colorize"

    def __init__(self, image_size: int, nc: int) -> None:
        if nc != 3:
            raise GantoolsError("colorize needs an RGB model (nc=3); this model makes grayscale images "
                                "(use --task reconstruct, inpaint, denoise or superres)")
        super().__init__(image_size, nc)

    @property
    def obs_channels(self) -> int:
        return 1

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return luminance(x)

    def view(self, obs: torch.Tensor) -> torch.Tensor:
        return obs.expand(-1, 3, -1, -1)

    def finish(self, raw: torch.Tensor, obs: torch.Tensor, composite: bool = True) -> torch.Tensor:
        if not composite:
            return raw
        return transfer_luminance(raw, obs)


class Denoise(Degradation):
    """Additive Gaussian noise of known sigma ([0, 1] scale, one per image or shared).

    The pixel term is the Gaussian NLL with sigma_model = 2 * sigma (the model's [-1, 1] scale).
    Layer-wise refinement stops for an image once its residual's mean square reaches sigma^2.
    """

    task = "denoise"

    def __init__(self, image_size: int, nc: int, sigma: float | Sequence[float] | torch.Tensor) -> None:
        super().__init__(image_size, nc)
        sigma_t = torch.as_tensor(sigma, dtype=torch.float32).reshape(-1)
        if (sigma_t <= 0).any() or not torch.isfinite(sigma_t).all():
            raise GantoolsError(f"noise sigma must be positive (on the [0, 1] scale, e.g. 0.1), got {sigma}")
        self.sigma = sigma_t

    def sigma_model(self) -> torch.Tensor:
        return 2 * self.sigma

    def noise_floor(self) -> torch.Tensor:
        return self.sigma**2

    def select(self, index: torch.Tensor) -> "Denoise":
        return Denoise(self.image_size, self.nc, _rows(self.sigma, index))

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "sigma": [float(s) for s in self.sigma]}


class SuperResolution(Degradation):
    """Low-resolution observation: G(z) is area-downsampled by `scale` (mean of scale x scale blocks)."""

    task = "superres"

    def __init__(self, image_size: int, nc: int, scale: int = 4) -> None:
        super().__init__(image_size, nc)
        valid = [s for s in (2, 4, 8, 16) if image_size // s >= 2 and image_size % s == 0]
        if scale not in valid:
            raise GantoolsError(f"scale {scale} does not fit a {image_size}px generator: use one of {valid}")
        self.scale = scale

    @property
    def obs_size(self) -> int:
        return self.image_size // self.scale

    def observe(self, x: torch.Tensor) -> torch.Tensor:
        return F.avg_pool2d(x, self.scale)

    def view(self, obs: torch.Tensor) -> torch.Tensor:
        return F.interpolate(obs, scale_factor=self.scale, mode="bilinear", align_corners=False)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "scale": self.scale}


def _as_mask(mask: torch.Tensor) -> torch.Tensor:
    """Any H x W, C x H x W or N x C x H x W mask -> N x 1 x H x W float (nonzero anywhere = 1)."""
    m = torch.as_tensor(mask)
    if m.dim() == 2:
        m = m[None, None]
    elif m.dim() == 3:
        m = m[:, None] if m.shape[0] != 1 else m[None]
    if m.dim() != 4:
        raise GantoolsError(f"a mask must be H x W (or N x 1 x H x W), got shape {tuple(m.shape)}")
    return (m != 0).any(1, keepdim=True).float()


def make_degradation(task: str, image_size: int, nc: int, *, mask: torch.Tensor | None = None, scale: int = 4,
                     noise_sigma: float | Sequence[float] | torch.Tensor | None = None) -> Degradation:
    """The operator for a task.

    Args:
        task: reconstruct, inpaint, colorize, denoise or superres.
        image_size, nc: the generator's resolution and channels.
        mask: inpaint only, nonzero = missing, at generator resolution.
        scale: superres only, the downsampling factor.
        noise_sigma: denoise only, noise std on the [0, 1] scale (one or one per image).
    """
    if task not in TASKS:
        raise GantoolsError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if task == "inpaint":
        if mask is None:
            raise GantoolsError("inpainting needs a mask (--mask MASK.png, nonzero pixels = missing)")
        return Inpaint(image_size, nc, mask)
    if task == "colorize":
        return Colorize(image_size, nc)
    if task == "denoise":
        if noise_sigma is None:
            raise GantoolsError("denoising needs the noise sigma (or let invert() estimate it)")
        return Denoise(image_size, nc, noise_sigma)
    if task == "superres":
        return SuperResolution(image_size, nc, scale)
    return Reconstruct(image_size, nc)


def estimate_noise_sigma(images: torch.Tensor) -> torch.Tensor:
    """Gaussian noise std of each image on the [0, 1] scale (scikit-image's wavelet estimator).

    Args:
        images: N x C x H x W in [-1, 1].
    """
    try:
        import pywt  # noqa: F401  (scikit-image's estimator needs PyWavelets)
        from skimage.restoration import estimate_sigma
    except ImportError:
        estimate_sigma = None

    out = []
    for img in ((images.detach().float().cpu() + 1) / 2).clamp(0, 1):
        arr = img.permute(1, 2, 0).numpy().astype(np.float64)
        if estimate_sigma is None:
            s = float(np.mean([_haar_mad_sigma(arr[:, :, c]) for c in range(arr.shape[2])]))
        elif arr.shape[2] == 1:
            s = estimate_sigma(arr[:, :, 0])
        else:
            s = estimate_sigma(arr, channel_axis=-1, average_sigmas=True)
        out.append(max(float(s), 1e-3))  # a clean image estimates ~0; keep the NLL finite
    return torch.tensor(out)


def _haar_mad_sigma(channel: np.ndarray) -> float:
    """Donoho's robust estimator on the finest diagonal Haar subband (what scikit-image does with db2)."""
    h, w = channel.shape[0] // 2 * 2, channel.shape[1] // 2 * 2
    c = channel[:h, :w]
    hh = (c[0::2, 0::2] - c[0::2, 1::2] - c[1::2, 0::2] + c[1::2, 1::2]) / 2
    return float(np.median(np.abs(hh)) / 0.6745)


# ---------------------------------------------------------------------------------------------
# Inputs: files of any size and mode, or tensors.


@dataclass
class Observations:
    """Degraded inputs as the model sees them.

    Args:
        images: N x C x s x s in [-1, 1] (s = generator size, or size / scale for superres).
        names: stems used for output files.
        originals: the inputs as read (uint8 C x H x W at their own size), for display.
        resized: which inputs were resized to fit.
        sources: the file each input came from (None for tensor inputs).
    """

    images: torch.Tensor
    names: list[str]
    originals: list[torch.Tensor]
    resized: list[bool]
    sources: list[str | None] = field(default_factory=list)


def load_observations(images: ImageSource, image_size: int, nc: int, task: str, scale: int = 4,
                      names: Sequence[str] | None = None, progress: ProgressCallback | None = None) -> Observations:
    """Read and convert the user's degraded inputs to what the operator of `task` expects.

    Args:
        images: paths (a folder stands for the images in it), or a tensor N x C x H x W (uint8, or
            float in [-1, 1]).
        image_size, nc: the generator's resolution and channels.
        task: which operator; colorize reads grayscale, superres needs exactly image_size / scale.
        scale: superres factor.
        names: stems for tensor inputs (default img0000, img0001, ...).
        progress: receives a one-line notice per resized input.
    """
    from ..data import read_image, resize_center_crop

    want_c = 1 if task == "colorize" else nc
    side = image_size // scale if task == "superres" else image_size
    raw: list[torch.Tensor] = []
    labels: list[str] = []
    originals: list[torch.Tensor] = []
    sources: list[str | None] = []
    if isinstance(images, torch.Tensor):
        t = images if images.dim() == 4 else images[None]
        if t.dim() != 4:
            raise GantoolsError(f"images must be N x C x H x W, got shape {tuple(images.shape)}")
        # Float tensors keep their precision (no 8-bit rounding); uint8 ones are scaled to [-1, 1].
        t = from_uint8(t.cpu()) if t.dtype == torch.uint8 else t.detach().float().cpu().clamp(-1, 1)
        if names is not None and len(names) != t.shape[0]:
            raise GantoolsError(f"{len(names)} names for {t.shape[0]} images")
        for i, img in enumerate(t):
            if img.shape[0] not in (1, 3):
                raise GantoolsError(f"image {i} has {img.shape[0]} channels: use 1 or 3")
            originals.append(to_uint8(img))
            raw.append(_convert_channels(img, want_c))
            labels.append(names[i] if names is not None else f"img{i:04d}")
            sources.append(None)
    else:
        from ..data import find_images

        paths = []
        for p in map(Path, [images] if isinstance(images, (str, os.PathLike)) else images):
            if p.is_dir():  # a folder stands for the images in it
                found = find_images(p)
                if not found:
                    raise GantoolsError(f"no images in {p}")
                paths += found
            else:
                paths.append(p)
        if not paths:
            raise GantoolsError("no images to invert")
        for p in paths:
            shown = read_image(p, 3 if want_c == 3 or task == "colorize" else nc)
            originals.append(shown)
            img = read_image(p, want_c)
            if task == "colorize" and not _is_gray(shown):
                notice(progress, f"{p.name}: colour input converted to grayscale (BT.601 luminance) for colorize")
            raw.append(from_uint8(img))
            labels.append(p.stem)
            sources.append(str(p))
    if len(set(labels)) != len(labels):
        dup = sorted({n for n in labels if labels.count(n) > 1})
        raise GantoolsError(f"several inputs share the name {dup[0]!r}: outputs are named by stem, so rename them")
    out, resized = [], []
    for name, img in zip(labels, raw):
        h, w = img.shape[-2:]
        if (h, w) != (side, side):
            if task == "superres":
                raise GantoolsError(f"{name}: super-resolution input must be exactly {side}x{side} "
                                    f"(the generator's {image_size}px divided by --scale {scale}), got {w}x{h}")
            img = resize_center_crop(img, side)
            notice(progress, f"{name}: {w}x{h} resized and center-cropped to the generator's {side}x{side}")
        resized.append((h, w) != (side, side))
        out.append(img.clamp(-1, 1))
    if not out:
        raise GantoolsError("no images to invert")
    return Observations(torch.stack(out), labels, originals, resized, sources)


def _convert_channels(img: torch.Tensor, nc: int) -> torch.Tensor:
    """1 <-> 3 channels of one image (uint8 or float): gray is replicated; RGB -> gray by BT.601 (as PIL)."""
    if img.shape[0] == nc:
        return img
    if nc == 3:
        return img.expand(3, -1, -1).contiguous()
    y = luminance(img[None].float())[0]
    return y.round().clamp(0, 255).to(torch.uint8) if img.dtype == torch.uint8 else y


def _is_gray(img: torch.Tensor) -> bool:
    return img.shape[0] == 1 or bool((img[0] == img[1]).all() and (img[1] == img[2]).all())


def load_mask(mask: str | os.PathLike | torch.Tensor, sizes: Sequence[tuple[int, int]], image_size: int) -> torch.Tensor:
    """The inpainting mask (nonzero = missing) at generator resolution: N|1 x 1 x S x S.

    Args:
        mask: a PNG path or a tensor (H x W, or N x 1 x H x W for one mask per image).
        sizes: the inputs' own (height, width); the mask must have the same size.
        image_size: generator resolution to bring it to.
    """
    from ..data import read_mask, resize_center_crop

    if isinstance(mask, torch.Tensor):
        m = _as_mask(mask)
        name = "mask"
    else:
        m = _as_mask(read_mask(mask)[None])
        name = f"mask {Path(mask).name}"
    h, w = m.shape[-2:]
    for ih, iw in sizes:
        if (ih, iw) != (h, w):
            raise GantoolsError(f"{name} is {w}x{h} but the image is {iw}x{ih}: the mask must have the image's size")
    if (h, w) != (image_size, image_size):
        # Resize like the image; antialiasing spreads the hole's edge, and any nonzero value stays
        # missing, so a resized mask never claims a missing pixel is known.
        u8 = (m * 255).to(torch.uint8)
        m = torch.stack([resize_center_crop(x, image_size) for x in u8]).float()
        m = (m > 0).float()
    return m


# ---------------------------------------------------------------------------------------------
# The objective


@dataclass
class ObjectiveWeights:
    """Weights of the objective's terms (the pixel NLL has weight 1).

    Args:
        perceptual: discriminator-feature distance (per layer, normalised by the target's energy).
        prior: (|z|^2 / nz - 1)^2, the squared relative deviation from the norm of N(0, I) samples.
        features: layer-wise only: mean squared feature correction relative to the layer's energy.
    """

    perceptual: float = 0.5
    prior: float = 1.0
    features: float = 0.05


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


def _evaluate(gan: GAN, deg: Degradation, obs: torch.Tensor, target_feats: Sequence[torch.Tensor],
              z: torch.Tensor, weights: ObjectiveWeights, layer: str | None = None,
              delta: torch.Tensor | None = None, feat_energy: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Every term of the objective for each latent (N,), plus the raw images."""
    if layer is not None and delta is not None:
        with Trace(gan.generator, layer, retain_output=False, edit_output=lambda out, _n: out + delta):
            raw = gan.generator(z)
    else:
        raw = gan.generator(z)
    pred = deg.observe(raw)
    pixel = deg.pixel_loss(pred, obs)
    perc = perceptual_distance(gan.discriminator, deg.view(pred), target_feats)
    prior = latent_prior(z)
    total = pixel + weights.perceptual * perc + weights.prior * prior
    terms = {"pixel": pixel, "perceptual": perc, "prior": prior, "mse": deg.mse(pred, obs).detach()}
    if delta is not None:
        feat = delta.pow(2).flatten(1).mean(1) / feat_energy
        total = total + weights.features * feat
        terms["correction"] = feat
    terms["total"] = total
    terms["raw"] = raw
    return terms


def _adam(groups: Sequence[tuple[torch.Tensor, float]], objective: Callable[[], dict[str, torch.Tensor]], steps: int,
          tick: Callable[[int, dict[str, torch.Tensor]], None],
          stop: Callable[[dict[str, torch.Tensor]], torch.Tensor] | None = None) -> torch.Tensor:
    """Adam on the summed per-latent objectives, cosine-decaying each group's learning rate to 10%.

    Adam's update is elementwise and each latent only affects its own term, so every latent follows
    the trajectory it would follow alone. Every parameter has one row per latent; on return each row
    holds the best iterate seen for its latent (Adam may overshoot at the end of a run), or, with
    `stop`, the first iterate for which stop(terms) is True (that latent is frozen from then on).
    Returns the objective before each step: steps x N.
    """
    params = [p for p, _ in groups]
    opt = torch.optim.Adam([{"params": [p], "lr": lr} for p, lr in groups])
    best_total: torch.Tensor | None = None
    best = [p.detach().clone() for p in params]
    done: torch.Tensor | None = None
    history = []
    for step in range(steps):
        f = 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(steps, 1)))  # big moves first, then settle
        for group, (_, lr) in zip(opt.param_groups, groups):
            group["lr"] = lr * f
        terms = objective()
        total = terms["total"].detach()
        with torch.no_grad():
            if done is None:
                done = torch.zeros_like(total, dtype=torch.bool)
            better = ~done if best_total is None else (total < best_total) & ~done
            if stop is not None:
                better |= stop(terms) & ~done
                done = done | better & stop(terms)
            best_total = total.clone() if best_total is None else torch.where(better, total, best_total)
            for b, p in zip(best, params):
                b[better] = p.detach()[better]
        opt.zero_grad(set_to_none=True)
        terms["total"].sum().backward()
        opt.step()
        with torch.no_grad():
            for b, p in zip(best, params):  # frozen latents stay put (Adam's momentum would move them)
                p[done] = b[done]
        history.append(total)
        tick(step, terms)
    with torch.no_grad():  # the last step's result, if it beats every earlier iterate
        total = objective()["total"]
        better = torch.ones_like(total, dtype=torch.bool) if best_total is None else (total < best_total) & ~done
        for b, p in zip(best, params):
            p[~better] = b[~better]
    return torch.stack(history) if history else torch.empty(0)


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class InversionResult:
    """What `invert` found, per image (tensors are on the CPU, images in [-1, 1]).

    Args:
        task: the task.
        names: input stems.
        observed: the inputs as the model saw them (observation space).
        seen: the observations shown at generator resolution (encoder input / display).
        z: N x nz, the winning latent of the z-only optimisation.
        raw: G(z), N x C x S x S.
        images: the restored images (known pixels composited, luminance kept, ...).
        losses: per-image final terms of the z-only objective: total, pixel (NLL), perceptual,
            prior, mse (observation space, [0, 1] scale).
        init_loss: per-image objective at the winning restart's starting point.
        restart_losses: N x K final objective of every restart.
        best_restart: N, index of the winning restart.
        init: how each restart started ("encoder" or "random").
        history: (steps + 1) x N, the best objective over restarts before each step, then the final one.
        layer: canonical layer name of the layer-wise refinement, or None.
        layer_z, features, layer_raw, layer_images, layer_losses, layer_history: the same for the
            layer-wise refinement (features = the layer's output for layer_z plus the optimised
            correction); `hooks.generate_from(G, layer, features)` reproduces layer_raw.
        metrics: per image, when a clean target was given: PSNR/SSIM of the result (psnr, ssim, and
            layer_psnr, layer_ssim with layer-wise), of the degraded input (input_psnr, input_ssim)
            and of the classical baseline (baseline, baseline_psnr, baseline_ssim), and worse_than
            (see `score`).
        settings: the parameters used.
        originals: the inputs as read (uint8, their own size), for display.
        sources: the file each input came from (None for tensor inputs).
        missing: inpaint: the hole (N|1 x 1 x S x S, 1 = missing) at generator resolution.
    """

    task: str
    names: list[str]
    observed: torch.Tensor
    seen: torch.Tensor
    z: torch.Tensor
    raw: torch.Tensor
    images: torch.Tensor
    losses: dict[str, torch.Tensor]
    init_loss: torch.Tensor
    restart_losses: torch.Tensor
    best_restart: torch.Tensor
    init: list[str]
    history: torch.Tensor
    layer: str | None = None
    layer_z: torch.Tensor | None = None
    features: torch.Tensor | None = None
    layer_raw: torch.Tensor | None = None
    layer_images: torch.Tensor | None = None
    layer_losses: dict[str, torch.Tensor] | None = None
    layer_history: torch.Tensor | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    originals: list[torch.Tensor] | None = field(default=None, repr=False)
    missing: torch.Tensor | None = field(default=None, repr=False)
    sources: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def final_images(self) -> torch.Tensor:
        """The result to keep: the layer-wise images when that refinement ran, else the z-only ones."""
        return self.layer_images if self.layer_images is not None else self.images

    def save(self, out_dir: str | os.PathLike) -> list[dict[str, str]]:
        """Write <stem>.png, <stem>_compare.png and <stem>.latent.pt per image (see `save_outputs`)."""
        return save_outputs(self, out_dir)

    def latent(self, i: int) -> dict[str, Any]:
        """What `<stem>.latent.pt` holds for image i (tensors and strings; loads with weights_only=True)."""
        out: dict[str, Any] = {"z": self.z[i].clone(), "task": self.task,
                               "model_fingerprint": self.settings.get("model_fingerprint", "")}
        if self.layer is not None:
            out.update(layer=self.layer, layer_z=self.layer_z[i].clone(), features=self.features[i].clone())
        return out

    def record(self, i: int) -> dict[str, Any]:
        """One JSON-ready dict of image i's losses and metrics."""
        rec: dict[str, Any] = {"name": self.names[i], "task": self.task}
        if self.sources and self.sources[i] is not None:
            rec["input"] = self.sources[i]
        rec.update({f"{k}_loss" if k not in ("mse",) else k: float(v[i]) for k, v in self.losses.items()})
        rec["init_loss"] = float(self.init_loss[i])
        rec["restart"] = int(self.best_restart[i])
        rec["init"] = self.init[int(self.best_restart[i])]
        rec["restart_losses"] = [float(v) for v in self.restart_losses[i]]
        sigma = self.settings.get("noise_sigma")
        if sigma is not None:
            rec["noise_sigma"] = float(sigma[i])
        if self.layer is not None and self.layer_losses is not None:
            rec["layerwise"] = {"layer": self.layer, **{f"{k}_loss" if k != "mse" else k: float(v[i])
                                                          for k, v in self.layer_losses.items()}}
        if self.metrics and self.metrics[i]:
            m = dict(self.metrics[i])
            rec["psnr"], rec["ssim"] = m.get("psnr"), m.get("ssim")
            if "layer_psnr" in m and "layerwise" in rec:
                rec["layerwise"].update(psnr=m["layer_psnr"], ssim=m["layer_ssim"])
            for key in ("input_psnr", "input_ssim", "baseline", "baseline_psnr", "baseline_ssim", "worse_than"):
                if key in m:
                    rec[key] = m[key]
        return rec


# ---------------------------------------------------------------------------------------------
# The inversion


def invert(model: GAN | str | os.PathLike, images: ImageSource, task: str = "reconstruct", *,
           mask: str | os.PathLike | torch.Tensor | None = None, scale: int = 4,
           noise_sigma: float | Sequence[float] | None = None, steps: int = 300, restarts: int = 4,
           layerwise: int | str | None = None, layer_steps: int | None = None, composite: bool = True,
           encoder: "str | os.PathLike | Encoder | None" = "auto", target: ImageSource | None = None,
           names: Sequence[str] | None = None, batch_size: int = 16, lr: float = 0.2,
           weights: ObjectiveWeights | None = None, init_samples: int = 32,
           device: str | torch.device | None = None, seed: int = 0,
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
        composite: paste known information back (inpaint: known pixels; colorize: input luminance).
        encoder: "auto" (the model's companion encoder.safetensors if present), a path, an Encoder,
            or None for random starts only.
        target: clean images (a file for one input, a folder matched by stem, paths, or a tensor)
            aligned with `images`. Each result is then scored (PSNR/SSIM, see `score`) beside the
            degraded input itself and the task's classical baseline (`gantools.baselines`), and a
            notice warns when the result is worse than either.
        names: stems for tensor inputs.
        batch_size: images per batch (each with `restarts` latents).
        lr: Adam learning rate (cosine-decayed to 10%).
        weights: objective weights.
        init_samples: random starts are the best `restarts` of this many random latents per image.
        device: where to run (default: the model's device).
        seed: random starts are seeded per image, so results do not depend on batching.
        progress: progress callback (notices: resized inputs, estimated sigmas, results worse than
            the input or the baseline).
        on_batch: called with each batch's result (an InversionResult of that batch's images,
            scored when a target is given) as soon as it is done, e.g. `lambda part: part.save(out)`, so a long run that
            is stopped keeps its finished batches.
        targets: the former spelling of `target` (deprecated).
    """
    if targets is not None:
        if target is not None:
            raise GantoolsError("give target (the clean images), not both target and targets")
        import warnings

        warnings.warn("invert(targets=...) is now invert(target=...)", DeprecationWarning, stacklevel=2)
        target = targets
    if task not in TASKS:
        raise GantoolsError(f"unknown task {task!r}: use one of {', '.join(TASKS)}")
    if steps < 1 or restarts < 1 or batch_size < 1:
        raise GantoolsError("steps, restarts and batch size must be at least 1")
    gan = model if isinstance(model, GAN) else load_model(model, device or "cpu")
    dev = get_device(device) if device is not None else gan.device
    gan.to(dev)
    G, D = gan.generator.eval(), gan.discriminator.eval()
    cfg = gan.config
    weights = weights or ObjectiveWeights()
    if task == "colorize":
        Colorize(cfg.image_size, cfg.nc)  # fail early on a grayscale model, before reading files
    if task == "superres":
        SuperResolution(cfg.image_size, cfg.nc, scale)  # fail early on a scale that does not fit the model
    layer = layer_name(G, layerwise) if layerwise is not None else None
    if layer == "output":
        raise GantoolsError("layer-wise inversion needs a hidden layer (1..%d), not the output" % cfg.num_layers)

    obs_set = load_observations(images, cfg.image_size, cfg.nc, task, scale, names, progress)
    obs_all = obs_set.images
    n = obs_all.shape[0]
    clean = None
    if target is not None:  # read them now: a wrong path should fail before the optimisation, not after
        clean = load_targets(target, obs_set.names, cfg.image_size, cfg.nc, progress)
    sigma_used = None
    deg_mask = None
    if task == "inpaint":
        if mask is None:
            raise GantoolsError("inpainting needs a mask (--mask MASK.png, nonzero pixels = missing)")
        deg_mask = load_mask(mask, [tuple(o.shape[-2:]) for o in obs_set.originals], cfg.image_size)
        if deg_mask.shape[0] not in (1, n):
            raise GantoolsError(f"{deg_mask.shape[0]} masks for {n} images: give one mask, or one per image")
    if task == "denoise":
        if noise_sigma is None:
            sigma_used = estimate_noise_sigma(obs_all)
            notice(progress, "estimated noise sigma ([0,1] scale): "
                   + ", ".join(f"{s:.3f}" for s in sigma_used[:8]) + (" ..." if n > 8 else ""))
        else:
            sigma_used = torch.as_tensor(noise_sigma, dtype=torch.float32).reshape(-1)
            if len(sigma_used) not in (1, n):
                raise GantoolsError(f"{len(sigma_used)} noise sigmas for {n} images: give one, or one per image")
            sigma_used = sigma_used.expand(n).clone()
    deg = make_degradation(task, cfg.image_size, cfg.nc, mask=deg_mask, scale=scale, noise_sigma=sigma_used)

    enc = _resolve_encoder(encoder, gan, dev, progress)
    with _frozen(G, D, enc):
        return _invert(gan, obs_set, deg, task, enc, steps=steps, restarts=restarts, layer=layer,
                       layer_steps=layer_steps, composite=composite, clean=clean, batch_size=batch_size,
                       lr=lr, weights=weights, init_samples=init_samples, dev=dev, seed=seed, scale=scale,
                       sigma_used=sigma_used, deg_mask=deg_mask, progress=progress, on_batch=on_batch)


@contextlib.contextmanager
def _frozen(*modules: torch.nn.Module | None) -> Iterator[None]:
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


def _invert(gan: GAN, obs_set: Observations, deg: Degradation, task: str, enc, *, steps: int, restarts: int,
            layer: str | None, layer_steps: int | None, composite: bool, clean: list[torch.Tensor | None] | None,
            batch_size: int, lr: float, weights: ObjectiveWeights, init_samples: int, dev: torch.device,
            seed: int, scale: int, sigma_used: torch.Tensor | None, deg_mask: torch.Tensor | None,
            progress: ProgressCallback | None,
            on_batch: Callable[[InversionResult], None] | None = None) -> InversionResult:
    D = gan.discriminator
    obs_all = obs_set.images
    n = obs_all.shape[0]

    k = restarts
    init_kinds = (["encoder"] if enc is not None else []) + ["random"] * k
    init_kinds = init_kinds[:k]
    layer_steps = steps if layer_steps is None else layer_steps
    n_batches = math.ceil(n / batch_size)
    total_steps = n_batches * (steps + (layer_steps if layer else 0))
    done = 0
    parts: dict[str, list] = {key: [] for key in ("z", "raw", "images", "init", "rl", "best", "hist",
                                                 "lz", "feat", "lraw", "limg", "lhist", "seen")}
    loss_parts: dict[str, list] = {}
    layer_loss_parts: dict[str, list] = {}

    batch_metrics: list[dict[str, Any]] = []
    # The colorization baseline's domain colours: the mean chroma of the model's own samples.
    chroma = _model_chroma(gan, dev) if clean is not None and task == "colorize" else None

    def assemble(only_last: bool = False) -> InversionResult:
        # only_last: the latest batch alone (no re-concatenation of earlier ones)
        last = lambda d: {key: v[-1:] for key, v in d.items()} if only_last else d  # noqa: E731
        start = sum(len(z) for z in parts["z"][:-1]) if only_last else 0
        return _assemble(last(parts), last(loss_parts), last(layer_loss_parts), obs_set, deg, task, gan, enc,
                         start=start, steps=steps, k=k,
                         init_kinds=init_kinds, layer=layer, layer_steps=layer_steps, composite=composite,
                         batch_size=batch_size, lr=lr, weights=weights, init_samples=init_samples, seed=seed,
                         scale=scale, sigma_used=sigma_used, deg_mask=deg_mask)

    for b in range(n_batches):
        idx = torch.arange(b * batch_size, min(n, (b + 1) * batch_size))
        bsz = len(idx)
        obs = obs_all[idx].to(dev)
        deg_b = deg.select(idx)
        seen = deg_b.view(obs)
        parts["seen"].append(seen.cpu())
        rep = torch.arange(bsz).repeat_interleave(k)  # latent j belongs to image rep[j]
        deg_k = deg_b.select(rep)
        obs_k = obs[rep.to(dev)]
        with torch.no_grad():
            target_feats = [f.detach() for f in discriminator_features(D, seen)]
            target_k = [f[rep.to(dev)] for f in target_feats]
            z0 = _starts(gan, deg_b, obs, target_feats, weights, enc, seen, idx, k, init_samples, seed, dev)
        z = z0.clone().requires_grad_(True)

        def objective() -> dict[str, torch.Tensor]:
            return _evaluate(gan, deg_k, obs_k, target_k, z, weights)

        def tick(step: int, terms: dict[str, torch.Tensor], _b=b) -> None:
            nonlocal done
            done += 1
            if step % 10 == 0 or step == steps - 1:
                report(progress, "invert", done, total_steps, loss=float(terms["total"].detach().view(bsz, k).amin(1).mean()),
                       batch=_b + 1)

        with torch.no_grad():
            init_terms = _evaluate(gan, deg_k, obs_k, target_k, z0, weights)
        hist = _adam([(z, lr)], objective, steps, tick)
        with torch.no_grad():
            final = _evaluate(gan, deg_k, obs_k, target_k, z, weights)
        totals = final["total"].view(bsz, k)
        best = totals.argmin(1)
        pick = torch.arange(bsz, device=dev) * k + best.to(dev)
        z_best = z.detach()[pick]
        raw = final["raw"][pick]
        parts["z"].append(z_best.cpu())
        parts["raw"].append(raw.cpu())
        parts["images"].append(deg_b.finish(raw, obs, composite).clamp(-1, 1).cpu())
        parts["init"].append(init_terms["total"][pick].cpu())
        parts["rl"].append(totals.cpu())
        parts["best"].append(best.cpu())
        parts["hist"].append(torch.cat([hist.view(steps, bsz, k), totals[None]]).amin(2).cpu())
        for key in ("total", "pixel", "perceptual", "prior", "mse"):
            loss_parts.setdefault(key, []).append(final[key][pick].cpu())

        if layer is not None:
            def layer_tick(step: int, terms: dict[str, torch.Tensor], _b=b) -> None:
                nonlocal done
                done += 1
                if step % 10 == 0 or step == layer_steps - 1:
                    report(progress, "invert", done, total_steps, loss=float(terms["total"].detach().mean()),
                           batch=_b + 1)

            lres = _refine_layerwise(gan, deg_b, obs, target_feats, z_best, layer, layer_steps, lr, weights,
                                     layer_tick)
            parts["lz"].append(lres["z"].cpu())
            parts["feat"].append(lres["features"].cpu())
            parts["lraw"].append(lres["raw"].cpu())
            parts["limg"].append(deg_b.finish(lres["raw"], obs, composite).clamp(-1, 1).cpu())
            parts["lhist"].append(lres["history"].cpu())
            for key in ("total", "pixel", "perceptual", "prior", "mse", "correction"):
                layer_loss_parts.setdefault(key, []).append(lres[key].cpu())

        if on_batch is not None:  # e.g. write this batch's files now, so a killed run keeps them
            part = assemble(only_last=True)
            if clean is not None:
                part.metrics = score(part, clean[int(idx[0]):int(idx[-1]) + 1], progress, chroma=chroma)
                batch_metrics += part.metrics
                _warn_worse(part, progress)
            on_batch(part)

    result = assemble()
    if clean is not None:  # scored (and warned about) batch by batch already when on_batch was given
        if on_batch is not None:
            result.metrics = batch_metrics
        else:
            result.metrics = score(result, clean, progress, chroma=chroma)
            _warn_worse(result, progress)
    return result


# Images whose mean chroma is the colorization baseline's colour prior (seeded samples of the model).
CHROMA_SAMPLES = 256
CHROMA_SEED = 0


def _model_chroma(gan: GAN, dev: torch.device) -> torch.Tensor:
    """Per-pixel mean chroma of CHROMA_SAMPLES seeded samples of the model (1 x 3 x S x S, CPU)."""
    from .baselines import mean_chroma

    G = gan.generator
    z = G.sample_z(CHROMA_SAMPLES, CHROMA_SEED, device=dev)
    with torch.no_grad():
        images = torch.cat([G(chunk).clamp(-1, 1).cpu() for chunk in z.split(64)])
    return mean_chroma(images)


def _assemble(parts: dict[str, list], loss_parts: dict[str, list], layer_loss_parts: dict[str, list],
              obs_set: Observations, deg: Degradation, task: str, gan: GAN, enc, *, start: int = 0, steps: int,
              k: int,
              init_kinds: list[str], layer: str | None, layer_steps: int, composite: bool, batch_size: int, lr: float,
              weights: ObjectiveWeights, init_samples: int, seed: int, scale: int, sigma_used: torch.Tensor | None,
              deg_mask: torch.Tensor | None) -> InversionResult:
    """The result for the images whose batches are in `parts`, the first of them image `start`."""
    cat = lambda key: torch.cat(parts[key]) if parts[key] else None  # noqa: E731
    end = start + sum(len(z) for z in parts["z"])
    obs_all = obs_set.images[start:end]
    per_image_mask = deg_mask is not None and deg_mask.shape[0] > 1
    return InversionResult(
        task=task, names=obs_set.names[start:end], observed=obs_all, seen=cat("seen"), z=cat("z"), raw=cat("raw"),
        images=cat("images"), losses={k_: torch.cat(v) for k_, v in loss_parts.items()},
        init_loss=cat("init"), restart_losses=cat("rl"), best_restart=cat("best"), init=init_kinds,
        history=torch.cat(parts["hist"], 1),
        layer=layer, layer_z=cat("lz"), features=cat("feat"), layer_raw=cat("lraw"), layer_images=cat("limg"),
        layer_losses={k_: torch.cat(v) for k_, v in layer_loss_parts.items()} if layer else None,
        layer_history=torch.cat(parts["lhist"], 1) if layer else None,
        settings={"model": str(gan.path) if gan.path else None, "model_fingerprint": _fingerprint(gan),
                  "task": task, "steps": steps, "restarts": k, "layerwise": layer, "layer_steps": layer_steps if layer else None,
                  "composite": composite, "encoder": enc is not None, "lr": lr, "seed": seed,
                  "weights": weights.__dict__.copy(), "init_samples": init_samples, "batch_size": batch_size,
                  "scale": scale if task == "superres" else None,
                  "noise_sigma": [float(s) for s in sigma_used[start:end]] if sigma_used is not None else None,
                  "resized": obs_set.resized[start:end], "degradation": deg.describe()},
        originals=obs_set.originals[start:end], missing=deg_mask[start:end] if per_image_mask else deg_mask,
        sources=obs_set.sources[start:end],
    )


def _fingerprint(gan: GAN) -> str:
    from ..models import fingerprint

    return fingerprint(gan.generator)


def _resolve_encoder(encoder: Any, gan: GAN, device: torch.device, progress: ProgressCallback | None):
    if encoder is None or encoder is False:
        return None
    from .encoder import Encoder, load_encoder

    if isinstance(encoder, Encoder):
        return encoder.to(device).eval()
    if isinstance(encoder, str) and encoder == "auto":
        path = gan.companion("encoder")
        if path is None:
            return None
        return load_encoder(path, gan, device=device, progress=progress)
    return load_encoder(encoder, gan, device=device, progress=progress)


def _starts(gan: GAN, deg: Degradation, obs: torch.Tensor, target_feats: Sequence[torch.Tensor],
            weights: ObjectiveWeights, enc, seen: torch.Tensor, idx: torch.Tensor, k: int, init_samples: int,
            seed: int, dev: torch.device) -> torch.Tensor:
    """K starting latents per image (B*K x nz): E(x) first when there is an encoder, then the best of
    `init_samples` random latents by objective. Each image's random latents come from its own seed."""
    nz = gan.config.nz
    bsz = obs.shape[0]
    out = torch.empty(bsz, k, nz, device=dev)
    first = 0
    if enc is not None:
        out[:, 0] = enc(seen).reshape(bsz, nz)
        first = 1
    n_random = k - first
    if n_random > 0:
        m = max(init_samples, n_random)
        cand = torch.stack([torch.randn(m, nz, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
                            for i in idx]).to(dev)  # B x m x nz
        rep = torch.arange(bsz).repeat_interleave(m)
        scores = []
        for chunk in torch.arange(bsz * m).split(256):  # bounded memory for large init_samples
            r = rep[chunk]
            t = _evaluate(gan, deg.select(r), obs[r.to(dev)], [f[r.to(dev)] for f in target_feats],
                          cand.reshape(-1, nz)[chunk.to(dev)], weights)
            scores.append(t["total"])
        order = torch.cat(scores).view(bsz, m).argsort(1)[:, :n_random]
        out[:, first:] = torch.gather(cand, 1, order[:, :, None].expand(-1, -1, nz))
    return out.reshape(bsz * k, nz)


def _refine_layerwise(gan: GAN, deg: Degradation, obs: torch.Tensor, target_feats: Sequence[torch.Tensor],
                      z_start: torch.Tensor, layer: str, steps: int, lr: float, weights: ObjectiveWeights,
                      tick: Callable[[int, dict[str, torch.Tensor]], None]) -> dict[str, torch.Tensor]:
    """Optimise z and an additive correction to `layer`'s features, starting from the z-only winner."""
    G = gan.generator
    with torch.no_grad():
        base = layer_output(G, layer, z_start)
    energy = base.pow(2).flatten(1).mean(1).clamp_min(1e-8)
    z = z_start.clone().requires_grad_(True)
    delta = torch.zeros_like(base, requires_grad=True)
    # The features live on their own scale; step them in proportion to the layer's typical activation.
    feat_lr = lr * float(energy.sqrt().mean())

    def objective() -> dict[str, torch.Tensor]:
        return _evaluate(gan, deg, obs, target_feats, z, weights, layer, delta, energy)

    floor = deg.noise_floor()
    stop = None if floor is None else (lambda terms: terms["mse"] <= floor.to(terms["mse"].device))
    history = _adam([(z, lr * LAYERWISE_LR), (delta, feat_lr * LAYERWISE_LR)], objective, steps, tick, stop)
    with torch.no_grad():
        final = objective()
        features = layer_output(G, layer, z) + delta
    history = torch.cat([history, final["total"][None]])
    out = {key: final[key].detach() for key in ("total", "pixel", "perceptual", "prior", "mse", "correction", "raw")}
    out.update(z=z.detach(), features=features.detach(), history=history)
    return out


# ---------------------------------------------------------------------------------------------
# Scoring and display


def load_targets(targets: ImageSource, names: Sequence[str], image_size: int, nc: int,
                 progress: ProgressCallback | None = None) -> list[torch.Tensor | None]:
    """Clean images for scoring, aligned with `names`: a tensor, a list of paths, one file (one
    input only) or a folder matched by stem. Missing stems give None (with a notice)."""
    from ..data import find_images, load_image, read_image

    if isinstance(targets, torch.Tensor):
        t = targets if targets.dim() == 4 else targets[None]
        if t.shape[0] != len(names):
            raise GantoolsError(f"{t.shape[0]} target images for {len(names)} inputs")
        t = from_uint8(t) if t.dtype == torch.uint8 else t.float()
        if t.shape[1] != nc or t.shape[-1] != image_size or t.shape[-2] != image_size:
            raise GantoolsError(f"target must be N x {nc} x {image_size} x {image_size}, got {tuple(t.shape)}")
        return list(t.cpu())
    if isinstance(targets, (str, os.PathLike)):
        path = Path(targets)
        if path.is_dir():
            by_stem = {p.stem: p for p in find_images(path)}
            files: list[Path | None] = [by_stem.get(n) for n in names]
            missing = [n for n, f in zip(names, files) if f is None]
            if len(missing) == len(names):
                raise GantoolsError(f"no clean image in {path} matches the inputs' names (e.g. {names[0]}.png)")
            if missing:
                notice(progress, f"no target in {path} for {', '.join(missing[:5])}: no PSNR/SSIM for those")
        else:
            if len(names) != 1:
                raise GantoolsError("target is one file but there are several inputs: give a folder of "
                                    "clean images named like the inputs")
            files = [path]
    else:
        files = [Path(p) for p in targets]
        if len(files) != len(names):
            raise GantoolsError(f"{len(files)} target images for {len(names)} inputs")
    out: list[torch.Tensor | None] = []
    for f in files:
        if f is None:
            out.append(None)
            continue
        img = read_image(f, nc)
        if img.shape[-2:] != (image_size, image_size):
            notice(progress, f"target {f.name}: {img.shape[-1]}x{img.shape[-2]} resized to {image_size}x{image_size}")
            img = load_image(f, nc, image_size)
        out.append(from_uint8(img))
    return out


def score(result: InversionResult, target: ImageSource, progress: ProgressCallback | None = None, *,
          baselines: bool = True, chroma: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """PSNR and SSIM ([0, 1] scale) of each result against its clean target, beside the same numbers
    for the degraded input itself and for the task's classical baseline.

    Args:
        result: an inversion result (or one batch of it).
        target: the clean images: anything `load_targets` reads, or the list it returns.
        progress: callback (notices about missing or resized targets).
        baselines: also score the degraded input and the classical baseline.
        chroma: colorize: the domain's mean chroma for the baseline (`baselines.mean_chroma`; `invert`
            uses its model's own samples); None: no colorization baseline.

    Returns, per image (an empty dict where there is no target):
        psnr, ssim: the z-only result; layer_psnr, layer_ssim: the layer-wise result, when it ran.
        input_psnr, input_ssim: the degraded input against the target: the noisy or masked input as
            it is, the gray input as RGB; for superres (another size) its bicubic upsampling.
        baseline, baseline_psnr, baseline_ssim: the classical method (see `gantools.baselines`:
            biharmonic inpainting, the best of TV / NL-means / wavelet denoising for this image,
            bicubic upsampling, mean-chroma colorization) and its scores.
        worse_than: which of "input" and "baseline" have a higher PSNR than the final result (the
            layer-wise one when it ran): then the GAN prior did not help this image.
    """
    from . import baselines as classical
    from ..metrics import psnr, ssim

    s = result.images.shape[-1]
    nc = result.images.shape[1]
    loaded = isinstance(target, list) and all(t is None or isinstance(t, torch.Tensor) for t in target)
    clean = target if loaded else load_targets(target, result.names, s, nc, progress)
    out: list[dict[str, Any]] = []
    for i, t in enumerate(clean):
        if t is None:
            out.append({})
            continue
        m: dict[str, Any] = {"psnr": psnr(result.images[i], t), "ssim": ssim(result.images[i], t)}
        if result.layer_images is not None:
            m.update(layer_psnr=psnr(result.layer_images[i], t), layer_ssim=ssim(result.layer_images[i], t))
        out.append(m)
    have = [i for i, t in enumerate(clean) if t is not None]
    if not baselines or not have or result.task not in ("inpaint", "denoise", "superres", "colorize"):
        return out
    idx = torch.tensor(have)
    observed = result.observed[idx]
    clean_t = torch.stack([clean[i] for i in have])
    view = classical.degraded_view(result.task, observed, s, nc)
    missing = None
    if result.missing is not None:
        missing = result.missing if result.missing.shape[0] == 1 else result.missing[idx]
    sigma = result.settings.get("noise_sigma")
    restored = classical.restore(result.task, observed, missing=missing, size=s, chroma=chroma, target=clean_t,
                                 sigma=[sigma[i] for i in have] if sigma is not None else None,
                                 scale=result.settings.get("scale"))
    final = "layer_psnr" if result.layer_images is not None else "psnr"
    for j, i in enumerate(have):
        m = out[i]
        worse = []
        if view is not None:
            m.update(input_psnr=psnr(view[j], clean_t[j]), input_ssim=ssim(view[j], clean_t[j]))
            if m[final] < m["input_psnr"]:
                worse.append("input")
        if restored is not None:
            images, names = restored
            m.update(baseline=names[j], baseline_psnr=psnr(images[j], clean_t[j]),
                     baseline_ssim=ssim(images[j], clean_t[j]))
            if m[final] < m["baseline_psnr"]:
                worse.append("baseline")
        m["worse_than"] = worse
    return out


# What the degraded input is called in warnings, per task.
_INPUT_WORDS = {"denoise": "the noisy input itself", "inpaint": "the masked input itself",
                "colorize": "the gray input itself", "superres": "bicubic upsampling"}
_MAX_WARNINGS = 5  # per batch; then one line counts the rest


def _warn_worse(result: InversionResult, progress: ProgressCallback | None) -> None:
    """One notice per result that scored below its degraded input or its classical baseline."""
    bad = [i for i, m in enumerate(result.metrics) if m and m.get("worse_than")]
    for i in bad[:_MAX_WARNINGS]:
        notice(progress, "warning: " + _worse_text(result, i))
    if len(bad) > _MAX_WARNINGS:
        notice(progress, f"warning: {len(bad) - _MAX_WARNINGS} more of these {len(result)} results are worse than "
                         "the degraded input or the classical baseline (see worse_than in their records)")


def _worse_text(result: InversionResult, i: int) -> str:
    m = result.metrics[i]
    ours = m["layer_psnr"] if "layer_psnr" in m else m["psnr"]
    what = "layer-wise result" if "layer_psnr" in m else "result"
    beaten = []
    if "input" in m["worse_than"]:
        beaten.append(f"{_INPUT_WORDS.get(result.task, 'the input')} ({m['input_psnr']:.2f} dB)")
    if "baseline" in m["worse_than"] and not (result.task == "superres" and "input" in m["worse_than"]):
        beaten.append(f"the classical baseline {m['baseline']} ({m['baseline_psnr']:.2f} dB)")
    return (f"{result.names[i]}: the {what} (PSNR {ours:.2f} dB) is worse than {' and than '.join(beaten)}: "
            "the GAN prior does not restore this image")


def compare_strip(result: InversionResult, i: int, original: torch.Tensor | None = None, min_size: int = 128) -> torch.Tensor:
    """uint8 C x H x W strip: input | what the model saw | result (| layer-wise result).

    Small images are enlarged with nearest-neighbour to at least `min_size` pixels, so they can be seen.
    """
    from ..data import make_grid, resize_center_crop

    s = result.images.shape[-1]
    nc = result.images.shape[1]
    side = max(s, min_size)

    def up(img: torch.Tensor) -> torch.Tensor:  # uint8 C x h x w -> C x side x side
        img = img.expand(nc, -1, -1) if img.shape[0] == 1 and nc == 3 else img
        if nc == 1 and img.shape[0] == 3:
            img = _convert_channels(img, 1)
        h, w = img.shape[-2:]
        if h == w and side % h == 0:
            return img.repeat_interleave(side // h, 1).repeat_interleave(side // w, 2)
        if h == w and h < side:
            return F.interpolate(img[None].float(), size=(side, side), mode="nearest")[0].to(torch.uint8)
        return resize_center_crop(img, side)

    if original is None:
        original = result.originals[i] if result.originals is not None else None
    observed = to_uint8(result.observed[i])
    if result.missing is not None:
        # show the hole as a checkerboard: the model saw nothing there
        hole = result.missing[i if result.missing.shape[0] > 1 else 0, 0].bool()
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        checker = torch.where(((yy // 2 + xx // 2) % 2) == 0, 96, 160).to(torch.uint8)
        observed = torch.where(hole, checker, observed)
    panels = [up(original if original is not None else observed), up(observed), up(to_uint8(result.images[i]))]
    if result.layer_images is not None:
        panels.append(up(to_uint8(result.layer_images[i])))
    return make_grid(torch.stack(panels), nrow=len(panels), padding=2)


def save_outputs(result: InversionResult, out_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Write DIR/<stem>.png (final result at generator resolution), DIR/<stem>_compare.png and
    DIR/<stem>.latent.pt for every image; returns the paths per image."""
    from ..data import save_image
    from ..utils import torch_save

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = result.final_images
    paths = []
    for i, name in enumerate(result.names):
        p = {"output": str(save_image(final[i], out_dir / f"{name}.png")),
             "compare": str(save_image(compare_strip(result, i), out_dir / f"{name}_compare.png")),
             "latent": str(torch_save(result.latent(i), out_dir / f"{name}.latent.pt"))}
        paths.append(p)
    return paths
