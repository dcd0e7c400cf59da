"""gantools: train DCGANs, then open them up (dissection, unit interventions, GAN-prior inversion).

The public API, in the order of the work: data -> models -> training -> judges -> analysis ->
restoration. Names are imported lazily (PEP 562), so `import gantools` and `gantools --help` stay
fast: torch loads the first time a name that needs it is used. The `TYPE_CHECKING` block below
gives editors and type checkers the real types.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .utils import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    # shared: errors, progress, configs, devices
    from .utils import (GantoolsError, Progress, Config, get_device, resolve_device)
    # data: images, folders, built-in scenes
    from .data import (load_image, save_image, save_grid, open_dataset, open_split, ImageFolder,
                       LabelledFolder)
    from .scenes import (Scenes, CONCEPTS, concept_frequencies, write_scenes, WriteScenesResult)
    # models and the model file
    from .models import (ModelConfig, Generator, Discriminator, GAN, load_model, save_model)
    from .hooks import (Trace, TraceDict, resolve_layer)
    # training, sampling
    from .training import (TrainConfig, TrainResult, train, export)
    from .sampling import (sample, generate, interpolate, latent_arithmetic, ArithmeticResult,
                           interpolation_figure, save_interpolation)
    # judges: segmenters, classifiers, metrics
    from .segmenters import (Segmenter, ColorSegmenter, GroundTruthSegmenter, LearnedSegmenter,
                             SegmenterConfig, SegmenterEvalResult, SegmenterTrainResult,
                             load_segmenter, resolve_segmenter, save_segmenter, train_segmenter,
                             evaluate_segmenter)
    from .classifier import (Classifier, ClassifierTrainResult, ClassifierEvalResult,
                             train_classifier, load_classifier, evaluate_classifier, class_coverage)
    from .metrics import (evaluate, EvalResult, fid, kid, precision_recall, FeatureExtractor,
                          resolve_extractor, training_fid)
    # analysis: dissection, unit interventions, editing
    from .dissection import (dissect, DissectionResult, LayerDissection, load_report,
                             record_ranking, default_layer)
    from .units import (UnitChoice, WeakConceptError)
    from .interventions import (Intervention, intervene, ablate, insert, InterventionEffect,
                                AblationResult, InsertionResult)
    from .ranking import (rank_units, rank_concepts, greedy_units, RankResult, RankResults,
                          JointUnits)
    from .editing import (edit, EditResult)
    # restoration: inversion, encoders
    from .restoration import (invert, InversionResult, ObjectiveWeights, make_degradation,
                              Degradation, Reconstruct, Inpaint, Colorize, Denoise, SuperResolution,
                              convert_channels, Encoder, EncoderConfig, EncoderTrainResult,
                              EncoderEvalResult, train_encoder, evaluate_encoder, load_encoder,
                              save_encoder)
    # older names, kept so that old scripts run
    from .data import LabeledFolder
    from .segmenters import SegmenterEval
    from .restoration import EncoderTraining

# public name -> module (relative to this package) that exports it
_EXPORTS: dict[str, str] = {
    # shared: errors, progress, configs, devices
    "GantoolsError": "utils", "Progress": "utils", "Config": "utils", "get_device": "utils", "resolve_device":
    "utils",
    # data: images, folders, built-in scenes
    "load_image": "data", "save_image": "data", "save_grid": "data", "open_dataset": "data", "open_split":
    "data", "ImageFolder": "data", "LabelledFolder": "data",
    "Scenes": "scenes", "CONCEPTS": "scenes", "concept_frequencies": "scenes", "write_scenes": "scenes",
    "WriteScenesResult": "scenes",
    # models and the model file
    "ModelConfig": "models", "Generator": "models", "Discriminator": "models", "GAN": "models", "load_model":
    "models", "save_model": "models",
    "Trace": "hooks", "TraceDict": "hooks", "resolve_layer": "hooks",
    # training, sampling
    "TrainConfig": "training", "TrainResult": "training", "train": "training", "export": "training",
    "sample": "sampling", "generate": "sampling", "interpolate": "sampling", "latent_arithmetic": "sampling",
    "ArithmeticResult": "sampling", "interpolation_figure": "sampling", "save_interpolation": "sampling",
    # judges: segmenters, classifiers, metrics
    "Segmenter": "segmenters", "ColorSegmenter": "segmenters", "GroundTruthSegmenter": "segmenters",
    "LearnedSegmenter": "segmenters", "SegmenterConfig": "segmenters", "SegmenterEvalResult": "segmenters",
    "SegmenterTrainResult": "segmenters", "load_segmenter": "segmenters", "resolve_segmenter": "segmenters",
    "save_segmenter": "segmenters", "train_segmenter": "segmenters", "evaluate_segmenter": "segmenters",
    "Classifier": "classifier", "ClassifierTrainResult": "classifier", "ClassifierEvalResult": "classifier",
    "train_classifier": "classifier", "load_classifier": "classifier", "evaluate_classifier": "classifier",
    "class_coverage": "classifier",
    "evaluate": "metrics", "EvalResult": "metrics", "fid": "metrics", "kid": "metrics", "precision_recall":
    "metrics", "FeatureExtractor": "metrics", "resolve_extractor": "metrics", "training_fid": "metrics",
    # analysis: dissection, unit interventions, editing
    "dissect": "dissection", "DissectionResult": "dissection", "LayerDissection": "dissection", "load_report":
    "dissection", "record_ranking": "dissection", "default_layer": "dissection",
    "UnitChoice": "units", "WeakConceptError": "units",
    "Intervention": "interventions", "intervene": "interventions", "ablate": "interventions", "insert":
    "interventions", "InterventionEffect": "interventions", "AblationResult": "interventions",
    "InsertionResult": "interventions",
    "rank_units": "ranking", "rank_concepts": "ranking", "greedy_units": "ranking", "RankResult": "ranking",
    "RankResults": "ranking", "JointUnits": "ranking",
    "edit": "editing", "EditResult": "editing",
    # restoration: inversion, encoders
    "invert": "restoration", "InversionResult": "restoration", "ObjectiveWeights": "restoration",
    "make_degradation": "restoration", "Degradation": "restoration", "Reconstruct": "restoration", "Inpaint":
    "restoration", "Colorize": "restoration", "Denoise": "restoration", "SuperResolution": "restoration",
    "convert_channels": "restoration", "Encoder": "restoration", "EncoderConfig": "restoration",
    "EncoderTrainResult": "restoration", "EncoderEvalResult": "restoration", "train_encoder": "restoration",
    "evaluate_encoder": "restoration", "load_encoder": "restoration", "save_encoder": "restoration",
    # older names
    "LabeledFolder": "data", "SegmenterEval": "segmenters", "EncoderTraining": "restoration",
}


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


__all__ = sorted(_EXPORTS)
