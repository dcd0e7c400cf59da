"""The painting studio: one model, one layer, its segmenter and dissection, shared by every browser session.

`open_studio` loads the model, picks the layer (given, else the report's, else layer 3), and finds a
dissection for the palette: the report given, or one computed once and cached in the user's cache
directory, keyed by the model's and the segmenter's fingerprints; the causal rankings shipped with
the model (`units.shipped_dissection`) rank the units of the concepts it has none for. The studio
then does the model work of a painting session on request: draw a sample, edit features inside a
region with the concept's top units (`plan_units` and `Intervention`, the code path of `gantools
edit`), segment an image, invert an upload layer-wise.

One lock serialises the work on the shared model; an upload is inverted on a copy of the model, so
that other sessions stay live while it runs.
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..defaults import MODEL as DEFAULT_MODEL
from ..hooks import Trace, generate_from, layer_name
from ..interventions import Intervention
from ..models import fingerprint, load_model
from ..segmenters import describe_segmenter, load_segmenter
from ..units import (LayerSetup, UnitChoice, UnitPlan, check_concept, check_strength, concept_fractions,
                     concept_support, dissection_layer, eval_mode, plan_units, segment, setup_layer,
                     shipped_dissection, shipped_dissection_path, unit_values)
from ..utils import Config, GantoolsError, ProgressCallback, from_uint8, notice, resolve_device, to_uint8

if TYPE_CHECKING:
    from ..dissection import DissectionResult
    from ..types import DeviceSpec, ModelSpec, SegmenterSpec

ACTIONS = ("add", "remove")
CACHE_FORMAT = 1  # bump when the cached dissection's meaning changes


@dataclass
class PaintSettings(Config):
    """How the studio edits and what it accepts.

    Attributes:
        top: how many of a concept's top units an edit switches (as `gantools edit`): ranked by causal
            effect where the report or the model's shipped dissection has it, else by IoU at the layer.
        steps, restarts: of the layer-wise inversion of an uploaded image (as `gantools edit`).
        dissect_n: samples of the dissection computed when no report is given.
        dissect_seed: their seed (other samples than the ones painted with seed 0).
        dissect_threshold: its unit thresholds, "iqr" or "quantile" (see `gantools.dissection.dissect`).
            "iqr" (the default) labels units by the concept each one's level was chosen for, so the
            palette counts units for the large concepts too (scenes64 layer 3: grass 38, sky 19,
            tree 4, where the top-1% quantile finds none), for a third more time.
        history: edits kept per session for undo.
        max_sessions: browser sessions kept at once (the least recently used one goes first).
        max_upload_bytes: the largest uploaded file accepted.
        max_upload_pixels: the largest uploaded image accepted (width x height).
    """

    top: int = 20
    steps: int = 200
    restarts: int = 2
    dissect_n: int = 1000
    dissect_seed: int = 1
    dissect_threshold: str = "iqr"
    history: int = 50
    max_sessions: int = 32
    max_upload_bytes: int = 16 * 1024 * 1024
    max_upload_pixels: int = 4096 * 4096

    def __post_init__(self) -> None:
        for name in ("top", "steps", "restarts", "dissect_n", "history", "max_sessions", "max_upload_bytes",
                     "max_upload_pixels"):
            if int(getattr(self, name)) < 1:
                raise GantoolsError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.dissect_threshold not in ("quantile", "iqr"):
            raise GantoolsError(f"unknown dissect_threshold {self.dissect_threshold!r}: use quantile or iqr")


@dataclass
class ConceptEntry:
    """One concept of the palette.

    Attributes:
        name: the concept.
        units: its interpretable units at the layer (labelled with it, IoU at the line or above).
        best_iou: its best IoU over the layer's units.
        weak: no unit reaches the line and the model rarely draws it: edits may do nothing.
        note: why it is weak, or None.
    """

    name: str
    units: int
    best_iou: float
    weak: bool
    note: str | None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready."""
        return {"name": self.name, "units": self.units, "best_iou": self.best_iou, "weak": self.weak,
                "note": self.note}


@dataclass
class Painted:
    """One edit of features inside a region: the edited features and the regenerated image (uint8 C x S x S)."""

    features: torch.Tensor
    raw: torch.Tensor
    units: list[int]
    notes: list[str]


class PaintStudio:
    """The model side of `gantools paint`: sample, edit inside a region, segment, invert (thread-safe).

    Args:
        setup: the model on its device, the layer, the segmenter and the dissection (with the layer).
        settings: how edits and uploads are done.
    """

    def __init__(self, setup: LayerSetup, settings: PaintSettings | None = None) -> None:
        if setup.dissection is None:
            raise GantoolsError("a paint studio needs a dissection of its layer (for the palette)")
        dissection_layer(setup.dissection, setup.layer)
        self.setup = setup
        self.settings = settings or PaintSettings()
        self.lock = threading.RLock()
        self._plans: dict[str, tuple[UnitPlan, list[str]]] = {}
        blocks = list(getattr(self.generator, "layer_names", []))
        if setup.layer not in blocks:
            raise GantoolsError(f"paint a block of the generator ({', '.join(blocks)}), not {setup.layer}")
        # The inversion refines the block below the edited one, as `gantools edit` does.
        self.invert_layer = blocks[max(0, blocks.index(setup.layer) - 1)]
        self.generator.eval()
        with torch.no_grad():
            probe = self.sample(0)
        self.size = int(self.render(probe).shape[-1])
        self.nc = int(self.gan.config.nc)
        self.palette = self._palette()

    @property
    def gan(self):
        """The loaded model."""
        return self.setup.gan

    @property
    def generator(self) -> torch.nn.Module:
        """The model's generator."""
        return self.setup.gan.generator

    @property
    def layer(self) -> str:
        """The painted layer's canonical name."""
        return self.setup.layer

    @property
    def concepts(self) -> list[str]:
        """The segmenter's concepts (the palette's order)."""
        return self.setup.concepts

    @property
    def dissection(self) -> DissectionResult:
        """The dissection behind the palette and the units."""
        assert self.setup.dissection is not None
        return self.setup.dissection

    def _palette(self) -> list[ConceptEntry]:
        stats = dissection_layer(self.dissection, self.layer)
        entries = []
        for concept in self.concepts:
            if concept not in self.dissection.concepts:
                entries.append(ConceptEntry(concept, 0, 0.0, True, f"the dissection report has no {concept}"))
                continue
            support = concept_support(self.dissection, self.layer, concept)
            entries.append(ConceptEntry(concept, len(stats.units_for(concept)), support.best_iou, support.weak,
                                        support.note() if support.below_line else None))
        return entries

    def describe(self) -> dict[str, Any]:
        """What the page shows about the studio: model, layer, image size, the palette."""
        path = self.gan.path
        return {"model": path.parent.name if path is not None else "model", "layer": self.layer,
                "size": self.size, "channels": self.nc, "top": self.settings.top,
                "segmenter": describe_segmenter(self.setup.segmenter),
                "concepts": [e.to_dict() for e in self.palette],
                "max_upload_bytes": self.settings.max_upload_bytes}

    def check_concept(self, concept: str) -> int:
        """The concept's index; a GantoolsError naming the palette when it is unknown."""
        return check_concept(concept, self.concepts, "the palette")

    def plan(self, concept: str) -> tuple[UnitPlan, list[str]]:
        """The concept's top units and their statistics (cached), with the notices choosing them gave."""
        self.check_concept(concept)
        with self.lock:
            if concept not in self._plans:
                notes: list[str] = []
                choice = UnitChoice(concept=concept, top=self.settings.top, allow_weak=True)
                plan = plan_units(self.setup, choice, need_stats=True,
                                  progress=lambda p: notes.append(p.message) if p.message else None)
                self._plans[concept] = (plan, notes)
            return self._plans[concept]

    # -----------------------------------------------------------------------------------------
    # Model work (each call holds the lock)

    def sample(self, seed: int) -> torch.Tensor:
        """The layer's features (1 x C x h x w, on the CPU) for the sample of `seed`."""
        G = self.generator
        with self.lock, eval_mode(G), torch.no_grad(), Trace(G, self.layer, stop=True) as t:
            G(G.sample_z(1, int(seed), device=self.setup.device))
        assert t.output is not None
        return t.output.detach().cpu()

    def render(self, features: torch.Tensor) -> torch.Tensor:
        """The image (uint8 C x S x S) the generator draws from the layer's features."""
        G = self.generator
        with self.lock, eval_mode(G), torch.no_grad():
            image = generate_from(G, self.layer, features.to(self.setup.device))
        return to_uint8(image[0]).cpu()

    def labels(self, image: torch.Tensor) -> torch.Tensor:
        """The segmenter's labels (S x S, int64) of one uint8 image."""
        with self.lock, torch.no_grad():
            return segment(self.setup.segmenter, from_uint8(image)[None].to(self.setup.device))[0].cpu()

    def fractions(self, labels: torch.Tensor) -> list[float]:
        """Each concept's pixel fraction in a label map."""
        return [float(v) for v in concept_fractions(labels[None], len(self.concepts))[0]]

    def paint(self, features: torch.Tensor, region: torch.Tensor, concept: str, action: str,
              strength: float) -> Painted:
        """Switch the concept's top units off (remove) or towards their q99 level (add) inside the region.

        The same edit as `gantools edit`: an `Intervention` on the layer's features with the region
        (an S x S image-space mask, max-pooled to the feature map), then the generator runs on.
        """
        if action not in ACTIONS:
            raise GantoolsError(f"unknown action {action!r}: use add or remove")
        strength = check_strength(strength)
        plan, notes = self.plan(concept)
        values = torch.zeros(len(plan.units)) if action == "remove" else unit_values("q99", plan.stats, plan.units)
        edit = Intervention(self.generator, self.layer, plan.units, value=values, strength=strength, region=region)
        with self.lock, torch.no_grad():
            edited = edit.apply(features.to(self.setup.device)).cpu()
        return Painted(edited, self.render(edited), list(plan.units), list(notes))

    def invert(self, image: torch.Tensor, name: str = "image",
               progress: ProgressCallback | None = None) -> tuple[torch.Tensor, float]:
        """The layer's features for a real image (uint8 C x S x S), by layer-wise inversion, and the
        reconstruction's PSNR (dB).

        As `gantools edit`: the block below the edited layer is refined, then the generator's own
        weights compute the edited layer. Runs on a copy of the model (other sessions stay live).
        """
        from ..metrics import psnr
        from ..restoration import invert

        with self.lock:
            gan = copy.deepcopy(self.gan)
        G = gan.generator
        s = self.settings
        inv = invert(gan, from_uint8(image)[None], "reconstruct", layerwise=self.invert_layer, steps=s.steps,
                     restarts=s.restarts, names=[name], device=self.setup.device, progress=progress)
        assert inv.features is not None
        with eval_mode(G), torch.no_grad():
            feats = generate_from(G, self.invert_layer, inv.features.to(self.setup.device), until=self.layer)
        feats = feats.detach().cpu()
        quality = float(psnr(from_uint8(self.render(feats)), from_uint8(image)))
        return feats, quality


# ---------------------------------------------------------------------------------------------
# Opening a studio


def default_cache_dir() -> Path:
    """Where dissections computed for paint are kept: $GANTOOLS_CACHE/paint, default ~/.cache/gantools/paint."""
    root = os.environ.get("GANTOOLS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "gantools") / "paint"


def _segmenter_key(segmenter: Any) -> str | None:
    """What identifies a segmenter's behaviour: its weights, or "color"; None for a Python object."""
    from ..dissection import segmenter_source

    if isinstance(segmenter, torch.nn.Module):
        return fingerprint(segmenter)
    return segmenter_source(segmenter)


def paint_report(gan: Any, layer: str, segmenter: Any, n: int = 1000, seed: int = 1, threshold: str = "iqr",
                 cache_dir: str | os.PathLike | None = None,
                 progress: ProgressCallback | None = None) -> DissectionResult:
    """A dissection of `layer` for the palette, from the cache when it was computed before.

    The cache entry is keyed by the generator's and the segmenter's fingerprints, the layer, n, seed
    and threshold, so another model or segmenter never reads it. A segmenter that is a plain Python object is
    dissected every time (nothing identifies its behaviour).
    """
    from ..dissection import dissect, load_report

    key = _segmenter_key(segmenter)
    entry = None
    if key is not None and cache_dir is not None:
        text = json.dumps([CACHE_FORMAT, fingerprint(gan.generator), layer, n, seed, threshold, key])
        entry = Path(cache_dir) / hashlib.sha256(text.encode()).hexdigest()[:20]
        if (entry / "report.json").is_file():
            try:
                result = load_report(entry)
                if layer in result.layers:
                    notice(progress, f"palette: the dissection of {layer} cached in {entry}")
                    return result
            except GantoolsError:
                pass  # a damaged cache entry is computed again
    notice(progress, f"dissecting {layer} on {n} samples for the palette (10-20 s on 2 CPU cores for "
                     f"scenes64; done once{', then cached in ' + str(entry) if entry is not None else ''})")
    result = dissect(gan, layers=(layer,), segmenter=segmenter, n=n, seed=seed, threshold=threshold,
                     device=gan.device, progress=progress, top_k=0)
    if entry is not None:
        try:
            result.save(entry, html=False)
        except OSError as e:  # a read-only home: paint works, it only dissects again next time
            notice(progress, f"could not cache the dissection in {entry}: {e.strerror or e}")
    return result


def _choose_layer(gan: Any, layer: int | str | None, report: DissectionResult | None) -> str:
    """The layer to paint: given, else dissect's default layer (3, or the last hidden layer of a
    smaller generator) when the report has it, else the report's first layer."""
    from ..dissection import default_layer

    G = gan.generator
    if layer is not None:
        return layer_name(G, layer)
    default = layer_name(G, default_layer(gan))
    if report is not None and report.layers and default not in report.layers:
        return next(iter(report.layers))
    return default


def open_studio(model: ModelSpec = DEFAULT_MODEL, report: DissectionResult | str | os.PathLike | None = None,
                layer: int | str | None = None, segmenter: SegmenterSpec | None = None, device: DeviceSpec = None,
                settings: PaintSettings | None = None, cache_dir: str | os.PathLike | None = None,
                progress: ProgressCallback | None = None) -> PaintStudio:
    """Load a model, its segmenter and a dissection of the painted layer into a `PaintStudio`.

    Args:
        model: a GAN or a model spec (file, run directory, pretrained name).
        report: a dissection report (path or result) of the model holding the layer; default: one
            computed once (settings.dissect_n samples) and cached in `cache_dir`.
        layer: the layer to paint (default: 3, or the last hidden layer of a smaller generator; with a
            report that lacks it, the report's first layer).
        segmenter: the segmenter (default: the report's, else the model's own, else colours).
        device: where to run (the device rule: default the model's device, 'auto' for a spec).
        settings: edit and upload settings.
        cache_dir: where computed dissections are kept (default `default_cache_dir()`).
        progress: progress callback (the dissection, notices).
    """
    from ..dissection import load_report

    settings = settings or PaintSettings()
    dev = resolve_device(device, model)
    gan = load_model(model, dev)
    result = load_report(report) if isinstance(report, (str, os.PathLike)) else report
    name = _choose_layer(gan, layer, result)
    if name == "output":
        raise GantoolsError("paint a hidden layer of the generator, not its output")
    if result is not None:
        dissection_layer(result, name)
    else:
        seg = load_segmenter(segmenter, gan=gan, device=dev)
        result = paint_report(gan, name, seg, settings.dissect_n, settings.dissect_seed, settings.dissect_threshold,
                              cache_dir if cache_dir is not None else default_cache_dir(), progress)
        segmenter = seg
    setup = setup_layer(gan, name, segmenter, result, device=dev, progress=progress)
    _add_shipped_rankings(setup, progress)
    return PaintStudio(setup, settings)


def _add_shipped_rankings(setup: LayerSetup, progress: ProgressCallback | None) -> None:
    """Give the palette's dissection the causal rankings shipped with the model (`shipped_dissection`)
    for the concepts it has none of, so brushes use the units that cause a concept (rank "auto").

    On scenes64 layer 3 this is what makes the door brush work: a door stroke on a wall adds a door in
    16 of 16 generated houses with those units, and in 8 of 16 with the IQR palette's best-IoU units
    (benchmarks/paint.py)."""
    shipped = shipped_dissection(setup.gan, setup.layer, setup.segmenter)
    if shipped is None or setup.dissection is None:
        return
    ours, theirs = dissection_layer(setup.dissection, setup.layer), shipped.layers[setup.layer]
    missing = {c: v for c, v in theirs.ace.items() if c not in ours.ace and c in ours.concepts}
    if not missing or theirs.units != ours.units:
        return
    setup.dissection = copy.deepcopy(setup.dissection)  # the caller's report stays as it was
    setup.dissection.layers[setup.layer].ace.update({c: list(v) for c, v in missing.items()})
    notice(progress, f"units ranked by causal effect, from {shipped_dissection_path(setup.gan)} "
                     "(shipped with the model)")
