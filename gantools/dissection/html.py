"""The dissection report as one self-contained HTML file.

Everything is inline: CSS, a little JavaScript, the bar chart (SVG) and the image strips (base64
data: URIs). A Content-Security-Policy forbids any other source, so the page opens from disk,
works offline, and cannot make a network request even if edited. No CDN, no fonts, no favicon.

This module only renders: it is given the report's data and the strips already drawn
(`examples.unit_strips`); `report` draws them and writes the file.
"""

from __future__ import annotations

import html
import json
import os
from typing import TYPE_CHECKING, Any, Mapping, Protocol

import torch

from ..reports import concept_palette

if TYPE_CHECKING:
    from .result import LayerDissection


class ReportData(Protocol):
    """What the page shows; a `DissectionResult` has it all."""

    settings: dict[str, Any]
    concepts: list[str]
    layers: dict[str, LayerDissection]
    concept_coverage: list[float]

    def summary(self) -> dict[str, dict[str, list[int]]]:
        """Per layer, per concept: its interpretable units (concepts with none left out)."""
        ...


# {(layer name, unit): PNG data: URI of the unit's strip}; units without one say "no images"
Strips = Mapping[tuple[str, int], str]

CSP = ("default-src 'none'; img-src data:; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
       "base-uri 'none'; form-action 'none'")

STYLE = """
:root { --fg: #1d1d1f; --muted: #6e6e73; --line: #d2d2d7; --bg: #fafafa; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; padding: 24px 32px 64px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 17px; margin: 28px 0 8px; }
.sub { color: var(--muted); margin-bottom: 16px; }
table.kv, table.grid { border-collapse: collapse; background: #fff; }
table.kv td, table.grid td, table.grid th { border: 1px solid var(--line); padding: 4px 8px; text-align: left; }
table.kv td:first-child { color: var(--muted); white-space: nowrap; }
table.grid th { background: #f0f0f2; font-weight: 600; }
.charts { display: flex; flex-wrap: wrap; gap: 24px; }
.chart { background: #fff; border: 1px solid var(--line); padding: 8px 12px; }
.chart h3 { font-size: 14px; margin: 0 0 6px; }
.chart svg .bar { cursor: pointer; } .chart svg .bar:hover rect { opacity: .75; }
.controls { position: sticky; top: 0; background: var(--bg); padding: 10px 0; border-bottom: 1px solid var(--line);
            display: flex; flex-wrap: wrap; gap: 16px; align-items: center; z-index: 1; }
.controls label { color: var(--muted); } select, input { font: inherit; }
#units { display: grid; grid-template-columns: repeat(auto-fill, minmax(430px, 1fr)); gap: 10px; margin-top: 12px; }
.unit { background: #fff; border: 1px solid var(--line); padding: 8px 10px; }
.unit.hidden { display: none; }
.unit .head { display: flex; gap: 8px; align-items: baseline; flex-wrap: wrap; }
.unit .name { font-weight: 600; }
.chip { display: inline-block; padding: 0 7px; border-radius: 9px; color: #000; font-size: 12px; }
.unit.weak .chip { opacity: .55; }
.unit .nums, .unit .top3 { color: var(--muted); font-size: 12px; }
.strip { margin-top: 6px; width: 100%; image-rendering: pixelated; display: block; }
.nostrip { color: var(--muted); font-size: 12px; margin-top: 6px; }
#empty { color: var(--muted); margin-top: 12px; }
"""

SCRIPT = """
(function () {
  "use strict";
  var cards = Array.prototype.slice.call(document.querySelectorAll(".unit"));
  var box = document.getElementById("units");
  var layerSel = document.getElementById("f-layer");
  var conceptSel = document.getElementById("f-concept");
  var interpBox = document.getElementById("f-interp");
  var sortSel = document.getElementById("f-sort");
  var shown = document.getElementById("shown");
  var empty = document.getElementById("empty");
  function num(card, key) { return parseFloat(card.getAttribute("data-" + key)); }
  function apply() {
    var layer = layerSel.value, concept = conceptSel.value, interp = interpBox.checked, key = sortSel.value;
    var order = cards.slice();
    order.sort(function (a, b) {
      if (key === "unit") {
        return a.getAttribute("data-layer").localeCompare(b.getAttribute("data-layer")) || num(a, "unit") - num(b, "unit");
      }
      if (key === "concept") {
        return a.getAttribute("data-concept").localeCompare(b.getAttribute("data-concept")) || num(b, "iou") - num(a, "iou");
      }
      return num(b, "iou") - num(a, "iou") || num(a, "unit") - num(b, "unit");
    });
    var count = 0;
    order.forEach(function (card) {
      var ok = (layer === "" || card.getAttribute("data-layer") === layer) &&
               (concept === "" || card.getAttribute("data-concept") === concept) &&
               (!interp || card.getAttribute("data-interp") === "1");
      card.classList.toggle("hidden", !ok);
      if (ok) { count += 1; }
      box.appendChild(card);
    });
    shown.textContent = String(count);
    empty.style.display = count ? "none" : "block";
  }
  [layerSel, conceptSel, interpBox, sortSel].forEach(function (el) { el.addEventListener("change", apply); });
  Array.prototype.forEach.call(document.querySelectorAll(".bar"), function (bar) {
    bar.addEventListener("click", function () {
      conceptSel.value = bar.getAttribute("data-concept");
      layerSel.value = bar.getAttribute("data-layer");
      interpBox.checked = true;
      apply();
      document.getElementById("controls").scrollIntoView();
    });
  });
  window.gantoolsReport = { apply: apply };
  apply();
})();
"""


def _hex(rgb: torch.Tensor) -> str:
    return "#" + "".join(f"{int(v):02x}" for v in rgb.tolist())


def _esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _bar_chart(result: ReportData, name: str, colors: list[str]) -> str:
    """Inline SVG: interpretable units per concept for one layer (concepts with none left out)."""
    counts = {c: len(us) for c, us in result.summary()[name].items()}
    if not counts:
        return (f'<div class="chart"><h3>{_esc(name)}</h3><p class="sub">no interpretable units '
                f'(IoU &ge; {result.layers[name].min_iou:g})</p></div>')
    row, label_w, bar_w = 20, 120, 300
    top = max(counts.values())
    height = row * len(counts) + 8
    parts = [f'<svg role="img" aria-label="interpretable units per concept in {_esc(name)}" '
             f'width="{label_w + bar_w + 50}" height="{height}" viewBox="0 0 {label_w + bar_w + 50} {height}">']
    for i, (concept, count) in enumerate(counts.items()):
        y = 4 + i * row
        w = max(2.0, bar_w * count / top)
        color = colors[result.concepts.index(concept)]
        parts.append(f'<g class="bar" data-concept="{_esc(concept)}" data-layer="{_esc(name)}">'
                     f'<title>{_esc(concept)}: {count} unit(s)</title>'
                     f'<text x="{label_w - 6}" y="{y + 13}" text-anchor="end" font-size="12">{_esc(concept)}</text>'
                     f'<rect x="{label_w}" y="{y + 2}" width="{w:.1f}" height="{row - 6}" fill="{color}" stroke="#555" '
                     f'stroke-width="0.5"></rect>'
                     f'<text x="{label_w + w + 4:.1f}" y="{y + 13}" font-size="12">{count}</text></g>')
    parts.append("</svg>")
    total = sum(counts.values())
    return (f'<div class="chart"><h3>{_esc(name)}: {total} interpretable unit(s), {len(counts)} concept(s)</h3>'
            + "".join(parts) + "</div>")


NO_LABEL_COLOR = "#e0e0e0"


def _unit_card(layer: LayerDissection, unit: int, colors: list[str], strip: str | None) -> str:
    best = float(layer.best_iou[unit])
    label, rule = layer.label[unit], layer.label_rules[unit]
    interp = best >= layer.min_iou and bool(label)  # as in layer.interpretable
    color = colors[layer.concepts.index(label)] if label else NO_LABEL_COLOR
    samples = [int(i) for i in layer.top_samples[unit].tolist() if i >= 0]
    alt = f"{layer.name} unit {unit}: top samples {samples}"
    image = (f'<img class="strip" alt="{_esc(alt)}" title="samples {_esc(samples)}" src="{strip}">' if strip
             else '<div class="nostrip">no images (a loaded report: save it with the model to draw them)</div>')
    others = ", ".join(f"{_esc(c)} {v:.3f}" for c, v in layer.other_concepts(unit, 2))
    ace = "; ".join(f"{_esc(c)} {values[unit]:+.4f}" for c, values in layer.ace.items() if len(values) > unit)
    ace_line = f'<div class="top3">causal effect of ablating it alone: {ace}</div>' if ace else ""
    return (f'<div class="unit{"" if interp else " weak"}" data-layer="{_esc(layer.name)}" data-unit="{unit}" '
            f'data-concept="{_esc(label)}" data-iou="{best:.6f}" data-interp="{int(interp)}">'
            f'<div class="head"><span class="name">{_esc(layer.name)} · unit {unit}</span>'
            f'<span class="chip" style="background:{color}" title="label: {_esc(rule)}">{_esc(label or "no label")}</span>'
            f'<span class="nums">IoU {best:.3f} · threshold {float(layer.threshold[unit]):.4g} · '
            f'mean {float(layer.mean[unit]):.3g} · q99 {float(layer.q99[unit]):.3g}</span></div>'
            + (f'<div class="top3">{_esc(rule)}</div>' if rule != layer.label_rule else "") +  # the layer's is in its table
            f'<div class="top3">next: {others or "-"}</div>{ace_line}{image}</div>')


def _iqr_rules(settings: dict[str, Any]) -> str:
    """The IQR selection's rules, for reports that record them (older ones allowed any pair)."""
    share = settings.get("iqr_min_concept_share")
    if share is None:
        return ""
    return (f" over positively associated pairs only: levels above 0, concepts with at least "
            f"{100 * share:g}% of the pixels")


def _settings_table(result: ReportData) -> str:
    """The summary table's rows: model, segmenter, samples, threshold method, labels, time."""
    s = result.settings
    method = (f"quantile (top {100 * s['quantile']:g}% of each unit's upsampled activations)"
              if s.get("threshold") == "quantile" else
              f"IQR (information quality ratio{_iqr_rules(s)}, chosen on {s.get('iqr_n')} samples of seed "
              f"{s.get('iqr_seed')})")
    rows = [("model", s.get("model") or "in-memory generator"), ("model fingerprint", s.get("model_fingerprint")),
            ("segmenter", s.get("segmenter")), ("samples", f"{s.get('n')} (seed {s.get('seed')})"),
            ("threshold", method),
            ("labels", "; ".join(dict.fromkeys(layer.label_rule for layer in result.layers.values()))),
            ("interpretable when", f"IoU ≥ {s.get('min_iou')}"),
            ("upsampling", f"{s.get('upsampling', 'bilinear')}, align_corners={s.get('align_corners')}"),
            ("time", f"{s.get('seconds')} s")]
    return "".join(f"<tr><td>{_esc(k)}</td><td>{_esc(v)}</td></tr>" for k, v in rows)


def _layer_row(name: str, layer: LayerDissection) -> str:
    """A layer's row in the layers table: units, map size, interpretable units, concepts, label rule."""
    interp = layer.interpretable
    concepts = {layer.label[u] for u in interp}
    unlabelled = sum(1 for c in layer.label if not c)
    rule = _esc(layer.label_rule) + (f" ({unlabelled} unit(s) unlabelled: no positively associated concept)"
                                     if unlabelled else "")
    return (f"<tr><td>{_esc(name)}</td><td>{layer.units}</td><td>{'×'.join(map(str, layer.shape[1:]))}</td>"
            f"<td>{len(interp)} ({100 * len(interp) / max(1, layer.units):.0f}%)</td>"
            f"<td>{len(concepts)}</td><td>{rule}</td></tr>")


def dissection_page(result: ReportData, strips: Strips) -> str:
    """The report page as a string: `result`'s settings, layers, bar charts and unit cards, with the
    given strips of top-activating images (units without one say that the report has no images)."""
    colors = [_hex(c) for c in concept_palette(len(result.concepts))]
    model = result.settings.get("model") or "in-memory generator"
    settings_table = _settings_table(result)
    layer_rows = [_layer_row(name, layer) for name, layer in result.layers.items()]
    coverage = "".join(f'<tr><td><span class="chip" style="background:{colors[i]}">{_esc(c)}</span></td>'
                       f"<td>{100 * v:.1f}%</td></tr>"
                       for i, (c, v) in enumerate(zip(result.concepts, result.concept_coverage)))
    charts = "".join(_bar_chart(result, name, colors) for name in result.layers)
    cards = "".join(_unit_card(layer, u, colors, strips.get((name, u)))
                    for name, layer in result.layers.items() for u in range(layer.units))
    n_cards = sum(layer.units for layer in result.layers.values())
    layer_opts = "".join(f'<option value="{_esc(n)}">{_esc(n)}</option>' for n in result.layers)
    labelled = {c for layer in result.layers.values() for c in layer.label}
    concept_opts = "".join(f'<option value="{_esc(c)}">{_esc(c)}</option>' for c in result.concepts if c in labelled)
    title = f"GAN dissection · {os.path.basename(str(model))} · {', '.join(result.layers)}"
    data = json.dumps({"layers": list(result.layers), "concepts": result.concepts}).replace("</", "<\\/")
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{CSP}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="referrer" content="no-referrer">
<link rel="icon" href="data:,">
<title>{_esc(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>GAN dissection</h1>
<div class="sub">Which units of the generator match which concepts: IoU of each unit's thresholded,
upsampled activation with each concept's segmentation, summed over all samples.</div>
<h2>Summary</h2>
<table class="kv">{settings_table}</table>
<h2>Layers</h2>
<table class="grid"><tr><th>layer</th><th>units</th><th>map</th><th>interpretable</th><th>concepts</th>
<th>labels</th></tr>
{''.join(layer_rows)}</table>
<h2>Interpretable units per concept</h2>
<div class="sub">Click a bar to show its units.</div>
<div class="charts">{charts}</div>
<h2>Concepts in the generated images</h2>
<table class="grid"><tr><th>concept</th><th>pixels</th></tr>{coverage}</table>
<h2>Units</h2>
<div class="sub">Each strip shows the unit's top-activating samples, with the region above its threshold tinted
and the rest darkened.</div>
<div class="controls" id="controls">
<label>layer <select id="f-layer"><option value="">all</option>{layer_opts}</select></label>
<label>concept <select id="f-concept"><option value="">all</option>{concept_opts}</select></label>
<label><input type="checkbox" id="f-interp"> interpretable only</label>
<label>sort by <select id="f-sort"><option value="iou">IoU</option><option value="unit">unit</option>
<option value="concept">concept</option></select></label>
<span><span id="shown">{n_cards}</span> of {n_cards} units</span>
</div>
<div id="units">{cards}</div>
<div id="empty" style="display:none">No unit matches these filters.</div>
<script type="application/json" id="report-data">{data}</script>
<script>{SCRIPT}</script>
</body>
</html>
"""
