"""Segmenters: label every pixel of an image with a concept.

Dissection and interventions measure concepts in generated images through the `Segmenter`
protocol: an object (or a function with a `concepts` attribute) with a list of concept names that
maps images in [-1, 1] (N x C x H x W, any device) to labels (N x H x W int64, same device, same
resolution). This module provides three:

- `ColorSegmenter`: no training; each pixel gets one of the 11 basic colour terms (nearest
  prototype in CIELAB), so any RGB or grayscale generator can be dissected for colours.
- `LearnedSegmenter`: a segmentation-models-pytorch network (Unet with a small timm RegNet encoder
  by default) trained with `train_segmenter` on a labelled dataset (scenes, or a folder with
  images/, labels/ and concepts.json). Encoders start from scratch: nothing is downloaded.
- `GroundTruthSegmenter`: the exact labels of a labelled dataset's own images (looked up by
  content), to validate the others and the evaluation code.

`evaluate_segmenter` scores any segmenter on a labelled dataset (per-concept IoU and mIoU).
"""

from __future__ import annotations

import hashlib
import inspect
import math
import os
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Sequence, runtime_checkable

import numpy as np
import torch
from torch import nn
import torch.nn.functional as F

from .utils import GantoolsError, ProgressCallback, from_uint8, get_device, notice, report, to_uint8

if TYPE_CHECKING:
    from .models import GAN

SEGMENTER_COMPONENT = "segmenter"
CONFIG_KEY = "segmenter_config"


# ---------------------------------------------------------------------------------------------
# The protocol


@runtime_checkable
class Segmenter(Protocol):
    """Anything with `concepts` (names, id = index) that maps images to per-pixel concept ids.

    `segmenter(images)`: images N x C x H x W float in [-1, 1] on any device -> labels N x H x W
    int64 on the same device, at the images' resolution. A plain function works too once it has a
    `concepts` attribute (`fn.concepts = [...]`).
    """

    concepts: list[str]

    def __call__(self, images: torch.Tensor) -> torch.Tensor: ...


def describe_segmenter(segmenter: Any) -> str:
    """A one-line description of a segmenter, for reports (its `description`, else its type)."""
    text = getattr(segmenter, "description", None)
    if isinstance(text, str) and text:
        return text
    name = getattr(segmenter, "__name__", None) or type(segmenter).__name__
    return f"{name} ({len(getattr(segmenter, 'concepts', []))} concepts)"


def _check_images(images: torch.Tensor, channels: Sequence[int], who: str) -> torch.Tensor:
    """Validate a batch of images and return it as float in [-1, 1] (uint8 batches are converted)."""
    if not isinstance(images, torch.Tensor):
        raise GantoolsError(f"{who} takes a tensor of images N x C x H x W, got {type(images).__name__}")
    if images.ndim != 4:
        raise GantoolsError(f"{who} takes images N x C x H x W, got a tensor of shape {tuple(images.shape)}")
    if images.shape[1] not in channels:
        want = " or ".join(str(c) for c in channels)
        raise GantoolsError(f"{who} takes {want}-channel images, got {images.shape[1]} channels "
                            f"(shape {tuple(images.shape)})")
    if images.dtype == torch.uint8:
        return from_uint8(images)
    if not images.is_floating_point():
        raise GantoolsError(f"{who} takes float images in [-1, 1] (or uint8), got dtype {images.dtype}")
    return images.float()


def check_labels(labels: Any, images: torch.Tensor, num_concepts: int, who: str = "segmenter") -> torch.Tensor:
    """Check a segmenter's output against the protocol; returns it as int64.

    Raises GantoolsError for a wrong shape or a concept id outside 0..num_concepts-1.
    """
    if not isinstance(labels, torch.Tensor):
        raise GantoolsError(f"{who} returned {type(labels).__name__}, not a tensor of labels N x H x W")
    n, _, h, w = images.shape
    if tuple(labels.shape) != (n, h, w):
        raise GantoolsError(f"{who} returned labels of shape {tuple(labels.shape)}; expected N x H x W = {(n, h, w)}")
    if labels.is_floating_point() or labels.dtype == torch.bool:
        raise GantoolsError(f"{who} returned {labels.dtype} labels; concept ids must be integers")
    labels = labels.long()
    if labels.numel():
        lo, hi = int(labels.min()), int(labels.max())
        if lo < 0 or hi >= num_concepts:
            bad = lo if lo < 0 else hi
            raise GantoolsError(f"{who} returned unknown concept id {bad}: it has {num_concepts} concepts "
                                f"(ids 0..{num_concepts - 1})")
    return labels


# ---------------------------------------------------------------------------------------------
# Colour segmenter

# The 11 basic colour terms (Berlin & Kay) with a typical sRGB prototype each. Pixels go to the
# nearest prototype in CIELAB, where Euclidean distance roughly follows perceived difference.
COLOR_PROTOTYPES: dict[str, tuple[int, int, int]] = {
    "black": (0, 0, 0),
    "white": (255, 255, 255),
    "gray": (128, 128, 128),
    "red": (200, 25, 30),
    "orange": (245, 135, 20),
    "yellow": (250, 225, 30),
    "green": (40, 155, 50),
    "blue": (35, 80, 210),
    "purple": (120, 45, 150),
    "pink": (245, 150, 190),
    "brown": (120, 75, 35),
}
COLOR_TERMS: list[str] = list(COLOR_PROTOTYPES)


def _rgb2lab(rgb01: np.ndarray) -> np.ndarray:
    from skimage.color import rgb2lab

    return rgb2lab(rgb01, channel_axis=-1).astype(np.float32)


class ColorSegmenter:
    """Labels each pixel with the nearest of the 11 basic colour terms in CIELAB; needs no training.

    Works for 3-channel (RGB) and 1-channel (grayscale) images; grayscale pixels can only be
    black, white or gray. Concepts: black, white, gray, red, orange, yellow, green, blue, purple,
    pink, brown.
    """

    description = "color (11 basic colour terms, nearest CIELAB prototype)"

    def __init__(self) -> None:
        self.concepts: list[str] = list(COLOR_TERMS)
        protos = np.array([COLOR_PROTOTYPES[c] for c in self.concepts], dtype=np.float64) / 255.0
        self.prototypes_lab = torch.from_numpy(_rgb2lab(protos[None])[0])  # 11 x 3

    def __repr__(self) -> str:
        return "ColorSegmenter()"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_images(images, (1, 3), "the color segmenter")
        device = images.device
        rgb = ((x.detach().float().cpu() + 1) / 2).clamp(0, 1)
        if rgb.shape[1] == 1:
            rgb = rgb.expand(-1, 3, -1, -1)
        lab = torch.from_numpy(_rgb2lab(rgb.permute(0, 2, 3, 1).numpy().astype(np.float64)))  # N H W 3
        d = (lab.unsqueeze(-2) - self.prototypes_lab).pow(2).sum(-1)  # N H W 11
        return d.argmin(-1).to(device)


# ---------------------------------------------------------------------------------------------
# Ground-truth segmenter


def _content_key(image_uint8: torch.Tensor) -> bytes:
    t = image_uint8.detach().cpu().contiguous()
    h = hashlib.blake2b(digest_size=16)
    h.update(str(tuple(t.shape)).encode())
    h.update(t.numpy().tobytes())
    return h.digest()


class GroundTruthSegmenter:
    """The exact labels of a labelled dataset's own images, found by content.

    Built from a dataset whose items are (uint8 image, int64 label) pairs and which has `concepts`
    (scenes, a labelled folder). Calling it with images of that dataset (as [-1, 1] floats or
    uint8) returns their true labels; any other image raises GantoolsError. Used to validate the
    learned segmenter and the evaluation code.

    Args:
        dataset: the labelled dataset.
        n: index only its first n items (default: all).
        progress: callback for indexing progress.
    """

    def __init__(self, dataset: Any, n: int | None = None, progress: ProgressCallback | None = None) -> None:
        _require_labelled(dataset)
        self.dataset = dataset
        self.concepts: list[str] = list(dataset.concepts)
        total = len(dataset) if n is None else min(n, len(dataset))
        self._index: dict[bytes, int] = {}
        for i in range(total):
            image, _ = dataset[i]
            self._index.setdefault(_content_key(image), i)
            if i % 256 == 0 or i == total - 1:
                report(progress, "index ground truth", i + 1, total)
        self.description = f"ground truth of {type(dataset).__name__} ({total} images)"

    def __len__(self) -> int:
        return len(self._index)

    def __repr__(self) -> str:
        return f"GroundTruthSegmenter({type(self.dataset).__name__}, {len(self)} images)"

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_images(images, (getattr(self.dataset, "nc", images.shape[1]),), "the ground-truth segmenter")
        u8 = images if images.dtype == torch.uint8 else to_uint8(x)
        out = []
        for k, image in enumerate(u8):
            i = self._index.get(_content_key(image))
            if i is None:
                raise GantoolsError(f"the ground-truth segmenter does not know image {k} of this batch: it only labels "
                                    f"the {len(self)} images of its dataset, unchanged and at their own size")
            out.append(torch.as_tensor(self.dataset[i][1]).long())
        return torch.stack(out).to(images.device)


# ---------------------------------------------------------------------------------------------
# Learned segmenter (segmentation-models-pytorch)

DEFAULT_ARCH = "unet"
DEFAULT_ENCODER = "tu-regnetx_002"
DEFAULT_ENCODER_DEPTH = 4
DEFAULT_DECODER_CHANNELS = (64, 32, 16, 16)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def architectures() -> list[str]:
    """The segmentation-models-pytorch architectures (names for `arch`)."""
    import segmentation_models_pytorch as smp

    return list(smp.MODEL_ARCHITECTURES_MAPPING)


def _check_arch_encoder(arch: str, encoder: str) -> None:
    import segmentation_models_pytorch as smp

    if arch not in smp.MODEL_ARCHITECTURES_MAPPING:
        raise GantoolsError(f"unknown segmenter architecture {arch!r}: choose one of {', '.join(architectures())}")
    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise GantoolsError(f"unknown encoder {encoder!r}: {encoder[3:]!r} is not a timm model "
                                f"(e.g. tu-regnetx_002, tu-mobilenetv3_small_050, tu-resnet10t)")
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        raise GantoolsError(f"unknown encoder {encoder!r}: choose one of {', '.join(names)}, "
                            f"or tu-<timm model name> (default {DEFAULT_ENCODER})")


@dataclass
class SegmenterConfig:
    """What a learned segmenter is: stored as JSON in its file's metadata.

    Args:
        concepts: concept names (id = index).
        arch: segmentation-models-pytorch architecture ("unet", "fpn", ...).
        encoder: smp encoder name, or "tu-<timm model>".
        encoder_depth: encoder stages used (input size must be divisible by 2**depth).
        decoder_channels: Unet-family decoder widths, one per stage (None: the architecture's default).
        image_size: training resolution; other sizes are resized to it and labels back.
        nc: image channels (1 or 3).
        mean, std: input normalisation applied to images on the [0, 1] scale, per channel
            (0.5/0.5 feeds the [-1, 1] images unchanged; ImageNet values for ImageNet encoder weights).
    """

    concepts: list[str]
    arch: str = DEFAULT_ARCH
    encoder: str = DEFAULT_ENCODER
    encoder_depth: int = DEFAULT_ENCODER_DEPTH
    decoder_channels: list[int] | None = field(default_factory=lambda: list(DEFAULT_DECODER_CHANNELS))
    image_size: int = 64
    nc: int = 3
    mean: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])
    std: list[float] = field(default_factory=lambda: [0.5, 0.5, 0.5])

    def __post_init__(self) -> None:
        if not self.concepts:
            raise GantoolsError("a segmenter needs at least one concept")
        if self.nc not in (1, 3):
            raise GantoolsError(f"nc={self.nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        if len(self.mean) != self.nc or len(self.std) != self.nc:
            self.mean, self.std = list(self.mean[: 1]) * self.nc, list(self.std[: 1]) * self.nc
        if self.image_size % (2 ** self.encoder_depth):
            raise GantoolsError(f"image size {self.image_size} must be divisible by 2**encoder_depth "
                                f"= {2 ** self.encoder_depth}: choose another image size (--image-size) "
                                f"or a smaller encoder depth")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "SegmenterConfig":
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _build_smp(config: SegmenterConfig) -> nn.Module:
    import segmentation_models_pytorch as smp

    _check_arch_encoder(config.arch, config.encoder)
    cls = smp.MODEL_ARCHITECTURES_MAPPING[config.arch]
    params = inspect.signature(cls.__init__).parameters
    kwargs: dict[str, Any] = {}
    if "encoder_depth" in params:
        kwargs["encoder_depth"] = config.encoder_depth
    if config.decoder_channels is not None and "decoder_channels" in params:
        kwargs["decoder_channels"] = list(config.decoder_channels)
    try:
        # encoder_weights=None always: the encoder starts from scratch and nothing is downloaded.
        return smp.create_model(config.arch, encoder_name=config.encoder, encoder_weights=None,
                                in_channels=config.nc, classes=len(config.concepts), **kwargs)
    except (ValueError, KeyError, TypeError, RuntimeError, AssertionError) as e:
        raise GantoolsError(f"cannot build a {config.arch} segmenter with encoder {config.encoder}: {e}") from e


class LearnedSegmenter(nn.Module):
    """A segmentation-models-pytorch network behind the Segmenter protocol.

    `segmenter(images)` returns labels (argmax, no gradients); `logits(images)` the raw class scores
    (for training); `features(images)` the global-average-pooled deepest encoder features (N x D).
    Images of another resolution than `config.image_size` are resized to it, and the labels come
    back at the input resolution. Images on another device than the network are moved, and the
    labels returned on the images' device.
    """

    def __init__(self, config: SegmenterConfig) -> None:
        super().__init__()
        self.config = config
        self.concepts: list[str] = list(config.concepts)
        self.model = _build_smp(config)
        self.register_buffer("mean", torch.tensor(config.mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(config.std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def description(self) -> str:
        c = self.config
        return f"learned {c.arch}/{c.encoder} {c.image_size}px ({len(self.concepts)} concepts)"

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = _check_images(images, (self.config.nc,), "this segmenter").to(self.device)
        size = self.config.image_size
        if x.shape[-2:] != (size, size):
            x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
        return ((x + 1) / 2 - self.mean) / self.std

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Class scores N x K x H x W at the input resolution (differentiable)."""
        out = self.model(self._prepare(images))
        if out.shape[-2:] != images.shape[-2:]:
            out = F.interpolate(out, size=images.shape[-2:], mode="bilinear", align_corners=False)
        return out

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Labels N x H x W (int64) on the images' device."""
        with torch.no_grad():
            return self.logits(images).argmax(1).to(images.device)

    def features(self, images: torch.Tensor) -> torch.Tensor:
        """Global-average-pooled deepest encoder features, N x D, on the images' device."""
        with torch.no_grad():
            return self.model.encoder(self._prepare(images))[-1].mean(dim=(2, 3)).to(images.device)


def _load_encoder_weights(segmenter: LearnedSegmenter, path: str | os.PathLike,
                          progress: ProgressCallback | None = None) -> int:
    """Load a local weights file (safetensors or torch, weights only) into the encoder.

    Keys may be the encoder's own, timm's (without smp's "model." prefix), or a whole smp model's
    ("encoder." prefix). Tensors whose shapes differ (e.g. the first conv for grayscale) are skipped
    with a notice. Returns the number of tensors loaded.
    """
    path = Path(path)
    if not path.is_file():
        raise GantoolsError(f"encoder weights file not found: {path}")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with code in it, ...
        raise GantoolsError(f"cannot read encoder weights {path}: {e}") from e
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise GantoolsError(f"{path} is not a state dict of tensors")
    encoder = segmenter.model.encoder
    own = encoder.state_dict()
    best: dict[str, torch.Tensor] = {}
    for strip, add in (("", ""), ("", "model."), ("encoder.", ""), ("model.encoder.", ""), ("module.", ""),
                       ("module.", "model.")):
        cand = {add + k[len(strip):]: v for k, v in state.items() if k.startswith(strip)}
        cand = {k: v for k, v in cand.items() if k in own}
        if len(cand) > len(best):
            best = cand
    if not best:
        raise GantoolsError(f"no tensor of {path} fits the {segmenter.config.encoder} encoder "
                            f"(first keys: {', '.join(list(state)[:3])})")
    fitting = {k: v.to(own[k].dtype) for k, v in best.items() if v.shape == own[k].shape}
    skipped = len(best) - len(fitting)
    encoder.load_state_dict(fitting, strict=False)
    missing = len(own) - len(fitting)
    if skipped or missing:
        notice(progress, f"encoder weights: loaded {len(fitting)} tensors, {skipped} with other shapes skipped, "
                         f"{missing} of the encoder's {len(own)} left at their initial values")
    return len(fitting)


# ---------------------------------------------------------------------------------------------
# Loading


def load_learned_segmenter(path: str | os.PathLike, device: str | torch.device = "cpu") -> LearnedSegmenter:
    """A LearnedSegmenter from a segmenter .safetensors file, in eval mode."""
    from .models import component_state, load_state, read_safetensors

    tensors, meta = read_safetensors(path, "segmenter")
    if CONFIG_KEY not in meta:
        raise GantoolsError(f"{path} is not a segmenter file (no {CONFIG_KEY} in its metadata); "
                            f"make one with `gantools segmenter train`")
    seg = LearnedSegmenter(SegmenterConfig.from_dict(meta[CONFIG_KEY]))
    load_state(seg, component_state(tensors, SEGMENTER_COMPONENT), "segmenter")
    seg.path = Path(path)  # type: ignore[attr-defined]
    seg.metadata = meta  # type: ignore[attr-defined]
    return seg.eval().to(get_device(device))


def load_segmenter(spec: "str | os.PathLike | Segmenter | None" = None, gan: GAN | None = None,
                   device: str | torch.device = "cpu") -> Segmenter:
    """The segmenter for `spec`.

    Args:
        spec: a Segmenter object (checked, and moved to `device` when it is a module);
            "color" for the colour segmenter; a segmenter .safetensors file; a folder holding
            segmenter.safetensors (e.g. a model directory); a pretrained model name whose directory
            ships one ("scenes64"); or None for the model's companion segmenter
            (segmenter.safetensors beside the model file) when there is one, else "color".
        gan: the model whose companion segmenter None refers to.
        device: where a learned segmenter runs.
    """
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        concepts = getattr(spec, "concepts", None)
        if not callable(spec) or not isinstance(concepts, (list, tuple)) or not concepts:
            raise GantoolsError("a segmenter must be callable and have a non-empty `concepts` list "
                                "(see gantools.segmenters.Segmenter)")
        if isinstance(spec, nn.Module):
            spec.to(device).eval()
        return spec
    if spec is None:
        companion = gan.companion(SEGMENTER_COMPONENT) if gan is not None else None
        return load_learned_segmenter(companion, device) if companion is not None else ColorSegmenter()
    text = str(spec)
    if text.lower() in ("color", "colour"):
        return ColorSegmenter()
    path = Path(text)
    if path.is_dir():
        inner = path / f"{SEGMENTER_COMPONENT}.safetensors"
        if not inner.is_file():
            raise GantoolsError(f"{path} holds no {inner.name}")
        path = inner
    if path.is_file():
        return load_learned_segmenter(path, device)
    from .models import companion_path, pretrained_dir

    shipped = companion_path(pretrained_dir() / text / "model.safetensors", SEGMENTER_COMPONENT)
    if shipped.is_file():  # a pretrained model's name: its shipped segmenter
        return load_learned_segmenter(shipped, device)
    raise GantoolsError(f"no segmenter {text!r}: use 'color', a segmenter .safetensors file "
                        f"(from `gantools segmenter train`), a folder holding segmenter.safetensors, "
                        f"or a pretrained model name that ships one")


# ---------------------------------------------------------------------------------------------
# Labelled data


def _require_labelled(dataset: Any) -> None:
    if not hasattr(dataset, "concepts"):
        raise GantoolsError(f"{type(dataset).__name__} has no labels: a labelled dataset is 'scenes' or a folder "
                            f"with images/, labels/ and concepts.json (as written by `gantools data scenes`)")


def open_labelled(spec: Any, image_size: int | None = 64, nc: int = 3, n: int | None = None, seed: int = 0,
                  progress: ProgressCallback | None = None) -> Any:
    """A labelled dataset: a dataset object with `concepts` (returned as is), "scenes", or a labelled folder."""
    if not isinstance(spec, (str, os.PathLike)):
        _require_labelled(spec)
        return spec
    from . import data

    path = Path(spec)
    if path.is_dir() and ((path / "labels").exists() or (path / "concepts.json").exists()):
        # A (possibly incomplete) labelled layout: LabeledFolder says what is missing or mismatched.
        ds = data.LabeledFolder(path, image_size=image_size, nc=nc, progress=progress)
    else:
        ds = data.open_dataset(spec, image_size=image_size or 64, nc=nc, n=n, seed=seed, progress=progress)
    _require_labelled(ds)
    return ds


def _load_pairs(dataset: Any, indices: Sequence[int], progress: ProgressCallback | None,
                task: str) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images and int64 labels of the given items, as two stacked tensors."""
    indices = [int(i) for i in indices]
    total = len(indices)
    images = getattr(dataset, "images", None)
    labels = getattr(dataset, "labels", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):  # in memory (LabeledFolder)
        idx = torch.as_tensor(indices, dtype=torch.long)
        return images[idx], labels[idx].long()
    batch = getattr(dataset, "batch", None)
    out_x, out_y = [], []
    chunk = 250
    for start in range(0, total, chunk):
        part = indices[start:start + chunk]
        if callable(batch):  # Scenes renders a batch at once
            x, y = batch(part)
        else:
            pairs = [dataset[i] for i in part]
            x = torch.stack([torch.as_tensor(p[0]) for p in pairs])
            y = torch.stack([torch.as_tensor(p[1]) for p in pairs])
        out_x.append(x)
        out_y.append(y.long())
        if task:
            report(progress, task, min(start + chunk, total), total)
    return torch.cat(out_x), torch.cat(out_y)


# ---------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class SegmenterEval:
    """Per-concept IoU of a segmenter on a labelled dataset.

    IoU is dataset-level: the sum over images of intersections over the sum of unions. A concept
    that is neither in the labels nor in the predictions has IoU None and does not count in miou.

    Attributes:
        concepts: the dataset's concept names.
        iou: per concept, IoU or None.
        intersection, union: per concept, pixel counts.
        support: per concept, labelled pixels.
        miou: mean IoU over the concepts that occur.
        pixel_accuracy: fraction of pixels labelled right.
        n: images evaluated.
        segmenter: its description.
    """

    concepts: list[str]
    iou: list[float | None]
    intersection: list[int]
    union: list[int]
    support: list[int]
    miou: float
    pixel_accuracy: float
    n: int
    segmenter: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def per_concept(self) -> dict[str, float | None]:
        return dict(zip(self.concepts, self.iou))


def _concept_map(seg_concepts: Sequence[str], data_concepts: Sequence[str]) -> torch.Tensor:
    """Segmenter id -> dataset id by name (-1 for a segmenter concept the dataset lacks)."""
    if list(seg_concepts) == list(data_concepts):
        return torch.arange(len(data_concepts))
    index = {c: i for i, c in enumerate(data_concepts)}
    mapping = torch.tensor([index.get(c, -1) for c in seg_concepts])
    if (mapping < 0).all():
        raise GantoolsError(f"the segmenter's concepts ({', '.join(list(seg_concepts)[:6])}...) share no name with "
                            f"the dataset's ({', '.join(list(data_concepts)[:6])}...)")
    return mapping


def evaluate_segmenter(segmenter: Segmenter, dataset: Any, n: int | None = None, batch_size: int = 64,
                       device: str | torch.device = "cpu", progress: ProgressCallback | None = None,
                       indices: Sequence[int] | None = None) -> SegmenterEval:
    """Score a segmenter against a labelled dataset's labels.

    Args:
        segmenter: anything satisfying the Segmenter protocol.
        dataset: a labelled dataset (items (uint8 image, label), attribute `concepts`).
        n: evaluate the first n items (default: all).
        batch_size: images per call of the segmenter.
        device: where the images are put before calling the segmenter.
        progress: callback.
        indices: explicit items to evaluate (instead of the first n).
    """
    _require_labelled(dataset)
    concepts = list(dataset.concepts)
    seg_concepts = list(getattr(segmenter, "concepts", []) or [])
    if not seg_concepts:
        raise GantoolsError("the segmenter has no `concepts` list: give it one (names, id = index)")
    mapping = _concept_map(seg_concepts, concepts)
    if indices is None:
        indices = range(len(dataset) if n is None else min(n, len(dataset)))
    indices = list(indices)
    if not indices:
        raise GantoolsError("no images to evaluate on (n = 0 or an empty dataset)")
    dev = get_device(device)
    k = len(concepts)
    inter = torch.zeros(k, dtype=torch.long)
    union = torch.zeros(k, dtype=torch.long)
    support = torch.zeros(k, dtype=torch.long)
    correct = total = 0
    for start in range(0, len(indices), batch_size):
        chunk = indices[start:start + batch_size]
        images, labels = _load_pairs(dataset, chunk, None, "")
        x = from_uint8(images).to(dev)
        pred = check_labels(segmenter(x), x, len(seg_concepts)).cpu()
        pred = mapping[pred]  # -1 where the segmenter's concept is not in the dataset: always wrong
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= k):
            raise GantoolsError(f"the dataset has label id {int(labels.max())} outside its {k} concepts")
        hit = pred == labels
        correct += int(hit.sum())
        total += labels.numel()
        lab_count = torch.bincount(labels.flatten(), minlength=k)
        pred_count = torch.bincount(pred[pred >= 0].flatten(), minlength=k)
        hit_count = torch.bincount(labels[hit].flatten(), minlength=k)
        inter += hit_count
        union += lab_count + pred_count - hit_count
        support += lab_count
        report(progress, "evaluate segmenter", min(start + batch_size, len(indices)), len(indices))
    iou = [float(i) / float(u) if u > 0 else None for i, u in zip(inter.tolist(), union.tolist())]
    present = [v for v in iou if v is not None]
    return SegmenterEval(concepts=concepts, iou=iou, intersection=inter.tolist(), union=union.tolist(),
                         support=support.tolist(), miou=float(np.mean(present)) if present else float("nan"),
                         pixel_accuracy=correct / max(total, 1), n=len(indices),
                         segmenter=describe_segmenter(segmenter))


# ---------------------------------------------------------------------------------------------
# Training

# Held-out images for scenes come from this seed offset, so they never overlap the training seed.
VALIDATION_SEED_OFFSET = 1_000_003


@dataclass
class SegmenterTrainResult:
    """What `train_segmenter` returns.

    Attributes:
        segmenter: the trained segmenter (eval mode).
        path: the file written, or None.
        validation: its scores on the held-out split.
        steps: optimisation steps taken.
        seconds: training wall time (without data preparation and validation).
        train_images, val_images: sizes of the splits.
        file_bytes: size of the file written (0 when none).
    """

    segmenter: LearnedSegmenter
    path: Path | None
    validation: SegmenterEval
    steps: int
    seconds: float
    train_images: int
    val_images: int
    file_bytes: int = 0


def train_segmenter(data: Any = "scenes", out: str | os.PathLike | None = None, arch: str = DEFAULT_ARCH,
                    encoder: str = DEFAULT_ENCODER, encoder_weights: str | os.PathLike | None = None,
                    encoder_depth: int = DEFAULT_ENCODER_DEPTH,
                    decoder_channels: Sequence[int] | None = DEFAULT_DECODER_CHANNELS,
                    image_size: int | None = 64, nc: int = 3, n: int = 10000, steps: int | None = None,
                    epochs: float | None = None, batch_size: int = 32, lr: float = 6e-3, val_n: int = 500,
                    val_fraction: float = 0.1, flip: bool = True, seed: int = 0, half: bool = True,
                    device: str | torch.device = "auto", progress: ProgressCallback | None = None) -> SegmenterTrainResult:
    """Train a LearnedSegmenter on a labelled dataset and (optionally) save it.

    Training uses Adam, cross-entropy, a cosine learning-rate decay and horizontal flips. The
    held-out split is `val_n` scenes from seed `seed + VALIDATION_SEED_OFFSET` for scenes, or the
    last `val_fraction` of a shuffled folder.

    Args:
        data: "scenes", a folder with images/, labels/ and concepts.json, or a labelled dataset object.
        out: .safetensors file to write (None: don't save).
        arch, encoder: segmentation-models-pytorch architecture and encoder ("tu-<timm name>" works).
        encoder_weights: an optional local weights file for the encoder (safetensors or torch
            state dict); the input is then normalised with ImageNet statistics. Never downloaded.
        encoder_depth, decoder_channels: network size (decoder_channels for the Unet family).
        image_size: training resolution (None: the folder's own image size).
        nc: channels (1 or 3).
        n: scenes to train on (folders use all their images).
        steps, epochs: training length (at most one; default 3000 steps).
        batch_size, lr: optimisation settings.
        val_n, val_fraction: held-out split size for scenes / folders.
        flip: augment with horizontal flips.
        seed: seed for data, initialisation and batches.
        half: store weights in float16.
        device: "auto", "cpu", "cuda"...
        progress: callback.
    """
    if steps is not None and epochs is not None:
        raise GantoolsError("give either steps or epochs, not both")
    if batch_size < 1 or (steps is not None and steps < 1) or (epochs is not None and epochs <= 0):
        raise GantoolsError("batch size, steps and epochs must be positive")
    dev = get_device(device)
    _check_arch_encoder(arch, encoder)
    if encoder_weights is not None and not Path(encoder_weights).is_file():
        raise GantoolsError(f"encoder weights file not found: {encoder_weights}")

    # Data: everything decoded once into memory (10000 scenes at 64 px are 120 MB).
    is_scenes = isinstance(data, str) and data == "scenes" and not Path(data).exists()
    if is_scenes:
        train_ds = open_labelled("scenes", image_size or 64, nc, n=n, seed=seed)
        val_ds = open_labelled("scenes", image_size or 64, nc, n=val_n, seed=seed + VALIDATION_SEED_OFFSET)
        train_x, train_y = _load_pairs(train_ds, range(len(train_ds)), progress, "make training scenes")
        val_x, val_y = _load_pairs(val_ds, range(len(val_ds)), progress, "make held-out scenes")
        concepts = list(train_ds.concepts)
    else:
        ds = open_labelled(data, image_size, nc, progress=progress)
        if len(ds) < 2:
            raise GantoolsError(f"{data} has {len(ds)} labelled image(s): need at least 2 (a training and a held-out split)")
        order = torch.randperm(len(ds), generator=torch.Generator().manual_seed(seed)).tolist()
        n_val = min(len(ds) - 1, max(1, round(len(ds) * val_fraction)))
        x, y = _load_pairs(ds, order, progress, "read labelled images")
        train_x, train_y, val_x, val_y = x[n_val:], y[n_val:], x[:n_val], y[:n_val]
        concepts = list(ds.concepts)
    if train_x.shape[1] != nc:
        raise GantoolsError(f"the data has {train_x.shape[1]}-channel images but nc={nc}")
    size = int(train_x.shape[-1])
    if train_x.shape[-2] != size:
        raise GantoolsError(f"training images must be square, got {tuple(train_x.shape[-2:])}")
    if int(train_y.max()) >= len(concepts) or int(train_y.min()) < 0:
        raise GantoolsError(f"label id {int(train_y.max())} is outside the {len(concepts)} concepts")
    if len(concepts) <= 256:
        train_y = train_y.to(torch.uint8)  # 8x less memory; batches are cast back to int64

    mean, std = ((list(IMAGENET_MEAN), list(IMAGENET_STD)) if encoder_weights is not None and nc == 3
                 else ([0.5] * nc, [0.5] * nc))
    config = SegmenterConfig(concepts=concepts, arch=arch, encoder=encoder, encoder_depth=encoder_depth,
                             decoder_channels=list(decoder_channels) if decoder_channels is not None else None,
                             image_size=size, nc=nc, mean=mean, std=std)
    torch.manual_seed(seed)
    seg = LearnedSegmenter(config)
    if encoder_weights is not None:
        _load_encoder_weights(seg, encoder_weights, progress)
    seg.to(dev).train()

    per_epoch = math.ceil(len(train_x) / batch_size)
    total = steps if steps is not None else (max(1, round(epochs * per_epoch)) if epochs is not None else 3000)
    opt = torch.optim.Adam(seg.parameters(), lr=lr)
    warmup = min(100, max(1, total // 20))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    gen = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    running = None
    for step in range(1, total + 1):
        idx = torch.randint(0, len(train_x), (min(batch_size, len(train_x)),), generator=gen)
        xb, yb = train_x[idx], train_y[idx]
        if flip:
            mask = torch.rand(len(idx), generator=gen) < 0.5
            xb[mask] = xb[mask].flip(-1)
            yb[mask] = yb[mask].flip(-1)
        xb, yb = from_uint8(xb.to(dev)), yb.to(dev).long()
        loss = F.cross_entropy(seg.logits(xb), yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        if not math.isfinite(value):
            raise GantoolsError(f"training diverged at step {step} (loss {value}); try a smaller --lr")
        running = value if running is None else 0.95 * running + 0.05 * value
        if step % 10 == 0 or step == total:
            elapsed = time.monotonic() - start
            report(progress, "train segmenter", step, total, loss=running, lr=sched.get_last_lr()[0],
                   img_s=step * len(idx) / max(elapsed, 1e-9))
    seconds = time.monotonic() - start
    seg.eval()
    val_ds = _TensorPairs(val_x, val_y, concepts)
    validation = evaluate_segmenter(seg, val_ds, batch_size=64, device=dev, progress=progress)
    path = None
    size_bytes = 0
    if out is not None:
        path = save_segmenter(seg, out, half=half, extra={"training": {
            "data": str(data) if isinstance(data, (str, os.PathLike)) else type(data).__name__,
            "seed": seed, "validation_seed": seed + VALIDATION_SEED_OFFSET if is_scenes else None,
            "train_images": len(train_x), "val_images": len(val_x), "steps": total, "batch_size": batch_size,
            "lr": lr, "seconds": round(seconds, 1), "encoder_weights": str(encoder_weights) if encoder_weights else None,
            "val_miou": validation.miou}})
        size_bytes = path.stat().st_size
        notice(progress, f"wrote {path} ({size_bytes / 1e6:.2f} MB), held-out mIoU {validation.miou:.4f}")
    return SegmenterTrainResult(seg, path, validation, total, seconds, len(train_x), len(val_x), size_bytes)


def save_segmenter(segmenter: LearnedSegmenter, path: str | os.PathLike, half: bool = True,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write a learned segmenter as safetensors with its config in the metadata."""
    from .models import save_safetensors

    meta: dict[str, Any] = {CONFIG_KEY: segmenter.config.to_dict()}
    meta.update(extra or {})
    return save_safetensors(path, {SEGMENTER_COMPONENT: segmenter}, meta, half=half)


class _TensorPairs:
    """Labelled pairs held in two tensors (the held-out split), usable by evaluate_segmenter."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, concepts: list[str]) -> None:
        self.images, self.labels, self.concepts = images, labels, concepts
        self.nc, self.image_size = images.shape[1], images.shape[-1]

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[i], self.labels[i]
