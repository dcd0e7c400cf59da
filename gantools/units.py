"""Units of a generator layer: choosing them, their levels, and the concept measurements around them.

The helpers that `interventions` (ablate, insert), `ranking` (rank_units) and `editing` (edit) share:

- reading a unit selection (`parse_units`, `check_units`, `UnitChoice`) and choosing the units,
  given or the top ones of a concept in a dissection (`plan_units`), with the check that the model
  draws the concept at all (`concept_support`, `WeakConceptError`);
- the level v a unit is set towards (`unit_values`: zero, mean, q99 or numbers) and the edit
  x' = (1 - w)·x + w·v itself (`set_units`);
- what a measurement works on (`setup_layer`: the model on its device, the layer, the segmenter
  and dissection) and how it measures (`segment`, `concept_fractions`, `batches`, `eval_mode`).

Under torchrun (`gantools.distributed`) a measurement shards its N samples: `sample_block` is this
process's contiguous block of the batches one process would run (the latents are drawn from the seed
all at once, so sample i and every batch are those of a one-process run), `batches` walks it, and
`gathered` brings every process's per-batch values back in order; alone, the block is every sample.

Every `check_*` function raises a GantoolsError naming the Python parameter, so callers check all
values before any expensive work (a dissection on the fly, an inversion, a measurement) starts.
"""

from __future__ import annotations

import contextlib
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator, Sequence

import torch
from torch import nn

from . import distributed
from .hooks import Trace, layer_name, resolve_layer
from .dissection import check_model, load_report
from .models import GAN, find_companion, fingerprint, load_model
from .segmenters import check_labels, describe_segmenter, load_segmenter
from .utils import GantoolsError, ProgressCallback, module_device, notice, resolve_device

if TYPE_CHECKING:
    from .dissection import DissectionResult, LayerDissection
    from .segmenters import Segmenter
    from .types import DeviceSpec, ModelSpec, SegmenterSpec

DEFAULT_DISSECT_N = 1000  # samples for a dissection computed on the fly (to choose units / get levels)
# A concept below the interpretable line that covers less than this share of the generated pixels
# may not be drawn at all: choosing its "top" units is refused (WeakConceptError) unless allowed.
RARE_CONCEPT = 0.01
RANKINGS = ("auto", "iou", "ace")  # auto: ace where the report holds the concept's causal ranking, else iou
SHIPPED_DISSECTION = "dissection"  # its companion name: dissection.json beside a model file (`shipped_dissection`)

# a level: a number, one number per unit, or the name of a statistic ("zero", "mean", "q99")
Value = float | int | str | torch.Tensor | Sequence[float]


# ---------------------------------------------------------------------------------------------
# Layers and unit indices


def generator_of(model: Any) -> nn.Module:
    """The generator of a GAN, or the module itself."""
    return model.generator if hasattr(model, "generator") and isinstance(model.generator, nn.Module) else model


@contextlib.contextmanager
def eval_mode(module: nn.Module) -> Iterator[None]:
    """Run a block with `module` in eval mode, then restore its mode.

    Measurements repeat and edit batches; BatchNorm in training mode would make every image depend
    on its batch-mates (and update running statistics), so they measure in eval mode.
    """
    was = module.training
    module.eval()
    try:
        yield
    finally:
        module.train(was)


def layer_units(generator: nn.Module | GAN, layer: int | str) -> int:
    """Number of units (channels) in a layer's output, for a generator or a GAN.

    Read from the block's last conv/BatchNorm; falls back to one eval-mode forward pass.
    """
    generator = generator_of(generator)
    _, module = resolve_layer(generator, layer)
    for m in reversed(list(module.modules())):
        for attr in ("num_features", "out_channels"):
            if isinstance(getattr(m, attr, None), int):
                return int(getattr(m, attr))
    nz = getattr(getattr(generator, "config", None), "nz", None)
    if nz is None:
        raise GantoolsError(f"cannot tell how many units layer {layer!r} has")
    device = module_device(generator) or torch.device("cpu")
    with eval_mode(generator), torch.no_grad(), Trace(generator, layer, stop=True) as t:
        generator(torch.zeros(1, nz, device=device))
    assert t.output is not None
    return int(t.output.shape[1])


def parse_units(text: str | Sequence[int]) -> list[int]:
    """'4,17,33' or '0-7' or '0-3,9' (or a list of ints) -> unit indices, in the order given, without repeats."""
    if not isinstance(text, str):
        values = [int(u) for u in text]
    else:
        values = []
        for part in (p.strip() for p in text.split(",")):
            if not part:
                continue
            try:
                if "-" in part[1:]:
                    lo, hi = (int(v) for v in part.split("-", 1))
                    values.extend(range(lo, hi + 1) if lo <= hi else range(lo, hi - 1, -1))
                else:
                    values.append(int(part))
            except ValueError as e:
                raise GantoolsError(f"units {text!r} must be unit numbers like 4,17,33 or a range like 0-7") from e
    if not values:
        raise GantoolsError(f"no units in {text!r}: give unit numbers like 4,17,33")
    return list(dict.fromkeys(values))


def check_units(units: Sequence[int], count: int, layer: str) -> list[int]:
    """Raise a GantoolsError naming the valid range when a unit index is outside [0, count)."""
    bad = [u for u in units if not 0 <= int(u) < count]
    if bad:
        raise GantoolsError(f"unit {bad[0]} is out of range for {layer}: it has {count} units, "
                            f"numbered 0 to {count - 1}")
    return [int(u) for u in units]


def check_concept(concept: str, concepts: Sequence[str], where: str = "the segmenter") -> int:
    """Index of `concept`; a GantoolsError listing the known concepts when it is unknown."""
    if concept not in concepts:
        hint = " (another segmenter: segmenter='color', or a segmenter file)" if where == "the segmenter" else ""
        raise GantoolsError(f"unknown concept {concept!r}: {where} knows {', '.join(concepts)}{hint}")
    return list(concepts).index(concept)


# ---------------------------------------------------------------------------------------------
# Levels and the edit


def check_strength(strength: float) -> float:
    """The edit strength as a float, or a GantoolsError when it is outside [0, 1]."""
    s = float(strength)
    if not 0 <= s <= 1:
        raise GantoolsError(f"strength must be between 0 and 1, got {strength}")
    return s


def needs_stats(value: Value) -> bool:
    """Whether a level is read from the dissection statistics ("mean" or "q99")."""
    return isinstance(value, str) and value.strip().lower() in ("mean", "q99")


def check_value(value: Value) -> None:
    """A level's spelling (zero, mean, q99, a number, or numbers), before any work."""
    if isinstance(value, str):
        if not needs_stats(value):
            unit_values(value, None, [])
        return
    try:
        torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError):
        raise GantoolsError(f"unknown value {value!r}: use zero, mean, q99, a number or one number per unit") from None


def unit_values(value: Value, stats: LayerDissection | None, units: Sequence[int]) -> torch.Tensor:
    """The level v for each unit: 'zero', 'mean' or 'q99' (from the dissection statistics), or a number.

    Args:
        value: a number, a per-unit sequence/tensor, or the name of a statistic.
        stats: the layer's dissection (needed for 'mean' and 'q99').
        units: the units, in order.
    """
    if isinstance(value, str):
        text = value.strip().lower()
        if text in ("zero", "0"):
            return torch.zeros(len(units))
        if text in ("mean", "q99"):
            if stats is None:
                raise GantoolsError(f"value {text!r} needs the dissection statistics: give a report or a number")
            table = torch.as_tensor(getattr(stats, text), dtype=torch.float32).flatten()
            return table[torch.as_tensor(list(units), dtype=torch.long)]
        try:
            return torch.full((len(units),), float(text))
        except ValueError:
            raise GantoolsError(f"unknown value {value!r}: use zero, mean, q99 or a number") from None
    v = torch.as_tensor(value, dtype=torch.float32).flatten()
    if v.numel() == 1:
        return v.expand(len(units)).clone()
    if v.numel() != len(units):
        raise GantoolsError(f"{v.numel()} values for {len(units)} units: give one, or one per unit")
    return v


def value_json(value: Value, levels: torch.Tensor) -> Any:
    """How a level is recorded in settings: the statistic's name, or the numbers used."""
    return value.strip().lower() if isinstance(value, str) else levels.tolist()


def set_units(x: torch.Tensor, units: torch.Tensor, value: torch.Tensor, weight: torch.Tensor | float) -> torch.Tensor:
    """x (N x C x H x W) with channels `units` replaced by (1 - weight)·x + weight·value (a new tensor)."""
    sel = x.index_select(1, units)
    # (1 - m)·x + m·v rather than x + m·(v - x): exact at m = 0 (x) and at m = 1 (v).
    new = (1 - weight) * sel + weight * value
    out = x.clone()
    out[:, units] = new.to(x.dtype)
    return out


# ---------------------------------------------------------------------------------------------
# Measuring


def check_sampling(n: int, batch_size: int, grid: int = 0, dissect_n: int = DEFAULT_DISSECT_N) -> None:
    """The measurement's sizes (checked before any work)."""
    if dissect_n < 1:
        raise GantoolsError(f"dissect_n must be at least 1, got {dissect_n}")
    if n < 2:
        raise GantoolsError(f"n must be at least 2 (the effects come with a 95% CI over samples), got {n}")
    if batch_size < 1:
        raise GantoolsError(f"batch_size must be at least 1, got {batch_size}")
    if grid < 0:
        raise GantoolsError(f"grid must be 0 or more pictures, got {grid}")


def sample_block(n: int, batch_size: int) -> range:
    """This process's samples of n: all of them alone; under torchrun its contiguous block of the
    batches one process would run (`World.shard_batches`), so every batch holds the same samples and
    gives bit-identical per-sample values."""
    return distributed.world().shard_batches(n, batch_size) if distributed.active() else range(n)


def batches(n: int, batch_size: int, block: range | None = None) -> Iterator[tuple[int, int]]:
    """(start, end) of each batch of n samples (only those in `block`, a `sample_block`, when given),
    after checking the sizes."""
    check_sampling(n, batch_size)
    block = range(n) if block is None else block
    for start in range(block.start, block.stop, batch_size):
        yield start, min(block.stop, start + batch_size)


def gathered(items: list[Any]) -> list[Any]:
    """Every process's `items` (CPU values, one per batch of its `sample_block`), joined in rank
    order, that is in sample order; this process's own list alone."""
    return [item for part in distributed.gather_objects(items) for item in part]


def segment(segmenter: Segmenter, images: torch.Tensor) -> torch.Tensor:
    """The segmenter's labels (N x H x W) for images, checked against the images and its concepts."""
    return check_labels(segmenter(images), images, len(segmenter.concepts))


def concept_fractions(labels: torch.Tensor, num_concepts: int) -> torch.Tensor:
    """N x H x W labels (ids 0..num_concepts-1) -> N x C pixel fractions (float64, CPU)."""
    n = labels.shape[0]
    flat = labels.reshape(n, -1).long()
    offsets = torch.arange(n, device=flat.device).unsqueeze(1) * num_concepts
    counts = torch.bincount((flat + offsets).flatten(), minlength=n * num_concepts).view(n, num_concepts)
    return counts.double().cpu() / flat.shape[1]


# ---------------------------------------------------------------------------------------------
# What a measurement works on


def load_dissection(dissection: DissectionResult | str | os.PathLike, gan: GAN) -> DissectionResult:
    """A dissection result (loaded from a report path when given one), checked to fit the model."""
    result = load_report(dissection) if isinstance(dissection, (str, os.PathLike)) else dissection
    check_model(result, gan)
    return result


def dissection_layer(result: DissectionResult, layer: str) -> LayerDissection:
    """The dissection of one layer; a GantoolsError naming the layers the report has."""
    if layer not in result.layers:
        have = ", ".join(result.layers) or "none"
        raise GantoolsError(f"the dissection report has no {layer} (it has {have}): "
                            f"dissect layer {layer.removeprefix('layer')} first")
    return result.layers[layer]


def report_segmenter(segmenter: SegmenterSpec | None, dissection: Any, gan: GAN, device: torch.device,
                     progress: ProgressCallback | None = None) -> tuple[Segmenter, DissectionResult | None]:
    """(segmenter, dissection): with no segmenter given, the one the report was made with (when it
    can be reloaded), else the model's own; the report is loaded once and returned for reuse."""
    if dissection is not None:
        dissection = load_dissection(dissection, gan)
        source = dissection.settings.get("segmenter_source")
        if segmenter is None and source is not None and (source == "color" or Path(source).is_file()):
            seg = load_segmenter(source, gan=gan, device=device)
            if source != "color" and gan.companion("segmenter") != Path(source):
                notice(progress, f"segmenter: {source} (the dissection report's)")
            return seg, dissection
    return load_segmenter(segmenter, gan=gan, device=device), dissection


@dataclass
class LayerSetup:
    """A measurement's subject: the model on its device, the layer, the segmenter, the dissection.

    Attributes:
        gan: the loaded model (on `device`).
        layer: the canonical layer name.
        segmenter: the segmenter labelling the images.
        dissection: the dissection result given (loaded and checked against the model), or None.
        device: where the work runs.
        dissection_from: how the dissection was given: "report <path>" or "dissection result".
    """

    gan: GAN
    layer: str
    segmenter: Segmenter
    dissection: DissectionResult | None
    device: torch.device
    dissection_from: str = "dissection result"

    @property
    def generator(self) -> nn.Module:
        """The model's generator."""
        return self.gan.generator

    @property
    def concepts(self) -> list[str]:
        """The segmenter's concepts, in label order."""
        return list(self.segmenter.concepts)


def setup_layer(model: ModelSpec, layer: int | str, segmenter: SegmenterSpec | None = None, dissection: Any = None,
                device: DeviceSpec = None, progress: ProgressCallback | None = None) -> LayerSetup:
    """Load the model (the device rule: an explicit device wins, else where a loaded model lives,
    else 'auto'), resolve the layer, and load the segmenter and dissection (see `report_segmenter`).
    Under torchrun, join the process group first (a bare 'cuda' is then this process's GPU)."""
    dev = distributed.local_device(resolve_device(device, model))
    distributed.start(dev)
    gan = load_model(model, dev)
    name = layer_name(gan.generator, layer)
    given = f"report {dissection}" if isinstance(dissection, (str, os.PathLike)) else "dissection result"
    seg, result = report_segmenter(segmenter, dissection, gan, dev, progress)
    if result is None:
        result = shipped_dissection(gan, name, seg, progress)
        if result is not None:
            given = f"{shipped_dissection_path(gan)} (shipped with the model)"
            notice(progress, f"dissection: {given}")
            given = "report " + given
    return LayerSetup(gan, name, seg, result, dev, given)


def shipped_dissection_path(model: Any) -> Path | None:
    """The dissection report stored beside a model file (<dir>/dissection.json), or None.

    `model` is a GAN or a model spec; anything else (None, a model in memory, a spec that does not
    resolve) has none. A pretrained model can ship one: scenes64's holds its layer 3 with the causal
    ranking of every concept, so ablate, insert and edit choose units without dissecting on the fly.
    """
    if not isinstance(model, (GAN, str, os.PathLike)):
        return None
    try:
        return find_companion(model, SHIPPED_DISSECTION, ".json")
    except GantoolsError:
        return None  # a spec that does not resolve: the model's own error comes when it is loaded


def shipped_dissection(gan: GAN, layer: str, segmenter: Segmenter,
                       progress: ProgressCallback | None = None) -> DissectionResult | None:
    """The model's shipped report (`shipped_dissection_path`) when it fits the request: made for these
    weights with this segmenter (by description), and holding `layer`; else None."""
    path = shipped_dissection_path(gan)
    if path is None:
        return None
    result = load_report(path)
    if result.settings.get("model_fingerprint") != fingerprint(gan.generator):
        notice(progress, f"note: {path} was made for other weights than {gan.path}: not used")
        return None
    if layer not in result.layers or result.settings.get("segmenter") != describe_segmenter(segmenter):
        return None  # another layer or another segmenter: dissect on the fly as without it
    return result


def run_settings(gan: GAN, segmenter: Segmenter, **extra: Any) -> dict[str, Any]:
    """The settings a result records: the model (path and fingerprint), the segmenter, and `extra`."""
    return {"model": str(gan.path) if gan.path is not None else None, "model_fingerprint": fingerprint(gan.generator),
            "segmenter": describe_segmenter(segmenter), **extra}


# ---------------------------------------------------------------------------------------------
# Does the model draw the concept?


class WeakConceptError(GantoolsError):
    """Units were to be chosen by a concept that the model may not draw.

    No unit of the layer reaches the dissection's interpretable line for the concept (its best IoU is
    below `min_iou`) and the concept is rare in the generated images (under `RARE_CONCEPT` of their
    pixels, or the dissection did not record how much), so its "top" units would be arbitrary. The
    message names the Python parameters; `describe` words it for other front ends (the CLI names
    its flags).

    Attributes:
        concept, layer: what was asked for.
        best_iou, best_unit: the concept's best IoU at the layer, and the unit that has it.
        min_iou: the interpretable line of the dissection.
        coverage: the concept's share of the generated pixels in the dissection (None: not recorded).
        interpretable: the concepts that have interpretable units labelled with them at the layer.
    """

    def __init__(self, concept: str, layer: str, best_iou: float, best_unit: int, min_iou: float,
                 coverage: float | None, interpretable: Sequence[str]) -> None:
        self.concept, self.layer, self.best_iou, self.best_unit = concept, layer, best_iou, best_unit
        self.min_iou, self.coverage, self.interpretable = min_iou, coverage, list(interpretable)
        super().__init__(self.describe("units=[...]", "allow_weak=True"))

    def describe(self, units_hint: str, allow_hint: str) -> str:
        """The message, with the ways to give units and to allow weak units worded by the caller."""
        strong = ", ".join(self.interpretable) or "none"
        share = "" if self.coverage is None else \
            f" and {self.concept} covers {100 * self.coverage:.2f}% of the generated pixels"
        return (f"no unit of {self.layer} matches {self.concept!r}: its best IoU is {self.best_iou:.4f} "
                f"(unit {self.best_unit}), below the interpretable line {self.min_iou:g}{share}, so the model "
                f"may not draw {self.concept} (concepts with interpretable units in {self.layer}: {strong}); "
                f"give the units yourself ({units_hint}) or accept weak units ({allow_hint})")


@dataclass
class ConceptSupport:
    """How well a layer's units match a concept, from a dissection (see `concept_support`)."""

    concept: str
    layer: str
    best_iou: float  # the concept's best IoU over the layer's units (NaN counts as 0)
    best_unit: int
    min_iou: float  # the dissection's interpretable line
    coverage: float | None  # the concept's share of the generated pixels; None when not recorded
    interpretable: list[str]  # concepts with interpretable units labelled with them in the layer

    @property
    def below_line(self) -> bool:
        """No unit reaches the interpretable line for the concept."""
        return self.best_iou < self.min_iou

    @property
    def weak(self) -> bool:
        """Below the line and rare in the generated images (or of unknown share): the model may not draw it.

        Concepts the model does draw can stay below the line (a unit's mask is its top 1% of
        activations, so a concept covering much more of the image cannot reach a high IoU), and
        their units are still causal: those are used, with a notice."""
        return self.below_line and (self.coverage is None or self.coverage < RARE_CONCEPT)

    def error(self) -> WeakConceptError:
        """The WeakConceptError that refuses this concept's top units."""
        return WeakConceptError(self.concept, self.layer, self.best_iou, self.best_unit, self.min_iou,
                                self.coverage, self.interpretable)

    def note(self) -> str:
        """A one-line notice that the concept is below the interpretable line."""
        share = "" if self.coverage is None else f", {100 * self.coverage:.2f}% of the generated pixels"
        return (f"no unit of {self.layer} reaches the interpretable line for {self.concept} (best IoU "
                f"{self.best_iou:.4f} < {self.min_iou:g}{share})")


def concept_support(result: DissectionResult, layer: str, concept: str) -> ConceptSupport:
    """A concept's best IoU at a layer, the interpretable line, and its share of the generated pixels."""
    stats = dissection_layer(result, layer)
    column = torch.nan_to_num(stats.iou[:, stats.concept_index(concept)].float(), nan=0.0)
    best = int(column.argmax()) if column.numel() else 0
    best_iou = float(column[best]) if column.numel() else 0.0
    coverage = None
    shares = list(getattr(result, "concept_coverage", None) or [])
    if concept in result.concepts and len(shares) == len(result.concepts):
        value = float(shares[list(result.concepts).index(concept)])
        coverage = value if math.isfinite(value) else None
    strong = [c for c in stats.concepts if stats.units_for(c)]
    return ConceptSupport(concept, layer, best_iou, best, float(stats.min_iou), coverage, strong)


def check_concept_drawn(result: DissectionResult, layer: str, concept: str) -> ConceptSupport:
    """The concept's support at the layer; a WeakConceptError when the model may not draw it."""
    support = concept_support(result, layer, concept)
    if support.weak:
        raise support.error()
    return support


# ---------------------------------------------------------------------------------------------
# Choosing the units


@dataclass
class UnitChoice:
    """Which units to edit: the given `units`, or the `top` units of `concept` ranked by `rank`.

    Attributes:
        units: unit indices ("4,17,33", "0-7" or a list), or None to take the concept's top units.
        concept: the concept whose top units are taken (and the target of the measurement).
        top: how many units to take from the ranking.
        rank: "iou" (dissection), "ace" (the causal ranking that `rank_units` stores in a report) or
            "auto" (ace where the report holds the concept's causal ranking, else iou).
        allow_weak: take the top units of a concept that no unit matches instead of raising
            WeakConceptError.
    """

    units: str | Sequence[int] | None = None
    concept: str | None = None
    top: int = 10
    rank: str = "auto"
    allow_weak: bool = False

    def check(self, dissection: Any = None, model: Any = None) -> list[int] | None:
        """The parsed `units` (or None: the top units of `concept`), checked before any work; unit
        ranges are checked once the layer is known. rank="ace" needs a report: `dissection`, or one
        shipped beside `model` (a GAN or a spec)."""
        chosen = parse_units(self.units) if self.units is not None else None
        if chosen is None and self.concept is None:
            raise GantoolsError("say which units: give units (e.g. [4, 17, 33] or \"4,17,33\") or a concept to take "
                                "the top units of")
        if self.rank not in RANKINGS:
            raise GantoolsError(f"unknown ranking {self.rank!r}: use auto, iou or ace")
        if chosen is None:
            if self.top < 1:
                raise GantoolsError(f"top must be at least 1, got {self.top}")
            if self.rank == "ace" and dissection is None and not shipped_dissection_path(model):
                raise GantoolsError(f"rank='ace' reads the causal ranking of {self.concept!r} from a dissection "
                                    "report: give dissection (a report where rank_units stored it), or rank='iou'")
        return chosen


@dataclass
class UnitPlan:
    """The units chosen, their layer's dissection statistics (when needed) and where they came from."""

    units: list[int]
    stats: LayerDissection | None
    source: str


def plan_units(setup: LayerSetup, choice: UnitChoice, *, need_stats: bool = False,
               dissect_n: int = DEFAULT_DISSECT_N, seed: int = 0, batch_size: int = 50,
               progress: ProgressCallback | None = None) -> UnitPlan:
    """Choose the units (given, or the top ones for a concept) and find their statistics when needed.

    With no dissection in `setup`, one is computed on the fly (dissect_n samples, seed + 1: other
    samples than the ones measured with `seed`). Units chosen by a concept no unit matches (see
    `check_concept_drawn`) are refused unless `choice.allow_weak`. Everything but the dissection
    itself is checked before it is computed.
    """
    layer = setup.layer
    chosen = choice.check(setup.dissection)
    if chosen is not None:
        chosen = check_units(chosen, layer_units(setup.generator, layer), layer)
    if chosen is not None and not need_stats and setup.dissection is None:
        return UnitPlan(chosen, None, "given")
    if setup.dissection is not None:
        result, source = setup.dissection, setup.dissection_from
    else:
        result, source = _dissect_on_the_fly(setup, dissect_n, seed, batch_size, progress,
                                             "choose units" if chosen is None else "get unit levels")
    stats = dissection_layer(result, layer)
    if chosen is not None and not need_stats:
        return UnitPlan(chosen, None, "given")  # a report given anyway was checked against the model
    if chosen is None:
        chosen, source = _top_units(result, stats, layer, choice, source, progress)
    return UnitPlan(chosen, stats, source)


def _dissect_on_the_fly(setup: LayerSetup, dissect_n: int, seed: int, batch_size: int,
                        progress: ProgressCallback | None, why: str) -> tuple[DissectionResult, str]:
    # Imported here, not at the top: the dissection engine is only needed without a report, and
    # tests replace gantools.dissection.dissect to prove that checks come before it.
    from .dissection import dissect

    notice(progress, f"no dissection report given: dissecting {setup.layer} on {dissect_n} samples "
                     f"(seed {seed + 1}) to {why}")
    # seed + 1: choose the units on other samples than the ones the effect is measured on.
    # top_k=0: the report's image strips are not needed here.
    result = dissect(setup.gan, layers=(setup.layer,), segmenter=setup.segmenter, n=dissect_n, seed=seed + 1,
                     batch_size=batch_size, device=setup.device, progress=progress, top_k=0)
    return result, f"dissection on the fly (n={dissect_n}, seed={seed + 1})"


def _top_units(result: DissectionResult, stats: LayerDissection, layer: str, choice: UnitChoice, source: str,
               progress: ProgressCallback | None) -> tuple[list[int], str]:
    """The concept's top units by the chosen ranking, after checking that the model draws it."""
    concept = choice.concept
    assert concept is not None
    check_concept(concept, result.concepts, "the dissection report")
    support = concept_support(result, layer, concept)
    if support.weak and not choice.allow_weak:
        raise support.error()
    if support.below_line:
        notice(progress, "note: " + support.note() + (": the model may not draw it; using its top units "
                         "anyway, as allowed" if support.weak else ": using its top units"))
        source += f", below the interpretable line (best IoU {support.best_iou:.4f})"
    rank = choice.rank if choice.rank != "auto" else ("ace" if concept in stats.ace else "iou")
    ranked = [int(u) for u in stats.ranked_units(concept, rank)]
    if len(ranked) < choice.top:
        notice(progress, f"only {len(ranked)} units of {layer} are ranked by {rank} for {concept}: using "
                         f"those (rank more with rank_units)")
    chosen = ranked[:choice.top]
    return chosen, source + f", top {len(chosen)} by {rank}"
