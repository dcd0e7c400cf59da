"""The default settings of the library's long operations, each stated once (no torch here).

Each operation's function takes its keyword defaults from one frozen instance below
(`dissect(..., n=DISSECT.n)`), and the CLI's options read the same instances for their defaults and
`--help`, so no default is written twice. What each setting means is documented by the function
that takes it.

The module sits at the top of the package, not beside each operation, because importing
`gantools.dissection.<anything>` (likewise restoration, metrics) runs that package's `__init__`,
which imports torch; `gantools --help` imports this module and must stay fast.
"""

from __future__ import annotations

from dataclasses import dataclass


# The model that commands and `load_model`, `evaluate` and `open_studio` work on when none is named (a
# pretrained name), and where a command runs when no device is named ("auto": CUDA when present, else
# the CPU; see utils.resolve_device).
MODEL = "scenes64"
DEVICE = "auto"

# IQR mode never chooses a concept under this share of the selection samples' pixels: its counts are
# too small to trust (GAN Dissection's rule). Here so that `dissect --help` can quote it.
IQR_MIN_CONCEPT_SHARE = 1e-3


@dataclass(frozen=True)
class DissectDefaults:
    """`gantools.dissection.dissect`'s defaults; batch_size is also how many samples are generated
    at once when a report's example images are drawn again."""

    n: int = 2000
    seed: int = 0
    quantile: float = 0.01
    threshold: str = "quantile"
    min_iou: float = 0.04
    batch_size: int = 64
    top_k: int = 6


@dataclass(frozen=True)
class InvertDefaults:
    """`gantools.restoration.invert`'s defaults."""

    task: str = "reconstruct"
    scale: int = 4
    steps: int = 300
    restarts: int = 4
    composite: bool = True
    batch_size: int = 16
    lr: float = 0.2
    init_samples: int = 32
    seed: int = 0


@dataclass(frozen=True)
class EncoderTrainDefaults:
    """`gantools.restoration.train_encoder`'s defaults (holdout: `encoder_dataset`'s); width is also an
    `EncoderConfig`'s."""

    steps: int = 2000
    batch_size: int = 64
    width: int = 32
    lr: float = 1e-3
    latent_weight: float = 1.0
    pixel_weight: float = 1.0
    perceptual_weight: float = 0.1
    augment: float = 0.5
    deform: float = 0.0
    prior_weight: float = 0.0
    holdout: int = 0
    seed: int = 0


@dataclass(frozen=True)
class EvaluateDefaults:
    """`gantools.metrics.evaluate`'s defaults (its confidence is the classifier's CONFIDENT)."""

    n: int = 5000
    metrics: str = "auto"
    extractor: str = "auto"
    seed: int = 0
    holdout: int = 0
    k: int = 3
    kid_subsets: int = 100
    kid_subset_size: int = 1000
    batch_size: int = 100
    use_cache: bool = True
    floor: bool = True


@dataclass(frozen=True)
class ClassifierTrainDefaults:
    """`gantools.classifier.train_classifier`'s defaults, which are also `ClassifierConfig`'s (image_size,
    nc, width, feature_dim) and `ClassifierTrainConfig`'s (the rest)."""

    image_size: int = 32
    nc: int = 1
    epochs: int = 10
    batch_size: int = 64
    lr: float = 2e-3
    width: int = 32
    feature_dim: int = 128
    val_fraction: float = 0.1
    holdout: int = 0
    augment: bool = True
    seed: int = 0


@dataclass(frozen=True)
class ClassifierEvalDefaults:
    """`gantools.classifier.evaluate_classifier`'s defaults."""

    holdout: int = 0
    batch_size: int = 256


DISSECT = DissectDefaults()
INVERT = InvertDefaults()
ENCODER_TRAIN = EncoderTrainDefaults()
EVALUATE = EvaluateDefaults()
CLASSIFIER_TRAIN = ClassifierTrainDefaults()
CLASSIFIER_EVAL = ClassifierEvalDefaults()

__all__ = ["CLASSIFIER_EVAL", "CLASSIFIER_TRAIN", "DEVICE", "DISSECT", "ENCODER_TRAIN", "EVALUATE", "INVERT", "MODEL",
           "ClassifierEvalDefaults", "ClassifierTrainDefaults", "DissectDefaults", "EncoderTrainDefaults",
           "EvaluateDefaults", "InvertDefaults"]
