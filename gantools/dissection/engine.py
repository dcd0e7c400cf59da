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
at once; the main pass then counts intersections exactly at the chosen thresholds.

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
"""

from __future__ import annotations

import contextlib
import csv
import functools
import io
import json
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ..hooks import TraceDict, layer_name
from ..utils import GantoolsError, ProgressCallback, get_device, notice, report, to_uint8, write_json, write_text

if TYPE_CHECKING:
    from ..models import GAN

REPORT_FORMAT = "gantools-dissection"
REPORT_VERSION = 1
REPORT_FILE = "report.json"
UNITS_FILE = "units.csv"
HTML_FILE = "report.html"

# Bilinear upsampling with align_corners=False. A cell of a generator feature map stands for an
# f x f block of output pixels (each stride-2 transposed conv doubles the resolution), so cell i's
# centre is pixel (i + 0.5) * f - 0.5: align_corners=False maps pixel centres to pixel centres and
# puts every cell on its own block. align_corners=True would pin the first and last cells to the
# image corners and stretch the map by (S - 1) / (h - 1) instead of S / h: a 4x4 layer's cells
# would land 21 px apart in a 64 px image instead of 16, shifting units' regions by up to half a
# cell. It is also F.interpolate's default for bilinear mode.
ALIGN_CORNERS = False

IQR_SEED_OFFSET = 1_000_003  # the IQR thresholds are chosen on samples of seed + this offset
# IQR mode never chooses a concept under this share of the selection samples' pixels: its counts are
# too small to trust (GAN Dissection's rule).
MIN_CONCEPT_SHARE = 1e-3
IQR_LABEL_RULE = "IQR-optimal level, positively associated pairs only"
NO_LABEL_RULE = "unlabelled: no positively associated concept at a level above 0"
TAIL_MARGIN = 4.0  # histograms start at the level exceeded by TAIL_MARGIN * quantile of the first batch
# Once FLOOR_AFTER samples are counted, values are only binned from the level exceeded by FLOOR_MARGIN *
# quantile of them (a far better estimate than the first batch's), which halves the candidates.
FLOOR_AFTER = 256
FLOOR_MARGIN = 1.5
MAX_BINS = 512
HIST_CELLS = 1 << 22  # units x (bins + 1) x concepts counts per layer, at most (32 MiB of int64)
CHUNK = 1 << 20  # elements per temporary tensor when upsampling: bounds memory per batch (4 MiB floats)
DEFAULT_BATCH_SIZE = 64
BOOKKEEPING_THREADS: int | None = 1  # see _bookkeeping_threads
DEFAULT_TOP_K = 6


def quantile_label_rule(quantile: float) -> str:
    """How units are labelled under threshold="quantile", as the reports say it."""
    return f"top-{100 * quantile:g}% quantile level, best IoU"


# ---------------------------------------------------------------------------------------------
# Results


@dataclass
class Examples:
    """Top-activating samples kept for a layer's report strips (not saved in report.json).

    Args:
        images: units x k x C x S x S uint8 images.
        maps: units x k x h x w raw feature maps of the unit in those images.
    """

    images: torch.Tensor
    maps: torch.Tensor


@dataclass(eq=False)
class LayerDissection:
    """The dissection of one layer.

    Args:
        name: canonical layer name ("layer3").
        concepts: concept names (column order of `iou`).
        threshold: per-unit activation threshold t_u (units,).
        iou: IoU of each unit with each concept (units x concepts).
        mean: mean of each unit's raw feature map over samples and positions (units,).
        q99: 0.99 quantile of each unit's raw feature map values (units,): insertion's default level.
        min_iou: a unit is interpretable when its IoU with its label reaches this.
        shape: the layer's output shape per sample (channels, height, width).
        top_samples: units x k indices (into `Generator.sample_z(n, seed)`) of the samples with the
            highest maximum activation, best first (-1 where there were fewer than k samples).
        top_values: the maximum raw activation of the unit in those samples.
        ace: per concept, the causal effect of ablating each unit alone (filled by `rank`).
        examples: the top samples' images and maps for the HTML report (in memory only).
        label_rule: how the labels were chosen (`quantile_label_rule`, IQR_LABEL_RULE).
        label_concept: per unit, the concept its threshold was chosen for (threshold "iqr"; -1: none),
            which is then its label; None: each unit is labelled by its best-IoU concept.
    """

    name: str
    concepts: list[str]
    threshold: torch.Tensor
    iou: torch.Tensor
    mean: torch.Tensor
    q99: torch.Tensor
    min_iou: float
    shape: tuple[int, int, int]
    top_samples: torch.Tensor
    top_values: torch.Tensor
    ace: dict[str, list[float]] = field(default_factory=dict)
    examples: Examples | None = field(default=None, repr=False, compare=False)
    label_rule: str = "best IoU"
    label_concept: torch.Tensor | None = None

    @property
    def units(self) -> int:
        """Number of units (channels) of the layer."""
        return int(self.threshold.shape[0])

    @property
    def label_index(self) -> torch.Tensor:
        """Each unit's label as a concept index (units,): its best-IoU concept (the first one on
        ties), or the concept its IQR threshold was chosen for; -1 for an unlabelled unit."""
        if self.label_concept is not None:
            return self.label_concept.long()
        if not self.concepts:
            return torch.full((self.units,), -1, dtype=torch.long)
        return self.iou.argmax(dim=1)

    @property
    def best_iou(self) -> torch.Tensor:
        """Each unit's IoU with its label (units,): its best IoU, or with an IQR label that label's (0 if none)."""
        if self.label_concept is None:
            return self.iou.max(dim=1).values if self.iou.numel() else torch.zeros(self.units)
        k = self.label_concept.long()
        picked = self.iou.gather(1, k.clamp_min(0)[:, None])[:, 0] if self.iou.numel() else torch.zeros(self.units)
        return torch.where(k >= 0, picked, torch.zeros_like(picked))

    @property
    def label(self) -> list[str]:
        """Each unit's label ("" for an unlabelled unit); see `label_index`."""
        return [self.concepts[i] if i >= 0 else "" for i in self.label_index.tolist()]

    @property
    def label_rules(self) -> list[str]:
        """Per unit, how its label was chosen (the layer's rule, or NO_LABEL_RULE)."""
        return [self.label_rule if i >= 0 else NO_LABEL_RULE for i in self.label_index.tolist()]

    @property
    def interpretable(self) -> list[int]:
        """Labelled units whose IoU with their label reaches min_iou, best first."""
        best, labelled = self.best_iou, self.label_index >= 0
        return [u for u in _order(best) if float(best[u]) >= self.min_iou and bool(labelled[u])]

    def concept_index(self, concept: str) -> int:
        """Column of a concept in `iou`; GantoolsError naming the valid concepts otherwise."""
        try:
            return self.concepts.index(concept)
        except ValueError:
            raise GantoolsError(f"unknown concept {concept!r}: this dissection has "
                                f"{', '.join(self.concepts)}") from None

    def top_concepts(self, unit: int, k: int = 3) -> list[tuple[str, float]]:
        """The unit's k best concepts with their IoUs, best first."""
        row = self.iou[unit]
        return [(self.concepts[i], float(row[i])) for i in _order(row)[:k]]

    def other_concepts(self, unit: int, k: int = 2) -> list[tuple[str, float]]:
        """The unit's k best concepts by IoU other than its label, best first."""
        label = self.label[unit]
        return [(c, v) for c, v in self.top_concepts(unit, k + 1) if c != label][:k]

    def ranked_units(self, concept: str, rank: str = "iou") -> list[int]:
        """All units ordered by their IoU with `concept` (rank="iou"), or the units `gantools rank`
        measured ordered by the causal effect of ablating them (rank="ace"); best first, ties by unit number.
        """
        k = self.concept_index(concept)
        if rank == "iou":
            return _order(self.iou[:, k])
        if rank == "ace":
            if concept not in self.ace:
                done = ", ".join(self.ace) or "none"
                raise GantoolsError(f"no causal ranking for {concept!r} in {self.name} (computed for: {done}): "
                                    f"run gantools rank --layer {self.name.removeprefix('layer')} "
                                    f"--concept {concept} first, or rank by iou (--rank iou)")
            values = torch.tensor(self.ace[concept], dtype=torch.float64)
            if values.numel() != self.units:
                raise GantoolsError(f"the causal ranking for {concept!r} has {values.numel()} values for "
                                    f"{self.units} units: recompute it with gantools rank")
            measured = set(torch.nonzero(torch.isfinite(values)).flatten().tolist())
            return [u for u in _order(values) if u in measured]  # unmeasured units are not ranked
        raise GantoolsError(f"unknown ranking {rank!r}: use iou or ace")

    def units_for(self, concept: str) -> list[int]:
        """Interpretable units labelled with `concept`, best IoU first."""
        k = self.concept_index(concept)
        arg = self.label_index
        return [u for u in self.interpretable if int(arg[u]) == k]

    def to_dict(self) -> dict[str, Any]:
        labels, best, rules = self.label, self.best_iou.tolist(), self.label_rules
        interpretable = set(self.interpretable)
        units = []
        for u in range(self.units):
            units.append({
                "unit": u,
                "label": labels[u],
                "label_rule": rules[u],
                "iou": best[u],
                "interpretable": u in interpretable,
                "threshold": float(self.threshold[u]),
                "top3": [[c, v] for c, v in self.top_concepts(u, 3)],
                "mean": float(self.mean[u]),
                "q99": float(self.q99[u]),
                "top_samples": [int(i) for i in self.top_samples[u]],
                "top_values": [float(v) for v in self.top_values[u]],
            })
        per_concept = {}
        for c in self.concepts:
            chosen = self.units_for(c)
            per_concept[c] = {"units": chosen, "iou": [best[u] for u in chosen]}
        return {"name": self.name, "shape": list(self.shape), "min_iou": self.min_iou,
                "label_rule": self.label_rule, "label_by": "iou" if self.label_concept is None else "iqr",
                "units": units, "concepts": per_concept, "iou": self.iou.tolist(), "ace": self.ace}

    @classmethod
    def from_dict(cls, d: dict[str, Any], concepts: list[str]) -> "LayerDissection":
        units = d["units"]

        def col(key: str, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor([_nan(u[key]) for u in units], dtype=dtype)

        iou = torch.tensor([[_nan(v) for v in row] for row in d["iou"]], dtype=torch.float32)
        iou = iou.reshape(len(units), len(concepts))
        k = len(units[0]["top_samples"]) if units else 0
        top_samples = torch.tensor([u["top_samples"] for u in units], dtype=torch.long).reshape(len(units), k)
        top_values = torch.tensor([[_nan(v) for v in u["top_values"]] for u in units],
                                  dtype=torch.float32).reshape(len(units), k)
        label_concept = None
        if d.get("label_by") == "iqr":  # reports before it was stored labelled every unit by best IoU
            label_concept = torch.tensor([concepts.index(u["label"]) if u["label"] else -1 for u in units],
                                         dtype=torch.long)
        return cls(name=d["name"], concepts=list(concepts), threshold=col("threshold"), iou=iou,
                   mean=col("mean"), q99=col("q99"), min_iou=float(d["min_iou"]),
                   shape=tuple(int(s) for s in d["shape"]),  # type: ignore[arg-type]
                   top_samples=top_samples, top_values=top_values,
                   ace={c: [float(_nan(v)) for v in vs] for c, vs in d.get("ace", {}).items()},
                   label_rule=str(d.get("label_rule", "best IoU")), label_concept=label_concept)

    def __eq__(self, other: object) -> bool:
        # Tensors make the generated dataclass __eq__ ambiguous; compare what report.json stores.
        return isinstance(other, LayerDissection) and self.to_dict() == other.to_dict()


@dataclass(eq=False)
class DissectionResult:
    """A dissection: settings, concepts, and one `LayerDissection` per layer (canonical names).

    `save(out_dir)` writes report.json, units.csv and report.html; `load_report` reads report.json
    back into an equal object (without the in-memory example images).
    """

    settings: dict[str, Any]
    concepts: list[str]
    layers: dict[str, LayerDissection]
    concept_coverage: list[float] = field(default_factory=list)  # fraction of pixels per concept

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DissectionResult) and self.to_dict() == other.to_dict()

    def layer(self, layer: int | str) -> LayerDissection:
        """A layer's dissection by number (3), "3", or name ("layer3")."""
        text = str(layer).strip()
        name = f"layer{text}" if text.isdigit() else text
        if name not in self.layers:
            raise GantoolsError(f"this dissection has no layer {text!r}: it has {', '.join(self.layers)}")
        return self.layers[name]

    def summary(self) -> dict[str, dict[str, list[int]]]:
        """Per layer, per concept: the interpretable units labelled with it (best first; concepts with none left out)."""
        out: dict[str, dict[str, list[int]]] = {}
        for name, layer in self.layers.items():
            counts = {c: layer.units_for(c) for c in self.concepts}
            out[name] = {c: us for c, us in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0])) if us}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"format": REPORT_FORMAT, "format_version": REPORT_VERSION, "settings": self.settings,
                "concepts": list(self.concepts), "concept_coverage": list(self.concept_coverage),
                "layers": {name: layer.to_dict() for name, layer in self.layers.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DissectionResult":
        if d.get("format") != REPORT_FORMAT:
            raise GantoolsError("not a gantools dissection report (no 'format': 'gantools-dissection')")
        if int(d.get("format_version", 0)) > REPORT_VERSION:
            raise GantoolsError(f"this dissection report has format version {d['format_version']}; this gantools "
                                f"reads up to {REPORT_VERSION}: upgrade gantools")
        concepts = list(d["concepts"])
        layers = {name: LayerDissection.from_dict(ld, concepts) for name, ld in d["layers"].items()}
        return cls(settings=dict(d["settings"]), concepts=concepts, layers=layers,
                   concept_coverage=[float(_nan(v)) for v in d.get("concept_coverage", [])])

    def units_csv(self) -> str:
        """One row per (layer, unit): label, IoU, threshold, the next two concepts by IoU, mean, q99."""
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(["layer", "unit", "label", "iou", "interpretable", "threshold", "concept2", "iou2",
                    "concept3", "iou3", "mean", "q99"])
        for name, layer in self.layers.items():
            best, labels, interpretable = layer.best_iou.tolist(), layer.label, set(layer.interpretable)
            for u in range(layer.units):
                top = layer.other_concepts(u, 2) + [("", float("nan"))] * 2
                w.writerow([name, u, labels[u], _g(best[u]), int(u in interpretable),
                            _g(float(layer.threshold[u])), top[0][0], _g(top[0][1]), top[1][0], _g(top[1][1]),
                            _g(float(layer.mean[u])), _g(float(layer.q99[u]))])
        return buf.getvalue()

    def save(self, out_dir: str | os.PathLike, html: bool = True, gan: GAN | None = None) -> dict[str, Path]:
        """Write report.json, units.csv and (html=True) the self-contained report.html into out_dir.

        Args:
            out_dir: the directory (created if needed).
            html: also write report.html.
            gan: the model, to regenerate the strips' images when this result has none in memory
                (a loaded report); without it the HTML report has no strips.
        Returns:
            {"json": path, "csv": path, "html": path (when written)}.
        """
        out = Path(out_dir)
        paths = {"json": write_json(out / REPORT_FILE, self.to_dict()),
                 "csv": write_text(out / UNITS_FILE, self.units_csv())}
        if html:
            from .html import write_dissection_html

            if gan is not None and any(layer.examples is None for layer in self.layers.values()):
                render_examples(self, gan)
            paths["html"] = write_dissection_html(self, out / HTML_FILE)
        return paths


def _order(values: torch.Tensor) -> list[int]:
    # Descending, ties by index (a stable sort), NaN last.
    v = values.detach().double().cpu().nan_to_num(nan=-math.inf)
    return torch.sort(-v, stable=True).indices.tolist()


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _g(v: float) -> str:
    return "" if v != v else f"{v:.6g}"


def load_report(path: str | os.PathLike) -> DissectionResult:
    """Read a dissection report (report.json, or the directory holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_FILE
    if not p.is_file():
        raise GantoolsError(f"no dissection report at {path}: give report.json or its directory "
                            f"(written by gantools dissect --out DIR)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return DissectionResult.from_dict(data)
    except GantoolsError as e:
        raise GantoolsError(f"{p}: {e}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise GantoolsError(f"{p} is not a readable dissection report ({type(e).__name__}: {e})") from None


def check_model(result: DissectionResult, gan: GAN | nn.Module) -> None:
    """Raise GantoolsError if the report was made for another model (weights fingerprint differs)."""
    from ..models import fingerprint

    generator = getattr(gan, "generator", gan)
    want = result.settings.get("model_fingerprint")
    have = fingerprint(generator)
    if want != have:
        made_for = result.settings.get("model")
        raise GantoolsError(f"the dissection report was made for another model ({made_for or 'fingerprint ' + str(want)}; "
                            f"this model's fingerprint is {have}): dissect this model first, or pass that --model")


# ---------------------------------------------------------------------------------------------
# Streaming accumulators


class _Histogram:
    """Per-unit histograms of values near and above lo[u], split by concept; the range doubles when exceeded.

    Bins are right-closed: with x = (v - lo) / w, slot 0 holds values with x <= -1 (ignored: below the
    tail), slot 1 holds (lo - w, lo] (where an atom at lo, e.g. a ReLU's zeros, lands) and slot b + 1
    holds (lo + (b - 1) w, lo + b w] for b = 1..bins. The last concept is a dump for pixels outside
    the image (rows padded so that every segment has the same length); it is never read.
    Counts are stored concept-major (concepts + 1) x units x (bins + 2), so that a pixel's index is
    its label times `label_stride` plus a per-unit offset plus its slot: labels are scaled once per
    batch, not once per value.
    """

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, bins: int, concepts: int) -> None:
        self.lo = lo.double()
        span = (hi.double() - self.lo).clamp_min(0)
        self.width = torch.where(span > 0, span / bins, self.lo.abs().clamp_min(1.0) * 1e-6)
        self.bins, self.k1 = bins, concepts + 1
        units = lo.shape[0]
        self.label_stride = units * (bins + 2)
        self._counts = torch.zeros(self.k1, units, bins + 2, dtype=torch.long, device=lo.device)
        self._pending: list[torch.Tensor] = []
        self._lo32 = self.lo.float()
        # slot c + 1 of unit u sits at u * (bins + 2) + c + 1; kept as float to add before one .long()
        self._base = (torch.arange(units, device=lo.device) * (bins + 2) + 1).float()
        self._sync()

    @property
    def counts(self) -> torch.Tensor:
        """units x (bins + 2) x (concepts + 1) view of the counts."""
        self.flush()
        return self._counts.permute(1, 2, 0)

    def _sync(self) -> None:
        self._inv32 = (1 / self.width).float()

    def grow(self, vmax: torch.Tensor) -> None:
        """Widen the bins (merging 2**j neighbours) so that values up to vmax (units,) fit."""
        self.flush()
        top = self.lo + self.bins * self.width
        over = vmax.double() >= top
        if not bool(over.any()):
            return
        ratio = ((vmax.double() - self.lo) / (self.bins * self.width)).clamp_min(1.0)
        factor = torch.where(over, torch.exp2(torch.floor(torch.log2(ratio)) + 1), torch.ones_like(ratio))
        u, b = self.lo.shape[0], self.bins
        # old bin j (1..bins) = (lo + (j-1) w, lo + j w] lies in new bin ceil(j / factor).
        j = torch.arange(1, b + 1, device=factor.device, dtype=torch.float64)
        dest = torch.ceil(j[None] / factor[:, None]).long() + 1
        merged = self._counts.clone()
        merged[:, :, 2:] = 0
        merged.scatter_add_(2, dest[None].expand(self.k1, u, b), self._counts[:, :, 2:])
        self._counts = merged
        self.width = self.width * factor
        self._sync()

    def scale_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as index offsets (label * label_stride), to pass to `add`."""
        return labels * self.label_stride

    def add(self, unit: torch.Tensor, a: torch.Tensor, d: torch.Tensor | None, lam: torch.Tensor | None,
            labels: torch.Tensor) -> None:
        """Count values v = a + d * lam (M x L; a, d: M x 1, lam: 1 x L) or v = a (M x L when d is None)
        of units (M,), with labels scaled by `scale_labels` (M x L). Values below lo - w are ignored."""
        if a.numel() == 0:
            return
        # (index_select: much faster than tensor[index] for these gathers)
        inv = self._inv32.index_select(0, unit)[:, None]
        x = (a - self._lo32.index_select(0, unit)[:, None]).mul_(inv)
        if d is not None:
            x = torch.addcmul(x, d * inv, lam)
        x = x.ceil_().clamp_(-1, self.bins).add_(self._base.index_select(0, unit)[:, None])
        # Counted by `flush`, once per batch: one bincount over the whole counts table costs about
        # as much as the indices of a chunk, so doing it per chunk doubled the cost.
        self._pending.append(x.long().add_(labels).view(-1))

    def flush(self) -> None:
        """Count the values added since the last flush (call before reading or growing the counts)."""
        if self._pending:
            idx = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
            self._pending = []
            self._counts.view(-1).add_(torch.bincount(idx, minlength=self._counts.numel()))

    def tail(self) -> torch.Tensor:
        """tail[:, j] = count of values > lo + j w for j = 0..bins (units x (bins + 1) x concepts)."""
        h = self.counts[:, 1:, :-1].double()  # slots 1..bins+1
        t = h.flip(1).cumsum(1).flip(1)  # t[:, s] = values in slots >= s + 1
        return torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)

    def level(self, count: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, ok): per unit the level exceeded by `count` values, linear inside a bin. Where fewer
        than `count` values exceed lo but enough lie in (lo - w, lo], t = lo (an atom at lo); ok is
        False where not even that many were counted (the level lies below the histogram)."""
        tail = self.tail().sum(-1)  # units x (bins + 1): count > lo + j w
        near = tail[:, 0] + self.counts[:, 1, :-1].sum(-1).double()
        ok = near >= count - 1e-6
        j = (tail >= count).sum(1) - 1  # last edge with at least `count` values above it
        atom = j < 0
        j = j.clamp(0, self.bins - 1)
        ar = torch.arange(tail.shape[0], device=tail.device)
        inside = (tail[ar, j] - tail[ar, j + 1]).clamp_min(1e-12)
        t = self.lo + self.width * (j.double() + ((tail[ar, j] - count) / inside).clamp(0, 1))
        return torch.where(atom, self.lo, t), ok

    def above(self, t: torch.Tensor) -> torch.Tensor:
        """Counts of values > t[u] per unit and concept (units x concepts), linear inside a bin."""
        tail = self.tail()
        rel = ((t.double() - self.lo) / self.width).clamp_min(0)
        j = rel.floor().long().clamp(max=self.bins - 1)
        ar = torch.arange(tail.shape[0], device=tail.device)
        frac = (j.double() + 1 - rel).clamp(0, 1)  # share of bin (e_j, e_j+1] above t
        inside = tail[ar, j] - tail[ar, j + 1]
        return tail[ar, j + 1] + inside * frac[:, None]

    def best_iqr(self, total: float, concept_totals: torch.Tensor,
                 min_share: float = MIN_CONCEPT_SHARE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per unit, the bin edge t and concept maximising IQR(mask > t; concept) over the pairs that
        `_iqr_candidates` allows: (t, concept, iqr); concept -1, iqr 0 and t = lo where none is."""
        tail = self.tail()[:, :-1]  # thresholds lo + j w, j = 0..bins-1
        u = tail.shape[0]
        k = tail.shape[2]
        s_tot = concept_totals.double().to(tail.device)
        best_t, best_k, best_q = (torch.empty(u, dtype=torch.float64, device=tail.device),
                                  torch.empty(u, dtype=torch.long, device=tail.device),
                                  torch.empty(u, dtype=torch.float64, device=tail.device))
        step = max(1, (1 << 21) // max(1, self.bins * k))
        levels = self.lo[:, None] + torch.arange(tail.shape[1], device=tail.device) * self.width[:, None]
        for a in range(0, u, step):
            inter = tail[a:a + step]
            mask = inter.sum(-1, keepdim=True)
            allowed = _iqr_candidates(inter, mask, s_tot, total, levels[a:a + step], min_share)
            iqr = torch.where(allowed, information_quality_ratio(inter, mask, s_tot, total), -1.0)
            q, idx = iqr.reshape(iqr.shape[0], -1).max(dim=1)
            found = q >= 0
            concept = idx % k
            # Where the IQR is flat (no values between two levels), take the middle of the plateau of
            # best levels rather than its lowest edge: it generalises better to other samples.
            curve = iqr.gather(2, concept.view(-1, 1, 1).expand(-1, iqr.shape[1], 1)).squeeze(2)
            plateau = curve >= q[:, None] - 1e-12
            first = plateau.float().argmax(dim=1)
            after = torch.arange(plateau.shape[1], device=plateau.device)[None] >= first[:, None]
            stop = (~plateau & after).float()
            last = torch.where(stop.any(dim=1), stop.argmax(dim=1) - 1, torch.full_like(first, plateau.shape[1] - 1))
            j = torch.where(found, torch.div(first + last, 2, rounding_mode="floor"), 0)
            best_t[a:a + step] = self.lo[a:a + step] + j.double() * self.width[a:a + step]
            best_k[a:a + step] = torch.where(found, concept, -1)
            best_q[a:a + step] = q.clamp_min(0)
        return best_t, best_k, best_q


def _iqr_candidates(inter: torch.Tensor, mask: torch.Tensor, concept: torch.Tensor, total: float,
                    levels: torch.Tensor, min_share: float) -> torch.Tensor:
    """Which (unit, level, concept) pairs IQR mode may choose (GAN Dissection's rules): levels above 0,
    concepts with at least `min_share` of the pixels, and masks that raise the concept's probability,
    P(S | A) > P(S), i.e. |A and S| * total > |A| * |S|. Mutual information cannot tell a mask of where
    a concept is from one of where it is not; this can. The counts are integers, exact in float64.

    Args:
        inter: units x levels x concepts |A and S|; mask: units x levels x 1 |A|; concept: |S| per
        concept; total: pixels; levels: units x levels thresholds.
    """
    positive = inter * total > mask * concept
    return positive & (levels > 0)[:, :, None] & (concept >= min_share * total)


def information_quality_ratio(inter: torch.Tensor, mask: torch.Tensor, concept: torch.Tensor,
                              total: float) -> torch.Tensor:
    """IQR = I(A; S) / H(A, S) of two binary variables from pixel counts (broadcasting).

    Args:
        inter: |A and S|; mask: |A|; concept: |S|; total: number of pixels.
    """
    p11 = inter / total
    p10 = (mask - inter) / total
    p01 = (concept - inter) / total
    p00 = (1 - p11 - p10 - p01).clamp_min(0)
    pa, ps = p11 + p10, p11 + p01

    def plogp(p: torch.Tensor) -> torch.Tensor:
        return torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))

    joint = -(plogp(p11) + plogp(p10) + plogp(p01) + plogp(p00))
    ha = -(plogp(pa) + plogp(1 - pa))
    hs = -(plogp(ps) + plogp(1 - ps))
    mi = (ha + hs - joint).clamp_min(0)
    return torch.where(joint > 1e-12, mi / joint.clamp_min(1e-12), torch.zeros_like(joint))


def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """n_out x n_in weights of 1-D linear interpolation, taken from F.interpolate itself (align_corners=False)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=ALIGN_CORNERS)[0].t().contiguous()


class _Upsampler:
    """Bilinear upsampling (align_corners=False) of a layer's maps to the segmentation's size, done
    separably (x by a matrix product, then y), and extraction of the upsampled values that may reach
    a per-unit level without upsampling everything.

    With an integer vertical factor f, output rows fall into segments of f rows between two
    consecutive source rows (the first and last row repeated at the borders, like F.interpolate's
    clamping): segment p holds rows (p - 1) f + floor(f / 2) + s, s = 0..f-1, valued
    (1 - lam_s) row[p - 1] + lam_s row[p] with lam_s = (floor(f / 2) + s + 0.5) / f - 0.5 for every p.
    In each column these values are linear in lam, so the segment's maximum is at lam_0 or
    lam_{f-1}: an exact test of whether any of its pixels reaches the level. Only candidate
    segments (about a tenth at the levels used) are interpolated. Border segments reach outside the
    image by f/2 rows; those pixels get the dump label (labels are padded), so they are never
    counted. A non-integer vertical factor falls back to dense upsampling. (We also tried skipping
    2x2 source blocks below the level first: the gathers cost more than they saved.)
    """

    def __init__(self, shape: tuple[int, int, int], seg_hw: tuple[int, int], device: torch.device) -> None:
        _, h, w = shape
        hs, ws = seg_hw
        self.h, self.w, self.hs, self.ws = h, w, hs, ws
        self.mx_t = _interp_matrix(w, ws).t().contiguous().float().to(device)  # w x ws
        self.my = _interp_matrix(h, hs).float().to(device)  # hs x h
        self.f = hs // h if hs % h == 0 else 0
        self.lam: torch.Tensor | None = None
        if self.f:
            f = self.f
            lam = [(f // 2 + s + 0.5) / f - 0.5 for s in range(f)]
            self.lam = torch.tensor(lam, device=device)[None]
            self.lam_lo, self.lam_hi = lam[0], lam[-1]
            self.pad_top, self.pad_bottom = (f + 1) // 2, f // 2
            self.row_offsets = (torch.arange(f, device=device, dtype=torch.int32) * ws)[None]

    def dense(self, feat: torch.Tensor) -> Iterable[tuple[int, torch.Tensor]]:
        """(first image, upsampled chunk n x units x hs x ws), in chunks of at most CHUNK values."""
        n, u = feat.shape[:2]
        step = max(1, CHUNK // max(1, u * self.hs * self.ws))
        for a in range(0, n, step):
            yield a, torch.matmul(self.my, torch.matmul(feat[a:a + step], self.mx_t))

    def values(self, feat: torch.Tensor, labels: torch.Tensor, lo: torch.Tensor | None, dump: int,
               peak: torch.Tensor | None = None):
        """Yield (unit (M,), a, d, labels (M x L)) covering every upsampled value >= lo[unit] (and some
        below it): the values are a + d * self.lam (a, d: M x 1) for row segments, or a (M x L) with
        d None when upsampled densely (lo=None: every value). Pixels outside the image carry label `dump`."""
        n, u = feat.shape[:2]
        if lo is None or not self.f:
            lab = labels.reshape(n, 1, -1)
            for a, up in self.dense(feat):
                m = up.shape[0]
                yield (torch.arange(u, device=feat.device).repeat(m), up.reshape(m * u, -1), None,
                       lab[a:a + m].expand(m, u, lab.shape[-1]).reshape(m * u, -1))
            return
        yield from self._segments(feat, labels, lo, dump, peak)

    def _segments(self, feat: torch.Tensor, labels: torch.Tensor, lo: torch.Tensor, dump: int,
                  peak: torch.Tensor | None = None):
        n, u, h, w = feat.shape
        ws, hs, f = self.ws, self.hs, self.f
        lab = F.pad(labels, (0, 0, self.pad_top, self.pad_bottom), value=dump).reshape(-1)
        # Only maps whose maximum reaches their unit's level can hold a candidate segment (an
        # interpolated value never exceeds the map's maximum); most maps of a selective unit don't.
        if peak is None:
            peak = feat.amax(dim=(2, 3))
        live = (peak >= lo.view(1, -1)).view(-1).nonzero().squeeze(1)  # image * u + unit
        if live.numel() == 0:
            return
        maps = feat.reshape(n * u, h, w)
        plane = (h + 1) * ws  # candidate segments per map
        step = max(1, CHUNK // max(1, (h + 2) * ws))
        lo_flat = lo.float()
        for a in range(0, live.numel(), step):
            which = live[a:a + step]
            unit_of = which % u
            img_of = torch.div(which, u, rounding_mode="floor")
            r = torch.matmul(maps.index_select(0, which), self.mx_t)  # upsampled along x: m x h x ws
            rp = F.pad(r[:, None], (0, 0, 1, 1), mode="replicate")[:, 0]  # border rows repeated
            d = rp[:, 1:] - rp[:, :-1]
            # a segment's largest value: a + lam_lo d + (lam_hi - lam_lo) max(d, 0)
            top = torch.add(rp[:, :-1], d, alpha=self.lam_lo)
            top.add_(d.relu(), alpha=self.lam_hi - self.lam_lo)
            idx = (top >= lo_flat.index_select(0, unit_of).view(-1, 1, 1)).view(-1).nonzero().squeeze(1)
            del top
            if idx.numel() == 0:
                continue
            rpf, df = rp.reshape(-1), d.reshape(-1)
            # int32 index arithmetic (2-3x faster divisions than int64); every index here is below
            # the chunk's size or the batch's padded label count, far from 2**31.
            index_type = torch.int32 if max(rpf.numel(), lab.numel()) < 2**31 - 1 else torch.long
            img_of, unit_of = img_of.to(index_type), unit_of.to(index_type)
            sub = max(1, CHUNK // f)
            for b in range(0, idx.numel(), sub):
                i = idx[b:b + sub].to(index_type)
                m = torch.div(i, plane, rounding_mode="floor")  # map in chunk
                rem = i - m * plane  # segment * ws + column
                seg = torch.div(rem, ws, rounding_mode="floor")
                img = img_of.index_select(0, m)
                # padded label row of segment `seg`, slot s: seg * f + s
                base = (img * (hs + f) + seg * f) * ws + (rem - seg * ws)
                pix = (base[:, None] + self.row_offsets).view(-1)
                yield (unit_of.index_select(0, m), rpf.index_select(0, i + m * ws)[:, None],
                       df.index_select(0, i)[:, None], lab.index_select(0, pix).view(-1, f))


class _TopK:
    """Running top-k samples per unit by maximum raw activation, with their images and maps.

    Slots are kept unsorted: a batch's winners are written into the slots of the entries they
    displace, so only new images are copied (not every kept one); `sort` orders them once at the end.
    """

    def __init__(self, units: int, k: int, image_shape: Sequence[int], map_hw: Sequence[int],
                 device: torch.device) -> None:
        self.k = k
        self.values = torch.full((units, k), -math.inf, device=device)
        self.index = torch.full((units, k), -1, dtype=torch.long, device=device)
        self.images = torch.zeros((units, k, *image_shape), dtype=torch.uint8, device=device)
        self.maps = torch.zeros((units, k, *map_hw), device=device)

    def update(self, start: int, feat: torch.Tensor, peak: torch.Tensor, images_u8) -> None:
        """Merge a batch (feat n x u x h x w, peak = its per-image maxima n x u) into the top k."""
        k = self.k
        if k == 0:
            return
        peak = peak.t()  # units x n
        if not bool((peak.max(dim=1).values > self.values.min(dim=1).values).any()):
            return
        sel = torch.cat([self.values, peak], dim=1).topk(k, dim=1).indices  # units x k
        new = sel >= k
        if not bool(new.any()):
            return
        # slots whose entry survives; the others are free for this batch's winners
        kept = torch.zeros(sel.shape[0], k + 1, dtype=torch.bool, device=sel.device)
        kept.scatter_(1, torch.where(new, k, sel), True)
        free = ~kept[:, :k]
        # pair the j-th free slot of a row with the j-th new entry of that row (equal counts)
        order = torch.arange(k, device=sel.device).expand_as(sel)
        slot = torch.where(free, order, k).sort(dim=1).values
        src = torch.where(new, sel - k, peak.shape[1]).sort(dim=1).values
        rows, j = (slot < k).nonzero(as_tuple=True)
        slot, src = slot[rows, j], src[rows, j]
        self.values[rows, slot] = peak[rows, src]
        self.index[rows, slot] = src + start
        self.images[rows, slot] = images_u8()[src]
        self.maps[rows, slot] = feat[src, rows]

    def sort(self) -> None:
        """Order every unit's slots by decreasing activation (empty slots last)."""
        order = self.values.argsort(dim=1, descending=True, stable=True)
        ar = torch.arange(order.shape[0], device=order.device)[:, None]
        self.values, self.index = self.values[ar, order], self.index[ar, order]
        self.images, self.maps = self.images[ar, order], self.maps[ar, order]


class _LayerState:
    """Everything accumulated for one layer during a pass.

    mode "quantile": tail histograms for the quantile threshold; "iqr": full-range histograms to
    choose IQR thresholds; "fixed": exact intersection counts at given thresholds.
    """

    def __init__(self, name: str, mode: str, quantile: float, concepts: int, top_k: int,
                 thresholds: torch.Tensor | None = None, lo_override: torch.Tensor | None = None,
                 raw_lo_override: torch.Tensor | None = None, raise_floor: bool = True) -> None:
        self.name, self.mode, self.quantile, self.k, self.top_k = name, mode, quantile, concepts, top_k
        self.thresholds, self.lo_override, self.raw_lo_override = thresholds, lo_override, raw_lo_override
        self.raise_floor = raise_floor and mode == "quantile"
        self.floor: torch.Tensor | None = None  # values below it are no longer binned (see FLOOR_AFTER)
        self.samples = 0  # samples accumulated so far
        self.ready = False

    def _init(self, feat: torch.Tensor, labels: torch.Tensor, images_u8) -> None:
        n, u, h, w = feat.shape
        dev = feat.device
        self.shape = (u, h, w)
        self.up = _Upsampler(self.shape, tuple(labels.shape[1:]), dev)
        self.sum = torch.zeros(u, dtype=torch.float64, device=dev)
        self.raw_count = 0
        self.pixels = 0
        fmin, fmax = feat.amin(dim=(0, 2, 3)), feat.amax(dim=(0, 2, 3))
        self.raw_min, self.raw_max = fmin.clone(), fmax.clone()
        # Raw-map tail for q99 (margin TAIL_MARGIN over the 1% it needs).
        if self.raw_lo_override is not None:
            raw_lo = self.raw_lo_override.to(dev).float()
        else:
            raw = feat.transpose(0, 1).reshape(u, -1)
            raw_lo = _top_level(raw, min(1.0, TAIL_MARGIN * 0.01))
        self.raw_hist = _Histogram(raw_lo, fmax + (fmax - raw_lo) * 0.25, MAX_BINS, 1)
        bins = int(min(MAX_BINS, max(64, 2 ** math.floor(math.log2(max(1, HIST_CELLS // (u * (self.k + 1))))))))
        if self.mode == "fixed":
            assert self.thresholds is not None
            self.lo = self.thresholds.to(dev).float()
            self.exact = torch.zeros(u * 2 * (self.k + 1), dtype=torch.long, device=dev)
        else:
            if self.lo_override is not None:
                lo = self.lo_override.to(dev).float()
            elif self.mode == "iqr":
                lo = fmin  # the whole range: every threshold is a candidate
            else:
                lo = self._first_batch_level(feat, min(1.0, TAIL_MARGIN * self.quantile))
            self.lo = torch.minimum(lo, fmax)
            self.hist = _Histogram(self.lo, fmax + (fmax - self.lo) * 0.25, bins, self.k)
        self.top = _TopK(u, self.top_k, images_u8().shape[1:], (h, w), dev)
        self.ready = True

    def _first_batch_level(self, feat: torch.Tensor, top: float) -> torch.Tensor:
        """Per unit, the level exceeded by a fraction `top` of the first batch's upsampled values
        (on a strided subsample of at most CHUNK values in all)."""
        n, u = feat.shape[:2]
        p = self.up.hs * self.up.ws
        stride = max(1, math.ceil(n * p * u / CHUNK))
        parts = [up.reshape(up.shape[0], u, p).transpose(0, 1).reshape(u, -1)[:, ::stride]
                 for _, up in self.up.dense(feat)]
        return _top_level(torch.cat(parts, dim=1), top)

    def update(self, start: int, feat: torch.Tensor, labels: torch.Tensor, images_u8) -> None:
        if not self.ready:
            self._init(feat, labels, images_u8)
        n, u = feat.shape[:2]
        self.pixels += labels[0].numel() * n
        self.samples += n
        self.sum += feat.sum(dim=(0, 2, 3), dtype=torch.float64)
        self.raw_count += n * feat.shape[2] * feat.shape[3]
        peak = feat.amax(dim=(2, 3))  # n x u
        bmax = peak.amax(dim=0)
        self.raw_min = torch.minimum(self.raw_min, feat.amin(dim=(0, 2, 3)))
        self.raw_max = torch.maximum(self.raw_max, bmax)
        # raw-map tail (for q99): only values >= its lower bound are binned
        self.raw_hist.grow(bmax)
        flat = feat.reshape(-1)
        pos = (feat >= self.raw_hist._lo32.view(1, -1, 1, 1)).view(-1).nonzero().squeeze(1)
        unit = torch.div(pos, feat.shape[2] * feat.shape[3], rounding_mode="floor") % u
        self.raw_hist.add(unit, flat.index_select(0, pos)[:, None], None, None, torch.zeros_like(pos)[:, None])
        self.raw_hist.flush()
        lam = self.up.lam
        if self.mode == "fixed":
            # index = label * 2u + unit * 2 + above
            for unit, a, d, lab in self.up.values(feat, labels * (2 * u), self.lo, self.k * 2 * u, peak):
                x = a - self.lo.index_select(0, unit)[:, None]
                if d is not None:
                    x = torch.addcmul(x, d, lam)
                idx = (x > 0).long().add_((unit * 2)[:, None]).add_(lab)
                self.exact += torch.bincount(idx.view(-1), minlength=self.exact.numel())
        else:
            self.hist.grow(bmax)  # bilinear interpolation never exceeds the raw maximum
            lo = None if self.mode == "iqr" else (self.floor if self.floor is not None else self.lo)
            scaled = self.hist.scale_labels(labels)
            for unit, a, d, lab in self.up.values(feat, scaled, lo, self.k * self.hist.label_stride, peak):
                self.hist.add(unit, a, d, lam, lab)
            self.hist.flush()
            if self.raise_floor and self.floor is None and self.samples >= FLOOR_AFTER:
                self._raise_floor()
        if self.top_k:
            self.top.update(start, feat, peak, images_u8)

    def _raise_floor(self) -> None:
        """Stop binning values below the level exceeded by FLOOR_MARGIN * quantile of those counted so
        far, snapped down to a bin edge. Counts above the floor stay complete; `_finish` checks that
        the threshold lies above it (else the layer is redone without a floor)."""
        h = self.hist
        t, ok = h.level(FLOOR_MARGIN * self.quantile * self.pixels)
        edge = h.lo + torch.floor(((t - h.lo) / h.width).clamp_min(0)) * h.width
        self.floor = torch.where(ok, torch.maximum(h.lo, edge), h.lo).float()

    def floor_ok(self, t: torch.Tensor) -> torch.Tensor:
        """Per unit: does threshold t lie in bins that are complete (at or above the floor's next edge)?"""
        if self.floor is None:
            return torch.ones_like(t, dtype=torch.bool)
        h = self.hist
        edge = h.lo + torch.ceil(((self.floor.double() - h.lo) / h.width).clamp_min(0)) * h.width
        return (t >= edge) | (self.floor.double() <= h.lo)

    def raw_stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, q99, ok) of the raw feature maps; ok is False where the q99 tail was too short."""
        mean = (self.sum / max(1, self.raw_count)).float()
        q99, ok = self.raw_hist.level(0.01 * self.raw_count)
        q99 = q99.clamp(self.raw_min.double(), self.raw_max.double())
        return mean.cpu(), q99.float().cpu(), ok.cpu()

    def exact_counts(self) -> torch.Tensor:
        """|A_u and S_c| (units x concepts) counted exactly in "fixed" mode."""
        return self.exact.view(self.k + 1, -1, 2)[:self.k, :, 1].t()


def _top_level(values: torch.Tensor, top: float) -> torch.Tensor:
    """Per row, the value exceeded by about a fraction `top` of the row (the k-th largest)."""
    k = max(1, min(values.shape[1], math.ceil(top * values.shape[1])))
    return values.topk(k, dim=1).values[:, -1]


# ---------------------------------------------------------------------------------------------
# The pass over generated samples


def _run_pass(generator: nn.Module, states: list[_LayerState], segmenter: Any, concepts: int, z: torch.Tensor,
              batch_size: int, device: torch.device, progress: ProgressCallback | None,
              task: str) -> tuple[torch.Tensor, tuple[int, ...]]:
    """Generate, segment and feed every layer state; returns the pixel count per concept and the image shape.

    On the CPU, when torch leaves a core free (fewer intra-op threads than cores), the accumulators
    of batch i run in one worker thread on it while the main thread generates and segments batch
    i + 1 (torch releases the GIL in its kernels). When G already uses every core, they run inline
    with torch's threads instead: a worker would only steal a core from G's convolutions (measured
    on 2 cores: 1.08 of the G + segmenter time inline against 1.35 with the worker). Batches are
    accumulated strictly in order, with at most one in flight, so results and memory are the same
    either way.
    """
    from ..segmenters import check_labels

    n = z.shape[0]
    totals = torch.zeros(concepts, dtype=torch.long, device=device)
    image_shape: tuple[int, ...] = ()
    names = list(dict.fromkeys(s.name for s in states))
    worker = None
    spare_core = torch.get_num_threads() < (os.cpu_count() or 1)
    if device.type == "cpu" and BOOKKEEPING_THREADS is not None and spare_core:
        # torch's intra-op thread count is per thread: the worker's setting leaves G's alone.
        worker = ThreadPoolExecutor(1, thread_name_prefix="gantools-dissect",
                                    initializer=lambda: torch.set_num_threads(BOOKKEEPING_THREADS))
    pending = None
    report(progress, task, 0, n)
    try:
        with torch.inference_mode(), TraceDict(generator, names) as td:
            for start in range(0, n, batch_size):
                zb = z[start:start + batch_size].to(device)
                images = generator(zb)
                labels = check_labels(segmenter(images), images, concepts).to(device)
                image_shape = tuple(images.shape[1:])
                totals += torch.bincount(labels.reshape(-1), minlength=concepts)
                feats = []
                for state in states:
                    feat = td[state.name].output
                    if not isinstance(feat, torch.Tensor) or feat.ndim != 4:
                        raise GantoolsError(f"{state.name} does not output a feature map N x C x H x W "
                                            f"(got {type(feat).__name__}); dissect a convolutional layer")
                    feats.append(feat.float())
                job = functools.partial(_accumulate, states, start, feats, labels, images)
                if worker is None:
                    job()
                else:
                    if pending is not None:
                        pending.result()  # in order, one batch in flight; re-raises the worker's errors
                    pending = worker.submit(job)
                report(progress, task, min(n, start + batch_size), n)
            if pending is not None:
                pending.result()
    finally:
        if worker is not None:
            worker.shutdown(wait=True)
    return totals, image_shape


def _accumulate(states: list[_LayerState], start: int, feats: list[torch.Tensor], labels: torch.Tensor,
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


@contextlib.contextmanager
def _bookkeeping_threads(device: torch.device | str = "cpu"):
    # The accumulators and the report run many medium-sized elementwise ops. On a CPU shared with
    # other processes, each multi-threaded op waits for descheduled OpenMP workers (we measured
    # 5-20 ms per op under load, against 0.03 ms single-threaded), while G's large convolutions
    # amortise that. So that work runs on one thread (BOOKKEEPING_THREADS; the pass's worker thread
    # is set up the same way) and G and the segmenter keep theirs.
    if torch.device(device).type != "cpu" or BOOKKEEPING_THREADS is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, BOOKKEEPING_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _sample_z(generator: nn.Module, n: int, seed: int) -> torch.Tensor:
    # All of z at once (n x nz floats, 400 bytes a sample at nz=100) so that sample i is exactly
    # `Generator.sample_z(n, seed)[i]`: torch.randn in chunks does not give the same stream.
    from ..models import Generator

    if isinstance(generator, Generator):
        return generator.sample_z(n, seed, device="cpu")
    if hasattr(generator, "sample_z"):
        return generator.sample_z(n, seed).cpu()
    nz = getattr(getattr(generator, "config", None), "nz", None)
    if nz is None:
        raise GantoolsError("dissect needs a gantools Generator (or a module with sample_z(n, seed))")
    return torch.randn(n, nz, generator=torch.Generator().manual_seed(seed))


def _resolve_model(model: Any, device: torch.device) -> tuple[nn.Module, GAN | None, str | None]:
    from ..models import GAN, load_model

    if isinstance(model, (str, os.PathLike)):
        gan = load_model(model, device)
        return gan.generator, gan, str(gan.path)
    if isinstance(model, GAN):
        model.generator.to(device)
        return model.generator, model, str(model.path) if model.path is not None else None
    if isinstance(model, nn.Module):
        return model.to(device), None, None
    raise GantoolsError(f"dissect takes a model (a GAN, a generator module, or a model path/name), "
                        f"got {type(model).__name__}")


def _resolve_segmenter(segmenter: Any, gan: GAN | None, device: torch.device) -> tuple[Any, str]:
    from ..segmenters import describe_segmenter, load_segmenter

    segmenter = load_segmenter(segmenter, gan=gan, device=device)
    return segmenter, describe_segmenter(segmenter)


def segmenter_source(segmenter: Any) -> str | None:
    """What reloads this segmenter: "color", its file (absolute), or None for a Python object.
    Stored in reports, so interventions on a report use the segmenter it was made with."""
    from ..segmenters import ColorSegmenter

    if isinstance(segmenter, ColorSegmenter):
        return "color"
    path = getattr(segmenter, "path", None)
    return str(Path(path).resolve()) if path is not None else None


def dissect(model: Any, layers: int | str | Iterable[int | str] = (3,), segmenter: Any = None, n: int = 2000,
            seed: int = 0, quantile: float = 0.01, threshold: str = "quantile", min_iou: float = 0.04,
            batch_size: int = DEFAULT_BATCH_SIZE, device: str | torch.device = "cpu",
            progress: ProgressCallback | None = None, top_k: int = DEFAULT_TOP_K) -> DissectionResult:
    """Dissect generator layers: per unit a threshold, IoU with every concept, and a label.

    Each unit's map is upsampled bilinearly to the segmentation's resolution with
    align_corners=False: a cell of a generator feature map stands for an f x f block of pixels, and
    align_corners=False puts each cell's centre at its block's centre (align_corners=True would pin
    the outer cells to the image corners and shift regions by up to half a cell). One streaming pass
    (two with threshold="iqr"); memory does not depend on n.

    Args:
        model: a GAN, a generator module, or a spec for `load_model` (file, run dir, pretrained name).
            A GAN's generator is moved to `device`.
        layers: layer numbers or names (3, "layer3", "layer3.0"); several are dissected in one pass.
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
        device: where to run ("cpu", "cuda", "auto").
        progress: progress callback.
        top_k: top-activating samples kept per unit for the report's image strips.
    Returns:
        A DissectionResult (save it with `.save(out_dir)`).
    """
    began = time.time()
    if threshold not in ("quantile", "iqr"):
        raise GantoolsError(f"unknown threshold method {threshold!r}: use quantile or iqr")
    if n < 1:
        raise GantoolsError(f"n must be at least 1, got {n}")
    if not 0 < quantile < 1:
        raise GantoolsError(f"quantile must be between 0 and 1 (the top fraction of activations), got {quantile}")
    if not 0 <= min_iou <= 1:
        raise GantoolsError(f"min_iou must be between 0 and 1, got {min_iou}")
    if batch_size < 1:
        raise GantoolsError(f"batch size must be at least 1, got {batch_size}")
    if top_k < 0:
        raise GantoolsError(f"top_k must be at least 0, got {top_k}")
    dev = get_device(device)
    generator, gan, model_path = _resolve_model(model, dev)
    seg, seg_text = _resolve_segmenter(segmenter, gan, dev)
    concepts = [str(c) for c in seg.concepts]
    k = len(concepts)
    if isinstance(layers, (int, str)):
        layers = [layers]
    names = list(dict.fromkeys(layer_name(generator, layer) for layer in layers))
    if not names:
        raise GantoolsError("give at least one layer to dissect")

    from ..models import fingerprint

    was_training = generator.training
    generator.eval()
    try:
        settings: dict[str, Any] = {
            "model": model_path if model_path is not None else (str(model) if isinstance(model, str) else None),
            "model_fingerprint": fingerprint(generator), "segmenter": seg_text,
            "segmenter_source": segmenter_source(seg), "layers": names, "n": n,
            "seed": seed, "threshold": threshold, "quantile": quantile if threshold == "quantile" else None,
            "min_iou": min_iou, "batch_size": batch_size, "top_k": top_k, "align_corners": ALIGN_CORNERS,
            "upsampling": "bilinear",
        }
        chosen: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}  # per layer: (thresholds, label concepts)
        if threshold == "iqr":
            iqr_seed = seed + IQR_SEED_OFFSET
            settings.update(iqr_seed=iqr_seed, iqr_n=n, iqr_min_concept_share=MIN_CONCEPT_SHARE)
            states = [_LayerState(nm, "iqr", quantile, k, 0) for nm in names]
            totals, _ = _run_pass(generator, states, seg, k, _sample_z(generator, n, iqr_seed), batch_size, dev,
                                  progress, f"dissect: IQR thresholds (seed {iqr_seed})")
            for s in states:
                chosen[s.name] = _iqr_choice(s, totals)
            states = [_LayerState(nm, "fixed", quantile, k, top_k, thresholds=chosen[nm][0]) for nm in names]
        else:
            states = [_LayerState(nm, "quantile", quantile, k, top_k) for nm in names]

        def finish(s: _LayerState, totals: torch.Tensor) -> LayerDissection | _LayerState:
            with _bookkeeping_threads(dev):
                done = _finish(s, totals, concepts, min_iou)
            if isinstance(done, LayerDissection) and s.name in chosen:
                done.label_rule, done.label_concept = IQR_LABEL_RULE, chosen[s.name][1]
            elif isinstance(done, LayerDissection):
                done.label_rule = quantile_label_rule(quantile)
            return done

        z = _sample_z(generator, n, seed)
        totals, image_shape = _run_pass(generator, states, seg, k, z, batch_size, dev, progress, "dissect")

        layers_out: dict[str, LayerDissection] = {}
        redo: list[_LayerState] = []
        for s in states:
            done = finish(s, totals)
            if isinstance(done, _LayerState):
                short = f"{s.name}: the first batch set some histograms too high; dissecting {s.name} again " \
                        f"with them starting at each unit's minimum"
                notice(progress, short)
                redo.append(done)
            else:
                layers_out[s.name] = done
        if redo:
            totals2, _ = _run_pass(generator, redo, seg, k, z, batch_size, dev, progress, "dissect (again)")
            for s in redo:
                done = finish(s, totals2)
                assert not isinstance(done, _LayerState)  # histograms from the minimum hold every value
                layers_out[s.name] = done
        layers_out = {nm: layers_out[nm] for nm in names}
    finally:
        generator.train(was_training)
    total_pixels = float(totals.sum())
    coverage = (totals.double() / max(1.0, total_pixels)).tolist()
    settings["image_shape"] = list(image_shape)
    settings["seconds"] = round(time.time() - began, 3)
    return DissectionResult(settings=settings, concepts=concepts, layers=layers_out, concept_coverage=coverage)


def _iqr_choice(s: _LayerState, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(thresholds, concepts) per unit from an "iqr" selection pass. A unit with no allowed pair
    gets concept -1 and its maximum as threshold: an empty mask, so it matches nothing."""
    t, concept, _ = s.hist.best_iqr(float(s.pixels), totals)
    t = torch.where(concept >= 0, t, s.raw_max.double())
    return t.float().cpu(), concept.cpu()


def _finish(s: _LayerState, totals: torch.Tensor, concepts: list[str],
            min_iou: float) -> LayerDissection | _LayerState:
    """The layer's dissection from its accumulators, or a state to redo the layer with lower
    histogram bounds where a tail turned out too short.

    IoU = |A and S| / (|A| + |S| - |A and S|) with |A_u| = sum over concepts of |A_u and S_c| (every
    pixel has one concept) and |S_c| the concept's pixel count.
    """
    mean, q99, raw_ok = s.raw_stats()
    if s.mode == "fixed":
        t, ok = s.lo.double(), torch.ones_like(raw_ok)
    else:
        t, ok = s.hist.level(s.quantile * s.pixels)
        ok = ok.cpu()
    floor_ok = s.floor_ok(t).cpu() if s.mode == "quantile" else torch.ones_like(raw_ok)
    if not bool(ok.all()) or not bool(raw_ok.all()) or not bool(floor_ok.all()):
        lo = None if s.mode == "fixed" else torch.where(ok, s.lo.cpu(), s.raw_min.cpu())
        raw_lo = torch.where(raw_ok, s.raw_hist._lo32.cpu(), s.raw_min.cpu())
        return _LayerState(s.name, s.mode, s.quantile, s.k, s.top_k, thresholds=s.thresholds, lo_override=lo,
                           raw_lo_override=raw_lo, raise_floor=False)
    if s.mode == "fixed":
        inter = s.exact_counts().double()
    else:
        t = t.clamp(s.raw_min.double(), s.raw_max.double())  # bilinear values lie within the raw range
        inter = s.hist.above(t)
    area = inter.sum(dim=1, keepdim=True)
    union = area + totals.double().to(inter.device)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
    top = s.top
    if s.top_k:
        top.sort()
    valid = top.index >= 0
    examples = Examples(images=top.images.cpu(), maps=top.maps.cpu()) if s.top_k else None
    return LayerDissection(name=s.name, concepts=list(concepts), threshold=t.float().cpu(), iou=iou.float().cpu(),
                           mean=mean, q99=q99, min_iou=min_iou, shape=s.shape,
                           top_samples=top.index.cpu(), top_values=torch.where(valid, top.values, 0).float().cpu(),
                           examples=examples)


def unit_masks(layer: LayerDissection, unit: int, maps: torch.Tensor, size: Sequence[int]) -> torch.Tensor:
    """Where a unit exceeds its threshold: maps (k x h x w, the unit's raw feature maps) -> k x H x W bool,
    upsampled exactly as in the dissection (bilinear, align_corners=False)."""
    up = F.interpolate(maps[:, None].float(), size=tuple(size), mode="bilinear", align_corners=ALIGN_CORNERS)[:, 0]
    return up > float(layer.threshold[unit])


def render_examples(result: DissectionResult, gan: GAN | nn.Module, device: str | torch.device = "cpu",
                    batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """Regenerate the top samples of every layer (from the report's seed and sample indices) and
    attach them as `examples`, e.g. to draw the HTML strips of a loaded report.

    Args:
        result: the dissection (its model fingerprint must match).
        gan: the model (a GAN or its generator); runs where its weights are (`device` for a
            generator without parameters).
        device: see gan.
        batch_size: samples per batch.
    """
    check_model(result, gan)
    generator = getattr(gan, "generator", gan)
    params = list(generator.parameters())
    dev = params[0].device if params else get_device(device)
    n, seed = int(result.settings["n"]), int(result.settings["seed"])
    z = _sample_z(generator, n, seed)
    names = list(result.layers)
    wanted = sorted({int(i) for ld in result.layers.values() for i in ld.top_samples.flatten().tolist() if i >= 0})
    if not wanted:
        return
    was_training = generator.training
    generator.eval()
    images, feats = [], {nm: [] for nm in names}
    try:
        with torch.inference_mode(), TraceDict(generator, names) as td:
            idx = torch.tensor(wanted)
            for a in range(0, len(wanted), batch_size):
                images.append(to_uint8(generator(z[idx[a:a + batch_size]].to(dev))).cpu())
                for nm in names:
                    feats[nm].append(td[nm].output.float().cpu())
    finally:
        generator.train(was_training)
    all_images = torch.cat(images)
    where = {s: i for i, s in enumerate(wanted)}
    for nm, layer in result.layers.items():
        fm = torch.cat(feats[nm])
        rows = torch.tensor([[where.get(int(i), 0) for i in r] for r in layer.top_samples.tolist()], dtype=torch.long)
        ar = torch.arange(layer.units)[:, None].expand_as(rows)
        layer.examples = Examples(images=all_images[rows], maps=fm[rows, ar])
