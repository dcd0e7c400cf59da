"""Datasets: image folders, labelled folders, train/held-out splits, and the built-in datasets.

Datasets hand out uint8 tensors (C x H x W); convert to the models' [-1, 1] range with
`gantools.utils.from_uint8`. Images are decoded by `gantools.images.load_image`, the one image
loader; this module re-exports it and the other image helpers (`read_image`, `save_image`,
`make_grid`, `save_label`...), so `from gantools.data import load_image` keeps working.

`open_dataset` opens a built-in dataset by name ("scenes") or a folder by path; `open_split`
opens the training or held-out part of one, split as `gantools train --holdout` splits it. The
built-in datasets are registered below, explicitly: this module imports `scenes`, and `scenes`
imports nothing from here.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Literal, Protocol, Sequence

import torch

from .images import (IMAGE_EXTENSIONS, SAVE_FORMATS, load_image, make_grid, read_image, read_label, read_mask,
                     resize_center_crop, resize_center_crop_labels, save_grid, save_image, save_label)
from .scenes import CONCEPTS as SCENE_CONCEPTS
from .scenes import VERSIONS as SCENE_VERSIONS
from .scenes import Scenes
from .utils import GantoolsError, ProgressCallback, notice, report

__all__ = [
    # re-exported from gantools.images (the one image loader and its companions)
    "IMAGE_EXTENSIONS", "SAVE_FORMATS", "load_image", "make_grid", "read_image", "read_label", "read_mask",
    "resize_center_crop", "resize_center_crop_labels", "save_grid", "save_image", "save_label",
    # datasets and folders
    "IN_MEMORY_LIMIT", "ImageDataset", "find_images", "image_files", "ImageFolder", "batch_images", "Subset",
    "read_concepts", "is_labelled_folder", "is_labeled_folder", "LabelledFolder", "LabeledFolder",
    # held-out splits
    "split_holdout", "split_folder", "split_dataset", "open_split",
    # the registry
    "DatasetSpec", "BUILTIN_DATASETS", "register_dataset", "builtin_dataset", "dataset_names", "dataset_version",
    "open_dataset",
]

# Datasets up to this many bytes of uint8 pixels are decoded once and kept in memory.
IN_MEMORY_LIMIT = 4 * 1024**3


# ---------------------------------------------------------------------------------------------
# Image folders


class ImageDataset(Protocol):
    """What training and evaluation need: a length and uint8 images (nc x S x S) by index.

    `__getitem__` returns the image, or a tuple whose first element is the image (labelled datasets
    such as scenes return (image, label)). Use `batch_images` rather than indexing by hand.
    """

    image_size: int
    nc: int

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> torch.Tensor: ...


def find_images(root: str | os.PathLike) -> list[Path]:
    """All image files under `root`, recursively, in sorted order (class folders or flat)."""
    root = Path(root)
    if not root.is_dir():
        raise GantoolsError(f"data folder not found: {root}")
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def image_files(root: str | os.PathLike) -> list[Path]:
    """A folder's pictures, sorted: those under images/ for a labelled folder (its label maps are
    not pictures), else every image file under `root` (`find_images`)."""
    root = Path(root)
    return find_images(root / "images" if is_labelled_folder(root) else root)


class ImageFolder:
    """A folder of images, decoded once to nc x S x S uint8 and kept in memory when it fits.

    Unreadable files are skipped; `skipped` lists them (the caller reports them once).

    Args:
        root: folder searched recursively.
        image_size: side the images are resized and center-cropped to.
        nc: channels (1 or 3).
        files: an explicit subset of files (e.g. all but a held-out tail); defaults to all of root.
        progress: callback for decoding progress.
    """

    def __init__(self, root: str | os.PathLike, image_size: int = 64, nc: int = 3,
                 files: Sequence[Path] | None = None, progress: ProgressCallback | None = None) -> None:
        self.root = Path(root)
        self.image_size, self.nc = image_size, nc
        candidates = list(files) if files is not None else find_images(self.root)
        if not candidates:
            raise GantoolsError(f"no images in {self.root} (looked for {', '.join(IMAGE_EXTENSIONS)})")
        self.skipped: list[Path] = []
        in_memory = len(candidates) * nc * image_size * image_size <= IN_MEMORY_LIMIT
        self.files: list[Path] = []
        decoded = []
        for i, path in enumerate(candidates):
            try:
                image = load_image(path, nc, image_size) if in_memory else None
                if image is None:
                    read_image(path, nc)  # streaming mode: still check that the file decodes
            except GantoolsError:
                self.skipped.append(path)
                continue
            self.files.append(path)
            if image is not None:
                decoded.append(image)
            if i % 256 == 0 or i == len(candidates) - 1:
                report(progress, "decode images", i + 1, len(candidates))
        if not self.files:
            raise GantoolsError(f"no readable images in {self.root} ({len(self.skipped)} unreadable files)")
        if self.skipped:
            names = ", ".join(p.name for p in self.skipped[:3])
            notice(progress, f"skipped {len(self.skipped)} unreadable image file(s), e.g. {names}")
        # Images in memory as one uint8 tensor; None when streaming from disk.
        self.images: torch.Tensor | None = torch.stack(decoded) if in_memory else None

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> torch.Tensor:
        if self.images is not None:
            return self.images[index]
        return load_image(self.files[index], self.nc, self.image_size)


def batch_images(dataset: ImageDataset, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """uint8 images N x nc x S x S for the given indices (fast path for in-memory datasets)."""
    images = getattr(dataset, "images", None)
    if isinstance(images, torch.Tensor):
        return images[torch.as_tensor(indices, dtype=torch.long)]
    items = [dataset[int(i)] for i in indices]
    return torch.stack([item[0] if isinstance(item, tuple) else item for item in items])


class Subset:
    """Some images of a dataset by index, keeping its in-memory fast path and its file names."""

    def __init__(self, dataset: ImageDataset, indices: Sequence[int]) -> None:
        self.dataset, self.indices = dataset, list(indices)
        self.image_size, self.nc = dataset.image_size, dataset.nc
        images = getattr(dataset, "images", None)
        self.images = images[torch.as_tensor(self.indices, dtype=torch.long)] if isinstance(images, torch.Tensor) else None
        files = getattr(dataset, "files", None)
        self.files = [files[i] for i in self.indices] if files is not None else None
        if hasattr(dataset, "concepts"):
            self.concepts = dataset.concepts

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, index: int):
        return self.dataset[self.indices[index]]


# ---------------------------------------------------------------------------------------------
# Labelled folders (images/ + labels/ + concepts.json), the layout `scenes.write_scenes` writes


def read_concepts(root: str | os.PathLike) -> list[str]:
    """Concept names from `root/concepts.json` ({"concepts": [...]}, list index = id)."""
    import json

    path = Path(root) / "concepts.json"
    if not path.is_file():
        raise GantoolsError(f"{path} not found: a labelled folder needs concepts.json "
                            '({"concepts": ["sky", ...]}, list index = concept id)')
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise GantoolsError(f"cannot read {path}: {e}") from e
    concepts = data.get("concepts") if isinstance(data, dict) else None
    if not isinstance(concepts, list) or not concepts or not all(isinstance(c, str) and c for c in concepts):
        raise GantoolsError(f'{path} must hold {{"concepts": ["name", ...]}}: a non-empty list of names')
    if len(set(concepts)) != len(concepts):
        raise GantoolsError(f"{path} names a concept twice")
    if len(concepts) > 256:
        raise GantoolsError(f"{path} lists {len(concepts)} concepts: index PNGs hold at most 256")
    return concepts


def is_labelled_folder(path: str | os.PathLike) -> bool:
    """Whether a folder has the labelled layout: images/, labels/ and concepts.json."""
    p = Path(path)
    return (p / "images").is_dir() and (p / "labels").is_dir() and (p / "concepts.json").is_file()


# The old spelling, kept so that existing callers keep working.
is_labeled_folder = is_labelled_folder


class LabelledFolder:
    """Images with per-pixel concept labels: `root/images/*.png`, `root/labels/*.png`, `root/concepts.json`.

    Labels are index PNGs (pixel value = concept id) matched to images by file stem. Everything is
    decoded once and kept in memory: `images` (N x nc x S x S uint8) and `labels` (N x S x S uint8;
    `__getitem__` returns them as int64).

    Args:
        root: the folder.
        image_size: side to resize and center-crop to (images antialiased, labels nearest
            neighbour); None keeps the files' own size, which must then be square and the same for all.
        nc: channels (1 or 3).
        progress: callback for decoding progress.
    """

    def __init__(self, root: str | os.PathLike, image_size: int | None = None, nc: int = 3,
                 progress: ProgressCallback | None = None) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise GantoolsError(f"data folder not found: {self.root}")
        for sub in ("images", "labels"):
            if not (self.root / sub).is_dir():
                raise GantoolsError(f"{self.root} has no {sub}/ folder: a labelled folder holds images/, labels/ "
                                    "and concepts.json (as `write_scenes` and `gantools data scenes` write them)")
        if nc not in (1, 3):
            raise GantoolsError(f"nc={nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        self.concepts: list[str] = read_concepts(self.root)
        self.nc = nc
        self.files, self.label_files = self._pair_files()
        images, labels = [], []
        for i, (ipath, lpath) in enumerate(zip(self.files, self.label_files)):
            image, label = self._read_pair(ipath, lpath, image_size, images[0] if images else None)
            images.append(image)
            labels.append(label.to(torch.uint8))
            if i % 256 == 0 or i == len(self.files) - 1:
                report(progress, "decode labelled images", i + 1, len(self.files))
        self.images: torch.Tensor = torch.stack(images)
        self.labels: torch.Tensor = torch.stack(labels)
        self.image_size: int = int(self.images.shape[-1])

    def _pair_files(self) -> tuple[list[Path], list[Path]]:
        """(image files, label files), matched by file stem; every image needs a label and vice versa."""
        image_files = find_images(self.root / "images")
        label_files = {p.stem: p for p in find_images(self.root / "labels")}
        if not image_files:
            raise GantoolsError(f"no images in {self.root / 'images'}")
        stems = [p.stem for p in image_files]
        if len(set(stems)) != len(stems):
            raise GantoolsError(f"{self.root / 'images'} has two images with the same name stem: "
                                "labels are matched by stem")
        missing = [s for s in stems if s not in label_files]
        if missing:
            raise GantoolsError(f"{len(missing)} image(s) have no label in {self.root / 'labels'}, "
                                f"e.g. {missing[0]} (labels are matched to images by file stem)")
        extra = sorted(set(label_files) - set(stems))
        if extra:
            raise GantoolsError(f"{len(extra)} label(s) have no image in {self.root / 'images'}, e.g. {extra[0]}")
        return image_files, [label_files[s] for s in stems]

    def _read_pair(self, ipath: Path, lpath: Path, image_size: int | None,
                   first: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """One image and its label map, checked against each other (and against the first image's
        size when no image_size is given), resized when one is."""
        image = read_image(ipath, self.nc)
        label = read_label(lpath)
        if tuple(label.shape) != tuple(image.shape[1:]):
            raise GantoolsError(f"label {lpath.name} is {label.shape[1]}x{label.shape[0]} but its image "
                                f"{ipath.name} is {image.shape[2]}x{image.shape[1]}: they must be the same size")
        k = len(self.concepts)
        top = int(label.max())
        if top >= k:
            raise GantoolsError(f"label {lpath.name} uses concept id {top}, but concepts.json lists only "
                                f"{k} concepts (ids 0..{k - 1})")
        if image_size is not None:
            return resize_center_crop(image, image_size), resize_center_crop_labels(label, image_size)
        if image.shape[1] != image.shape[2] or (first is not None and image.shape != first.shape):
            raise GantoolsError(f"images in {self.root} differ in size or are not square "
                                f"({ipath.name} is {image.shape[2]}x{image.shape[1]}): give an image_size")
        return image, label

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index].long()

    def __repr__(self) -> str:
        return (f"LabelledFolder({str(self.root)!r}, {len(self)} images, {self.image_size}px, "
                f"{len(self.concepts)} concepts)")


# The old spelling, kept so that existing callers (and `gantools.LabeledFolder`) keep working.
LabeledFolder = LabelledFolder


# ---------------------------------------------------------------------------------------------
# Held-out splits: one rule, shared by training, evaluation, the encoder and the classifier


def split_holdout(files: Sequence[Path], n: int) -> tuple[list[Path], list[Path]]:
    """Split sorted image files into (training, held-out), holding out `n` images.

    In a class-folder layout the held-out images are the last by sorted file name *within each
    class folder*, in equal shares (remainder to the last classes), so every class stays in training
    and in the held-out set; mnist4k's file names run class by class, so "the last n overall" would
    hold out whole classes. In a flat folder they are simply the last n.
    """
    files = sorted(files)
    if n <= 0:
        return list(files), []
    if n >= len(files):
        raise GantoolsError(f"holding out {n} images leaves none to train on (the data has {len(files)})")
    groups: dict[Path, list[Path]] = {}
    for f in files:
        groups.setdefault(f.parent, []).append(f)
    if len(groups) == 1:
        return files[:-n], files[-n:]
    keys = sorted(groups)
    share, extra = divmod(n, len(keys))
    held: list[Path] = []
    for i, key in enumerate(keys):
        k = share + (1 if i >= len(keys) - extra else 0)
        if k >= len(groups[key]):
            raise GantoolsError(f"holding out {k} images of {key.name}/ leaves none of that class to train on")
        held += groups[key][len(groups[key]) - k:] if k else []
    held_set = set(held)
    return [f for f in files if f not in held_set], held


def split_folder(root: str | os.PathLike, holdout: int) -> tuple[list[Path], list[Path]]:
    """A folder's pictures (`image_files`) split into (training, held-out) by `split_holdout`."""
    return split_holdout(image_files(root), holdout)


def split_dataset(dataset: ImageDataset, holdout: int) -> tuple[ImageDataset, ImageDataset]:
    """(training, held-out) parts of a dataset; see `split_holdout` for which images are held out.

    Files the dataset skipped as unreadable still count in the split (which is by file name), so the
    held-out images are the same ones that `split_folder` names. Datasets without files (generated
    ones) hold out their last `holdout` indices.
    """
    if holdout <= 0:
        return dataset, Subset(dataset, [])
    files = getattr(dataset, "files", None)
    if files is None:
        if holdout >= len(dataset):
            raise GantoolsError(f"holding out {holdout} images leaves none to train on (the data has {len(dataset)})")
        return Subset(dataset, range(len(dataset) - holdout)), Subset(dataset, range(len(dataset) - holdout, len(dataset)))
    _, held = split_holdout(list(files) + list(getattr(dataset, "skipped", [])), holdout)
    held_set = set(held)
    train_idx = [i for i, f in enumerate(files) if f not in held_set]
    held_idx = [i for i, f in enumerate(files) if f in held_set]
    return Subset(dataset, train_idx), Subset(dataset, held_idx)


Part = Literal["train", "holdout", "all"]


def open_split(spec: str | os.PathLike, image_size: int = 64, nc: int = 3, holdout: int = 0, part: Part = "train",
               n: int | None = None, seed: int = 0, progress: ProgressCallback | None = None,
               version: int | None = None) -> ImageDataset:
    """One part of a dataset split as `gantools train --holdout` splits it (see `split_holdout`).

    A plain image folder decodes only the files of the part asked for; a labelled folder or a
    built-in dataset opens as `open_dataset` opens it and is then split (`split_dataset`: generated
    datasets hold out their last `holdout` of `n` items).

    Args:
        spec: dataset name or folder path, as for `open_dataset`.
        image_size, nc, n, seed, progress, version: as for `open_dataset`.
        holdout: how many images are held out of training.
        part: "train" (all but the held-out images), "holdout" (only those) or "all".
    """
    if part not in ("train", "holdout", "all"):
        raise GantoolsError(f"part must be 'train', 'holdout' or 'all', got {part!r}")
    if holdout < 0:
        raise GantoolsError(f"holdout must be at least 0, got {holdout}")
    if part == "holdout" and holdout == 0:
        raise GantoolsError("part='holdout' needs holdout of at least 1: nothing is held out")
    path = Path(str(spec))
    if builtin_dataset(spec) is None and path.is_dir() and not is_labelled_folder(path):
        files = None if part == "all" else split_folder(path, holdout)[0 if part == "train" else 1]
        return ImageFolder(path, image_size, nc, files=files, progress=progress)
    dataset = open_dataset(spec, image_size, nc, n=n, seed=seed, progress=progress, version=version)
    if part == "all":
        return dataset
    train, held = split_dataset(dataset, holdout)
    return train if part == "train" else held


# ---------------------------------------------------------------------------------------------
# The registry of built-in datasets


@dataclass
class DatasetSpec:
    """A named built-in dataset: `factory(image_size=, nc=, seed=, version=[, n=])` builds it.

    `versions` lists the designs it can still render (image i of seed s never changes within one);
    the last is the current one.
    """

    name: str
    description: str
    factory: Callable[..., ImageDataset]
    versions: tuple[int, ...] = (1,)


BUILTIN_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, description: str, factory: Callable[..., ImageDataset],
                     versions: tuple[int, ...] = (1,)) -> None:
    """Add a named dataset that `open_dataset(name)` opens (and the CLI's data options accept)."""
    BUILTIN_DATASETS[name] = DatasetSpec(name, description, factory, tuple(versions))


register_dataset("scenes", f"procedural outdoor scenes with per-pixel labels ({len(SCENE_CONCEPTS)} concepts)",
                 Scenes, versions=SCENE_VERSIONS)


def builtin_dataset(spec: str | os.PathLike) -> DatasetSpec | None:
    """The built-in dataset that `spec` names, or None (a folder of the same name wins over it)."""
    text = str(spec)
    return BUILTIN_DATASETS[text] if text in BUILTIN_DATASETS and not Path(text).exists() else None


def dataset_names() -> list[str]:
    """The names of the built-in datasets, sorted (for messages and choices)."""
    return sorted(BUILTIN_DATASETS)


def dataset_version(spec: str | os.PathLike) -> int | None:
    """The current design version of a built-in dataset, or None for a folder."""
    builtin = builtin_dataset(spec)
    return builtin.versions[-1] if builtin else None


def open_dataset(spec: str | os.PathLike, image_size: int = 64, nc: int = 3, n: int | None = None,
                 seed: int = 0, progress: ProgressCallback | None = None, version: int | None = None) -> ImageDataset:
    """A built-in dataset by name ("scenes") or a folder by path.

    A folder with images/, labels/ and concepts.json (as `scenes.write_scenes` writes it) opens as
    a `LabelledFolder` of (image, label) pairs; any other folder as an `ImageFolder`.

    Args:
        spec: dataset name or folder path.
        image_size, nc: the images' size and channels.
        n: number of images for generated datasets (ignored for folders).
        seed: seed for generated datasets.
        progress: callback (decoding progress, skipped-file notices).
        version: design version of a generated dataset (default: its current one); ignored for folders.
    """
    text = str(spec)
    builtin = builtin_dataset(text)
    if builtin is not None:
        if version is not None and version not in builtin.versions:
            raise GantoolsError(f"dataset {text!r} has no version {version}: this gantools renders versions "
                                f"{', '.join(map(str, builtin.versions))}")
        kwargs = {"image_size": image_size, "nc": nc, "seed": seed, "version": version or builtin.versions[-1]}
        if n is not None:
            kwargs["n"] = n
        return builtin.factory(**kwargs)
    path = Path(text)
    if not path.exists():
        raise GantoolsError(f"no dataset {text!r}: give a folder of images or a built-in name "
                            f"({', '.join(dataset_names()) or 'none installed'})")
    if is_labelled_folder(path):
        return LabelledFolder(path, image_size, nc, progress=progress)
    return ImageFolder(path, image_size, nc, progress=progress)
