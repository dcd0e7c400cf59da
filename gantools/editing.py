"""Semantic editing of real images: invert, switch units off or on, regenerate, blend.

After Bau et al., "Semantic Photo Manipulation with a Generative Image Prior" (SIGGRAPH 2019): the
image is inverted layer-wise one layer below the edited one (so what is not edited stays close to the
photo, while the edited layer's features are still computed by the generator's own weights: features
optimised freely at the edited layer spread a concept over every channel, and switching off its
units then changes nothing), the concept's units are ablated (remove) or forced to their q99 level inside a region (add) in the
inverted features, the generator runs on from there, and the result is pasted into the input only
where the edit is: outside that region the output keeps the input's pixels exactly (or the
reconstruction's, with blend="reconstruction").

    from gantools.editing import edit
    result = edit("scenes64", "photo.png", 3, remove="tree")
    result.save("out/")

Interventions entered as context managers on layers AFTER the edited one apply to the regeneration
too (`generate_from` runs those blocks), so edits compose.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import torch
import torch.nn.functional as F

from .hooks import generate_from, layer_name
from .images import read_image, read_mask, resize_center_crop, save_image
from .interventions import DEFAULT_PATCH, Intervention, check_point, point_region
from .metrics import psnr
from .reports import labelled_grid
from .restoration import convert_channels
from .segmenters import describe_segmenter
from .units import (DEFAULT_DISSECT_N, LayerSetup, UnitChoice, UnitPlan, check_concept, check_strength,
                    concept_fractions, eval_mode, plan_units, segment, setup_layer, unit_values)
from .utils import GantoolsError, ProgressCallback, from_uint8, notice, to_uint8, write_json

if TYPE_CHECKING:
    from .types import DeviceSpec, ImageSource, ModelSpec, SegmenterSpec

BLENDS = ("input", "reconstruction")
PSNR_WARN = 20.0  # dB: below this the reconstruction is too far from the photo for a faithful edit


@dataclass
class EditResult:
    """One edited image (images are uint8 C x S x S at the generator's resolution, on the CPU).

    Args:
        name: the input's stem ("image" for a tensor).
        action: "remove" or "add".
        concept: the concept edited.
        layer: canonical layer name.
        units: the units edited.
        values: the level each unit was set towards.
        strength: s, the strength of the intervention (0..1).
        blend: what is kept outside the edited region: "input" or "reconstruction".
        input, reconstruction, edited, raw_edited, difference: the input, the generator's
            reconstruction of it, the blended edit, the unblended regenerated image, and
            |edited - input| (per channel).
        region: S x S bool, where the edit is pasted in.
        psnr: the reconstruction's PSNR against the input (dB).
        before, reconstructed, after: per concept pixel fraction of the blend base (input or
            reconstruction) as segmented, of the reconstruction, and of the edited image.
        settings: what was used (units' source, segmenter, steps...).
    """

    name: str
    action: str
    concept: str
    layer: str
    units: list[int]
    values: list[float]
    strength: float
    blend: str
    input: torch.Tensor
    reconstruction: torch.Tensor
    edited: torch.Tensor
    raw_edited: torch.Tensor
    difference: torch.Tensor
    region: torch.Tensor
    psnr: float
    before: dict[str, float]
    reconstructed: dict[str, float]
    after: dict[str, float]
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def change(self) -> float:
        """after - before for the edited concept (negative for a successful removal)."""
        return self.after[self.concept] - self.before[self.concept]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (what edit.json holds)."""
        return {
            "name": self.name, "action": self.action, "concept": self.concept, "layer": self.layer,
            "units": self.units, "values": self.values, "strength": self.strength, "blend": self.blend,
            "reconstruction_psnr": self.psnr, "region_fraction": float(self.region.float().mean()),
            "change": self.change,
            "fractions": {c: {"before": self.before[c], "reconstruction": self.reconstructed[c],
                              "after": self.after[c]} for c in self.before},
            "settings": self.settings,
        }

    def strip(self, min_size: int = 128) -> torch.Tensor:
        """input | reconstruction | edited | difference, labelled (3 x H x W uint8): the edit on the
        left of the row, each picture's name above it (with the reconstruction's PSNR). Images are
        enlarged by a whole factor (nearest neighbour) to at least `min_size` px."""
        side = max(self.input.shape[-2:])
        cell = side * max(1, -(-min_size // side))
        columns = ["input", f"reconstruction\n{self.psnr:.1f} dB PSNR", "edited", "difference"]
        return labelled_grid([[self.input, self.reconstruction, self.edited, self.difference]],
                             [f"{self.name}\n{self.action} {self.concept}\n({self.layer})"], columns, cell=cell)

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write <stem>_edited.png (edited.png for a tensor input), strip.png and edit.json into
        out_dir; returns out_dir."""
        out = Path(out_dir)
        edited_name = f"{self.name}_edited.png" if self.name and self.name != "image" else "edited.png"
        save_image(self.edited, out / edited_name)
        save_image(self.strip(), out / "strip.png")
        write_json(out / "edit.json", self.to_dict())
        return out


def _read_input(image: Any, nc: int, size: int) -> tuple[torch.Tensor, str, tuple[int, int]]:
    """(uint8 nc x size x size, stem, the input's own (H, W))."""
    if isinstance(image, (str, os.PathLike)):
        img = read_image(image, nc)
        name = Path(image).stem
    else:
        img = torch.as_tensor(image).detach().cpu()
        if img.dim() == 4 and img.shape[0] == 1:
            img = img[0]
        if img.dim() != 3:
            raise GantoolsError(f"edit takes one image (C x H x W), got shape {tuple(img.shape)}")
        if img.dtype != torch.uint8:
            img = ((img.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
        img = convert_channels(img, nc)
        name = "image"
    own = (int(img.shape[-2]), int(img.shape[-1]))
    return resize_center_crop(img, size), name, own


def _read_mask(mask: Any, own: tuple[int, int], size: int) -> torch.Tensor:
    """An image-space mask (size x size bool) from a PNG or tensor of the input's or the model's size."""
    if isinstance(mask, (str, os.PathLike)):
        m = read_mask(mask)
        what = str(mask)
        inside = m > 127
    else:
        m = torch.as_tensor(mask).detach().cpu()
        if m.dim() == 3 and m.shape[0] == 1:
            m = m[0]
        if m.dim() != 2:
            raise GantoolsError(f"a mask must be H x W, got shape {tuple(m.shape)}")
        what = "the mask tensor"
        inside = m > 0.5 if m.is_floating_point() else (m > 127 if m.dtype == torch.uint8 else m.bool())
    shape = tuple(m.shape)
    if shape not in (own, (size, size)):
        raise GantoolsError(f"{what} is {shape[1]}x{shape[0]} pixels: it must have the image's size "
                            f"({own[1]}x{own[0]}) or the model's ({size}x{size})")
    if shape != (size, size):
        # Same resize + centre crop as the image (nearest keeps it binary).
        h, w = shape
        s = size / min(h, w)
        nh, nw = max(size, round(h * s)), max(size, round(w * s))
        r = F.interpolate(inside[None, None].float(), size=(nh, nw), mode="nearest")[0, 0]
        top, left = (nh - size) // 2, (nw - size) // 2
        inside = r[top:top + size, left:left + size] > 0.5
    if not inside.any():
        raise GantoolsError(f"{what} selects no pixels: white (or non-zero) pixels mark where to add")
    return inside


def _dilate(region: torch.Tensor, pixels: int) -> torch.Tensor:
    if pixels <= 0:
        return region
    k = 2 * pixels + 1
    return F.max_pool2d(region[None, None].float(), k, stride=1, padding=pixels)[0, 0] > 0


@dataclass
class _EditRequest:
    """What to edit and where, checked: the action, concept, region (at / mask) and the blend."""

    action: str  # "remove" or "add"
    concept: str
    at: tuple[float, float] | None
    mask: Any
    patch: int
    dilate: int
    blend: str
    strength: float


@dataclass
class _Inversion:
    """How the image is inverted: at which layer, and the optimisation's settings."""

    layer: str
    steps: int
    restarts: int
    encoder: Any
    seed: int


@dataclass
class _Images:
    """The generator's images (uint8 on the CPU) and the segmenter's labels (batch of one)."""

    reconstruction: torch.Tensor
    raw_edited: torch.Tensor
    recon_labels: torch.Tensor
    raw_labels: torch.Tensor
    input_labels: torch.Tensor


def edit(model: ModelSpec, image: ImageSource, layer: int | str, *, remove: str | None = None,
         add: str | None = None, at: tuple[float, float] | str | None = None, mask: Any = None, top: int = 20,
         strength: float = 1.0, units: str | Sequence[int] | None = None, rank: str = "auto", dissection: Any = None,
         segmenter: SegmenterSpec | None = None, blend: str = "input", patch: int = DEFAULT_PATCH, dilate: int = 1,
         steps: int = 200, restarts: int = 2, encoder: Any = "auto", invert_layer: int | str | None = None,
         psnr_warn: float = PSNR_WARN, dissect_n: int = DEFAULT_DISSECT_N, seed: int = 0, allow_weak: bool = False,
         device: DeviceSpec = None, progress: ProgressCallback | None = None) -> EditResult:
    """Remove a concept from, or add one to, a real image through its layer-wise inversion.

    Args:
        model: a GAN or a model spec.
        image: an image path, or one image tensor C x H x W (uint8, or float in [-1, 1]).
        layer: the layer whose units are edited (and the inversion refines).
        remove: concept to remove: its top units are ablated to 0 over the whole feature map.
        add: concept to add: its top units are set to their q99 level inside the region (at / mask).
        at: add: (x, y) fractions of the image (or "x,y"), a patch x patch block of cells there.
        mask: add: image-space mask (PNG path or H x W tensor, white/nonzero = inside) of the input's
            or the model's size.
        top: how many of the concept's top-ranked units to edit (with no `units`).
        strength: s, the strength of the intervention (0..1): x' = (1 - s)·x + s·v.
        units: edit these units instead of the concept's top ones.
        rank: rank units by "iou", "ace" or "auto" (ace where the report holds it, else iou).
        dissection: a DissectionResult or report path (default: the report shipped beside the model
            when it holds the layer, else dissect on the fly).
        segmenter: a Segmenter, "color", a path, or None: the dissection report's segmenter
            when it records one, else the model's own, else colours.
        blend: outside the edited region keep the "input" pixels or the "reconstruction".
        patch: with `at`, the block side in feature-map cells.
        dilate: remove: grow the segmented concept region by this many pixels before blending.
        steps, restarts, encoder: of the inversion (see `gantools.restoration.invert`).
        invert_layer: the layer whose features the inversion refines, at or below `layer`
            (default: the one below it; layer 1 for layer 1).
        psnr_warn: warn (through progress) when the reconstruction PSNR is below this (dB).
        dissect_n, seed: dissection on the fly and inversion seeds.
        allow_weak: edit the top units of a concept that no unit matches (best IoU below the
            interpretable line) instead of raising WeakConceptError.
        device: where to run (default: where a loaded model lives; 'auto' for a spec).
        progress: progress callback.

    Every value is checked before the dissection on the fly and the inversion start.
    """
    request = _check_request(remove, add, at, mask, blend, strength, patch, dilate)
    _check_work(steps, restarts, dissect_n, encoder)
    choice = UnitChoice(units, request.concept, top, rank, allow_weak)
    choice.check(dissection, model)
    setup = setup_layer(model, layer, segmenter, dissection, device, progress)
    inversion = _Inversion(_inversion_layer(setup, invert_layer), steps, restarts, encoder, seed)
    check_concept(request.concept, setup.concepts)
    size, nc = setup.gan.config.image_size, setup.gan.config.nc
    x_u8, stem, own = _read_input(image, nc, size)
    region_img = _read_mask(mask, own, size) if mask is not None else None
    plan = plan_units(setup, choice, need_stats=request.action == "add", dissect_n=dissect_n, seed=seed,
                      batch_size=50, progress=progress)
    values = torch.zeros(len(plan.units)) if request.action == "remove" else unit_values("q99", plan.stats, plan.units)
    feats = _invert_features(setup, x_u8, stem, inversion, progress)
    iv = Intervention(setup.generator, setup.layer, plan.units, value=values, strength=request.strength,
                      region=_feature_region(request, region_img, tuple(feats.shape[-2:])))
    images = _regenerate(setup, iv, feats, x_u8)
    quality = _reconstruction_psnr(images.reconstruction, x_u8, psnr_warn, progress)
    region = _edited_region(request, setup.concepts, images, tuple(feats.shape[-2:]), region_img, size, stem,
                            progress)
    base_u8 = x_u8 if request.blend == "input" else images.reconstruction
    edited_u8 = torch.where(region[None], images.raw_edited, base_u8)
    with torch.no_grad():
        lab = segment(setup.segmenter, torch.stack([from_uint8(base_u8), from_uint8(edited_u8)]).to(setup.device))
    fr = concept_fractions(lab, len(setup.concepts))
    fr_recon = concept_fractions(images.recon_labels, len(setup.concepts))[0]
    concepts = setup.concepts
    return EditResult(
        name=stem, action=request.action, concept=request.concept, layer=setup.layer, units=list(plan.units),
        values=[float(v) for v in values], strength=request.strength, blend=request.blend, input=x_u8,
        reconstruction=images.reconstruction, edited=edited_u8, raw_edited=images.raw_edited,
        difference=(edited_u8.int() - x_u8.int()).abs().to(torch.uint8), region=region.cpu(), psnr=float(quality),
        before={c: float(fr[0, i]) for i, c in enumerate(concepts)},
        reconstructed={c: float(fr_recon[i]) for i, c in enumerate(concepts)},
        after={c: float(fr[1, i]) for i, c in enumerate(concepts)},
        settings=_settings(setup, plan, request, inversion))


def _check_request(remove: str | None, add: str | None, at: Any, mask: Any, blend: str, strength: float,
                   patch: int, dilate: int) -> _EditRequest:
    """What to edit, where and how strongly, checked before any work."""
    if (remove is None) == (add is None):
        raise GantoolsError("say what to edit: give a concept to remove or to add (remove= or add=), one of them")
    action = "remove" if remove is not None else "add"
    concept = remove if remove is not None else add
    assert concept is not None
    if action == "add" and (at is None) == (mask is None):
        raise GantoolsError("say where to add: give at (a position x, y) or mask (a PNG or tensor), one of them")
    if action == "remove" and (at is not None or mask is not None):
        raise GantoolsError("at and mask say where to add; removal works on the whole image")
    if blend not in BLENDS:
        raise GantoolsError(f"unknown blend {blend!r}: use {' or '.join(BLENDS)}")
    strength = check_strength(strength)
    if at is not None:
        at = check_point(at, patch)
    if patch < 1:
        raise GantoolsError(f"patch must be at least 1 cell, got {patch}")
    if dilate < 0:
        raise GantoolsError(f"dilate must be 0 or more pixels, got {dilate}")
    return _EditRequest(action, concept, at, mask, patch, dilate, blend, float(strength))


def _check_work(steps: int, restarts: int, dissect_n: int, encoder: Any) -> None:
    """The inversion's and the dissection's settings, checked before any work."""
    if steps < 1 or restarts < 1:
        raise GantoolsError(f"steps and restarts must be at least 1, got steps={steps}, restarts={restarts}")
    if dissect_n < 1:
        raise GantoolsError(f"dissect_n must be at least 1, got {dissect_n}")
    if isinstance(encoder, (str, os.PathLike)) and str(encoder) != "auto" and not Path(encoder).exists():
        raise GantoolsError(f"no encoder file {encoder}: give an encoder .safetensors, \"auto\" or None")


def _inversion_layer(setup: LayerSetup, invert_layer: int | str | None) -> str:
    """The layer whose features the inversion refines: `invert_layer`, or the one below the edited layer."""
    G, name = setup.generator, setup.layer
    if name == "output":
        raise GantoolsError(f"edit a hidden layer (1..{setup.gan.config.num_layers}), not the output")
    blocks = list(G.layer_names)
    if invert_layer is None:
        return blocks[max(0, blocks.index(name) - 1)] if name in blocks else name
    inv_name = layer_name(G, invert_layer)
    if name in blocks and (inv_name not in blocks or blocks.index(inv_name) > blocks.index(name)):
        raise GantoolsError(f"invert at {name} or a layer below it, not {inv_name}")
    return inv_name


def _invert_features(setup: LayerSetup, x_u8: torch.Tensor, stem: str, inversion: _Inversion,
                     progress: ProgressCallback | None) -> torch.Tensor:
    """The edited layer's features of the image: its layer-wise inversion, run on up to the edited layer."""
    # Looked up at call time (not imported at the top): tests replace invert to prove that every
    # value is checked before an inversion starts.
    from .restoration.inversion import invert

    G = setup.generator
    x = from_uint8(x_u8)[None].to(setup.device)
    inv = invert(setup.gan, x, "reconstruct", layerwise=inversion.layer, steps=inversion.steps,
                 restarts=inversion.restarts, encoder=inversion.encoder, names=[stem], device=setup.device,
                 seed=inversion.seed, progress=progress)
    assert inv.features is not None
    with eval_mode(G), torch.no_grad():
        return generate_from(G, inversion.layer, inv.features.to(setup.device), until=setup.layer)


def _feature_region(request: _EditRequest, region_img: torch.Tensor | None,
                    size: tuple[int, int]) -> torch.Tensor | None:
    """Where the intervention acts: everywhere to remove; the block of cells at `at`, or the mask, to add."""
    if request.action != "add":
        return None
    return point_region(request.at, size, request.patch) if request.at is not None else region_img


def _regenerate(setup: LayerSetup, iv: Intervention, feats: torch.Tensor, x_u8: torch.Tensor) -> _Images:
    """The reconstruction and the unblended edit from the features, and the labels of both and of the input."""
    G, seg = setup.generator, setup.segmenter
    with eval_mode(G), torch.no_grad():
        recon = generate_from(G, setup.layer, feats)
        raw = generate_from(G, setup.layer, iv.apply(feats))
        recon_labels = segment(seg, recon)
        raw_labels = segment(seg, raw)
        input_labels = segment(seg, from_uint8(x_u8)[None].to(setup.device))
    return _Images(_to_u8(recon[0]), _to_u8(raw[0]), recon_labels, raw_labels, input_labels)


def _reconstruction_psnr(recon_u8: torch.Tensor, x_u8: torch.Tensor, psnr_warn: float,
                         progress: ProgressCallback | None) -> float:
    """The reconstruction's PSNR against the input, with a notice when it is below `psnr_warn`."""
    quality = psnr(from_uint8(recon_u8), from_uint8(x_u8))
    if quality < psnr_warn:
        notice(progress, f"warning: the reconstruction is far from the input (PSNR {quality:.1f} dB < "
                         f"{psnr_warn:g} dB); the edit may not look like the photo: try more steps, or a layer "
                         "closer to the output")
    return float(quality)


def _edited_region(request: _EditRequest, concepts: list[str], images: _Images, feature_size: tuple[int, int],
                   region_img: torch.Tensor | None, size: int, stem: str,
                   progress: ProgressCallback | None) -> torch.Tensor:
    """Where the edit is pasted into the image (size x size bool)."""
    if request.action == "remove":
        idx = concepts.index(request.concept)
        # The input's own pixels of the concept count too: where the reconstruction missed some, the
        # edited image (which lacks the concept) still replaces them.
        in_input = images.input_labels[0] == idx
        where = in_input | (images.recon_labels[0] == idx) | (images.raw_labels[0] == idx)
        if not bool(in_input.any()):
            notice(progress, f"the segmenter finds no {request.concept} in {stem}: nothing to remove")
            where = torch.zeros_like(where)  # the output stays the input
        return _dilate(where.cpu(), request.dilate)
    if request.at is not None:
        cells = point_region(request.at, feature_size, request.patch)
        return F.interpolate(cells[None, None].float(), size=(size, size), mode="nearest")[0, 0] > 0.5
    assert region_img is not None
    return region_img


def _settings(setup: LayerSetup, plan: UnitPlan, request: _EditRequest, inversion: _Inversion) -> dict[str, Any]:
    """What edit.json records about how the edit was made."""
    mask = request.mask
    return {"model": str(setup.gan.path) if setup.gan.path is not None else None,
            "segmenter": describe_segmenter(setup.segmenter), "units_from": plan.source,
            "value": "zero" if request.action == "remove" else "q99", "inverted_at": inversion.layer,
            "steps": inversion.steps, "restarts": inversion.restarts, "dilate": request.dilate,
            "patch": request.patch, "seed": inversion.seed,
            "at": list(request.at) if request.at is not None else None,
            "mask": str(mask) if isinstance(mask, (str, os.PathLike)) else (None if mask is None else "tensor")}


def _to_u8(image: torch.Tensor) -> torch.Tensor:
    return to_uint8(image).cpu()
