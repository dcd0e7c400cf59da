"""Dissection: which generator units draw which concepts (Bau et al., ICLR 2019).

The modules, from the data up:
- `result`: what one layer's dissection holds (`LayerDissection`);
- `stats`, `upsample`, `accumulate`: the streaming statistics of a pass;
- `engine`: `dissect`, the passes over generated samples;
- `examples`: the samples' latents, unit masks and image strips;
- `html`: the self-contained report page, rendered from given data and strips;
- `report`: `DissectionResult`, and the report files (save, load, `record_ranking(s)`).
The public names are re-exported here, so `from gantools.dissection import dissect, load_report`
is the import to use.
"""

from .engine import DEFAULT_LAYER, IQR_SEED_OFFSET, default_layer, dissect, segmenter_source
from .examples import unit_masks, unit_strip
from .report import (HTML_FILE, REPORT_FILE, UNITS_FILE, DissectionResult, check_model, dissection_html, load_report,
                     record_ranking, record_rankings, render_examples, report_dir, write_dissection_html)
from .result import Examples, LayerDissection
from .stats import information_quality_ratio

__all__ = ["DEFAULT_LAYER", "HTML_FILE", "IQR_SEED_OFFSET", "REPORT_FILE", "UNITS_FILE", "DissectionResult", "Examples",
           "LayerDissection", "check_model", "default_layer", "dissect", "dissection_html", "information_quality_ratio",
           "load_report", "record_ranking", "record_rankings", "render_examples", "report_dir", "segmenter_source",
           "unit_masks", "unit_strip", "write_dissection_html"]
