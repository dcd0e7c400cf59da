"""The learned segmenter: a segmentation-models-pytorch network behind the Segmenter protocol, and its file."""

from __future__ import annotations

import inspect
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..models import component_state, load_state, read_safetensors, save_safetensors
from ..utils import GantoolsError, ProgressCallback, notice, resolve_device
from .config import CONFIG_KEY, DEFAULT_ENCODER, SEGMENTER_COMPONENT, SegmenterConfig
from .protocol import check_images

if TYPE_CHECKING:
    from ..types import DeviceSpec


def architectures() -> list[str]:
    """The segmentation-models-pytorch architectures (names for `arch`)."""
    import segmentation_models_pytorch as smp

    return list(smp.MODEL_ARCHITECTURES_MAPPING)


def check_arch_encoder(arch: str, encoder: str) -> None:
    """Refuse an architecture or encoder that segmentation-models-pytorch (or timm) does not know."""
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


def _build_smp(config: SegmenterConfig) -> nn.Module:
    import segmentation_models_pytorch as smp

    check_arch_encoder(config.arch, config.encoder)
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
        """One line for reports: architecture, encoder, size, concepts."""
        c = self.config
        return f"learned {c.arch}/{c.encoder} {c.image_size}px ({len(self.concepts)} concepts)"

    @property
    def device(self) -> torch.device:
        """Where its weights live."""
        return next(self.parameters()).device

    def _prepare(self, images: torch.Tensor) -> torch.Tensor:
        x = check_images(images, (self.config.nc,), "this segmenter").to(self.device)
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


def load_encoder_weights(segmenter: LearnedSegmenter, path: str | os.PathLike,
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


def save_segmenter(segmenter: LearnedSegmenter, path: str | os.PathLike, half: bool = True,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write a learned segmenter as safetensors with its config in the metadata; returns the path."""
    meta: dict[str, Any] = {CONFIG_KEY: segmenter.config.to_dict()}
    meta.update(extra or {})
    return save_safetensors(path, {SEGMENTER_COMPONENT: segmenter}, meta, half=half)


def load_learned_segmenter(path: str | os.PathLike, device: "DeviceSpec" = None) -> LearnedSegmenter:
    """A LearnedSegmenter from a segmenter .safetensors file, in eval mode, on `device` (None: "auto")."""
    tensors, meta = read_safetensors(path, "segmenter")
    if CONFIG_KEY not in meta:
        raise GantoolsError(f"{path} is not a segmenter file (no {CONFIG_KEY} in its metadata); "
                            f"make one with `gantools segmenter train`")
    seg = LearnedSegmenter(SegmenterConfig.from_dict(meta[CONFIG_KEY]))
    load_state(seg, component_state(tensors, SEGMENTER_COMPONENT), "segmenter")
    seg.path = Path(path)  # type: ignore[attr-defined]
    seg.metadata = meta  # type: ignore[attr-defined]
    return seg.eval().to(resolve_device(device))


__all__ = ["LearnedSegmenter", "architectures", "check_arch_encoder", "load_encoder_weights", "load_learned_segmenter",
           "save_segmenter"]
