"""Reference statistics of real data, computed once per (dataset, extractor) and cached on disk.

The cache lives in $GANTOOLS_CACHE/stats (default ~/.cache/gantools/stats), one file per dataset
signature, kind of statistic and extractor fingerprint; writes are atomic, and an in-process memo
spares training's repeated evaluations the reads.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import torch

from ..data import ImageFolder, batch_images, dataset_names, dataset_version, image_files, open_dataset, split_folder
from ..utils import GantoolsError, ProgressCallback, notice, report, torch_save
from .features import FeatureExtractor, stable_hash

CACHE_VERSION = 1


def cache_dir() -> Path:
    """Where reference statistics are cached: $GANTOOLS_CACHE/stats, default ~/.cache/gantools/stats."""
    root = os.environ.get("GANTOOLS_CACHE")
    return (Path(root) if root else Path.home() / ".cache" / "gantools") / "stats"


def dataset_signature(data: str | os.PathLike, image_size: int, nc: int, n: int, seed: int = 0,
                      holdout: int = 0, version: int | None = None) -> dict[str, Any]:
    """What identifies a reference set without decoding it: a built-in name, design version and seed,
    or a folder's resolved path with its file count, total size and newest modification time (so
    edits invalidate)."""
    text = str(data)
    sig: dict[str, Any] = {"image_size": image_size, "nc": nc, "n": n}
    current = dataset_version(text)
    if current is not None:
        sig.update(dataset=text, seed=seed)
        if (version or current) != 1:  # version 1 keys stay as they were, so old caches still hit
            sig["version"] = version or current
        return sig
    path = Path(text)
    if not path.exists():
        raise GantoolsError(f"no dataset {text!r}: give a folder of images or a built-in name "
                            f"({', '.join(dataset_names()) or 'none installed'})")
    files = split_folder(path, holdout)[1] if holdout else image_files(path)
    stats = [f.stat() for f in files]
    sig.update(path=str(path.resolve()), files=len(files), bytes=sum(s.st_size for s in stats),
               mtime=max((s.st_mtime_ns for s in stats), default=0), holdout=holdout)
    return sig


def cache_key(kind: str, signature: dict[str, Any], extractor_fingerprint: str) -> str:
    """The cache file stem for `kind` ("features", "concepts") of a dataset under an extractor."""
    return stable_hash(CACHE_VERSION, kind, signature, extractor_fingerprint)


def _open_reference(data: str | os.PathLike, image_size: int, nc: int, n: int, seed: int, holdout: int,
                    progress: ProgressCallback | None, version: int | None = None) -> Any:
    if holdout:
        path = Path(str(data))
        if not path.is_dir():
            raise GantoolsError("holdout applies to image folders only")
        return ImageFolder(path, image_size, nc, files=split_folder(path, holdout)[1], progress=progress)
    return open_dataset(data, image_size, nc, n=n, seed=seed, progress=progress, version=version)


def _batches(dataset: Any, indices: torch.Tensor, batch_size: int) -> Iterable[tuple[torch.Tensor, torch.Tensor | None]]:
    """uint8 image batches (and label batches when the dataset has labels, as scenes does)."""
    fast = isinstance(getattr(dataset, "images", None), torch.Tensor)
    for i in range(0, len(indices), batch_size):
        idx = indices[i:i + batch_size]
        if fast:
            yield batch_images(dataset, idx), None
            continue
        items = [dataset[int(j)] for j in idx]
        if isinstance(items[0], tuple):
            yield torch.stack([it[0] for it in items]), torch.stack([torch.as_tensor(it[1]) for it in items])
        else:
            yield torch.stack(items), None


@dataclass
class Consumer:
    """One statistic computed over the reference images: per-batch `fn(images, labels)`, whose named
    tensors are then concatenated ("cat") or summed ("sum") over the batches."""

    kind: str
    fingerprint: str
    fn: Callable[[torch.Tensor, torch.Tensor | None], dict[str, torch.Tensor]]
    reduce: str  # "cat" or "sum"


@dataclass
class ReferenceSet:
    """Which real images a reference statistic is computed on (see `reference_statistics`)."""

    data: str | os.PathLike
    image_size: int
    nc: int
    n: int
    seed: int = 0
    holdout: int = 0
    version: int | None = None

    def signature(self) -> dict[str, Any]:
        """Its `dataset_signature`."""
        return dataset_signature(self.data, self.image_size, self.nc, self.n, self.seed, self.holdout, self.version)


_MEMO: dict[str, dict[str, Any]] = {}  # in-process copy of cache entries (training evaluates repeatedly)


def reference_statistics(ref: ReferenceSet, consumers: Sequence[Consumer], batch_size: int = 100,
                         use_cache: bool = True,
                         progress: ProgressCallback | None = None) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Reference statistics for each consumer, from the cache where present; decodes the data only
    when some consumer misses. Returns ({kind: entry}, cache info: hits, misses, files, n_real)."""
    sig = ref.signature()
    out: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"hits": [], "misses": [], "files": {}}
    missing = []
    for c in consumers:
        key = cache_key(c.kind, sig, c.fingerprint)
        path = cache_dir() / f"{key}.pt"
        info["files"][c.kind] = str(path)
        entry = _cached(key, path) if use_cache else None
        if entry is not None:
            out[c.kind] = entry
            info["hits"].append(c.kind)
        else:
            missing.append((c, key, path))
    if not missing:
        info["n_real"] = int(next(iter(out.values()))["n"]) if out else 0
        return out, info
    computed, n_real = _compute(ref, sig, [c for c, _, _ in missing], batch_size, progress)
    for c, key, path in missing:
        out[c.kind] = computed[c.kind]
        if use_cache:
            _store(key, path, computed[c.kind], progress)
        info["misses"].append(c.kind)
    info["n_real"] = n_real
    return out, info


def _cached(key: str, path: Path) -> dict[str, Any] | None:
    entry = _MEMO.get(key)
    if entry is None and path.is_file():
        try:
            entry = torch.load(path, map_location="cpu", weights_only=True)
        except Exception:  # a corrupt or old-format cache file: recompute it
            entry = None
    if entry is None or entry.get("version") != CACHE_VERSION:
        return None
    _MEMO[key] = entry
    return entry


def _store(key: str, path: Path, entry: dict[str, Any], progress: ProgressCallback | None) -> None:
    try:
        torch_save(entry, path)
    except OSError as e:  # a read-only home must not stop evaluation
        notice(progress, f"could not cache reference statistics in {path.parent}: {e}")
    _MEMO[key] = entry


def _compute(ref: ReferenceSet, sig: dict[str, Any], consumers: Sequence[Consumer], batch_size: int,
             progress: ProgressCallback | None) -> tuple[dict[str, dict[str, Any]], int]:
    """Decode the reference images once and run every consumer on them: ({kind: entry}, images used)."""
    dataset = _open_reference(ref.data, ref.image_size, ref.nc, ref.n, ref.seed, ref.holdout, progress, ref.version)
    total = len(dataset)
    if total < 2:
        raise GantoolsError(f"the reference data {ref.data} has {total} image(s): at least 2 are needed")
    # A seeded subset when the data holds more than n images (the same subset for every extractor).
    indices = (torch.randperm(total, generator=torch.Generator().manual_seed(0))[:ref.n].sort().values
               if total > ref.n else torch.arange(total))
    parts: dict[str, list[dict[str, torch.Tensor]]] = {c.kind: [] for c in consumers}
    done = 0
    for images, labels in _batches(dataset, indices, batch_size):
        if images.shape[1] != ref.nc or images.shape[-1] != ref.image_size:
            raise GantoolsError(f"the reference data has {images.shape[1]}-channel {images.shape[-1]} px images; "
                                f"the model makes {ref.nc}-channel {ref.image_size} px images")
        for c in consumers:
            parts[c.kind].append(c.fn(images, labels))
        done += len(images)
        report(progress, "reference statistics", done, len(indices))
    out = {}
    for c in consumers:
        batches = parts[c.kind]
        entry: dict[str, Any] = {"version": CACHE_VERSION, "n": len(indices), "signature": json.dumps(sig),
                                 "data_concepts": json.dumps(list(getattr(dataset, "concepts", None) or []))}
        for name in batches[0]:
            values = [b[name] for b in batches if name in b]
            if len(values) != len(batches):
                continue  # e.g. ground-truth labels present in some batches only
            entry[name] = torch.cat(values) if c.reduce == "cat" else torch.stack(values).sum(0)
        out[c.kind] = entry
    return out, len(indices)


def reference_features(data: str | os.PathLike, extractor: FeatureExtractor, image_size: int, nc: int,
                       n: int = 5000, seed: int = 0, holdout: int = 0, batch_size: int = 100,
                       use_cache: bool = True, progress: ProgressCallback | None = None,
                       version: int | None = None) -> torch.Tensor:
    """Features of (up to) n reference images under `extractor`, cached per (dataset, extractor).

    Args:
        data: a built-in dataset name ("scenes") or a folder.
        extractor: the feature extractor.
        image_size, nc: the images' size and channels (the model's).
        n: reference images (a seeded subset when the data holds more).
        seed: seed of a built-in dataset.
        holdout: for folders, use only the `holdout` held-out images (as `data.split_holdout` picks them).
        batch_size: images per forward pass.
        use_cache: read and write the cache (GANTOOLS_CACHE).
        progress: callback.
        version: design version of a built-in dataset (default: its current one).
    """
    consumer = Consumer("features", extractor.fingerprint, lambda x, _: {"features": extractor(x)}, "cat")
    entries, _ = reference_statistics(ReferenceSet(data, image_size, nc, n, seed, holdout, version), [consumer],
                                      batch_size, use_cache, progress)
    return entries["features"]["features"]


__all__ = ["CACHE_VERSION", "Consumer", "ReferenceSet", "cache_dir", "cache_key", "dataset_signature",
           "reference_features", "reference_statistics"]
