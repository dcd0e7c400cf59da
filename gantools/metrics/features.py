"""Feature extractors for the sample-quality metrics: images in, N x D features out, with a fingerprint.

Scores are comparable only between results with the same extractor fingerprint. The extractors:
the model's companion classifier, its learned segmenter's encoder, a local Inception-v3, or a seeded
random conv net (no data, no download: the training-time FID). `resolve_extractor` picks one.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..classifier import CLASSIFIER_COMPONENT, Classifier, resolve_classifier
from ..classifier import CONFIG_KEY as CLASSIFIER_CONFIG_KEY
from ..models import fingerprint, read_safetensors
from ..segmenters import CONFIG_KEY as SEGMENTER_CONFIG_KEY
from ..segmenters import SEGMENTER_COMPONENT, resolve_segmenter
from ..utils import GantoolsError, ProgressCallback, from_uint8, get_device, module_device, notice, resolve_device

if TYPE_CHECKING:
    from ..models import GAN
    from ..types import DeviceSpec, SegmenterSpec

INCEPTION_HOWTO = (
    "gantools never downloads weights: on a machine with network access run "
    "`python -c \"import torchvision; torchvision.models.inception_v3(weights='DEFAULT')\"`, copy the file it "
    "caches (~/.cache/torch/hub/checkpoints/inception_v3_google-0cc3c7bd.pth) here and pass its path as "
    "inception_weights (torchvision's ImageNet weights: scores are comparable with each other, not with "
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
                 description: str = "", device: "DeviceSpec" = "cpu", module: nn.Module | None = None) -> None:
        self.name, self.fn, self.fingerprint = name, fn, fingerprint
        self.description = description or name
        self.device = get_device(device)
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
        """What results record about the extractor: name, fingerprint, description, feature size."""
        return {"name": self.name, "fingerprint": self.fingerprint, "description": self.description, "dim": self.dim}

    def __repr__(self) -> str:
        return f"FeatureExtractor({self.name}, {self.fingerprint})"


def stable_hash(*parts: Any) -> str:
    """A short hash of JSON-able parts (fingerprints and cache keys): the same on every run and machine."""
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


def random_conv_extractor(nc: int, device: "DeviceSpec" = None) -> FeatureExtractor:
    """The seeded random-weights extractor (see RandomConvNet); needs no model companion. Runs on
    `device` (None: "auto")."""
    device = resolve_device(device)
    net = RandomConvNet(nc).to(device).eval()
    fp = stable_hash("random-conv", nc, RANDOM_CONV_SIZE, fingerprint(net))
    return FeatureExtractor("random-conv", net, fp, f"random-conv (seeded untrained CNN, nc={nc})", device, net)


def classifier_extractor(classifier: "Classifier | str | os.PathLike", device: "DeviceSpec" = None) -> FeatureExtractor:
    """Penultimate-layer features of a domain classifier (a Classifier or a classifier .safetensors path).
    Runs on `device` (None: where a loaded classifier lives, else "auto")."""
    clf = resolve_classifier(classifier, device=device)
    where = f" from {classifier}" if not isinstance(classifier, Classifier) else ""
    fp = stable_hash("classifier", clf.config.to_dict(), fingerprint(clf))
    return FeatureExtractor("classifier", clf.features, fp,
                            f"classifier{where} ({len(clf.classes)} classes, {clf.config.feature_dim} features)",
                            module_device(clf), clf)


NO_FEATURES = ("this segmenter has no encoder features (the colour segmenter has none): use a learned segmenter "
               "file from `gantools segmenter train`")


def segmenter_extractor(segmenter: "SegmenterSpec", device: "DeviceSpec" = None) -> FeatureExtractor:
    """Pooled deepest encoder features of a learned segmenter (a segmenter with `.features`, or a spec
    for `segmenters.resolve_segmenter`). Runs on `device` (None: where a loaded one lives, else "auto")."""
    is_spec = isinstance(segmenter, (str, os.PathLike))
    if not is_spec and not callable(getattr(segmenter, "features", None)):
        raise GantoolsError(NO_FEATURES)  # before resolving: any object with features will do
    seg = resolve_segmenter(segmenter, device=device)
    if not callable(getattr(seg, "features", None)):
        raise GantoolsError(NO_FEATURES)
    weights = fingerprint(seg) if isinstance(seg, nn.Module) else repr(seg)
    config = getattr(seg, "config", None)
    config = config.to_dict() if hasattr(config, "to_dict") else repr(config)
    desc = getattr(seg, "description", None) or type(seg).__name__
    where = f" from {segmenter}" if is_spec else ""
    return FeatureExtractor("segmenter", seg.features, stable_hash("segmenter", config, weights),
                            f"segmenter encoder{where} ({desc})", resolve_device(device, seg),
                            seg if isinstance(seg, nn.Module) else None)


def inception_extractor(weights: str | os.PathLike | None, device: "DeviceSpec" = None,
                        size: int = 299) -> FeatureExtractor:
    """torchvision's Inception-v3 pool features (2048) from a LOCAL weights file; never downloads.

    Images are resized to `size` x `size` (299, the network's native input; at least 75), grey images
    repeated to 3 channels, and fed in [-1, 1] (what the weights expect: torchvision's
    `transform_input` maps ImageNet-normalised input to that range). Runs on `device` (None: "auto").
    """
    if size < 75:
        raise GantoolsError(f"inception needs inputs of at least 75 px, got {size}")
    if weights is None:
        raise GantoolsError("the inception extractor needs a local weights file (inception_weights). "
                            + INCEPTION_HOWTO)
    path = Path(weights)
    device = resolve_device(device)
    net = _inception_net(path).to(device).eval()

    def fn(images: torch.Tensor) -> torch.Tensor:
        if images.shape[1] == 1:
            images = images.expand(-1, 3, -1, -1)
        images = F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False)
        return net(images)

    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return FeatureExtractor("inception", fn, stable_hash("inception", h.hexdigest(), size),
                            f"inception_v3 pool features from {path.name}" + (f" at {size} px" if size != 299 else ""),
                            device, net)


def _inception_net(path: Path) -> nn.Module:
    """torchvision's inception_v3 with the weights of `path`, its last layer replaced by the identity."""
    import torchvision  # only for this extractor

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
    return net


EXTRACTOR_CHOICES = ("auto", "classifier", "segmenter", "inception", "random")


def extractor_file_kind(path: Path) -> str:
    """'classifier', 'segmenter' or 'inception' for an extractor file (what its metadata says it is)."""
    if path.suffix == ".safetensors":
        _, meta = read_safetensors(path, "extractor")
        if CLASSIFIER_CONFIG_KEY in meta:
            return "classifier"
        if SEGMENTER_CONFIG_KEY in meta:
            return "segmenter"
        raise GantoolsError(f"{path} is neither a classifier nor a segmenter file (no {CLASSIFIER_CONFIG_KEY} or "
                            f"{SEGMENTER_CONFIG_KEY} in its metadata)")
    return "inception"


def resolve_extractor(spec: str | os.PathLike | FeatureExtractor | None = "auto", gan: "GAN | None" = None,
                      nc: int = 3, inception_weights: str | os.PathLike | None = None,
                      device: "DeviceSpec" = None, progress: ProgressCallback | None = None) -> FeatureExtractor:
    """The feature extractor for `spec`.

    Args:
        spec: "auto" (inception when weights are given, else the model's companion classifier, else its
            learned segmenter, else random-conv with a notice), "classifier", "segmenter", "inception",
            "random" (random-conv), a file (classifier/segmenter .safetensors, or inception .pth), or
            a FeatureExtractor.
        gan: the model whose companions "auto"/"classifier"/"segmenter" use.
        nc: image channels (for random-conv).
        inception_weights: local Inception-v3 weights (a torchvision state dict).
        device: where the extractor runs (None: where `gan` lives, else "auto").
        progress: callback for notices.
    """
    if isinstance(spec, FeatureExtractor):
        return spec
    dev = resolve_device(device, gan)
    text = str(spec or "auto")
    choice = text.lower()
    if choice in ("auto", "classifier", "segmenter"):
        return _companion_extractor(choice, gan, nc, inception_weights, dev, progress)
    if choice == "inception":
        return inception_extractor(inception_weights, dev)
    if choice in ("random", "random-conv"):
        return random_conv_extractor(nc, dev)
    path = Path(text)
    if path.is_file():
        kind = extractor_file_kind(path)
        if kind == "classifier":
            return classifier_extractor(path, dev)
        if kind == "segmenter":
            return segmenter_extractor(path, dev)
        return inception_extractor(path, dev)
    raise GantoolsError(f"unknown extractor {text!r}: use {', '.join(EXTRACTOR_CHOICES)}, or a file "
                        f"(classifier or segmenter .safetensors, inception weights .pth)")


def _companion_extractor(choice: str, gan: "GAN | None", nc: int, inception_weights: str | os.PathLike | None,
                         device: torch.device, progress: ProgressCallback | None) -> FeatureExtractor:
    """"auto", "classifier" or "segmenter": an extractor from what is stored beside the model."""
    classifier = gan.companion(CLASSIFIER_COMPONENT) if gan is not None else None
    segmenter = gan.companion(SEGMENTER_COMPONENT) if gan is not None else None
    if choice == "classifier":
        if classifier is None:
            raise GantoolsError("this model has no classifier.safetensors beside it: train one with "
                                "`gantools classifier train --data DIR --out <model dir>/classifier.safetensors`, "
                                "or give extractor as a classifier file")
        return classifier_extractor(classifier, device)
    if choice == "segmenter":
        if segmenter is None:
            raise GantoolsError("this model has no segmenter.safetensors beside it: give extractor as a segmenter "
                                "file from `gantools segmenter train`")
        return segmenter_extractor(segmenter, device)
    if inception_weights is not None:
        return inception_extractor(inception_weights, device)
    if classifier is not None:
        return classifier_extractor(classifier, device)
    if segmenter is not None:
        return segmenter_extractor(segmenter, device)
    notice(progress, "no classifier or segmenter stored with this model and no inception_weights: "
                     "using the random-conv extractor (scores comparable only with random-conv scores)")
    return random_conv_extractor(nc, device)


__all__ = ["EXTRACTOR_CHOICES", "INCEPTION_HOWTO", "NO_FEATURES", "RANDOM_CONV_SEED", "RANDOM_CONV_SIZE",
           "FeatureExtractor", "RandomConvNet", "classifier_extractor", "extractor_file_kind", "inception_extractor",
           "random_conv_extractor", "resolve_extractor", "segmenter_extractor", "stable_hash"]
