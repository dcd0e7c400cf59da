"""`evaluate`: a model's sample quality against real data, everything together, in one result.

FID, KID and k-NN precision/recall on features from a pluggable extractor (see `features`), with
the same numbers for two halves of the real data beside them (the floor); class coverage with a
classifier, and concept pixel frequencies with a segmenter. `training_fid` is the hook
`gantools train --eval-every` calls.

Under torchrun each process generates and judges its own block of the batches one process would run
(the samples are `sample_z(n, seed)`, drawn whole), and their features, class probabilities and
concept counts are gathered in that order; rank 0 computes the real images' statistics (and fills the
cache) and the scores, which every process receives. The result equals the one-process result.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

import torch
from torch import nn

from .. import distributed
from ..classifier import CLASSIFIER_COMPONENT, CONFIDENT, Classifier, ClassCoverage, coverage_from_probs, \
    resolve_classifier
from ..defaults import EVALUATE, MODEL as DEFAULT_MODEL
from ..models import GAN, Generator, fingerprint, load_model
from ..segmenters import SEGMENTER_COMPONENT, Segmenter, describe_segmenter, resolve_segmenter
from ..utils import GantoolsError, ProgressCallback, from_uint8, notice, report, resolve_device, to_uint8
from .features import FeatureExtractor, random_conv_extractor, resolve_extractor, stable_hash
from .reference import Consumer, ReferenceSet, reference_features, reference_statistics
from .scores import fid, kid, precision_recall, real_floor, tv_distance

if TYPE_CHECKING:
    from ..types import DeviceSpec, SegmenterSpec

METRICS = ("fid", "kid", "pr", "classes", "concepts")


@dataclass
class ConceptStats:
    """Each concept's share of pixels in generated and real images, as one segmenter labels them.

    Args:
        concepts: concept names.
        generated: pixel frequency per concept in generated images (sums to 1).
        real: the same in real images, through the same segmenter (so its errors affect both alike).
        tv_distance: total variation distance 0.5 * sum |generated - real| (0 equal, 1 disjoint).
        segmenter: description of the segmenter.
        real_truth: real frequencies from ground-truth labels, when the data has them (scenes).
    """

    concepts: list[str]
    generated: list[float]
    real: list[float]
    tv_distance: float
    segmenter: str
    real_truth: list[float] | None = None

    def relative_difference(self, min_frequency: float = 0.01) -> dict[str, float]:
        """(generated - real) / real for concepts above `min_frequency` of real pixels."""
        return {c: (g - r) / r for c, g, r in zip(self.concepts, self.generated, self.real) if r > min_frequency}

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["relative_difference"] = self.relative_difference()
        return d


MAX_CONCEPTS = 256  # ground-truth label ids are counted up to this


def _truth_frequencies(entry: dict[str, Any], concepts: list[str]) -> list[float] | None:
    """Ground-truth pixel frequencies in the segmenter's concept order, when the data's labels use
    the same concepts (matched by name); None otherwise (e.g. colour terms vs scene concepts)."""
    truth = entry.get("truth")
    data_concepts = json.loads(entry.get("data_concepts") or "[]")
    if truth is None or not data_concepts or not set(concepts) <= set(data_concepts) or truth.sum() <= 0:
        return None
    picked = torch.stack([truth[data_concepts.index(c)] for c in concepts])
    return (picked / truth.sum()).tolist()


def _label_counts(labels: torch.Tensor, k: int) -> torch.Tensor:
    labels = labels.flatten().long().cpu()
    labels = labels[(labels >= 0) & (labels < k)]
    return torch.bincount(labels, minlength=k).double()


def _segmenter_fingerprint(seg: Any) -> str:
    if isinstance(seg, nn.Module):
        return stable_hash("segmenter", fingerprint(seg))
    return stable_hash("segmenter", type(seg).__name__, list(getattr(seg, "concepts", [])))


@dataclass
class EvalResult:
    """What `evaluate` measured. Scores are comparable only between results with the same extractor fingerprint.

    Args:
        model: model path; model_fingerprint: hash of the generator's weights.
        data: the reference data; n_generated, n_real: sample counts; seed: seed of the generated samples.
        extractor: name, fingerprint, description and dim of the feature extractor.
        metrics: fid, kid, kid_std, precision, recall (those asked for).
        floor: the same metrics between two disjoint random halves of the real images (n: images per
            half), what a model indistinguishable from the real data would score with this extractor
            and this many images (see `real_floor`); empty when not measured.
        class_coverage: class shares of generated samples (with a classifier).
        concepts: concept pixel frequencies (with a segmenter).
        cache: which reference statistics came from the cache, and where.
        settings: the remaining settings (k, KID subsets...).
        seconds: wall time.
    """

    model: str
    model_fingerprint: str
    data: str | None
    n_generated: int
    n_real: int
    seed: int
    extractor: dict[str, Any] | None
    metrics: dict[str, float] = field(default_factory=dict)
    floor: dict[str, float] = field(default_factory=dict)
    class_coverage: ClassCoverage | None = None
    concepts: ConceptStats | None = None
    cache: dict[str, Any] = field(default_factory=dict)
    settings: dict[str, Any] = field(default_factory=dict)
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in ("model", "model_fingerprint", "data", "n_generated", "n_real", "seed",
                                            "extractor", "metrics", "floor", "cache", "settings", "seconds")}
        d["meaning"] = self.explain()
        d["class_coverage"] = self.class_coverage.to_dict() if self.class_coverage is not None else None
        d["concepts"] = self.concepts.to_dict() if self.concepts is not None else None
        return d

    def explain(self) -> dict[str, str]:
        """One line per metric measured: what its number means with this extractor, read against the floor."""
        if not self.metrics or self.extractor is None:
            return {}
        feats = f"{self.extractor['name']} features"
        fl = self.floor

        def real(key: str, text: str) -> str:
            if key not in fl:
                return ""
            return f"; real images score {text} against other real images ({fl['n']} + {fl['n']})"

        k = self.settings.get("k", 3)
        out = {}
        if "fid" in self.metrics:
            out["fid"] = (f"distance between the means and covariances of generated and real {feats}"
                          + (real("fid", f"{fl['fid']:.4g}") + ", the best a model can do here" if "fid" in fl
                             else "; 0 = identical")
                          + "; comparable only with the same extractor fingerprint and N")
        if "kid" in self.metrics:
            kid_text = f"{1000 * fl['kid']:.3g} ± {1000 * fl['kid_std']:.2g}" if "kid" in fl else ""
            out["kid"] = (f"the same comparison of {feats} (x1000) without FID's small-sample bias: about 0 when "
                          "generated and real images are alike" + real("kid", kid_text))
        if "precision" in self.metrics:
            out["precision"] = (f"share of generated images that land among real images ({k} nearest neighbours in "
                                f"{feats}): realism" + real("precision", f"{fl.get('precision', 0):.3f}"))
            out["recall"] = (f"share of real images that generated images reach ({k} nearest neighbours): how much "
                             "of the real variety the model covers" + real("recall", f"{fl.get('recall', 0):.3f}"))
        return out


def parse_metrics(metrics: str | Sequence[str], has_classifier: bool = False, has_segmenter: bool = False) -> list[str]:
    """"fid,kid,pr" -> ["fid", "kid", "pr"]; "auto" adds classes/concepts when the model has a
    classifier/learned segmenter beside it; "all" is every metric."""
    items = [m.strip().lower() for m in (metrics.split(",") if isinstance(metrics, str) else metrics) if m.strip()]
    out: list[str] = []
    for m in items:
        if m == "auto":
            add = ["fid", "kid", "pr"] + (["classes"] if has_classifier else []) + (["concepts"] if has_segmenter else [])
        elif m == "all":
            add = list(METRICS)
        elif m in METRICS:
            add = [m]
        elif m in ("precision", "recall", "precision_recall"):
            add = ["pr"]
        else:
            raise GantoolsError(f"unknown metric {m!r}: use {', '.join(METRICS)}, auto or all")
        out += [a for a in add if a not in out]
    if not out:
        raise GantoolsError(f"no metrics asked for: use {', '.join(METRICS)}, auto or all")
    return out


def _training_record(gan: "GAN") -> dict[str, Any]:
    training = (gan.metadata or {}).get("training")
    return training if isinstance(training, dict) else {}


def _data_from_model(gan: "GAN") -> str | None:
    data = _training_record(gan).get("data")
    return str(data) if data else None


def data_version_of(gan: "GAN", data: str | os.PathLike | None) -> int | None:
    """The design version of a built-in dataset that `gan` was trained on, when `data` is that dataset
    (models exported before versions were recorded were trained on version 1); else None (current)."""
    record = _training_record(gan)
    if data is None or str(data) != str(record.get("data")):
        return None
    return int(record.get("data_version") or 1)


@dataclass
class _Judges:
    """What `evaluate` measures with: the model, where it runs, and the networks that look at its images."""

    gan: GAN
    device: torch.device
    wanted: list[str]
    data: str | os.PathLike | None
    fx: FeatureExtractor | None
    clf: Classifier | None
    seg: Segmenter | None


@dataclass
class _Generated:
    """What the judges saw in the generated images: features, class probabilities, concept pixel counts."""

    features: list[torch.Tensor] = field(default_factory=list)
    probs: list[torch.Tensor] = field(default_factory=list)
    counts: torch.Tensor | None = None


def evaluate(model: "GAN | str | os.PathLike" = DEFAULT_MODEL, data: str | os.PathLike | None = None,
             n: int = EVALUATE.n, metrics: str | Sequence[str] = EVALUATE.metrics,
             extractor: str | os.PathLike | FeatureExtractor = EVALUATE.extractor,
             inception_weights: str | os.PathLike | None = None,
             classifier: "Classifier | str | os.PathLike | None" = None, segmenter: "SegmenterSpec | None" = None,
             seed: int = EVALUATE.seed, holdout: int = EVALUATE.holdout, k: int = EVALUATE.k,
             kid_subsets: int = EVALUATE.kid_subsets, kid_subset_size: int = EVALUATE.kid_subset_size,
             confidence: float = CONFIDENT, batch_size: int = EVALUATE.batch_size,
             use_cache: bool = EVALUATE.use_cache, device: "DeviceSpec" = None,
             progress: ProgressCallback | None = None, data_version: int | None = None,
             floor: bool = EVALUATE.floor) -> EvalResult:
    """Sample-quality metrics of a GAN against real data: FID, KID, precision/recall, class coverage, concepts.

    Args:
        model: a GAN or a model spec (file, run dir, pretrained name).
        data: reference data (built-in name or folder); default: the data the model was trained on,
            when its metadata records it.
        n: generated images (and at most this many reference images).
        metrics: comma-separated subset of fid, kid, pr, classes, concepts; "auto" = fid,kid,pr plus
            classes/concepts when the model has a classifier/learned segmenter beside it.
        extractor: see `resolve_extractor` ("auto", "classifier", "segmenter", "inception", "random", a file).
        inception_weights: a local torchvision Inception-v3 state dict (never downloaded).
        classifier: classifier for "classes" (a Classifier or path); default the model's companion.
        segmenter: segmenter for "concepts" (see segmenters.resolve_segmenter); default the model's companion.
        seed: seed of the generated samples.
        holdout: for folder data, compare with only the `holdout` images `data.split_holdout` leaves out.
        k: neighbourhood size for precision/recall.
        kid_subsets, kid_subset_size: KID's random subsets.
        confidence: top-class probability that counts as confidently classified.
        batch_size: images per forward pass.
        use_cache: use and fill the reference-statistics cache.
        device: where the networks run (None: where a loaded model lives, else "auto").
        progress: callback.
        data_version: design version of a built-in reference dataset; default: the version the model
            was trained on when `data` is its training data, else the current one.
        floor: also score two disjoint halves of the real images against each other (`real_floor`):
            what a perfect model would score with this extractor and N, to read the model's scores by.
    """
    start = time.monotonic()
    if n < 2:
        raise GantoolsError(f"n must be at least 2, got {n}")
    if k < 1 or kid_subsets < 1 or kid_subset_size < 2 or batch_size < 1:
        raise GantoolsError("k, kid_subsets and batch_size must be at least 1, kid_subset_size at least 2")
    distributed.start()  # under torchrun: join the group before a model lands on this process's GPU
    j = _judges(model, data, metrics, extractor, inception_weights, classifier, segmenter, device, progress)
    version = data_version if data_version is not None else data_version_of(j.gan, j.data)
    # rank 0 reads the real images (and fills the cache) for every process
    entries, cache = distributed.on_main(lambda: _reference(j, n, holdout, batch_size, use_cache, progress, version))
    n_real = cache.pop("n_real", 0)
    seen = _generate(j, n, seed, batch_size, progress)
    scores: dict[str, float] = {}
    floor_scores: dict[str, float] = {}
    if j.fx is not None:
        real, fake = entries["features"]["features"], torch.cat(seen.features)
        settings = _ScoreSettings(j.wanted, k, kid_subsets, kid_subset_size, seed, n_real, floor)
        scores, floor_scores = distributed.on_main(lambda: _feature_scores(real, fake, settings, progress))
    coverage = coverage_from_probs(torch.cat(seen.probs), j.clf.classes, confidence) if j.clf is not None else None
    concepts = _concept_stats(j.seg, entries["concepts"], seen.counts) if j.seg is not None else None
    return EvalResult(
        model=str(j.gan.path) if j.gan.path else "(in memory)", model_fingerprint=fingerprint(j.gan.generator),
        data=str(j.data) if j.data is not None else None, n_generated=n, n_real=n_real, seed=seed,
        extractor=j.fx.info() if j.fx is not None else None, metrics=scores, floor=floor_scores,
        class_coverage=coverage, concepts=concepts,
        cache=cache, settings={"metrics": j.wanted, "k": k, "kid_subsets": kid_subsets,
                               "kid_subset_size": min(kid_subset_size, n, n_real or n), "confidence": confidence,
                               "holdout": holdout},
        seconds=round(time.monotonic() - start, 2))


def _judges(model: "GAN | str | os.PathLike", data: str | os.PathLike | None, metrics: str | Sequence[str],
            extractor: str | os.PathLike | FeatureExtractor, inception_weights: str | os.PathLike | None,
            classifier: "Classifier | str | os.PathLike | None", segmenter: "SegmenterSpec | None",
            device: "DeviceSpec", progress: ProgressCallback | None) -> _Judges:
    """Load the model and resolve what `evaluate` was asked to measure, and with what."""
    gan = load_model(model, device)
    dev = resolve_device(device, gan)
    has_classifier = classifier is not None or gan.companion(CLASSIFIER_COMPONENT) is not None
    has_segmenter = segmenter is not None or gan.companion(SEGMENTER_COMPONENT) is not None
    wanted = parse_metrics(metrics, has_classifier=has_classifier, has_segmenter=has_segmenter)
    need_features = any(m in wanted for m in ("fid", "kid", "pr"))
    data = data if data is not None else _data_from_model(gan)
    if data is None and (need_features or "concepts" in wanted):
        raise GantoolsError("give the reference data (data): a folder of images or a built-in name such as scenes")
    fx = resolve_extractor(extractor, gan, gan.config.nc, inception_weights, dev, progress) if need_features else None
    clf = None
    if "classes" in wanted:
        if classifier is None and fx is not None and fx.name == "classifier":
            clf = fx.module  # the extractor's own classifier: one pass gives features and classes
        else:
            clf = resolve_classifier(classifier, gan if classifier is None else None, dev)
    seg = resolve_segmenter(segmenter, gan=gan, device=dev) if "concepts" in wanted else None
    return _Judges(gan, dev, wanted, data, fx, clf, seg)


def _reference(j: _Judges, n: int, holdout: int, batch_size: int, use_cache: bool, progress: ProgressCallback | None,
               version: int | None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """The real images' statistics for every judge (cached): features, and concept pixel counts."""
    consumers = []
    if j.fx is not None:
        fx = j.fx
        consumers.append(Consumer("features", fx.fingerprint, lambda x, _: {"features": fx(x)}, "cat"))
    if j.seg is not None:
        consumers.append(_concept_consumer(j.seg, j.device))
    if not consumers:
        return {}, {}
    cfg = j.gan.config
    ref = ReferenceSet(j.data, cfg.image_size, cfg.nc, n, holdout=holdout, version=version)
    return reference_statistics(ref, consumers, batch_size, use_cache, progress)


def _concept_consumer(seg: Segmenter, device: torch.device) -> Consumer:
    kc = len(seg.concepts)

    def seg_counts(x: torch.Tensor, labels: torch.Tensor | None) -> dict[str, torch.Tensor]:
        out = {"counts": _label_counts(seg(from_uint8(x).to(device)), kc)}
        if labels is not None:  # ground truth, in the dataset's own concept ids (mapped by name later)
            out["truth"] = _label_counts(labels, MAX_CONCEPTS)
        return out

    return Consumer("concepts", _segmenter_fingerprint(seg), seg_counts, "sum")


def _generate(j: _Judges, n: int, seed: int, batch_size: int, progress: ProgressCallback | None) -> _Generated:
    """Generated samples, streamed: quantised to uint8 like real images, then shown to every judge.
    Under torchrun, this process's block of the batches, then every process's, gathered in order."""
    g = j.gan.generator
    was_training = g.training
    g.eval()
    z_all = g.sample_z(n, seed, device="cpu")
    part = distributed.world().shard_batches(n, batch_size) if distributed.active() else range(n)
    seen = _Generated()
    try:
        with torch.no_grad():
            for i in range(part.start, part.stop, batch_size):
                images = from_uint8(to_uint8(g(z_all[i:i + batch_size].to(j.device))))
                _judge(j, images, seen)
                report(progress, "generated samples", min(i + batch_size, part.stop) - part.start, len(part))
    finally:
        g.train(was_training)
    return _gathered(seen)


def _gathered(seen: _Generated) -> _Generated:
    """Every process's `_Generated`, in rank order (features and probabilities joined, counts summed)."""
    if not distributed.active():
        return seen
    parts = distributed.gather_objects(seen)
    counts = [p.counts for p in parts if p.counts is not None]
    return _Generated(features=[f for p in parts for f in p.features], probs=[q for p in parts for q in p.probs],
                      counts=torch.stack(counts).sum(0) if counts else None)


def _judge(j: _Judges, images: torch.Tensor, seen: _Generated) -> None:
    if j.fx is not None and j.clf is not None and j.fx.module is j.clf:
        f, p = j.clf.features_and_proba(images.to(j.device))  # one pass for both
        seen.features.append(f.float().cpu())
        seen.probs.append(p.cpu())
    else:
        if j.fx is not None:
            seen.features.append(j.fx(images))
        if j.clf is not None:
            seen.probs.append(j.clf.predict_proba(images).cpu())
    if j.seg is not None:
        c = _label_counts(j.seg(images), len(j.seg.concepts))
        seen.counts = c if seen.counts is None else seen.counts + c


@dataclass(frozen=True)
class _ScoreSettings:
    """What the feature scores are computed with (see `evaluate` for each)."""

    wanted: list[str]
    k: int
    kid_subsets: int
    kid_subset_size: int
    seed: int
    n_real: int
    floor: bool


def _feature_scores(real: torch.Tensor, fake: torch.Tensor, s: _ScoreSettings,
                    progress: ProgressCallback | None) -> tuple[dict[str, float], dict[str, float]]:
    """FID, KID and precision/recall of the generated features against the real ones, and their floor."""
    scores: dict[str, float] = {}
    if "fid" in s.wanted:
        scores["fid"] = fid(real, fake)
    if "kid" in s.wanted:
        scores["kid"], scores["kid_std"] = kid(real, fake, s.kid_subsets, s.kid_subset_size, s.seed)
    if "pr" in s.wanted:
        scores["precision"], scores["recall"] = precision_recall(real, fake, s.k)
    floor_scores: dict[str, float] = {}
    if s.floor:
        floor_scores = _floor(real, scores, s.wanted, s.k, s.kid_subsets, s.kid_subset_size, s.seed, s.n_real,
                              progress)
    return scores, floor_scores


def _floor(real: torch.Tensor, scores: dict[str, float], wanted: list[str], k: int, kid_subsets: int,
           kid_subset_size: int, seed: int, n_real: int, progress: ProgressCallback | None) -> dict[str, float]:
    """`real_floor` for the metrics asked for, with a notice for those the real images are too few for."""
    floor_scores = real_floor(real, wanted, k, kid_subsets, kid_subset_size, seed)
    missing = [m for m in ("fid", "kid", "precision") if m in scores and m not in floor_scores]
    if missing:
        notice(progress, f"{n_real} real images are too few to score two halves against each other for "
                         f"{', '.join(missing)}: no floor to read those by")
    return floor_scores


def _concept_stats(seg: Segmenter, entry: dict[str, Any], gen_counts: torch.Tensor) -> ConceptStats:
    gen_p = gen_counts / gen_counts.sum()
    real_p = entry["counts"] / entry["counts"].sum()
    return ConceptStats(list(seg.concepts), gen_p.tolist(), real_p.tolist(), tv_distance(gen_p, real_p),
                        describe_segmenter(seg), _truth_frequencies(entry, list(seg.concepts)))


# ---------------------------------------------------------------------------------------------
# The training hook

TRAINING_EXTRACTOR = "random-conv"
TRAINING_SEED = 0


def training_fid(generator: Generator, data: str | os.PathLike, image_size: int, nc: int, n: int = 1000,
                 device: "DeviceSpec" = None, version: int | None = None) -> float:
    """FID of a generator during training, on the seeded random-conv extractor (needs no companion).

    The same extractor, the same n and the same latent seed at every call, with the reference features
    cached, so successive checkpoints' scores are comparable with each other (and only with other
    "random-conv" FIDs: see `TRAINING_EXTRACTOR`). The generator's train/eval mode is restored.

    Args:
        generator: the generator being trained.
        data: the training data (built-in name or folder).
        image_size, nc: its images' size and channels.
        n: generated and reference images.
        device: where to run (None: where the generator lives).
        version: design version of a built-in dataset (default: its current one).
    """
    dev = resolve_device(device, generator)
    fx = _training_extractor(nc, dev)
    real = reference_features(data, fx, image_size, nc, n=n, version=version)
    was_training = generator.training
    generator.eval()
    feats = []
    try:
        with torch.no_grad():
            z = generator.sample_z(n, TRAINING_SEED, device="cpu")
            for i in range(0, n, 100):
                feats.append(fx(from_uint8(to_uint8(generator(z[i:i + 100].to(dev))))))
    finally:
        generator.train(was_training)
    return fid(real, torch.cat(feats))


_TRAINING_FX: dict[tuple[int, str], FeatureExtractor] = {}


def _training_extractor(nc: int, device: torch.device) -> FeatureExtractor:
    key = (nc, str(device))
    if key not in _TRAINING_FX:
        _TRAINING_FX[key] = random_conv_extractor(nc, device)
    return _TRAINING_FX[key]


__all__ = ["MAX_CONCEPTS", "METRICS", "TRAINING_EXTRACTOR", "TRAINING_SEED", "ConceptStats",
           "EvalResult", "data_version_of", "evaluate", "parse_metrics", "training_fid"]
