"""gantools: train DCGANs, then open them up (dissection, unit interventions, GAN-prior inversion).

The public API is imported lazily (PEP 562), so `import gantools` and `gantools --help` stay fast:
torch loads the first time a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it. Each issue's module adds its names here.
_EXPORTS: dict[str, str] = {
    # foundation
    "GantoolsError": "utils",
    "Progress": "utils",
    "get_device": "utils",
    "ModelConfig": "models",
    "Generator": "models",
    "Discriminator": "models",
    "GAN": "models",
    "load_model": "models",
    "save_model": "models",
    "load_image": "data",
    "save_image": "data",
    "save_grid": "data",
    "open_dataset": "data",
    "ImageFolder": "data",
    "Trace": "hooks",
    "TraceDict": "hooks",
    "resolve_layer": "hooks",
    # dissection (issue 5)
    "dissect": "dissection",
    "DissectionResult": "dissection",
    "LayerDissection": "dissection",
    "load_report": "dissection",
    # interventions (issue 6)
    "Intervention": "interventions",
    "intervene": "interventions",
    "InterventionEffect": "interventions",
    "ablate": "interventions",
    "insert": "interventions",
    "rank_units": "interventions",
    "AblationResult": "interventions",
    "InsertionResult": "interventions",
    "RankResult": "interventions",
    # built-in scenes (issue 3)
    "Scenes": "scenes",
    "CONCEPTS": "scenes",
    "concept_frequencies": "scenes",
    "write_scenes": "scenes",
    "LabeledFolder": "data",
    # evaluation (issue 8)
    "evaluate": "metrics",
    "EvalResult": "metrics",
    "fid": "metrics",
    "kid": "metrics",
    "precision_recall": "metrics",
    "FeatureExtractor": "metrics",
    "resolve_extractor": "metrics",
    "training_fid": "metrics",
    "Classifier": "classifier",
    "train_classifier": "classifier",
    "load_classifier": "classifier",
    "evaluate_classifier": "classifier",
    "class_coverage": "classifier",
    "TrainConfig": "training",
    "TrainResult": "training",
    "train": "training",
    "export": "training",
    "sample": "sampling",
    "generate": "sampling",
    "interpolate": "sampling",
    "latent_arithmetic": "sampling",
    # editing (issue 10)
    "edit": "editing",
    "EditResult": "editing",
    # inversion and encoders (issue 7)
    "invert": "restoration.inversion",
    "InversionResult": "restoration.inversion",
    "ObjectiveWeights": "restoration.inversion",
    "make_degradation": "restoration.inversion",
    "Degradation": "restoration.inversion",
    "Reconstruct": "restoration.inversion",
    "Inpaint": "restoration.inversion",
    "Colorize": "restoration.inversion",
    "Denoise": "restoration.inversion",
    "SuperResolution": "restoration.inversion",
    "Encoder": "restoration.encoder",
    "EncoderConfig": "restoration.encoder",
    "EncoderTraining": "restoration.encoder",
    "train_encoder": "restoration.encoder",
    "load_encoder": "restoration.encoder",
    "save_encoder": "restoration.encoder",
    # segmenters
    "Segmenter": "segmenters",
    "ColorSegmenter": "segmenters",
    "GroundTruthSegmenter": "segmenters",
    "LearnedSegmenter": "segmenters",
    "SegmenterConfig": "segmenters",
    "SegmenterEval": "segmenters",
    "load_segmenter": "segmenters",
    "save_segmenter": "segmenters",
    "train_segmenter": "segmenters",
    "evaluate_segmenter": "segmenters",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gantools' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
