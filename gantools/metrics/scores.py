"""The numbers: PSNR and SSIM between images, and FID, KID and precision/recall between feature sets.

PSNR and SSIM use scikit-image with data_range=1, on the [0, 1] intensity scale whatever range the
models use inside. The set statistics take N x D features in any form (tensors, arrays) and compute
in float64.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from ..utils import GantoolsError, to_unit


def _unit_numpy(image: torch.Tensor) -> np.ndarray:
    """C x H x W in [-1, 1] -> H x W x C float64 in [0, 1]."""
    return to_unit(image.detach().float().cpu()).permute(1, 2, 0).numpy().astype(np.float64)


def psnr(image: torch.Tensor, target: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB between two C x H x W images in [-1, 1], on the [0, 1] scale."""
    from skimage.metrics import peak_signal_noise_ratio

    a, b = _unit_numpy(image), _unit_numpy(target)
    if np.array_equal(a, b):
        return float("inf")
    return float(peak_signal_noise_ratio(b, a, data_range=1.0))


def ssim(image: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity between two C x H x W images in [-1, 1], on the [0, 1] scale."""
    from skimage.metrics import structural_similarity

    a, b = _unit_numpy(image), _unit_numpy(target)
    win = min(7, a.shape[0], a.shape[1])
    win -= 1 - win % 2  # odd window that fits small images
    return float(structural_similarity(b, a, data_range=1.0, channel_axis=2, win_size=win))


# ---------------------------------------------------------------------------------------------
# Sample quality: FID, KID and precision/recall on features from a pluggable extractor.
#
# The statistics are written here (float64 numpy/torch, ~60 lines) rather than taken from
# torchmetrics: torchmetrics' FID/KID are stateful accumulators whose reference statistics cannot be
# cached per (dataset, extractor) without touching private state, it has no k-NN precision/recall,
# and its Inception path needs torch-fidelity plus a download. tests/test_metrics.py checks these
# functions against torchmetrics (with an identity feature extractor) and against closed forms.


def as_f64(x: Any) -> np.ndarray:
    """Features as an N x D float64 numpy array (from a tensor, an array or nested lists)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise GantoolsError(f"features must be an N x D matrix, got shape {x.shape}")
    return x


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N-1 denominator) of N x D features, in float64."""
    f = as_f64(features)
    if len(f) < 2:
        raise GantoolsError(f"FID needs at least 2 samples per set, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False).reshape(f.shape[1], f.shape[1])


def _psd_sqrt(a: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((a + a.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet distance between N(mu1, sigma1) and N(mu2, sigma2).

    d^2 = |mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^1/2), with tr((S1 S2)^1/2) computed as
    tr((S1^1/2 S2 S1^1/2)^1/2): a symmetric PSD matrix, so eigh gives it stably even when the
    covariances are singular (fewer samples than feature dimensions), where scipy's sqrtm of the
    non-symmetric product can return complex or NaN values.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    s1, s2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.shape != mu2.shape or s1.shape != s2.shape:
        raise GantoolsError(f"feature sizes differ: {mu1.shape} vs {mu2.shape}")
    root1 = _psd_sqrt(s1)
    middle = root1 @ s2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * tr_covmean)
    return max(value, 0.0)  # rounding can leave -1e-12 for identical sets


def fid(features_a: Any, features_b: Any) -> float:
    """Fréchet distance between two sets of features (N x D and M x D), in float64.

    With fewer samples than dimensions the covariances are low-rank, and the computation moves to
    sample space: with S1 = A'A and S2 = B'B (A, B the centred features over sqrt(N-1), sqrt(M-1)),
    tr((S1 S2)^1/2) is the nuclear norm of A B' (N x M), the same number at a fraction of the cost.
    """
    a, b = as_f64(features_a), as_f64(features_b)
    if a.shape[1] != b.shape[1]:
        raise GantoolsError(f"feature sizes differ: {a.shape[1]} vs {b.shape[1]}")
    if len(a) < 2 or len(b) < 2:
        raise GantoolsError(f"FID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    if max(len(a), len(b)) <= a.shape[1]:
        mu1, mu2 = a.mean(0), b.mean(0)
        ca, cb = (a - mu1) / np.sqrt(len(a) - 1), (b - mu2) / np.sqrt(len(b) - 1)
        nuclear = np.linalg.svd(ca @ cb.T, compute_uv=False).sum()
        diff = mu1 - mu2
        return max(float(diff @ diff + (ca * ca).sum() + (cb * cb).sum() - 2 * nuclear), 0.0)
    return frechet_distance(*feature_stats(a), *feature_stats(b))


def _poly_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    k = x @ y.T
    k /= x.shape[1]
    k += 1.0
    return k * k * k  # much faster than ** 3 on large arrays


def mmd2_polynomial(x: Any, y: Any, unbiased: bool = True) -> float:
    """Squared MMD with the cubic polynomial kernel k(a, b) = (a.b / d + 1)^3 (Bińkowski et al. 2018).

    Args:
        x, y: N x D and M x D features.
        unbiased: leave out the k(a, a) terms (the U-statistic, whose mean over draws is the true
            MMD^2, 0 for equal distributions); False gives the biased V-statistic (always > 0).
    """
    x, y = as_f64(x), as_f64(y)
    m, n = len(x), len(y)
    kxx, kyy, kxy = _poly_kernel(x, x), _poly_kernel(y, y), _poly_kernel(x, y)
    if unbiased:
        if m < 2 or n < 2:
            raise GantoolsError("the unbiased MMD needs at least 2 samples per set")
        xx = (kxx.sum() - np.trace(kxx)) / (m * (m - 1))
        yy = (kyy.sum() - np.trace(kyy)) / (n * (n - 1))
    else:
        xx, yy = kxx.mean(), kyy.mean()
    return float(xx + yy - 2 * kxy.mean())


def kid(features_a: Any, features_b: Any, subsets: int = 100, subset_size: int = 1000,
        seed: int = 0) -> tuple[float, float]:
    """Kernel Inception Distance: mean and standard deviation of the unbiased MMD^2 over random subsets.

    Args:
        features_a, features_b: N x D and M x D features.
        subsets: number of random subset pairs.
        subset_size: samples per subset (capped at the smaller set's size).
        seed: seeds the subset draws.
    """
    a, b = as_f64(features_a), as_f64(features_b)
    m = min(subset_size, len(a), len(b))
    if m < 2:
        raise GantoolsError(f"KID needs at least 2 samples per set, got {len(a)} and {len(b)}")
    rng = np.random.default_rng(seed)
    values = [mmd2_polynomial(a[rng.choice(len(a), m, replace=False)], b[rng.choice(len(b), m, replace=False)])
              for _ in range(subsets)]
    return float(np.mean(values)), float(np.std(values))


def _kth_neighbour_radii(x: torch.Tensor, k: int, chunk: int) -> torch.Tensor:
    """Distance from each row to its k-th nearest other row."""
    radii = []
    for i in range(0, len(x), chunk):
        d = torch.cdist(x[i:i + chunk], x)
        radii.append(d.topk(k + 1, dim=1, largest=False).values[:, k])  # column 0 is the point itself
    return torch.cat(radii)


def _inside(points: torch.Tensor, centres: torch.Tensor, radii: torch.Tensor, chunk: int) -> torch.Tensor:
    """For each point: does it lie within radius of some centre?"""
    out = []
    for i in range(0, len(points), chunk):
        out.append((torch.cdist(points[i:i + chunk], centres) <= radii[None, :]).any(dim=1))
    return torch.cat(out)


def precision_recall(real_features: Any, fake_features: Any, k: int = 3, chunk: int = 1024) -> tuple[float, float]:
    """Improved precision and recall (Kynkäänniemi et al. 2019) with k-nearest-neighbour manifolds.

    Precision: share of generated samples inside the real manifold (the union of balls around each
    real sample reaching its k-th nearest real neighbour). Recall: share of real samples inside the
    generated manifold.

    Args:
        real_features, fake_features: N x D and M x D features.
        k: neighbourhood size (3, as in the paper).
        chunk: rows per distance block (memory ~ chunk x N x 8 bytes).
    """
    real = torch.as_tensor(as_f64(real_features))
    fake = torch.as_tensor(as_f64(fake_features))
    if len(real) <= k or len(fake) <= k:
        raise GantoolsError(f"precision/recall with k={k} needs more than {k} samples per set, "
                            f"got {len(real)} real and {len(fake)} generated")
    real_r = _kth_neighbour_radii(real, k, chunk)
    fake_r = _kth_neighbour_radii(fake, k, chunk)
    precision = _inside(fake, real, real_r, chunk).double().mean()
    recall = _inside(real, fake, fake_r, chunk).double().mean()
    return float(precision), float(recall)


def real_floor(real_features: Any, metrics: Sequence[str] = ("fid", "kid", "pr"), k: int = 3,
               kid_subsets: int = 100, kid_subset_size: int = 1000, seed: int = 0) -> dict[str, float]:
    """FID, KID and precision/recall between two disjoint random halves of the real features.

    A model whose samples were more real images would score about this: the floor that the
    extractor and the sample size allow (each half has N/2 images, and FID's bias grows as N
    shrinks, so the floor at N itself is a little lower). Metrics that need more images than a
    half holds (2 for FID/KID, more than k for precision/recall) are left out.

    Args:
        real_features: N x D features of real images.
        metrics: which of fid, kid, pr.
        k, kid_subsets, kid_subset_size: as for the model's scores.
        seed: seeds the split and KID's subsets.

    Returns: {"n": images per half, and fid, kid, kid_std, precision, recall where measured}.
    """
    real = torch.as_tensor(as_f64(real_features))
    half = len(real) // 2
    out: dict[str, float] = {"n": half}
    if half < 2:
        return out
    order = torch.randperm(len(real), generator=torch.Generator().manual_seed(seed))
    a, b = real[order[:half]], real[order[half:2 * half]]
    if "fid" in metrics:
        out["fid"] = fid(a, b)
    if "kid" in metrics:
        out["kid"], out["kid_std"] = kid(a, b, kid_subsets, kid_subset_size, seed)
    if "pr" in metrics and half > k:
        out["precision"], out["recall"] = precision_recall(a, b, k)
    return out


def tv_distance(p: Sequence[float] | torch.Tensor, q: Sequence[float] | torch.Tensor) -> float:
    """Total variation distance between two discrete distributions (normalised first)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        raise GantoolsError("cannot compare empty distributions")
    return float(0.5 * (p / p.sum() - q / q.sum()).abs().sum())


__all__ = ["as_f64", "feature_stats", "fid", "frechet_distance", "kid", "mmd2_polynomial", "precision_recall", "psnr",
           "real_floor", "ssim", "tv_distance"]
