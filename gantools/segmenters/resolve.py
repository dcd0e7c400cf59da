"""From a segmenter spec (an object, a name, a file) to a Segmenter: the one place that resolves them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from torch import nn

from ..models import GAN, MODEL_FILE, companion_path, pretrained_dir
from ..utils import GantoolsError, resolve_device
from .builtin import ColorSegmenter
from .config import SEGMENTER_COMPONENT
from .learned import load_learned_segmenter
from .protocol import Segmenter

if TYPE_CHECKING:
    from ..types import DeviceSpec, SegmenterSpec

COLOR_NAMES = ("color", "colour")


def resolve_segmenter(spec: "SegmenterSpec | None" = None, gan: GAN | None = None,
                      device: "DeviceSpec" = None) -> Segmenter:
    """The segmenter for `spec`.

    Args:
        spec: a Segmenter object (checked; a module is put in eval mode, and moved when `device` is
            given); "color" for the colour segmenter; a segmenter .safetensors file; a folder holding
            segmenter.safetensors (e.g. a model directory); a pretrained model name whose directory
            ships one ("scenes64"); or None for the model's companion segmenter (segmenter.safetensors
            beside the model file) when there is one, else "color".
        gan: the model whose companion segmenter None refers to.
        device: where a learned segmenter runs; None: where `gan` lives, else "auto" for a file.
    """
    if spec is not None and not isinstance(spec, (str, os.PathLike)):
        return _checked(spec, device)
    dev = resolve_device(device, gan)
    if spec is None:
        companion = gan.companion(SEGMENTER_COMPONENT) if gan is not None else None
        return load_learned_segmenter(companion, dev) if companion is not None else ColorSegmenter()
    text = str(spec)
    if text.lower() in COLOR_NAMES:
        return ColorSegmenter()
    path = Path(text)
    if path.is_dir():
        inner = path / f"{SEGMENTER_COMPONENT}.safetensors"
        if not inner.is_file():
            raise GantoolsError(f"{path} holds no {inner.name}")
        path = inner
    if path.is_file():
        return load_learned_segmenter(path, dev)
    shipped = companion_path(pretrained_dir() / text / MODEL_FILE, SEGMENTER_COMPONENT)
    if shipped.is_file():  # a pretrained model's name: its shipped segmenter
        return load_learned_segmenter(shipped, dev)
    raise GantoolsError(f"no segmenter {text!r}: use 'color', a segmenter .safetensors file "
                        f"(from `gantools segmenter train`), a folder holding segmenter.safetensors, "
                        f"or a pretrained model name that ships one")


def _checked(segmenter: Segmenter, device: "DeviceSpec") -> Segmenter:
    concepts = getattr(segmenter, "concepts", None)
    if not callable(segmenter) or not isinstance(concepts, (list, tuple)) or not concepts:
        raise GantoolsError("a segmenter must be callable and have a non-empty `concepts` list "
                            "(see gantools.segmenters.Segmenter)")
    if isinstance(segmenter, nn.Module):
        segmenter.to(resolve_device(device, segmenter)).eval()
    return segmenter


# The name gantools has exported since segmenters existed; the same function.
load_segmenter = resolve_segmenter

__all__ = ["COLOR_NAMES", "load_segmenter", "resolve_segmenter"]
