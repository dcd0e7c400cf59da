"""The dissection report: `DissectionResult` (what report.json holds) and the files written from it.

A report directory holds report.json (the numbers, read back by `load_report`), units.csv (one row
per unit) and report.html (self-contained; drawn by `html` from the data and the strips of
top-activating images drawn here). `record_ranking` stores a causal ranking in a saved report and
rewrites its files. Each file is replaced atomically, and everything that can fail (drawing the
strips, checking the model) happens before the first file is written.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from torch import nn

from ..models import fingerprint
from ..utils import GantoolsError, resolve_device, write_json, write_text
from .examples import DEFAULT_BATCH_SIZE, attach_examples, unit_strips
from .html import dissection_page
from .result import UNITS_CSV_HEADER, LayerDissection, nan_if_none
from .threads import bookkeeping_threads

if TYPE_CHECKING:
    from ..models import GAN
    from ..types import DeviceSpec, PathLike

REPORT_FORMAT = "gantools-dissection"
REPORT_VERSION = 1
REPORT_FILE = "report.json"
UNITS_FILE = "units.csv"
HTML_FILE = "report.html"


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
        """Per layer, per concept: the interpretable units labelled with it (best first; concepts with
        none left out)."""
        return {name: layer.concept_summary() for name, layer in self.layers.items()}

    def to_dict(self) -> dict[str, Any]:
        """report.json's content: format and version, settings, concepts and their coverage, layers."""
        return {"format": REPORT_FORMAT, "format_version": REPORT_VERSION, "settings": self.settings,
                "concepts": list(self.concepts), "concept_coverage": list(self.concept_coverage),
                "layers": {name: layer.to_dict() for name, layer in self.layers.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "DissectionResult":
        """Read report.json's content back; GantoolsError for another format or a newer version."""
        if d.get("format") != REPORT_FORMAT:
            raise GantoolsError("not a gantools dissection report (no 'format': 'gantools-dissection')")
        if int(d.get("format_version", 0)) > REPORT_VERSION:
            raise GantoolsError(f"this dissection report has format version {d['format_version']}; this gantools "
                                f"reads up to {REPORT_VERSION}: upgrade gantools")
        concepts = list(d["concepts"])
        layers = {name: LayerDissection.from_dict(ld, concepts) for name, ld in d["layers"].items()}
        return cls(settings=dict(d["settings"]), concepts=concepts, layers=layers,
                   concept_coverage=[nan_if_none(v) for v in d.get("concept_coverage", [])])

    def units_csv(self) -> str:
        """One row per (layer, unit): label, IoU, threshold, the next two concepts by IoU, mean, q99."""
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(UNITS_CSV_HEADER)
        for layer in self.layers.values():
            layer.write_csv_rows(writer)
        return buf.getvalue()

    def save(self, out_dir: PathLike, html: bool = True, gan: GAN | nn.Module | None = None) -> Path:
        """Write report.json, units.csv and (html=True) the self-contained report.html into out_dir.

        Args:
            out_dir: the directory (created if needed).
            html: also write report.html.
            gan: the model, to regenerate the strips' images when this result has none in memory
                (a loaded report); without it the HTML report has no strips.
        Returns:
            out_dir, as a Path.
        """
        out = Path(out_dir)
        csv_text = self.units_csv()
        page = None
        if html:
            if gan is not None and any(layer.examples is None for layer in self.layers.values()):
                render_examples(self, gan)
            page = dissection_html(self)
        write_json(out / REPORT_FILE, self.to_dict())
        write_text(out / UNITS_FILE, csv_text)
        if page is not None:
            write_text(out / HTML_FILE, page)
        return out


def report_dir(report: PathLike) -> Path:
    """The directory of a report given as its directory or its report.json."""
    p = Path(report)
    return p.parent if p.is_file() else p


def load_report(path: PathLike) -> DissectionResult:
    """Read a dissection report (report.json, or the directory holding it)."""
    p = Path(path)
    if p.is_dir():
        p = p / REPORT_FILE
    if not p.is_file():
        raise GantoolsError(f"no dissection report at {path}: give report.json or the directory holding it "
                            f"(DissectionResult.save and gantools dissect write one)")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
        return DissectionResult.from_dict(data)
    except GantoolsError as e:
        raise GantoolsError(f"{p}: {e}") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, RuntimeError) as e:
        raise GantoolsError(f"{p} is not a readable dissection report ({type(e).__name__}: {e})") from None


def check_model(result: DissectionResult, gan: GAN | nn.Module) -> None:
    """Raise GantoolsError if the report was made for another model (weights fingerprint differs)."""
    generator = getattr(gan, "generator", gan)
    want = result.settings.get("model_fingerprint")
    have = fingerprint(generator)
    if want != have:
        made_for = result.settings.get("model") or f"fingerprint {want}"
        raise GantoolsError(f"the dissection report was made for another model ({made_for}; this model's "
                            f"fingerprint is {have}): dissect this model first, or give the model it was made for")


def render_examples(result: DissectionResult, gan: GAN | nn.Module, device: DeviceSpec = None,
                    batch_size: int = DEFAULT_BATCH_SIZE) -> None:
    """Regenerate the top samples of every layer (from the report's seed and sample indices) and
    attach them as `examples`, e.g. to draw the HTML strips of a loaded report.

    Args:
        result: the dissection (its model fingerprint must match).
        gan: the model (a GAN or its generator).
        device: where to generate; None: where the model's weights are ('auto' for a generator
            without any). An explicit device moves the generator there.
        batch_size: samples per batch.
    """
    if batch_size < 1:
        raise GantoolsError(f"batch_size must be at least 1, got {batch_size}")
    check_model(result, gan)
    generator = getattr(gan, "generator", gan)
    dev = resolve_device(device, generator)
    if device is not None:
        generator.to(dev)
    attach_examples(generator, result.layers, int(result.settings["n"]), int(result.settings["seed"]), dev,
                    batch_size)


def dissection_html(result: DissectionResult) -> str:
    """The self-contained report page as a string, with strips for the layers whose `examples` are in
    memory (a fresh dissection, or after `render_examples(result, gan)`)."""
    with bookkeeping_threads():  # many small tensor ops: one thread (see threads.py)
        return dissection_page(result, unit_strips(result.layers))


def write_dissection_html(result: DissectionResult, path: PathLike) -> Path:
    """Write the self-contained HTML report (atomically); see `dissection_html`."""
    return write_text(Path(path), dissection_html(result))


def record_ranking(report: PathLike, layer: int | str, concept: str, ace: Sequence[float],
                   gan: GAN | nn.Module | None = None, device: DeviceSpec = None) -> Path:
    """Store a causal ranking in a saved report and rewrite its files.

    Sets the layer's `ace[concept]` (what `rank="ace"` reads in ablate/insert/edit), then rewrites
    report.json and units.csv, and report.html where the report has one.

    Args:
        report: the report's directory, or its report.json.
        layer: the layer ranked (3, "3" or "layer3"); the report must hold it.
        concept: the concept measured; the report must know it.
        ace: one value per unit of the layer (NaN for units not measured), e.g. `RankResult.ace_list()`.
        gan: the model the report was made for (checked), to draw the page's strips again; without
            it, a rewritten report.html has no strips.
        device: where to generate the strips (see `render_examples`).
    Returns:
        The report's directory.
    """
    return record_rankings(report, layer, {concept: ace}, gan=gan, device=device)


def record_rankings(report: PathLike, layer: int | str, aces: Mapping[str, Sequence[float]],
                    gan: GAN | nn.Module | None = None, device: DeviceSpec = None) -> Path:
    """`record_ranking` for several concepts (concept -> one value per unit), rewriting the files once."""
    directory = report_dir(report)
    result = load_report(directory)
    stats = result.layer(layer)
    checked = {}
    for concept, ace in aces.items():
        stats.concept_index(concept)  # GantoolsError naming the report's concepts
        values = [float(v) for v in ace]
        if len(values) != stats.units:
            raise GantoolsError(f"ace has {len(values)} values, but {stats.name} has {stats.units} units")
        checked[concept] = values
    if gan is not None:
        check_model(result, gan)
    stats.ace.update(checked)
    html = (directory / HTML_FILE).is_file()
    if html and gan is not None:
        render_examples(result, gan, device=device)
    return result.save(directory, html=html)

