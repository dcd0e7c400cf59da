"""Degradation operators A: what the user's image lacks, as a differentiable map from generator images
(N x C x S x S, [-1, 1]) to the observation space of the degraded input.

A is the identity (`Reconstruct`), a pixel mask (`Inpaint`), BT.601 luminance (`Colorize`), the
identity with known Gaussian noise (`Denoise`: the NLL uses the noise sigma, so the optimiser knows
how far to trust pixels) or area downsampling (`SuperResolution`). `make_degradation` picks one by
task name; `estimate_noise_sigma` gives denoising its sigma when the user does not.

Pixel scales: models work in [-1, 1]; noise sigmas are given on the [0, 1] scale (as scikit-image
does) and doubled for the model's scale.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ..utils import GantoolsError, luminance, transfer_luminance
from .objectives import gaussian_nll, masked_mean

TASKS = ("reconstruct", "inpaint", "colorize", "denoise", "superres")

# Gaussian sigma (model scale) of the pixel term for tasks without a noise model: how far a good
# reconstruction typically is from the image. Denoising replaces it by the noise's own sigma.
DEFAULT_PIXEL_SIGMA = 0.1


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
        """Channels of the observation the user passes."""
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
        return masked_mean(((pred - obs) / 2) ** 2, None if w is None else w.to(pred.device))

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
        """The operator and its parameters, JSON-ready (kept in `InversionResult.settings`)."""
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
        missing = as_mask(missing)
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
                                "(use task reconstruct, inpaint, denoise or superres)")
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
    """Low-resolution observation: G(z) is area-downsampled by `scale` (mean of scale x scale blocks).

    The output is made consistent with the input: each block of G(z) is shifted so that its mean is the
    observed pixel. That is the orthogonal projection onto the images that downsample to the input, so
    it never moves the result away from a true image that does (as pasting known pixels back never
    does for inpainting).
    """

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

    def finish(self, raw: torch.Tensor, obs: torch.Tensor, composite: bool = True) -> torch.Tensor:
        if not composite:
            return raw
        correction = obs.to(raw.device) - self.observe(raw)
        return raw + correction.repeat_interleave(self.scale, -2).repeat_interleave(self.scale, -1)

    def describe(self) -> dict[str, Any]:
        return {"task": self.task, "scale": self.scale}


def as_mask(mask: torch.Tensor) -> torch.Tensor:
    """Any H x W, C x H x W or N x C x H x W mask -> N x 1 x H x W float (nonzero in any channel = 1)."""
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
            raise GantoolsError("inpainting needs a mask (nonzero pixels = missing)")
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

