"""The samples a dissection looked at, and the pictures of its units: latents, masks and image strips.

Sample i of a dissection of n samples with seed s is `Generator.sample_z(n, s)[i]` (`sample_latents`);
a report stores the indices of each unit's top samples, so their images can be generated again
(`attach_examples`). A unit's mask is where its feature map, upsampled exactly as in the dissection,
exceeds its threshold (`unit_masks`); a strip shows the top samples with that region tinted.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..defaults import DISSECT
from ..hooks import TraceDict
from ..models import Generator
from ..reports import data_uri, image_row, overlay
from ..utils import GantoolsError, to_uint8
from .result import ALIGN_CORNERS, Examples, LayerDissection

DEFAULT_BATCH_SIZE = DISSECT.batch_size  # samples per batch, when dissecting and when generating the top samples again


def sample_latents(generator: nn.Module, n: int, seed: int) -> torch.Tensor:
    """The latents of a dissection's n samples (on the CPU): `Generator.sample_z(n, seed)`, or
    `sample_z` of any module that has one, or N(0, I) draws of `config.nz` values."""
    # All of z at once (n x nz floats, 400 bytes a sample at nz=100) so that sample i is exactly
    # `Generator.sample_z(n, seed)[i]`: torch.randn in chunks does not give the same stream.
    if isinstance(generator, Generator):
        return generator.sample_z(n, seed, device="cpu")
    if hasattr(generator, "sample_z"):
        return generator.sample_z(n, seed).cpu()
    nz = getattr(getattr(generator, "config", None), "nz", None)
    if nz is None:
        raise GantoolsError("dissect needs a gantools Generator (or a module with sample_z(n, seed))")
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed))


def unit_masks(layer: LayerDissection, unit: int, maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Where a unit exceeds its threshold: maps (k x h x w, the unit's raw feature maps) -> k x H x W bool,
    upsampled exactly as in the dissection (bilinear, align_corners=False)."""
    up = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=ALIGN_CORNERS)[:, 0]
    return up > float(layer.threshold[unit])


def unit_strip(layer: LayerDissection, unit: int) -> str | None:
    """The unit's top-activating images in a row, the region above its threshold tinted and the rest
    darkened, as a PNG data: URI; None when the layer's examples are not in memory."""
    ex = layer.examples
    if ex is None:
        return None
    valid = [j for j, i in enumerate(layer.top_samples[unit].tolist()) if i >= 0]
    if not valid:
        return None
    images = ex.images[unit, valid]
    masks = unit_masks(layer, unit, ex.maps[unit, valid], images.shape[-2:])
    return data_uri(image_row(overlay(images, masks)))


def unit_strips(layers: Mapping[str, LayerDissection]) -> dict[tuple[str, int], str]:
    """{(layer name, unit): strip} for every unit whose examples are in memory (see `unit_strip`)."""
    strips = {}
    for name, layer in layers.items():
        for unit in range(layer.units):
            strip = unit_strip(layer, unit)
            if strip is not None:
                strips[name, unit] = strip
    return strips


def attach_examples(generator: nn.Module, layers: Mapping[str, LayerDissection], n: int, seed: int,
                    device: torch.device, batch_size: int) -> None:
    """Generate the top samples of every layer again (sample indices into `sample_latents(n, seed)`)
    on `device`, where the generator's weights must be, and set each layer's `examples`."""
    z = sample_latents(generator, n, seed)
    names = list(layers)
    wanted = sorted({int(i) for ld in layers.values() for i in ld.top_samples.flatten().tolist() if i >= 0})
    if not wanted:
        return
    was_training = generator.training
    generator.eval()
    images, feats = [], {nm: [] for nm in names}
    try:
        with torch.inference_mode(), TraceDict(generator, names) as td:
            idx = torch.tensor(wanted)
            for a in range(0, len(wanted), batch_size):
                images.append(to_uint8(generator(z[idx[a:a + batch_size]].to(device))).cpu())
                for nm in names:
                    feats[nm].append(td[nm].output.float().cpu())
    finally:
        generator.train(was_training)
    all_images = torch.cat(images)
    where = {s: i for i, s in enumerate(wanted)}
    for nm, layer in layers.items():
        fm = torch.cat(feats[nm])
        rows = torch.tensor([[where.get(int(i), 0) for i in r] for r in layer.top_samples.tolist()], dtype=torch.long)
        ar = torch.arange(layer.units)[:, None].expand_as(rows)
        layer.examples = Examples(images=all_images[rows], maps=fm[rows, ar])
