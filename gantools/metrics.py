"""Image-quality numbers on the [0, 1] intensity scale, and sample-quality metrics (FID, KID, precision/recall).

PSNR and SSIM use scikit-image with data_range=1, whatever range the models use inside.

Sample quality (`evaluate`, `gantools eval`): FID, KID and k-NN precision/recall between generated
samples and real data, on features from a pluggable `FeatureExtractor` (the model's companion
classifier, its learned segmenter's encoder, a local Inception-v3, or a seeded random conv net).
Reference statistics are cached per (dataset, extractor); every result records its extractor,
because scores from different extractors are not comparable. Also class coverage (with a classifier)
and concept pixel frequencies (with a segmenter). `training_fid` is the hook `gantools train
--eval-every` calls.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .utils import GantoolsError, ProgressCallback, from_uint8, get_device, notice, report, to_uint8, to_unit

if TYPE_CHECKING:
    from .models import GAN, Generator


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


# =============================================================================================
# Sample quality: FID, KID and precision/recall on features from a pluggable extractor.
#
# The statistics are written here (float64 numpy/torch, ~60 lines) rather than taken from
# torchmetrics: torchmetrics' FID/KID are stateful accumulators whose reference statistics cannot be
# cached per (dataset, extractor) without touching private state, it has no k-NN precision/recall,
# and its Inception path needs torch-fidelity plus a download. tests/test_metrics.py checks these
# functions against torchmetrics (with an identity feature extractor) and against closed forms.


def _as_f64(x: Any) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu().double().numpy()
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise GantoolsError(f"features must be an N x D matrix, got shape {x.shape}")
    return x


def feature_stats(features: Any) -> tuple[np.ndarray, np.ndarray]:
    """Mean and covariance (N-1 denominator) of N x D features, in float64."""
    f = _as_f64(features)
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
    a, b = _as_f64(features_a), _as_f64(features_b)
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
    x, y = _as_f64(x), _as_f64(y)
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
    a, b = _as_f64(features_a), _as_f64(features_b)
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
    real = torch.as_tensor(_as_f64(real_features))
    fake = torch.as_tensor(_as_f64(fake_features))
    if len(real) <= k or len(fake) <= k:
        raise GantoolsError(f"precision/recall with k={k} needs more than {k} samples per set, "
                            f"got {len(real)} real and {len(fake)} generated")
    real_r = _kth_neighbour_radii(real, k, chunk)
    fake_r = _kth_neighbour_radii(fake, k, chunk)
    precision = _inside(fake, real, real_r, chunk).double().mean()
    recall = _inside(real, fake, fake_r, chunk).double().mean()
    return float(precision), float(recall)


# ---------------------------------------------------------------------------------------------
# Feature extractors

INCEPTION_HOWTO = (
    "gantools never downloads weights: on a machine with network access run "
    "`python -c \"import torchvision; torchvision.models.inception_v3(weights='DEFAULT')\"`, copy the file it "
    "caches (~/.cache/torch/hub/checkpoints/inception_v3_google-0cc3c7bd.pth) here and pass it with "
    "--inception-weights PATH (torchvision's ImageNet weights: scores are comparable with each other, not with "
    "published FIDs, which use the TF-Inception weights)")


class FeatureExtractor:
    """Images (N x C x H x W in [-1, 1]) -> features (N x D float32, CPU), with a name and a fingerprint.

    Scores are comparable only between results with the same `fingerprint`: every EvalResult records it.

    Args:
        name: kind of extractor ("classifier", "segmenter", "inception", "random-conv").
        fn: the function from images on `device` to N x D features.
        fingerprint: a short hash of the weights and the preprocessing.
        description: a human-readable line (what, where from).
        device: where images are sent before `fn`.
        module: the network (kept so that callers can inspect it).
    """

    def __init__(self, name: str, fn: Callable[[torch.Tensor], torch.Tensor], fingerprint: str,
                 description: str = "", device: str | torch.device = "cpu", module: nn.Module | None = None) -> None:
        self.name, self.fn, self.fingerprint = name, fn, fingerprint
        self.description = description or name
        self.device = torch.device(device)
        self.module = module
        self.dim: int | None = None

    @torch.no_grad()
    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = from_uint8(images)
        out = self.fn(images.to(self.device, torch.float32)).float().flatten(1).cpu()
        self.dim = out.shape[1]
        return out

    def info(self) -> dict[str, Any]:
        return {"name": self.name, "fingerprint": self.fingerprint, "description": self.description, "dim": self.dim}

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name}, {self.fingerprint})"


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


RANDOM_CONV_SEED = 20190101
RANDOM_CONV_SIZE = 64


class RandomConvNet(nn.Module):
    """A fixed, seeded, untrained conv net: 4 stride-2 3x3 convs (32-256 channels, leaky ReLU, He-scaled
    Gaussian weights) on images resized to 64 px; features are every block's spatial mean (480 values).

    Untrained features still separate image statistics (colour, edges, textures at 4 scales), and they
    need no data and no download, which makes them the training-time FID. Scores on them are only
    comparable with scores on the same extractor (same fingerprint), never with Inception FIDs.
    """

    widths = (32, 64, 128, 256)

    def __init__(self, nc: int, seed: int = RANDOM_CONV_SEED) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)  # independent of the global RNG state
        self.convs = nn.ModuleList()
        cin = nc
        for w in self.widths:
            conv = nn.Conv2d(cin, w, 3, stride=2, padding=1)
            with torch.no_grad():
                conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) * (2.0 / (cin * 9)) ** 0.5)
                conv.bias.zero_()
            self.convs.append(conv)
            cin = w
        self.requires_grad_(False)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        if x.shape[-2:] != (RANDOM_CONV_SIZE, RANDOM_CONV_SIZE):
            x = F.interpolate(x, size=(RANDOM_CONV_SIZE, RANDOM_CONV_SIZE), mode="bilinear", align_corners=False,
                              antialias=True)
        feats = []
        for conv in self.convs:
            x = F.leaky_relu(conv(x), 0.2)
            feats.append(x.mean(dim=(2, 3)))
        return torch.cat(feats, dim=1)


def random_conv_extractor(nc: int, device: str | torch.device = "cpu") -> FeatureExtractor:
    """The seeded random-weights extractor (see RandomConvNet); needs no model companion."""
    from .models import fingerprint

    net = RandomConvNet(nc).to(device).eval()
    fp = _hash("random-conv", nc, RANDOM_CONV_SIZE, fingerprint(net))
    return FeatureExtractor("random-conv", net, fp, f"random-conv (seeded untrained CNN, nc={nc})", device, net)


def classifier_extractor(classifier: Any, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Penultimate-layer features of a domain classifier (a Classifier or a classifier .safetensors path)."""
    from .classifier import Classifier, load_classifier
    from .models import fingerprint

    clf = classifier if isinstance(classifier, Classifier) else load_classifier(classifier, device)
    clf = clf.to(device).eval()
    where = f" from {classifier}" if not isinstance(classifier, Classifier) else ""
    fp = _hash("classifier", clf.config.to_dict(), fingerprint(clf))
    return FeatureExtractor("classifier", clf.features, fp,
                            f"classifier{where} ({len(clf.classes)} classes, {clf.config.feature_dim} features)",
                            device, clf)


def segmenter_extractor(segmenter: Any, device: str | torch.device = "cpu") -> FeatureExtractor:
    """Pooled deepest encoder features of a learned segmenter (an object with `.features`, or a path)."""
    from .models import fingerprint

    seg = segmenter
    if isinstance(segmenter, (str, os.PathLike)):
        from .segmenters import load_segmenter

        seg = load_segmenter(str(segmenter), device=device)
    if not callable(getattr(seg, "features", None)):
        raise GantoolsError("this segmenter has no encoder features (the colour segmenter has none): "
                            "use a learned segmenter file from `gantools segmenter train`")
    if isinstance(seg, nn.Module):
        seg = seg.to(device).eval()
        weights = fingerprint(seg)
    else:
        weights = repr(seg)
    config = getattr(seg, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else repr(config)
    desc = getattr(seg, "description", None) or type(seg).__name__
    where = f" from {segmenter}" if isinstance(segmenter, (str, os.PathLike)) else ""
    return FeatureExtractor("segmenter", seg.features, _hash("segmenter", config, weights),
                            f"segmenter encoder{where} ({desc})", device, seg if isinstance(seg, nn.Module) else None)


def inception_extractor(weights: str | os.PathLike | None, device: str | torch.device = "cpu",
                        size: int = 299) -> FeatureExtractor:
    """torchvision's Inception-v3 pool features (2048) from a LOCAL weights file; never downloads.

    Images are resized to `size` x `size` (299, the network's native input; at least 75), grey images
    repeated to 3 channels, and fed in [-1, 1] (what the weights expect: torchvision's
    `transform_input` maps ImageNet-normalised input to that range).
    """
    import torchvision

    if size < 75:
        raise GantoolsError(f"inception needs inputs of at least 75 px, got {size}")
    if weights is None:
        raise GantoolsError("the inception extractor needs a local weights file (--inception-weights PATH). "
                            + INCEPTION_HOWTO)
    path = Path(weights)
    if not path.is_file():
        raise GantoolsError(f"inception weights file not found: {path}. " + INCEPTION_HOWTO)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # not a torch file, or a pickle with code in it
        raise GantoolsError(f"cannot read inception weights {path}: {e}. " + INCEPTION_HOWTO) from e
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GantoolsError(f"{path} is not a state dict of tensors. " + INCEPTION_HOWTO)
    net = torchvision.models.inception_v3(weights=None, aux_logits=True, transform_input=False, init_weights=False)
    try:
        missing, unexpected = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        raise GantoolsError(f"{path} does not fit torchvision's inception_v3: {str(e).splitlines()[0]}") from e
    missing = [k for k in missing if not k.startswith("AuxLogits.")]  # the aux head is not used
    if missing or unexpected:
        raise GantoolsError(f"{path} does not fit torchvision's inception_v3 ({len(missing)} missing, "
                            f"{len(unexpected)} unexpected tensors, e.g. {(missing + unexpected)[0]}). "
                            + INCEPTION_HOWTO)
    net.fc = nn.Identity()  # the output is then the 2048-d average-pooled features
    net = net.to(device).eval()

    def fn(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return net(images)

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return FeatureExtractor("inception", fn, _hash("inception", h.hexdigest(), size),
                            f"inception_v3 pool features from {path.name}" + (f" at {size} px" if size != 299 else ""),
                            device, net)


EXTRACTOR_CHOICES = ("auto", "classifier", "segmenter", "inception", "random")


def _file_kind(path: Path) -> str:
    """'classifier', 'segmenter' or 'inception' for an extractor file."""
    if path.suffix == ".safetensors":
        from .models import read_safetensors

        _, meta = read_safetensors(path, "extractor")
        if "classifier_config" in meta:
            return "classifier"
        if "segmenter_config" in meta:
            return "segmenter"
        raise GantoolsError(f"{path} is neither a classifier nor a segmenter file (no classifier_config or "
                            f"segmenter_config in its metadata)")
    return "inception"


def resolve_extractor(spec: str | os.PathLike | FeatureExtractor | None = "auto", gan: "GAN | None" = None,
                      nc: int = 3, inception_weights: str | os.PathLike | None = None,
                      device: str | torch.device = "cpu", progress: ProgressCallback | None = None) -> FeatureExtractor:
    """The feature extractor for `spec`.

    Args:
        spec: "auto" (inception when weights are given, else the model's companion classifier, else its
            learned segmenter, else random-conv with a notice), "classifier", "segmenter", "inception",
            "random" (random-conv), a file (classifier/segmenter .safetensors, or inception .pth), or
            a FeatureExtractor.
        gan: the model whose companions "auto"/"classifier"/"segmenter" use.
        nc: image channels (for random-conv).
        inception_weights: local Inception-v3 weights (a torchvision state dict).
        device: where the extractor runs.
        progress: callback for notices.
    """
    if isinstance(spec, FeatureExtractor):
        return spec
    text = str(spec or "auto")
    choice = text.lower()
    classifier = gan.companion("classifier") if gan is not None else None
    segmenter = gan.companion("segmenter") if gan is not None else None
    if choice == "auto":
        if inception_weights is not None:
            return inception_extractor(inception_weights, device)
        if classifier is not None:
            return classifier_extractor(classifier, device)
        if segmenter is not None:
            return segmenter_extractor(segmenter, device)
        notice(progress, "no classifier or segmenter stored with this model and no --inception-weights: "
                         "using the random-conv extractor (scores comparable only with random-conv scores)")
        return random_conv_extractor(nc, device)
    if choice == "classifier":
        if classifier is None:
            raise GantoolsError("this model has no classifier.safetensors beside it: train one with "
                                "`gantools classifier train --data DIR --out <model dir>/classifier.safetensors`, "
                                "or pass --extractor PATH")
        return classifier_extractor(classifier, device)
    if choice == "segmenter":
        if segmenter is None:
            raise GantoolsError("this model has no segmenter.safetensors beside it: pass --extractor PATH "
                                "to a segmenter from `gantools segmenter train`")
        return segmenter_extractor(segmenter, device)
    if choice == "inception":
        return inception_extractor(inception_weights, device)
    if choice in ("random", "random-conv"):
        return random_conv_extractor(nc, device)
    path = Path(text)
    if path.is_file():
        kind = _file_kind(path)
        if kind == "classifier":
            return classifier_extractor(path, device)
        if kind == "segmenter":
            return segmenter_extractor(path, device)
        return inception_extractor(path, device)
    raise GantoolsError(f"unknown extractor {text!r}: use {', '.join(EXTRACTOR_CHOICES)}, or a file "
                        f"(classifier or segmenter .safetensors, inception weights .pth)")


# ---------------------------------------------------------------------------------------------
# Reference statistics, cached per (dataset, extractor)

CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where reference statistics are cached: $GANTOOLS_CACHE/stats, default ~/.cache/gantools/stats."""
    root = os.environ.get("GANTOOLS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "gantools") / "stats"


def _image_files(root: Path) -> list[Path]:
    """A folder's images; for a labelled folder (images/, labels/), only those under images/."""
    from .data import find_images, is_labeled_folder

    return find_images(root / "images" if is_labeled_folder(root) else root)


def _holdout_files(root: Path, holdout: int) -> list[Path]:
    from .data import split_holdout

    return split_holdout(_image_files(root), holdout)[1]


def dataset_signature(data: str | os.PathLike, image_size: int, nc: int, n: int, seed: int = 0,
                      holdout: int = 0, version: int | None = None) -> dict[str, Any]:
    """What identifies a reference set without decoding it: a built-in name, design version and seed,
    or a folder's resolved path with its file count, total size and newest modification time (so
    edits invalidate)."""
    from .data import BUILTIN_DATASETS, dataset_version

    text = str(data)
    sig: dict[str, Any] = {"image_size": image_size, "nc": nc, "n": n}
    current = dataset_version(text)
    if current is not None:
        sig.update(dataset=text, seed=seed)
        if (version or current) != 1:  # version 1 keys stay as they were, so old caches still hit
            sig["version"] = version or current
        return sig
    path = Path(text)
    if not path.exists():
        raise GantoolsError(f"no dataset {text!r}: give a folder of images or a built-in name "
                            f"({', '.join(sorted(BUILTIN_DATASETS)) or 'none installed'})")
    files = _holdout_files(path, holdout) if holdout else _image_files(path)
    stats = [f.stat() for f in files]
    sig.update(path=str(path.resolve()), files=len(files), bytes=sum(s.st_size for s in stats),
               mtime=max((s.st_mtime_ns for s in stats), default=0), holdout=holdout)
    return sig


def cache_key(kind: str, signature: dict[str, Any], extractor_fingerprint: str) -> str:
    """The cache file stem for `kind` ("features", "concepts") of a dataset under an extractor."""
    return _hash(CACHE_VERSION, kind, signature, extractor_fingerprint)


def _open_reference(data: str | os.PathLike, image_size: int, nc: int, n: int, seed: int, holdout: int,
                    progress: ProgressCallback | None, version: int | None = None):
    from .data import ImageFolder, open_dataset

    if holdout:
        path = Path(str(data))
        if not path.is_dir():
            raise GantoolsError("--holdout applies to image folders only")
        return ImageFolder(path, image_size, nc, files=_holdout_files(path, holdout), progress=progress)
    return open_dataset(data, image_size, nc, n=n, seed=seed, progress=progress, version=version)


def _batches(dataset: Any, indices: torch.Tensor, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """uint8 image batches (and label batches when the dataset has labels, as scenes does)."""
    from .data import batch_images

    fast = isinstance(getattr(dataset, "images", None), torch.Tensor)
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        if fast:
            yield batch_images(dataset, idx), None
            continue
        items = [dataset[int(j)] for j in idx]
        if isinstance(items[0], tuple):
            yield torch.stack([it[0] for it in items]), torch.stack([torch.as_tensor(it[1]) for it in items])
        else:
            yield torch.stack(items), None


@dataclass
class _Consumer:
    """One statistic computed over the reference images: per-batch fn, then concatenated or summed."""

    kind: str
    fingerprint: str
    fn: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]]
    reduce: str  # "cat" or "sum"


_MEMO: dict[str, dict[str, Any]] = {}  # in-process copy of cache entries (training evaluates repeatedly)


def _reference(data: str | os.PathLike, image_size: int, nc: int, n: int, consumers: Sequence[_Consumer],
               seed: int = 0, holdout: int = 0, batch_size: int = 100, use_cache: bool = True,
               progress: ProgressCallback | None = None,
               version: int | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Reference statistics for each consumer, from the cache where present; decodes the data only
    when some consumer misses. Returns ({kind: entry}, cache info)."""
    sig = dataset_signature(data, image_size, nc, n, seed, holdout, version)
    out: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"hits": [], "misses": [], "files": {}}
    missing = []
    for c in consumers:
        key = cache_key(c.kind, sig, c.fingerprint)
        path = cache_dir() / f"{key}.pt"
        info["files"][c.kind] = str(path)
        entry = _MEMO.get(key) if use_cache else None
        if entry is None and use_cache and path.is_file():
            try:
                entry = torch.load(path, map_location="cpu", weights_only=True)
            except Exception:  # a corrupt or old-format cache file: recompute it
                entry = None
        if entry is not None and entry.get("version") == CACHE_VERSION:
            out[c.kind] = entry
            _MEMO[key] = entry
            info["hits"].append(c.kind)
        else:
            missing.append((c, key, path))
    if not missing:
        info["n_real"] = int(next(iter(out.values()))["n"]) if out else 0
        return out, info
    dataset = _open_reference(data, image_size, nc, n, seed, holdout, progress, version)
    total = len(dataset)
    if total < 2:
        raise GantoolsError(f"the reference data {data} has {total} image(s): at least 2 are needed")
    # A seeded subset when the data holds more than n images (the same subset for every extractor).
    indices = (torch.randperm(total, generator=torch.Generator().manual_seed(0))[:n].sort().values
               if total > n else torch.arange(total))
    parts: dict[str, list[dict[str, torch.Tensor]]] = {c.kind: [] for c, _, _ in missing}
    done = 0
    for images, labels in _batches(dataset, indices, batch_size):
        if images.shape[1] != nc or images.shape[-1] != image_size:
            raise GantoolsError(f"the reference data has {images.shape[1]}-channel {images.shape[-1]} px images; "
                                f"the model makes {nc}-channel {image_size} px images")
        for c, _, _ in missing:
            parts[c.kind].append(c.fn(images, labels))
        done += len(images)
        report(progress, "reference statistics", done, len(indices))
    for c, key, path in missing:
        batches = parts[c.kind]
        entry: dict[str, Any] = {"version": CACHE_VERSION, "n": len(indices), "signature": json.dumps(sig),
                                 "data_concepts": json.dumps(list(getattr(dataset, "concepts", None) or []))}
        for name in batches[0]:
            values = [b[name] for b in batches if name in b]
            if len(values) != len(batches):
                continue  # e.g. ground-truth labels present in some batches only
            entry[name] = torch.cat(values) if c.reduce == "cat" else torch.stack(values).sum(0)
        out[c.kind] = entry
        if use_cache:
            from .utils import torch_save

            try:
                torch_save(entry, path)
            except OSError as e:  # a read-only home must not stop evaluation
                notice(progress, f"could not cache reference statistics in {path.parent}: {e}")
            _MEMO[key] = entry
        info["misses"].append(c.kind)
    info["n_real"] = len(indices)
    return out, info


def reference_features(data: str | os.PathLike, extractor: FeatureExtractor, image_size: int, nc: int,
                       n: int = 5000, seed: int = 0, holdout: int = 0, batch_size: int = 100,
                       use_cache: bool = True, progress: ProgressCallback | None = None,
                       version: int | None = None) -> torch.Tensor:
    """Features of (up to) n reference images under `extractor`, cached per (dataset, extractor).

    Args:
        data: a built-in dataset name ("scenes") or a folder.
        extractor: the feature extractor.
        image_size, nc: the images' size and channels (the model's).
        n: reference images (a seeded subset when the data holds more).
        seed: seed of a built-in dataset.
        holdout: for folders, use only the `holdout` held-out images (as `data.split_holdout` picks them).
        batch_size: images per forward pass.
        use_cache: read and write the cache (GANTOOLS_CACHE).
        progress: callback.
        version: design version of a built-in dataset (default: its current one).
    """
    consumer = _Consumer("features", extractor.fingerprint, lambda x, _: {"features": extractor(x)}, "cat")
    entries, _ = _reference(data, image_size, nc, n, [consumer], seed, holdout, batch_size, use_cache, progress,
                            version)
    return entries["features"]["features"]


# ---------------------------------------------------------------------------------------------
# Concept statistics (segmentable domains)


@dataclass
class ConceptStats:
    """Each concept's share of pixels in generated and real images, as one segmenter labels them.

    Args:
        concepts: concept names.
        generated: pixel frequency per concept in generated images (sums to 1).
        real: the same in real images, through the same segmenter (so its errors affect both alike).
        tv_distance: total variation distance 0.5 * sum |generated - real| (0 equal, 1 disjoint).
        segmenter: description of the segmenter.
        real_truth: real frequencies from ground-truth labels, when the data has them (scenes).
    """

    concepts: list[str]
    generated: list[float]
    real: list[float]
    tv_distance: float
    segmenter: str
    real_truth: list[float] | None = None

    def relative_difference(self, min_frequency: float = 0.01) -> dict[str, float]:
        """(generated - real) / real for concepts above `min_frequency` of real pixels."""
        return {c: (g - r) / r for c, g, r in zip(self.concepts, self.generated, self.real) if r > min_frequency}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["relative_difference"] = self.relative_difference()
        return d


def tv_distance(p: Sequence[float] | torch.Tensor, q: Sequence[float] | torch.Tensor) -> float:
    """Total variation distance between two discrete distributions (normalised first)."""
    p = torch.as_tensor(p, dtype=torch.float64)
    q = torch.as_tensor(q, dtype=torch.float64)
    if p.sum() <= 0 or q.sum() <= 0:
        raise GantoolsError("cannot compare empty distributions")
    return float(0.5 * (p / p.sum() - q / q.sum()).abs().sum())


MAX_CONCEPTS = 256  # ground-truth label ids are counted up to this


def _truth_frequencies(entry: dict[str, Any], concepts: list[str]) -> list[float] | None:
    """Ground-truth pixel frequencies in the segmenter's concept order, when the data's labels use
    the same concepts (matched by name); None otherwise (e.g. colour terms vs scene concepts)."""
    truth = entry.get("truth")
    data_concepts = json.loads(entry.get("data_concepts") or "[]")
    if truth is None or not data_concepts or not set(concepts) <= set(data_concepts) or truth.sum() <= 0:
        return None
    picked = torch.stack([truth[data_concepts.index(c)] for c in concepts])
    return (picked / truth.sum()).tolist()


def _label_counts(labels: torch.Tensor, k: int) -> torch.Tensor:
    labels = labels.flatten().long().cpu()
    labels = labels[(labels >= 0) & (labels < k)]
    return torch.bincount(labels, minlength=k).double()


def _segmenter_fingerprint(seg: Any) -> str:
    from .models import fingerprint

    if isinstance(seg, nn.Module):
        return _hash("segmenter", fingerprint(seg))
    return _hash("segmenter", type(seg).__name__, list(getattr(seg, "concepts", [])))


def _describe(seg: Any) -> str:
    try:
        from .segmenters import describe_segmenter

        return describe_segmenter(seg)
    except Exception:  # describe is best-effort text
        return getattr(seg, "description", None) or type(seg).__name__


# ---------------------------------------------------------------------------------------------
# evaluate: everything together

METRICS = ("fid", "kid", "pr", "classes", "concepts")


@dataclass
class EvalResult:
    """What `evaluate` measured. Scores are comparable only between results with the same extractor fingerprint.

    Args:
        model: model path; model_fingerprint: hash of the generator's weights.
        data: the reference data; n_generated, n_real: sample counts; seed: seed of the generated samples.
        extractor: name, fingerprint, description and dim of the feature extractor.
        metrics: fid, kid, kid_std, precision, recall (those asked for).
        floor: the same metrics between two disjoint random halves of the real images (n: images per
            half), what a model indistinguishable from the real data would score with this extractor
            and this many images (see `real_floor`); empty when not measured.
        class_coverage: class shares of generated samples (with a classifier).
        concepts: concept pixel frequencies (with a segmenter).
        cache: which reference statistics came from the cache, and where.
        settings: the remaining settings (k, KID subsets...).
        seconds: wall time.
    """

    model: str
    model_fingerprint: str
    data: str | None
    n_generated: int
    n_real: int
    seed: int
    extractor: dict[str, Any] | None
    metrics: dict[str, float] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)
    class_coverage: Any = None
    concepts: ConceptStats | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("model", "model_fingerprint", "data", "n_generated", "n_real", "seed",
                                            "extractor", "metrics", "floor", "cache", "settings", "seconds")}
        d["meaning"] = self.explain()
        d["class_coverage"] = self.class_coverage.to_dict() if self.class_coverage is not None else None
        d["concepts"] = self.concepts.to_dict() if self.concepts is not None else None
        return d

    def explain(self) -> dict[str, str]:
        """One line per metric measured: what its number means with this extractor, read against the floor."""
        if not self.metrics or self.extractor is None:
            return {}
        feats = f"{self.extractor['name']} features"
        fl = self.floor

        def real(key: str, text: str) -> str:
            if key not in fl:
                return ""
            return f"; real images score {text} against other real images ({fl['n']} + {fl['n']})"

        k = self.settings.get("k", 3)
        out = {}
        if "fid" in self.metrics:
            out["fid"] = (f"distance between the means and covariances of generated and real {feats}"
                          + (real("fid", f"{fl['fid']:.4g}") + ", the best a model can do here" if "fid" in fl
                             else "; 0 = identical")
                          + "; comparable only with the same extractor fingerprint and N")
        if "kid" in self.metrics:
            kid_text = f"{1000 * fl['kid']:.3g} ± {1000 * fl['kid_std']:.2g}" if "kid" in fl else ""
            out["kid"] = (f"the same comparison of {feats} (x1000) without FID's small-sample bias: about 0 when "
                          "generated and real images are alike" + real("kid", kid_text))
        if "precision" in self.metrics:
            out["precision"] = (f"share of generated images that land among real images ({k} nearest neighbours in "
                                f"{feats}): realism" + real("precision", f"{fl.get('precision', 0):.3f}"))
            out["recall"] = (f"share of real images that generated images reach ({k} nearest neighbours): how much "
                             "of the real variety the model covers" + real("recall", f"{fl.get('recall', 0):.3f}"))
        return out


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
    real = torch.as_tensor(_as_f64(real_features))
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


def parse_metrics(metrics: str | Sequence[str], has_classifier: bool = False, has_segmenter: bool = False) -> list[str]:
    """"fid,kid,pr" -> ["fid", "kid", "pr"]; "auto" adds classes/concepts when the model has a
    classifier/learned segmenter beside it; "all" is every metric."""
    items = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    out: list[str] = []
    for m in items:
        if m == "auto":
            add = ["fid", "kid", "pr"] + (["classes"] if has_classifier else []) + (["concepts"] if has_segmenter else [])
        elif m == "all":
            add = list(METRICS)
        elif m in METRICS:
            add = [m]
        elif m in ("precision", "recall", "precision_recall"):
            add = ["pr"]
        else:
            raise GantoolsError(f"unknown metric {m!r}: use {', '.join(METRICS)}, auto or all")
        out += [a for a in add if a not in out]
    if not out:
        raise GantoolsError(f"no metrics asked for: use {', '.join(METRICS)}, auto or all")
    return out


def _training_record(gan: "GAN") -> dict[str, Any]:
    training = (gan.metadata or {}).get("training")
    return training if isinstance(training, dict) else {}


def _data_from_model(gan: "GAN") -> str | None:
    data = _training_record(gan).get("data")
    return str(data) if data else None


def data_version_of(gan: "GAN", data: str | os.PathLike | None) -> int | None:
    """The design version of a built-in dataset that `gan` was trained on, when `data` is that dataset
    (models exported before versions were recorded were trained on version 1); else None (current)."""
    record = _training_record(gan)
    if data is None or str(data) != str(record.get("data")):
        return None
    return int(record.get("data_version") or 1)


def evaluate(model: "GAN | str | os.PathLike" = "scenes64", data: str | os.PathLike | None = None, n: int = 5000,
             metrics: str | Sequence[str] = "auto", extractor: str | os.PathLike | FeatureExtractor = "auto",
             inception_weights: str | os.PathLike | None = None, classifier: Any = None, segmenter: Any = None,
             seed: int = 0, holdout: int = 0, k: int = 3, kid_subsets: int = 100, kid_subset_size: int = 1000,
             confidence: float = 0.9, batch_size: int = 100, use_cache: bool = True,
             device: str | torch.device = "cpu", progress: ProgressCallback | None = None,
             data_version: int | None = None, floor: bool = True) -> EvalResult:
    """Sample-quality metrics of a GAN against real data: FID, KID, precision/recall, class coverage, concepts.

    Args:
        model: a GAN or a model spec (file, run dir, pretrained name).
        data: reference data (built-in name or folder); default: the data the model was trained on,
            when its metadata records it.
        n: generated images (and at most this many reference images).
        metrics: comma-separated subset of fid, kid, pr, classes, concepts; "auto" = fid,kid,pr plus
            classes/concepts when the model has a classifier/learned segmenter beside it.
        extractor: see `resolve_extractor` ("auto", "classifier", "segmenter", "inception", "random", a file).
        inception_weights: a local torchvision Inception-v3 state dict (never downloaded).
        classifier: classifier for "classes" (a Classifier or path); default the model's companion.
        segmenter: segmenter for "concepts" (see segmenters.load_segmenter); default the model's companion.
        seed: seed of the generated samples.
        holdout: for folder data, compare with only the `holdout` images `data.split_holdout` leaves out.
        k: neighbourhood size for precision/recall.
        kid_subsets, kid_subset_size: KID's random subsets.
        confidence: top-class probability that counts as confidently classified.
        batch_size: images per forward pass.
        use_cache: use and fill the reference-statistics cache.
        device: where the networks run.
        progress: callback.
        data_version: design version of a built-in reference dataset; default: the version the model
            was trained on when `data` is its training data, else the current one.
        floor: also score two disjoint halves of the real images against each other (`real_floor`):
            what a perfect model would score with this extractor and N, to read the model's scores by.
    """
    from .classifier import Classifier, coverage_from_probs, load_classifier
    from .models import GAN, fingerprint, load_model

    start = time.monotonic()
    dev = get_device(device)
    gan = model if isinstance(model, GAN) else load_model(model, dev)
    cfg = gan.config
    if n < 2:
        raise GantoolsError(f"n must be at least 2, got {n}")
    if k < 1 or kid_subsets < 1 or kid_subset_size < 2 or batch_size < 1:
        raise GantoolsError("k, kid subsets and batch size must be at least 1, kid subset size at least 2")
    wanted = parse_metrics(metrics, has_classifier=classifier is not None or gan.companion("classifier") is not None,
                           has_segmenter=segmenter is not None or gan.companion("segmenter") is not None)
    need_features = any(m in wanted for m in ("fid", "kid", "pr"))
    data = data if data is not None else _data_from_model(gan)
    if data is None and (need_features or "concepts" in wanted):
        raise GantoolsError("give the reference data (--data): a folder of images or a built-in name such as scenes")

    fx = resolve_extractor(extractor, gan, cfg.nc, inception_weights, dev, progress) if need_features else None

    clf = None
    if "classes" in wanted:
        if classifier is None:
            if fx is not None and fx.name == "classifier":
                clf = fx.module
            elif gan.companion("classifier") is not None:
                clf = load_classifier(gan.companion("classifier"), dev)
            else:
                raise GantoolsError("class coverage needs a classifier: this model has no classifier.safetensors "
                                    "beside it (train one with `gantools classifier train`)")
        else:
            clf = classifier if isinstance(classifier, Classifier) else load_classifier(classifier, dev)
    seg = None
    if "concepts" in wanted:
        from .segmenters import load_segmenter

        seg = segmenter if segmenter is not None and not isinstance(segmenter, (str, os.PathLike)) else \
            load_segmenter(segmenter, gan=gan, device=dev)
        if isinstance(seg, nn.Module):
            seg = seg.to(dev).eval()

    # Reference statistics (cached).
    consumers = []
    if fx is not None:
        consumers.append(_Consumer("features", fx.fingerprint, lambda x, _: {"features": fx(x)}, "cat"))
    if seg is not None:
        kc = len(seg.concepts)

        def seg_counts(x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
            out = {"counts": _label_counts(seg(from_uint8(x).to(dev)), kc)}
            if labels is not None:  # ground truth, in the dataset's own concept ids (mapped by name below)
                out["truth"] = _label_counts(labels, MAX_CONCEPTS)
            return out

        consumers.append(_Consumer("concepts", _segmenter_fingerprint(seg), seg_counts, "sum"))
    entries: dict[str, dict[str, Any]] = {}
    cache: dict[str, Any] = {}
    n_real = 0
    if consumers:
        entries, cache = _reference(data, cfg.image_size, cfg.nc, n, consumers, holdout=holdout,
                                    batch_size=batch_size, use_cache=use_cache, progress=progress,
                                    version=data_version if data_version is not None else data_version_of(gan, data))
        n_real = cache.pop("n_real")

    # Generated samples, streamed: quantised to uint8 like real images, then every consumer.
    g = gan.generator
    was_training = g.training
    g.eval()
    z_all = g.sample_z(n, seed, device="cpu")
    feats, probs = [], []
    gen_counts = None
    try:
        with torch.no_grad():
            for i in range(0, n, batch_size):
                images = from_uint8(to_uint8(g(z_all[i:i + batch_size].to(dev))))
                if fx is not None and clf is not None and fx.module is clf:
                    f, p = clf.features_and_proba(images.to(dev))  # one pass for both
                    feats.append(f.float().cpu())
                    probs.append(p.cpu())
                else:
                    if fx is not None:
                        feats.append(fx(images))
                    if clf is not None:
                        probs.append(clf.predict_proba(images).cpu())
                if seg is not None:
                    c = _label_counts(seg(images), len(seg.concepts))
                    gen_counts = c if gen_counts is None else gen_counts + c
                report(progress, "generated samples", min(i + batch_size, n), n)
    finally:
        g.train(was_training)

    scores: dict[str, float] = {}
    if fx is not None:
        fake = torch.cat(feats)
        real = entries["features"]["features"]
        if "fid" in wanted:
            scores["fid"] = fid(real, fake)
        if "kid" in wanted:
            scores["kid"], scores["kid_std"] = kid(real, fake, kid_subsets, kid_subset_size, seed)
        if "pr" in wanted:
            scores["precision"], scores["recall"] = precision_recall(real, fake, k)
    floor_scores: dict[str, float] = {}
    if fx is not None and floor:
        floor_scores = real_floor(entries["features"]["features"], wanted, k, kid_subsets, kid_subset_size, seed)
        missing = [m for m in ("fid", "kid", "precision") if m in scores and m not in floor_scores]
        if missing:
            notice(progress, f"{n_real} real images are too few to score two halves against each other for "
                             f"{', '.join(missing)}: no floor to read those by")
    coverage = coverage_from_probs(torch.cat(probs), clf.classes, confidence) if clf is not None else None
    concepts = None
    if seg is not None:
        entry = entries["concepts"]
        gen_p = gen_counts / gen_counts.sum()
        real_p = entry["counts"] / entry["counts"].sum()
        concepts = ConceptStats(list(seg.concepts), gen_p.tolist(), real_p.tolist(), tv_distance(gen_p, real_p),
                                _describe(seg), _truth_frequencies(entry, list(seg.concepts)))
    return EvalResult(
        model=str(gan.path) if gan.path else "(in memory)", model_fingerprint=fingerprint(gan.generator),
        data=str(data) if data is not None else None, n_generated=n, n_real=n_real, seed=seed,
        extractor=fx.info() if fx is not None else None, metrics=scores, floor=floor_scores,
        class_coverage=coverage, concepts=concepts,
        cache=cache, settings={"metrics": wanted, "k": k, "kid_subsets": kid_subsets,
                               "kid_subset_size": min(kid_subset_size, n, n_real or n), "confidence": confidence,
                               "holdout": holdout},
        seconds=round(time.monotonic() - start, 2))


# ---------------------------------------------------------------------------------------------
# The training hook

TRAINING_EXTRACTOR = "random-conv"
TRAINING_SEED = 0


def training_fid(generator: "Generator", data: str | os.PathLike, image_size: int, nc: int, n: int = 1000,
                 device: str | torch.device = "cpu", version: int | None = None) -> float:
    """FID of a generator during training, on the seeded random-conv extractor (needs no companion).

    The same extractor, the same n and the same latent seed at every call, with the reference features
    cached, so successive checkpoints' scores are comparable with each other (and only with other
    "random-conv" FIDs: see `TRAINING_EXTRACTOR`). The generator's train/eval mode is restored.

    Args:
        generator: the generator being trained.
        data: the training data (built-in name or folder).
        image_size, nc: its images' size and channels.
        n: generated and reference images.
        device: where to run.
    """
    dev = get_device(device)
    fx = _training_extractor(nc, dev)
    real = reference_features(data, fx, image_size, nc, n=n, version=version)
    was_training = generator.training
    generator.eval()
    feats = []
    try:
        with torch.no_grad():
            z = generator.sample_z(n, TRAINING_SEED, device="cpu")
            for i in range(0, n, 100):
                feats.append(fx(from_uint8(to_uint8(generator(z[i:i + 100].to(dev))))))
    finally:
        generator.train(was_training)
    return fid(real, torch.cat(feats))


_TRAINING_FX: dict[tuple[int, str], FeatureExtractor] = {}


def _training_extractor(nc: int, device: torch.device) -> FeatureExtractor:
    key = (nc, str(device))
    if key not in _TRAINING_FX:
        _TRAINING_FX[key] = random_conv_extractor(nc, device)
    return _TRAINING_FX[key]
