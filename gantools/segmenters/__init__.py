"""Segmenters: label every pixel of an image with a concept.

Dissection and interventions measure concepts in generated images through the `Segmenter`
protocol: an object (or a function with a `concepts` attribute) with a list of concept names that
maps images in [-1, 1] (N x C x H x W, any device) to labels (N x H x W int64, same device, same
resolution). This package provides three:

- `ColorSegmenter` (builtin): no training; each pixel gets one of the 11 basic colour terms (nearest
  prototype in CIELAB), so any RGB or grayscale generator can be dissected for colours.
- `LearnedSegmenter` (learned): a segmentation-models-pytorch network (Unet with a small timm RegNet
  encoder by default) trained with `train_segmenter` (training) on a labelled dataset (scenes, or a
  folder with images/, labels/ and concepts.json). Encoders start from scratch: nothing is downloaded.
- `GroundTruthSegmenter` (builtin): the exact labels of a labelled dataset's own images (looked up by
  content), to validate the others and the evaluation code.

`resolve_segmenter` (resolve) turns any segmenter spec into a Segmenter; `evaluate_segmenter`
(evaluation) scores one on a labelled dataset (per-concept IoU and mIoU). `config` holds the settings
and defaults without torch, for the CLI. Every public name is re-exported here, lazily.
"""

from __future__ import annotations

from ..utils import lazy_exports
from .config import CONFIG_KEY, DEFAULT_ARCH, DEFAULT_DECODER_CHANNELS, DEFAULT_ENCODER, DEFAULT_ENCODER_DEPTH, \
    EVAL_SCENES, EVAL_SEED, IMAGENET_MEAN, IMAGENET_STD, SEGMENTER_COMPONENT, SegmenterConfig, SegmenterTrainConfig, \
    eval_defaults, is_scenes, parse_decoder_channels

# No TYPE_CHECKING imports of the modules below: gantools.types names this package's Segmenter, and
# those modules are typed with gantools.types' aliases (a cycle for the import-graph check).
_LAZY = {
    "COLOR_PROTOTYPES": "builtin", "COLOR_TERMS": "builtin", "ColorSegmenter": "builtin",
    "GroundTruthSegmenter": "builtin",
    "SegmenterEval": "evaluation", "SegmenterEvalResult": "evaluation", "concept_map": "evaluation",
    "evaluate_segmenter": "evaluation",
    "TensorPairs": "labelled", "load_pairs": "labelled", "open_labelled": "labelled", "require_labelled": "labelled",
    "LearnedSegmenter": "learned", "architectures": "learned", "check_arch_encoder": "learned",
    "load_encoder_weights": "learned", "load_learned_segmenter": "learned", "save_segmenter": "learned",
    "Segmenter": "protocol", "check_images": "protocol", "check_labels": "protocol", "describe_segmenter": "protocol",
    "COLOR_NAMES": "resolve", "load_segmenter": "resolve", "resolve_segmenter": "resolve",
    "VALIDATION_SEED_OFFSET": "training", "SegmenterTrainResult": "training", "train_segmenter": "training",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["COLOR_NAMES", "COLOR_PROTOTYPES", "COLOR_TERMS", "CONFIG_KEY", "ColorSegmenter", "DEFAULT_ARCH",
           "DEFAULT_DECODER_CHANNELS", "DEFAULT_ENCODER", "DEFAULT_ENCODER_DEPTH", "EVAL_SCENES",
           "EVAL_SEED", "GroundTruthSegmenter", "IMAGENET_MEAN", "IMAGENET_STD", "LearnedSegmenter",
           "SEGMENTER_COMPONENT", "Segmenter", "SegmenterConfig", "SegmenterEval", "SegmenterEvalResult",
           "SegmenterTrainConfig", "SegmenterTrainResult", "TensorPairs", "VALIDATION_SEED_OFFSET",
           "architectures", "check_arch_encoder", "check_images", "check_labels", "concept_map",
           "describe_segmenter", "eval_defaults", "evaluate_segmenter", "is_scenes", "load_encoder_weights",
           "load_learned_segmenter", "load_pairs", "load_segmenter", "open_labelled",
           "parse_decoder_channels", "require_labelled", "resolve_segmenter", "save_segmenter",
           "train_segmenter"]
