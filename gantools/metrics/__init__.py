"""Image-quality numbers on the [0, 1] intensity scale, and sample-quality metrics (FID, KID, precision/recall).

The modules: `scores` (PSNR, SSIM, FID, KID, precision/recall, the real-vs-real floor: numbers from
images or features), `features` (the pluggable feature extractors), `reference` (real-data
statistics, cached per dataset and extractor) and `evaluation` (`evaluate`, which puts them together,
and `training_fid`, the hook `gantools train --eval-every` calls). Every public name is re-exported
here: `from gantools.metrics import evaluate` is the import to use.

Scores from different extractors are not comparable: every result records its extractor's fingerprint.
"""

from .evaluation import MAX_CONCEPTS, METRICS, TRAINING_EXTRACTOR, TRAINING_SEED, ConceptStats, EvalResult, \
    data_version_of, evaluate, parse_metrics, training_fid
from .features import EXTRACTOR_CHOICES, INCEPTION_HOWTO, NO_FEATURES, RANDOM_CONV_SEED, RANDOM_CONV_SIZE, \
    FeatureExtractor, RandomConvNet, classifier_extractor, extractor_file_kind, inception_extractor, \
    random_conv_extractor, resolve_extractor, segmenter_extractor, stable_hash
from .reference import CACHE_VERSION, Consumer, ReferenceSet, cache_dir, cache_key, dataset_signature, \
    reference_features, reference_statistics
from .scores import as_f64, feature_stats, fid, frechet_distance, kid, mmd2_polynomial, precision_recall, psnr, \
    real_floor, ssim, tv_distance

__all__ = ["CACHE_VERSION", "EXTRACTOR_CHOICES", "INCEPTION_HOWTO", "MAX_CONCEPTS", "METRICS", "NO_FEATURES",
           "RANDOM_CONV_SEED", "RANDOM_CONV_SIZE", "TRAINING_EXTRACTOR", "TRAINING_SEED", "ConceptStats", "Consumer",
           "EvalResult", "FeatureExtractor", "RandomConvNet", "ReferenceSet", "as_f64", "cache_dir", "cache_key",
           "classifier_extractor", "data_version_of", "dataset_signature", "evaluate", "extractor_file_kind",
           "feature_stats", "fid", "frechet_distance", "inception_extractor", "kid", "mmd2_polynomial", "parse_metrics",
           "precision_recall", "psnr", "random_conv_extractor", "real_floor", "reference_features",
           "reference_statistics", "resolve_extractor", "segmenter_extractor", "ssim", "stable_hash",
           "training_fid", "tv_distance"]
