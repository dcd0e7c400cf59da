"""The dissection HTML report: self-contained, and working in a real headless browser (Debian's chromium).

The browser is Playwright's `browser_page` fixture (tests/browser.py, the suite's one way to drive
a browser). The test fails on any console error, uncaught exception or network request other than
file: and data: URLs, and checks that filtering and sorting work.
"""

from __future__ import annotations

import json
import re

import pytest
import torch

from gantools.dissection import dissect, load_report, render_examples
from gantools.dissection.examples import unit_strip
from gantools.dissection.report import dissection_html, write_dissection_html
from gantools.reports import data_uri, image_row
from browser import browser_page  # noqa: F401  (the suite's one Playwright fixture)
from test_dissection import Planted, planted_segmenter  # a generator whose units copy known concepts


@pytest.fixture(scope="module")
def planted_result():
    torch.manual_seed(0)
    return dissect(Planted(), layers=1, segmenter=planted_segmenter, n=48, seed=0, quantile=4 / 64, batch_size=16,
                   min_iou=0.2, top_k=4)


# ---------------------------------------------------------------------------------------------
# Static checks


def test_html_is_self_contained(planted_result, tmp_path):
    path = write_dissection_html(planted_result, tmp_path / "report.html")
    text = path.read_text(encoding="utf-8")
    assert "Content-Security-Policy" in text and "default-src 'none'" in text
    # no remote or relative resources of any kind
    assert not re.search(r"""(src|href)\s*=\s*["'](?!data:|#)""", text)
    assert "http://" not in text and "https://" not in text and "@import" not in text and "url(" not in text
    layer = planted_result.layers["layer1"]
    srcs = re.findall(r'<img class="strip"[^>]*src="([^"]+)"', text)
    assert len(srcs) == layer.units and all(s.startswith("data:image/png;base64,") for s in srcs)
    cards = re.findall(r'<div class="unit[^"]*" data-layer="layer1" data-unit="(\d+)" data-concept="([^"]+)"', text)
    assert [(int(u), c) for u, c in cards] == list(enumerate(layer.label))
    # the bar chart: one bar per concept with interpretable units, with its count
    bars = re.findall(r'<g class="bar" data-concept="([^"]+)" data-layer="layer1"><title>[^:]+: (\d+) unit', text)
    assert sorted((c, int(k)) for c, k in bars) == sorted((c, len(us)) for c, us in planted_result.summary()["layer1"].items())
    assert {c for c, _ in bars} == {"sky", "tree", "door", "water"}
    assert "<svg" in text and planted_result.settings["model_fingerprint"] in text


def test_html_escapes_names(planted_result):
    result = load_report_copy(planted_result)
    result.concepts[1] = result.layers["layer1"].concepts[1] = "<script>alert(1)</script>"
    text = dissection_html(result)
    assert "<script>alert(1)</script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text


def test_html_shows_stored_causal_effects(planted_result):
    result = load_report_copy(planted_result)
    result.layers["layer1"].ace["sky"] = [0.1 * (u + 1) for u in range(result.layers["layer1"].units)]
    text = dissection_html(result)
    assert "causal effect of ablating it alone: sky +0.1000" in text and "sky +0.6000" in text
    assert "causal effect" not in dissection_html(planted_result)


def test_html_says_how_labels_were_chosen(planted_result):
    text = dissection_html(planted_result)
    assert "top-6.25% quantile level, best IoU" in text and "no label" not in text
    # IQR: the layer's rule, and the dead unit (5) shown unlabelled, not as a concept
    iqr = dissect(Planted(), layers=1, segmenter=planted_segmenter, n=32, seed=0, threshold="iqr", batch_size=16,
                  min_iou=0.2, top_k=2)
    layer = iqr.layers["layer1"]
    assert layer.label == ["sky", "tree", "door", "water", layer.label[4], ""]
    text = dissection_html(iqr)
    assert "positively associated pairs only: levels above 0, concepts with at least 0.1% of the pixels" in text
    assert "IQR-optimal level, positively associated pairs only (1 unit(s) unlabelled" in text
    cards = {int(re.match(r'[^>]*data-unit="(\d+)"', c).group(1)): c for c in text.split('<div class="unit')[1:]
             if 'data-unit="' in c}
    assert ' weak" data-layer="layer1" data-unit="5" data-concept="" ' in cards[5]
    assert 'data-interp="0"' in cards[5] and ">no label</span>" in cards[5]
    assert "unlabelled: no positively associated concept at a level above 0" in cards[5]
    assert 'data-concept="sky"' in cards[0] and "unlabelled" not in cards[0]
    assert 'title="label: IQR-optimal level, positively associated pairs only"' in cards[0]


def load_report_copy(result):
    from gantools.dissection import DissectionResult

    return DissectionResult.from_dict(json.loads(json.dumps(result.to_dict())))


def test_loaded_report_has_no_strips_until_rendered(planted_result, tmp_path):
    planted_result.save(tmp_path / "a")
    loaded = load_report(tmp_path / "a")
    text = dissection_html(loaded)
    assert '<img class="strip"' not in text and "no images" in text
    render_examples(loaded, Planted())
    assert len(re.findall(r'<img class="strip"', dissection_html(loaded))) == loaded.layers["layer1"].units


def test_strip_highlights_the_thresholded_region(planted_result):
    import base64
    import io

    import numpy as np
    from PIL import Image

    layer = planted_result.layers["layer1"]
    uri = unit_strip(layer, 0)
    assert uri.startswith("data:image/png;base64,")
    strip = torch.from_numpy(np.array(Image.open(io.BytesIO(base64.b64decode(uri.split(",", 1)[1])))))
    k = int((layer.top_samples[0] >= 0).sum())
    assert strip.shape == (16, 16 * k + 2 * (k - 1), 3)
    for j in range(k):
        shown = strip[:, j * 18:j * 18 + 16].permute(2, 0, 1).float()
        original = layer.examples.images[0, j].float()
        # unit 0 copies concept 'sky' (id 1): exactly that region is tinted, the rest darkened
        sky = planted_segmenter(original[None] / 127.5 - 1)[0] == 1
        assert sky.any()
        tint = torch.tensor([255.0, 40.0, 40.0]).view(3, 1, 1)
        expected = torch.where(sky, 0.5 * original + 0.5 * tint, original * 0.65).round()
        assert (shown - expected).abs().max() <= 1


def test_image_helpers():
    a = torch.full((2, 3, 4, 5), 7, dtype=torch.uint8)
    row = image_row(a, gap=1)
    assert row.shape == (3, 4, 11) and int(row[0, 0, 5]) == 255 and int(row[0, 0, 6]) == 7
    assert data_uri(row).startswith("data:image/png;base64,")
    assert data_uri(torch.zeros(1, 64, 64, dtype=torch.uint8)).startswith("data:image/jpeg;base64,")
    with pytest.raises(ValueError):
        data_uri(torch.zeros(3, 4, 4))


# ---------------------------------------------------------------------------------------------
# A real browser


def test_report_in_headless_chromium(planted_result, tmp_path, browser_page):  # noqa: F811 - the fixture
    from gantools.dissection import HTML_FILE

    out = planted_result.save(tmp_path / "rep")
    layer = planted_result.layers["layer1"]
    page = browser_page.page
    page.goto((out / HTML_FILE).resolve().as_uri())
    n_units = layer.units
    assert page.evaluate("document.querySelectorAll('.unit:not(.hidden)').length") == n_units
    assert page.evaluate("document.getElementById('shown').textContent") == str(n_units)
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)") is True
    assert page.evaluate("document.images.length") == n_units
    # default order: by IoU, best first
    order = page.evaluate("Array.from(document.querySelectorAll('.unit')).map(c => +c.dataset.unit)")
    assert order == [int(u) for u in torch.sort(-layer.best_iou.double(), stable=True).indices]
    # filter by concept (all units labelled 'tree', then only the interpretable ones)
    labelled_tree = [u for u, c in enumerate(layer.label) if c == "tree"]
    visible = page.evaluate("""(() => { const s = document.getElementById('f-concept'); s.value = 'tree';
        s.dispatchEvent(new Event('change'));
        return Array.from(document.querySelectorAll('.unit:not(.hidden)')).map(c => +c.dataset.unit); })()""")
    assert sorted(visible) == labelled_tree
    visible = page.evaluate("""(() => { const b = document.getElementById('f-interp'); b.checked = true;
        b.dispatchEvent(new Event('change'));
        return Array.from(document.querySelectorAll('.unit:not(.hidden)')).map(c => +c.dataset.unit); })()""")
    assert visible == layer.units_for("tree") == [1]
    # sort by unit number, all concepts
    order = page.evaluate("""(() => { const c = document.getElementById('f-concept'); c.value = '';
        c.dispatchEvent(new Event('change')); const b = document.getElementById('f-interp'); b.checked = false;
        b.dispatchEvent(new Event('change')); const s = document.getElementById('f-sort'); s.value = 'unit';
        s.dispatchEvent(new Event('change'));
        return Array.from(document.querySelectorAll('.unit:not(.hidden)')).map(c => +c.dataset.unit); })()""")
    assert order == list(range(n_units))
    # clicking a bar of the chart filters to that concept's interpretable units
    visible = page.evaluate("""(() => { document.querySelector('.bar[data-concept="water"]')
        .dispatchEvent(new MouseEvent('click', {bubbles: true}));
        return Array.from(document.querySelectorAll('.unit:not(.hidden)')).map(c => +c.dataset.unit); })()""")
    assert visible == [3]
    assert page.evaluate("document.getElementById('empty').style.display") == "none"
    page.wait_for_timeout(500)  # late console messages or requests
    assert browser_page.problems(allowed=("file:",)) == []
    assert browser_page.requests, "Playwright saw no request at all: the network check would be vacuous"
