"""Classical restoration baselines (scikit-image): the numbers a GAN-prior restoration has to beat.

`gantools.invert(..., target=...)` scores every result against these, and so does
`benchmarks/restoration.py`; both use the functions here, so there is one implementation:

- inpaint:   skimage.restoration.inpaint_biharmonic;
- denoise:   denoise_tv_chambolle, denoise_nl_means and denoise_wavelet with a few settings each,
             every one given the noise sigma; the caller keeps the best (`best_denoise` picks it per
             image by PSNR against the clean target: an oracle choice, in the classics' favour);
- superres:  bicubic resizing (skimage.transform.resize, order 3);
- colorize:  the input's luminance plus the mean chroma (per pixel) of reference images of the
             domain (`mean_chroma`).

`degraded_view` gives the degraded input itself at the target's size, the other number to beat:
the noisy or masked input as it is, the gray input as RGB, and for super-resolution (whose input has
another size) its bicubic upsampling.

Images are N x C x H x W tensors in [-1, 1] (the models' scale); noise sigmas are on the [0, 1]
scale, as in scikit-image.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch

from ..metrics import psnr
from ..utils import GantoolsError, luminance, transfer_luminance

# The settings tried for each classical denoiser (each is given the true or estimated sigma).
TV_WEIGHTS = (0.05, 0.1, 0.2)
NL_MEANS_H = (0.6, 0.8, 1.0)  # h as a multiple of sigma
WAVELET_METHODS = ("BayesShrink", "VisuShrink")


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """C x H x W in [-1, 1] -> H x W x C float64 in [0, 1]."""
    return ((x.detach().cpu().double() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()


def from_numpy(a: np.ndarray) -> torch.Tensor:
    """H x W x C (or H x W) in [0, 1] -> C x H x W float32 in [-1, 1]."""
    a = a if a.ndim == 3 else a[:, :, None]
    return torch.from_numpy(np.clip(a, 0, 1)).permute(2, 0, 1).float() * 2 - 1


def _mask_rows(mask: torch.Tensor, n: int) -> torch.Tensor:
    m = torch.as_tensor(mask)
    if m.dim() == 2:
        m = m[None, None]
    if m.dim() != 4 or m.shape[0] not in (1, n):
        raise GantoolsError(f"mask must be H x W or N|1 x 1 x H x W for {n} images, got shape {tuple(m.shape)}")
    return m.expand(n, -1, -1, -1)


def inpaint(degraded: torch.Tensor, missing: torch.Tensor) -> torch.Tensor:
    """Biharmonic inpainting of the missing pixels (nonzero in `missing`, N|1 x 1 x H x W or H x W)."""
    from skimage.restoration import inpaint_biharmonic

    out = []
    for x, m in zip(degraded, _mask_rows(missing, len(degraded))):
        hole = m[0].cpu().numpy() != 0
        out.append(from_numpy(inpaint_biharmonic(to_numpy(x), hole, channel_axis=-1)) if hole.any() else x.float())
    return torch.stack(out)


def denoisers(sigma: float) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    """Every classical denoiser setting tried, for noise std `sigma` ([0, 1] scale), by name."""
    from skimage.restoration import denoise_nl_means, denoise_tv_chambolle, denoise_wavelet

    out: dict[str, Callable[[np.ndarray], np.ndarray]] = {}
    for w in TV_WEIGHTS:
        out[f"tv_chambolle(weight={w})"] = lambda a, w=w: denoise_tv_chambolle(a, weight=w, channel_axis=-1)
    for h in NL_MEANS_H:
        out[f"nl_means(h={h}*sigma)"] = lambda a, h=h: denoise_nl_means(
            a, h=h * sigma, sigma=sigma, patch_size=3, patch_distance=5, fast_mode=True, channel_axis=-1)
    try:
        import pywt  # noqa: F401  (denoise_wavelet needs PyWavelets, a gantools dependency)
    except ImportError:
        return out
    for m in WAVELET_METHODS:
        out[f"wavelet({m})"] = lambda a, m=m: denoise_wavelet(a, sigma=sigma, method=m, mode="soft",
                                                              rescale_sigma=True, channel_axis=-1)
    return out


def _sigmas(sigma: float | Sequence[float] | torch.Tensor, n: int) -> list[float]:
    s = torch.as_tensor(sigma, dtype=torch.float64).reshape(-1)
    if len(s) not in (1, n):
        raise GantoolsError(f"{len(s)} noise sigmas for {n} images: give one, or one per image")
    return [float(v) for v in s.expand(n)]


def denoise_candidates(noisy: torch.Tensor, sigma: float | Sequence[float] | torch.Tensor) -> dict[str, torch.Tensor]:
    """Every classical denoiser setting applied to every image (N x C x H x W each), by name.

    Args:
        noisy: N x C x H x W in [-1, 1].
        sigma: noise std on the [0, 1] scale, one for all or one per image.
    """
    sigmas = _sigmas(sigma, len(noisy))
    per_image = [{name: from_numpy(fn(to_numpy(x))) for name, fn in denoisers(s).items()}
                 for x, s in zip(noisy, sigmas)]
    return {name: torch.stack([p[name] for p in per_image]) for name in per_image[0]}


def best_denoise(noisy: torch.Tensor, sigma: float | Sequence[float] | torch.Tensor,
                 target: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Per image, the classical denoiser setting with the highest PSNR against the clean target.

    Returns the denoised images (N x C x H x W) and the chosen setting's name per image.
    """
    images, names = [], []
    for x, s, t in zip(noisy, _sigmas(sigma, len(noisy)), target):
        a = to_numpy(x)
        best = None
        for name, fn in denoisers(s).items():
            out = from_numpy(fn(a))
            p = psnr(out, t)
            if best is None or p > best[0]:
                best = (p, name, out)
        images.append(best[2])
        names.append(best[1])
    return torch.stack(images), names


def bicubic(low: torch.Tensor, size: int) -> torch.Tensor:
    """Bicubic upsampling (skimage.transform.resize, order 3) of N x C x h x w images to size x size."""
    from skimage.transform import resize

    return torch.stack([from_numpy(resize(to_numpy(x), (size, size), order=3, anti_aliasing=False)) for x in low])


def mean_chroma(reference: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean chroma (RGB - BT.601 luminance) of N x 3 x H x W reference images: 1 x 3 x H x W."""
    if reference.dim() != 4 or reference.shape[1] != 3 or len(reference) == 0:
        raise GantoolsError(f"reference images must be N x 3 x H x W (RGB), got shape {tuple(reference.shape)}")
    return (reference - luminance(reference)).mean(0, keepdim=True)


def colorize(gray: torch.Tensor, chroma: torch.Tensor) -> torch.Tensor:
    """The gray images' luminance (N x 1 x H x W) with the given mean chroma (1 x 3 x H x W, `mean_chroma`).

    Where that leaves [-1, 1] the chroma is scaled down, so the luminance stays the input's.
    """
    if chroma.shape[-2:] != gray.shape[-2:]:
        raise GantoolsError(f"the chroma is {chroma.shape[-1]}x{chroma.shape[-2]} but the images are "
                            f"{gray.shape[-1]}x{gray.shape[-2]}")
    color = chroma.to(gray.device, gray.dtype).expand(gray.shape[0], -1, -1, -1)
    return transfer_luminance(color, gray)


def degraded_view(task: str, observed: torch.Tensor, size: int, nc: int) -> torch.Tensor | None:
    """The degraded input itself, comparable with a clean N x nc x size x size target; None for reconstruct.

    denoise and inpaint: the input as it is (noise, hole and all); colorize: the gray input as RGB;
    superres: its bicubic upsampling (the input has another size).
    """
    if task in ("denoise", "inpaint"):
        return observed
    if task == "colorize":
        return observed.expand(-1, nc, -1, -1)
    if task == "superres":
        return bicubic(observed, size)
    return None


def restore(task: str, observed: torch.Tensor, *, missing: torch.Tensor | None = None,
            sigma: float | Sequence[float] | torch.Tensor | None = None, size: int | None = None,
            chroma: torch.Tensor | None = None, target: torch.Tensor | None = None,
            scale: int | None = None) -> tuple[torch.Tensor, list[str]] | None:
    """The classical baseline of a task for each image: (images N x C x S x S, method name per image).

    Args:
        task: inpaint, denoise, superres or colorize (reconstruct has none: returns None).
        observed: the degraded inputs (superres: the small images).
        missing: inpaint: the hole (nonzero = missing).
        sigma: denoise: noise std on the [0, 1] scale (one, or one per image).
        size: superres: the output side.
        chroma: colorize: the domain's mean chroma (`mean_chroma`); None: no baseline (returns None).
        target: denoise: the clean images, to pick each image's best denoiser setting.
        scale: superres: the factor, for the name only.
    """
    n = len(observed)
    if task == "inpaint":
        if missing is None:
            raise GantoolsError("the inpainting baseline needs the mask (missing)")
        return inpaint(observed, missing), ["inpaint_biharmonic"] * n
    if task == "denoise":
        if sigma is None or target is None:
            raise GantoolsError("the denoising baseline needs the noise sigma and the clean target")
        return best_denoise(observed, sigma, target)
    if task == "superres":
        if size is None:
            raise GantoolsError("the super-resolution baseline needs the output size")
        name = f"bicubic x{scale}" if scale else "bicubic"
        return bicubic(observed, size), [name] * n
    if task == "colorize":
        if chroma is None:
            return None
        return colorize(observed, chroma), ["mean chroma"] * n
    return None
