"""The public spec aliases: what the API accepts where it says "a model", "a segmenter" or "images".

A *spec* is either an object already loaded or something that names one (a path, a built-in name),
so the same function serves a script that holds models in memory and a CLI that has only strings.
Each module resolves a spec with one function (`models.load_model`, `segmenters.load_segmenter`,
`data.load_image`...), which accepts the loaded object unchanged.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Sequence, Union

if TYPE_CHECKING:
    import torch

    from .models import GAN, Generator
    from .segmenters import Segmenter

PathLike = Union[str, "os.PathLike[str]"]
# a loaded GAN or generator, a run directory, a model file, or a shipped name such as "scenes64"
ModelSpec = Union["GAN", "Generator", PathLike]
# a loaded segmenter, a segmenter file, or "color" / "truth" / "auto"
SegmenterSpec = Union["Segmenter", PathLike]
# one image file or folder of images, or a batch N x C x H x W in the model range [-1, 1]
ImageSource = Union[PathLike, "torch.Tensor"]
# units of a layer: a list of indices, or a boolean / index tensor
UnitSelection = Union[Sequence[int], "torch.Tensor"]
DeviceSpec = Union[str, "torch.device", None]

__all__ = ["DeviceSpec", "ImageSource", "ModelSpec", "PathLike", "SegmenterSpec", "UnitSelection"]
