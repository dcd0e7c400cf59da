"""Dissection: which generator units draw which concepts (Bau et al., ICLR 2019).

`engine` runs the statistics, `html` renders the offline report. The public names are re-exported
here, so `from gantools.dissection import dissect, load_report` is the import to use.
"""

from .engine import (HTML_FILE, IQR_SEED_OFFSET, REPORT_FILE, DissectionResult, LayerDissection, check_model, dissect,
                     information_quality_ratio, load_report, render_examples, unit_masks)

__all__ = ["HTML_FILE", "IQR_SEED_OFFSET", "REPORT_FILE", "DissectionResult", "LayerDissection", "check_model", "dissect",
           "information_quality_ratio", "load_report", "render_examples", "unit_masks"]
