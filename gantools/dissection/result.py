"""What one layer's dissection holds: thresholds, IoUs, labels, levels and top samples per unit.

Data only: `LayerDissection` answers questions about the units (labels, interpretable units,
rankings) and converts itself to and from the layer's part of report.json. The whole report
(`DissectionResult`) is in `report`; how the numbers are computed is in `engine`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch

from ..utils import GantoolsError

# Bilinear upsampling with align_corners=False. A cell of a generator feature map stands for an
# f x f block of output pixels (each stride-2 transposed conv doubles the resolution), so cell i's
# centre is pixel (i + 0.5) * f - 0.5: align_corners=False maps pixel centres to pixel centres and
# puts every cell on its own block. align_corners=True would pin the first and last cells to the
# image corners and stretch the map by (S - 1) / (h - 1) instead of S / h: a 4x4 layer's cells
# would land 21 px apart in a 64 px image instead of 16, shifting units' regions by up to half a
# cell. It is also F.interpolate's default for bilinear mode.
ALIGN_CORNERS = False

IQR_LABEL_RULE = "IQR-optimal level, positively associated pairs only"
NO_LABEL_RULE = "unlabelled: no positively associated concept at a level above 0"
UNITS_CSV_HEADER = ["layer", "unit", "label", "iou", "interpretable", "threshold", "concept2", "iou2",
                    "concept3", "iou3", "mean", "q99"]


def quantile_label_rule(quantile: float) -> str:
    """How units are labelled under threshold="quantile", as the reports say it."""
    return f"top-{100 * quantile:g}% quantile level, best IoU"


def nan_if_none(value: Any) -> float:
    """A JSON number as a float, with null (how report.json stores NaN) read back as NaN."""
    return float("nan") if value is None else float(value)


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
                                    f"run gantools rank for them first (in Python: rank_units, then "
                                    f"record_ranking), or rank by iou")
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

    def concept_summary(self) -> dict[str, list[int]]:
        """Per concept, the interpretable units labelled with it (best first); most units first, then
        by name; concepts with none left out."""
        counts = {c: self.units_for(c) for c in self.concepts}
        return {c: us for c, us in sorted(counts.items(), key=lambda kv: (-len(kv[1]), kv[0])) if us}

    def write_csv_rows(self, writer: Any) -> None:
        """One units.csv row per unit (columns UNITS_CSV_HEADER) to a `csv.writer`."""
        best, labels, interpretable = self.best_iou.tolist(), self.label, set(self.interpretable)
        for u in range(self.units):
            top = self.other_concepts(u, 2) + [("", float("nan"))] * 2
            writer.writerow([self.name, u, labels[u], _g(best[u]), int(u in interpretable),
                             _g(float(self.threshold[u])), top[0][0], _g(top[0][1]), top[1][0], _g(top[1][1]),
                             _g(float(self.mean[u])), _g(float(self.q99[u]))])

    def to_dict(self) -> dict[str, Any]:
        """The layer's entry of report.json: per unit its label, IoU, threshold and levels; per concept its units."""
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
        """Read a layer's entry of report.json back (`concepts`: the report's concept list)."""
        units = d["units"]

        def col(key: str, dtype=torch.float32) -> torch.Tensor:
            return torch.tensor([nan_if_none(u[key]) for u in units], dtype=dtype)

        iou = torch.tensor([[nan_if_none(v) for v in row] for row in d["iou"]], dtype=torch.float32)
        iou = iou.reshape(len(units), len(concepts))
        k = len(units[0]["top_samples"]) if units else 0
        top_samples = torch.tensor([u["top_samples"] for u in units], dtype=torch.long).reshape(len(units), k)
        top_values = torch.tensor([[nan_if_none(v) for v in u["top_values"]] for u in units],
                                  dtype=torch.float32).reshape(len(units), k)
        label_concept = None
        if d.get("label_by") == "iqr":  # reports before it was stored labelled every unit by best IoU
            label_concept = torch.tensor([concepts.index(u["label"]) if u["label"] else -1 for u in units],
                                         dtype=torch.long)
        return cls(name=d["name"], concepts=list(concepts), threshold=col("threshold"), iou=iou,
                   mean=col("mean"), q99=col("q99"), min_iou=float(d["min_iou"]),
                   shape=tuple(int(s) for s in d["shape"]),  # type: ignore[arg-type]
                   top_samples=top_samples, top_values=top_values,
                   ace={c: [nan_if_none(v) for v in vs] for c, vs in d.get("ace", {}).items()},
                   label_rule=str(d.get("label_rule", "best IoU")), label_concept=label_concept)

    def __eq__(self, other: object) -> bool:
        # Tensors make the generated dataclass __eq__ ambiguous; compare what report.json stores.
        return isinstance(other, LayerDissection) and self.to_dict() == other.to_dict()


def _order(values: torch.Tensor) -> list[int]:
    # Descending, ties by index (a stable sort), NaN last.
    v = values.detach().double().cpu().nan_to_num(nan=-math.inf)
    return torch.sort(-v, stable=True).indices.tolist()


def _g(v: float) -> str:
    return "" if v != v else f"{v:.6g}"
