"""GAN dissection: which units of a generator layer match which concepts.

After Bau et al., "GAN Dissection" (ICLR 2019) and "Understanding the role of individual units in a
deep neural network" (PNAS 2020). For every unit u of a layer and every concept c of a segmenter:

    IoU(u, c) = sum over samples |A_u and S_c| / sum over samples |A_u or S_c|

a dataset-level ratio (not a mean of per-image IoUs), where S_c is where the segmenter sees c and
A_u is where the unit's feature map, upsampled bilinearly to the segmentation's resolution, exceeds
the unit's threshold t_u. A unit's label is its best-IoU concept (under "iqr", the concept its
threshold was chosen for); it is interpretable when its IoU with that label reaches `min_iou`.

Thresholds:
- "quantile" (default): t_u is the level exceeded by the top `quantile` (1%) of the unit's upsampled
  activations over all samples and pixels.
- "iqr": t_u and the unit's concept c_u maximise the information quality ratio IQR = I(A; S) / H(A, S)
  between the unit's mask and a concept, chosen on a separate set of samples (seed + IQR_SEED_OFFSET),
  with GAN Dissection's rules: only levels above 0, concepts with at least MIN_CONCEPT_SHARE of the
  pixels, and pairs where the mask raises the concept's probability (P(S | A) > P(S)). Mutual
  information is as high for a mask of where a concept is absent as for one of where it is present;
  without that rule, "not sky" masks won and were then labelled by whatever filled the rest of the
  image. The unit is labelled c_u (not its best-IoU concept), and IoU is counted exactly on the main
  samples. A unit with no such pair (a dead unit) is unlabelled, with an empty mask.

How it streams (memory does not grow with N): one pass over freshly generated batches. For each
unit, a fixed-size histogram of its upsampled activations *split by concept* (units x bins x
concepts counts) is accumulated, but only above a lower bound lo_u chosen on the first batch (the
level exceeded by TAIL_MARGIN = 4 times `quantile` of that batch's values). At the end the quantile
threshold is read off the histogram, and the intersection counts |A_u and S_c| at that threshold
are its tail sums (linear interpolation inside the one bin that holds the threshold): one pass
gives both thresholds and IoUs, with no second generation of the samples. The histogram's range
starts at the first batch's maximum and doubles (merging bin pairs) whenever a later batch exceeds
it. If the first batch was unrepresentative and fewer than `quantile` of all values lie above lo_u,
that layer is redone once with the bound at each unit's minimum (correct, just slower). Once
FLOOR_AFTER samples are in, values are binned only from a floor (the level exceeded by 1.5 times
`quantile` of them, snapped to a bin edge), which halves the work of the remaining batches; counts
above the floor stay complete, and a threshold that lands below it sends the layer to the same redo. The IQR
selection pass histograms each unit's whole range, which gives the IQR of every candidate threshold
at once; the main pass then counts intersections exactly at the chosen thresholds. Both count densely
(`Histogram.add_dense`, `LayerState._count_above`): IQR levels are low (on scenes64's layer 3, 97% of
the maps reach them and 40% of the pixels exceed them), so there are few segments to skip.

Upsampling without upsampling everything: the maps are interpolated along x by a matrix product;
along y, each output row lies between two source rows, and within such a segment of rows the
values of a column are linear in the interpolation weight, so their maximum is known exactly from
the two rows. Only segments that can reach lo_u (about a tenth of them) are interpolated and binned.
The weights are F.interpolate's own (bilinear, align_corners=False), so the values are the same.

Also accumulated per unit: the mean and 0.99 quantile of the raw feature map (the levels that
interventions insert), and a running top-k of the samples with the highest maximum activation,
whose images and feature maps are kept (k per unit, independent of N) for the report's strips:
keeping them costs less than generating those samples again at the end.

On the CPU the bookkeeping of batch i runs in a worker thread while batch i + 1 is generated and
segmented (results are identical: batches are accumulated in order).

Under torchrun (`gantools.distributed`) each process runs its own contiguous block of the batches
a single process would run (the samples are the same z = Generator.sample_z(n, seed), drawn whole).
The first batch of every pass is measured once, by rank 0, and its bounds are shared, so that every
process's histograms start alike; at the end of the pass the states are summed (`LayerState.combine`:
counts added, bins merged to the widest, extremes reduced, top k gathered) before any threshold or
IoU is read. The result equals the one-process result up to the order of float64 sums.

Where it lives: `stats` (histograms, IQR), `upsample` (the segment-wise upsampling), `accumulate`
(one layer's running state and what it makes of it), this module (the passes over samples),
`result` and `report` (what comes out, and the files written from it).
"""

from __future__ import annotations

import functools
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import nn

from .. import distributed
from ..defaults import DISSECT
from ..hooks import TraceDict, layer_name
from ..models import GAN, fingerprint, load_model
from ..segmenters import ColorSegmenter, check_labels, describe_segmenter, load_segmenter
from ..utils import GantoolsError, ProgressCallback, notice, report, resolve_device, to_uint8
from . import threads
from .accumulate import FirstBatch, LayerState, finish_layer, iqr_choice
from .examples import sample_latents
from .report import DissectionResult
from .result import ALIGN_CORNERS, IQR_LABEL_RULE, LayerDissection, quantile_label_rule
from .stats import MIN_CONCEPT_SHARE

if TYPE_CHECKING:
    from ..types import DeviceSpec, ModelSpec, SegmenterSpec

IQR_SEED_OFFSET = 1_000_003  # the IQR thresholds are chosen on samples of seed + this offset
DEFAULT_LAYER = 3


@dataclass(frozen=True)
class _Options:
    """The settings of one dissection that the passes use (see `dissect` for their meaning)."""

    n: int
    seed: int
    quantile: float
    threshold: str
    min_iou: float
    batch_size: int
    top_k: int

    def check(self) -> None:
        """GantoolsError naming the first parameter out of range."""
        if self.threshold not in ("quantile", "iqr"):
            raise GantoolsError(f"threshold must be quantile or iqr, got {self.threshold!r}")
        if self.n < 1:
            raise GantoolsError(f"n must be at least 1, got {self.n}")
        if not 0 < self.quantile < 1:
            raise GantoolsError(f"quantile must be between 0 and 1 (the top fraction of activations), "
                                f"got {self.quantile}")
        if not 0 <= self.min_iou <= 1:
            raise GantoolsError(f"min_iou must be between 0 and 1, got {self.min_iou}")
        if self.batch_size < 1:
            raise GantoolsError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.top_k < 0:
            raise GantoolsError(f"top_k must be at least 0, got {self.top_k}")


@dataclass(frozen=True)
class _Sampler:
    """What every pass over generated samples shares: the model, the segmenter, where and how fast."""

    generator: nn.Module
    segmenter: Any
    concepts: list[str]
    device: torch.device
    batch_size: int
    progress: ProgressCallback | None


def dissect(model: ModelSpec | nn.Module, layers: int | str | Iterable[int | str] | None = None,
            segmenter: SegmenterSpec | None = None, n: int = DISSECT.n, seed: int = DISSECT.seed,
            quantile: float = DISSECT.quantile, threshold: str = DISSECT.threshold, min_iou: float = DISSECT.min_iou,
            batch_size: int = DISSECT.batch_size, device: DeviceSpec = None,
            progress: ProgressCallback | None = None, top_k: int = DISSECT.top_k) -> DissectionResult:
    """Dissect generator layers: per unit a threshold, IoU with every concept, and a label.

    Each unit's map is upsampled bilinearly to the segmentation's resolution with
    align_corners=False: a cell of a generator feature map stands for an f x f block of pixels, and
    align_corners=False puts each cell's centre at its block's centre (align_corners=True would pin
    the outer cells to the image corners and shift regions by up to half a cell). One streaming pass
    (two with threshold="iqr"); memory does not depend on n.

    Args:
        model: a GAN, a generator module, or a spec for `load_model` (file, run dir, pretrained name).
        layers: layer numbers or names (3, "layer3", "layer3.0"); several are dissected in one pass.
            None: `default_layer(model)`.
        segmenter: None (the model's own segmenter if it has one, else the colour segmenter), "color",
            a segmenter file, or any object with `concepts` and `__call__` (the Segmenter protocol).
        n: number of generated samples (z = Generator.sample_z(n, seed)).
        seed: seed of the samples.
        quantile: with threshold="quantile", each unit's threshold is the level exceeded by this
            fraction of its upsampled activations over all samples and pixels.
        threshold: "quantile" (each unit is labelled by its best-IoU concept), or "iqr": each unit's level
            and concept maximise the information quality ratio over positively associated pairs (levels
            above 0, concepts with at least MIN_CONCEPT_SHARE of the pixels), chosen on n other samples
            of seed + IQR_SEED_OFFSET; the unit is labelled with that concept.
        min_iou: a unit is interpretable when its IoU with its label reaches this.
        batch_size: samples per batch.
        device: where to run; None: where a loaded model's weights are ('auto', CUDA when present, for
            a model given by path or name). An explicit device moves a loaded model's generator there.
        progress: progress callback.
        top_k: top-activating samples kept per unit for the report's image strips.
    Returns:
        A DissectionResult (save it with `.save(out_dir)`).
    """
    began = time.time()
    options = _Options(n, seed, quantile, threshold, min_iou, batch_size, top_k)
    options.check()
    dev = distributed.local_device(resolve_device(device, model))
    distributed.start(dev)
    generator, gan, model_path = _resolve_model(model, dev)
    seg = load_segmenter(segmenter, gan=gan, device=dev)
    sampler = _Sampler(generator, seg, [str(c) for c in seg.concepts], dev, batch_size, progress)
    names = _layer_names(generator, layers)
    settings = _settings_record(options, sampler, names, model, model_path)
    was_training = generator.training
    generator.eval()
    try:
        chosen = _choose_iqr_levels(sampler, options, names) if threshold == "iqr" else {}
        layers_out, totals, image_shape = _measure(sampler, options, names, chosen)
    finally:
        generator.train(was_training)
    coverage = (totals.double() / max(1.0, float(totals.sum()))).tolist()
    settings["image_shape"] = list(image_shape)
    settings["seconds"] = round(time.time() - began, 3)
    return DissectionResult(settings=settings, concepts=sampler.concepts, layers=layers_out,
                            concept_coverage=coverage)


def default_layer(model: ModelSpec | nn.Module) -> int:
    """The layer `dissect` takes when given none: layer 3, or the last hidden layer of a generator
    with fewer (a 16 px model has two). A model given by path or name is loaded (on the CPU) to
    read its configuration; a module without a gantools config gets layer 3."""
    if isinstance(model, (str, os.PathLike)):
        model = load_model(model, "cpu")
    config = getattr(getattr(model, "generator", model), "config", None)
    hidden = getattr(config, "num_layers", None)
    return DEFAULT_LAYER if hidden is None else min(DEFAULT_LAYER, int(hidden))


def segmenter_source(segmenter: Any) -> str | None:
    """What reloads this segmenter: "color", its file (absolute), or None for a Python object.
    Stored in reports, so interventions on a report use the segmenter it was made with."""
    if isinstance(segmenter, ColorSegmenter):
        return "color"
    path = getattr(segmenter, "path", None)
    return str(Path(path).resolve()) if path is not None else None


# ---------------------------------------------------------------------------------------------
# The steps of `dissect`


def _resolve_model(model: Any, device: torch.device) -> tuple[nn.Module, GAN | None, str | None]:
    """(generator on `device`, the GAN if there is one, its file if it has one)."""
    if isinstance(model, (str, os.PathLike)):
        gan = load_model(model, device)
        return gan.generator, gan, str(gan.path)
    if isinstance(model, GAN):
        model.generator.to(device)
        return model.generator, model, str(model.path) if model.path is not None else None
    if isinstance(model, nn.Module):
        return model.to(device), None, None
    raise GantoolsError(f"model must be a GAN, a generator module, or a model path or name; "
                        f"got {type(model).__name__}")


def _layer_names(generator: nn.Module, layers: int | str | Iterable[int | str] | None) -> list[str]:
    """The canonical names of the layers asked for, once each, in the order given."""
    if layers is None:
        layers = [default_layer(generator)]
    elif isinstance(layers, (int, str)):
        layers = [layers]
    names = list(dict.fromkeys(layer_name(generator, layer) for layer in layers))
    if not names:
        raise GantoolsError("layers must name at least one layer to dissect")
    return names


def _settings_record(options: _Options, sampler: _Sampler, names: list[str], model: Any,
                     model_path: str | None) -> dict[str, Any]:
    """The settings a report keeps (`DissectionResult.settings`), less the image shape and time."""
    settings: dict[str, Any] = {
        "model": model_path if model_path is not None else (str(model) if isinstance(model, str) else None),
        "model_fingerprint": fingerprint(sampler.generator), "segmenter": describe_segmenter(sampler.segmenter),
        "segmenter_source": segmenter_source(sampler.segmenter), "layers": names, "n": options.n,
        "seed": options.seed, "threshold": options.threshold,
        "quantile": options.quantile if options.threshold == "quantile" else None,
        "min_iou": options.min_iou, "batch_size": options.batch_size, "top_k": options.top_k,
        "align_corners": ALIGN_CORNERS, "upsampling": "bilinear",
    }
    if options.threshold == "iqr":
        settings.update(iqr_seed=options.seed + IQR_SEED_OFFSET, iqr_n=options.n,
                        iqr_min_concept_share=MIN_CONCEPT_SHARE)
    return settings


def _choose_iqr_levels(sampler: _Sampler, options: _Options,
                       names: list[str]) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Per layer, (threshold, concept) per unit maximising the IQR, on the samples of seed + IQR_SEED_OFFSET."""
    iqr_seed = options.seed + IQR_SEED_OFFSET
    states = [LayerState(nm, "iqr", options.quantile, len(sampler.concepts), 0) for nm in names]
    z = sample_latents(sampler.generator, options.n, iqr_seed)
    totals, _, _ = _pass(sampler, states, z, f"dissect: IQR thresholds (seed {iqr_seed})")
    return {s.name: iqr_choice(s, totals) for s in states}


def _measure(sampler: _Sampler, options: _Options, names: list[str],
             chosen: dict[str, tuple[torch.Tensor, torch.Tensor]]
             ) -> tuple[dict[str, LayerDissection], torch.Tensor, tuple[int, ...]]:
    """The main pass: every layer's dissection (thresholds from `chosen` where given, else quantile
    levels), the pixel count per concept and the image shape. A layer whose histograms started too
    high is measured again in a second pass."""
    k = len(sampler.concepts)
    if chosen:
        states = [LayerState(nm, "fixed", options.quantile, k, options.top_k, thresholds=chosen[nm][0])
                  for nm in names]
    else:
        states = [LayerState(nm, "quantile", options.quantile, k, options.top_k) for nm in names]
    z = sample_latents(sampler.generator, options.n, options.seed)
    totals, image_shape, firsts = _pass(sampler, states, z, "dissect")
    done: dict[str, LayerDissection] = {}
    redo: list[LayerState] = []
    for s in states:
        layer = _finish(sampler, options, s, totals, chosen)
        if isinstance(layer, LayerState):
            notice(sampler.progress, f"{s.name}: the first batch set some histograms too high; dissecting "
                                     f"{s.name} again with them starting at each unit's minimum")
            redo.append(layer)
        else:
            done[s.name] = layer
    if redo:
        totals_again, _, _ = _pass(sampler, redo, z, "dissect (again)", firsts)
        for s in redo:
            layer = _finish(sampler, options, s, totals_again, chosen)
            assert not isinstance(layer, LayerState)  # histograms from the minimum hold every value
            done[s.name] = layer
    return {nm: done[nm] for nm in names}, totals, image_shape


def _finish(sampler: _Sampler, options: _Options, state: LayerState, totals: torch.Tensor,
            chosen: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> LayerDissection | LayerState:
    """`finish_layer`, with the layer's label rule (and IQR labels) filled in."""
    with threads.bookkeeping_threads(sampler.device):
        done = finish_layer(state, totals, sampler.concepts, options.min_iou)
    if isinstance(done, LayerDissection) and state.name in chosen:
        done.label_rule, done.label_concept = IQR_LABEL_RULE, chosen[state.name][1]
    elif isinstance(done, LayerDissection):
        done.label_rule = quantile_label_rule(options.quantile)
    return done


# ---------------------------------------------------------------------------------------------
# A pass over generated samples


def _pass(sampler: _Sampler, states: list[LayerState], z: torch.Tensor, task: str,
          firsts: dict[str, FirstBatch] | None = None
          ) -> tuple[torch.Tensor, tuple[int, ...], dict[str, FirstBatch] | None]:
    """`run_pass` over all of z alone. Under torchrun: over this process's batches, with every state
    prepared from the first batch (`firsts`, measured by rank 0 when not given) and summed over the
    processes after. Returns the pixel count per concept, the image shape and the first-batch bounds."""
    if not distributed.active():
        totals, image_shape = run_pass(sampler, states, z, task)
        return totals, image_shape, None
    if firsts is None:
        firsts = _first_batches(sampler, states, z)
    for state in states:
        state.prepare(firsts[state.name])
    part = distributed.world().shard_batches(z.shape[0], sampler.batch_size)
    totals, _ = run_pass(sampler, states, z[part.start:part.stop], task, offset=part.start)
    distributed.all_reduce_sum(totals)
    for state in states:
        state.combine()
    return totals, firsts[states[0].name].image_shape, firsts


def _first_batches(sampler: _Sampler, states: list[LayerState], z: torch.Tensor) -> dict[str, FirstBatch]:
    """Every layer's `FirstBatch` of the pass's first batch, measured by rank 0 and shared with all."""
    firsts = None
    if distributed.world().is_main:
        with torch.inference_mode(), TraceDict(sampler.generator, [s.name for s in states]) as td:
            images = sampler.generator(z[:sampler.batch_size].to(sampler.device))
            labels = check_labels(sampler.segmenter(images), images, len(sampler.concepts)).to(sampler.device)
            feats = _feature_maps(td, states)
            with threads.bookkeeping_threads(sampler.device):  # as the accumulators measure it alone
                u8 = functools.cache(lambda: to_uint8(images))
                firsts = {s.name: s.first_batch(f, labels, u8).to(torch.device("cpu")) for s, f in zip(states, feats)}
    firsts = distributed.broadcast_object(firsts)
    return {name: first.to(sampler.device) for name, first in firsts.items()}


def run_pass(sampler: _Sampler, states: list[LayerState], z: torch.Tensor,
             task: str, offset: int = 0) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Generate, segment and feed every layer state; returns the pixel count per concept and the image shape.

    On the CPU, when torch leaves a core free (fewer intra-op threads than cores), the accumulators
    of batch i run in one worker thread on it while the main thread generates and segments batch
    i + 1 (torch releases the GIL in its kernels). When G already uses every core, they run inline
    with torch's threads instead: a worker would only steal a core from G's convolutions (measured
    on 2 cores: 1.08 of the G + segmenter time inline against 1.35 with the worker). Batches are
    accumulated strictly in order, with at most one in flight, so results and memory are the same
    either way. z[i] is sample offset + i (a process's block under torchrun), as the top k record it.
    """
    n, k = z.shape[0], len(sampler.concepts)
    totals = torch.zeros(k, dtype=torch.long, device=sampler.device)
    image_shape: tuple[int, ...] = ()
    names = list(dict.fromkeys(s.name for s in states))
    worker = _bookkeeping_worker(sampler.device)
    pending = None
    report(sampler.progress, task, 0, n)
    try:
        with torch.inference_mode(), TraceDict(sampler.generator, names) as td:
            for start in range(0, n, sampler.batch_size):
                images = sampler.generator(z[start:start + sampler.batch_size].to(sampler.device))
                labels = check_labels(sampler.segmenter(images), images, k).to(sampler.device)
                image_shape = tuple(images.shape[1:])
                totals += torch.bincount(labels.reshape(-1), minlength=k)
                job = functools.partial(_accumulate, states, offset + start, _feature_maps(td, states), labels,
                                        images)
                if worker is None:
                    job()
                else:
                    if pending is not None:
                        pending.result()  # in order, one batch in flight; re-raises the worker's errors
                    pending = worker.submit(job)
                report(sampler.progress, task, min(n, start + sampler.batch_size), n)
            if pending is not None:
                pending.result()
    finally:
        if worker is not None:
            worker.shutdown(wait=True)
    return totals, image_shape


def _bookkeeping_worker(device: torch.device) -> ThreadPoolExecutor | None:
    """A one-thread pool for the accumulators, on the CPU when torch leaves a core free (see `run_pass`);
    under torchrun the processes on this machine share its cores."""
    spare_core = torch.get_num_threads() * distributed.local_processes() < (os.cpu_count() or 1)
    count = threads.BOOKKEEPING_THREADS
    if device.type != "cpu" or count is None or not spare_core:
        return None
    # torch's intra-op thread count is per thread: the worker's setting leaves G's alone.
    return ThreadPoolExecutor(1, thread_name_prefix="gantools-dissect",
                              initializer=lambda: torch.set_num_threads(count))


def _feature_maps(td: TraceDict, states: list[LayerState]) -> list[torch.Tensor]:
    """Each state's layer output of the batch just generated, as float N x C x H x W."""
    feats = []
    for state in states:
        feat = td[state.name].output
        if not isinstance(feat, torch.Tensor) or feat.ndim != 4:
            raise GantoolsError(f"{state.name} does not output a feature map N x C x H x W "
                                f"(got {type(feat).__name__}); dissect a convolutional layer")
        feats.append(feat.float())
    return feats


def _accumulate(states: list[LayerState], start: int, feats: list[torch.Tensor], labels: torch.Tensor,
                images: torch.Tensor) -> None:
    """Feed one batch to every layer state (in the worker thread on the CPU)."""
    cache: dict[str, torch.Tensor] = {}

    def images_u8() -> torch.Tensor:
        if "u8" not in cache:
            cache["u8"] = to_uint8(images)
        return cache["u8"]

    with torch.inference_mode():  # thread-local: the worker needs its own
        for state, feat in zip(states, feats):
            state.update(start, feat, labels, images_u8)
