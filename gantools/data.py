"""Images in and out, image folders, and the registry of built-in datasets.

`load_image` is the one image loader: any size, mode (L, LA, RGB, RGBA, P, I;16...) and common
format, converted to nc channels. Datasets hand out uint8 tensors (C x H x W); convert to the
models' [-1, 1] range with `gantools.utils.from_uint8`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Protocol, Sequence

import numpy as np
import torch

from .utils import GantoolsError, ProgressCallback, atomic_path, notice, report, to_uint8

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")
# Datasets up to this many bytes of uint8 pixels are decoded once and kept in memory.
IN_MEMORY_LIMIT = 4 * 1024**3


# ---------------------------------------------------------------------------------------------
# Single images


def _to_mode(img, nc: int, background: int = 255):
    """Convert a PIL image of any mode to 'L' (nc=1) or 'RGB' (nc=3); alpha is composited on a
    `background` grey level (white for pictures, black for masks)."""
    from PIL import Image

    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        # 16-bit and float images: rescale to 8 bits by their dtype's range, not by clipping.
        arr = np.asarray(img)
        if arr.dtype == np.uint16 or img.mode.startswith("I;16"):
            arr = arr.astype(np.float64) / 65535.0
        elif img.mode == "I":
            arr = arr.astype(np.float64) / (65535.0 if arr.max() > 255 else 255.0)
        else:
            arr = arr.astype(np.float64)
        img = Image.fromarray((np.clip(arr, 0, 1) * 255 + 0.5).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        matte = Image.new("RGBA", img.size, (background, background, background, 255))
        img = Image.alpha_composite(matte, img.convert("RGBA"))
    return img.convert("L" if nc == 1 else "RGB")


def read_image(path: str | os.PathLike, nc: int = 3, background: int = 255) -> torch.Tensor:
    """Decode an image file at its own size: uint8 tensor nc x H x W. Raises GantoolsError if unreadable.
    Transparent pixels are composited on the `background` grey level."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise GantoolsError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_mode(img, nc, background)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GantoolsError(f"cannot read image {path}: {e}") from e
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


def read_mask(path: str | os.PathLike) -> torch.Tensor:
    """A mask file as a uint8 H x W tensor (white = selected); transparent pixels are unselected."""
    return read_image(path, nc=1, background=0)[0]


def resize_center_crop(image: torch.Tensor, size: int) -> torch.Tensor:
    """Resize the short side to `size` (antialiased) and center-crop to size x size; uint8 in and out."""
    import torchvision.transforms.v2.functional as TF

    _, h, w = image.shape
    if (h, w) != (size, size):
        image = TF.resize(image, size, antialias=True)
        image = TF.center_crop(image, [size, size])
    return image


def load_image(path: str | os.PathLike, nc: int = 3, size: int | None = None) -> torch.Tensor:
    """The one image loader: uint8 tensor nc x size x size (or the file's own size when size is None)."""
    image = read_image(path, nc)
    return resize_center_crop(image, size) if size is not None else image


# Formats by file suffix; anything else is written as PNG (the lossless default).
SAVE_FORMATS = {".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF"}


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one image (C x H x W, uint8 or float in [-1, 1]) atomically, as PNG unless the suffix
    names another format (.jpg, .webp, .bmp, .tif)."""
    from PIL import Image

    if image.dtype != torch.uint8:
        image = to_uint8(image)
    arr = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB")
    path = Path(path)
    with atomic_path(path) as tmp:
        pil.save(tmp, format=SAVE_FORMATS.get(path.suffix.lower(), "PNG"))
    return path


def make_grid(images: torch.Tensor, nrow: int | None = None, padding: int = 2, pad_value: int = 255) -> torch.Tensor:
    """Tile N x C x H x W images (uint8 or [-1, 1] float) into one uint8 image, `nrow` per row."""
    import torchvision.utils as vutils

    if images.dtype != torch.uint8:
        images = to_uint8(images)
    n = images.shape[0]
    nrow = nrow or max(1, int(np.ceil(np.sqrt(n))))
    grid = vutils.make_grid(images.cpu(), nrow=nrow, padding=padding, pad_value=pad_value)
    return grid[: images.shape[1]] if images.shape[1] == 1 else grid


def save_grid(images: torch.Tensor, path: str | os.PathLike, nrow: int | None = None, padding: int = 2) -> Path:
    """Save a grid of images as one PNG."""
    return save_image(make_grid(images, nrow=nrow, padding=padding), path)


# ---------------------------------------------------------------------------------------------
# Datasets


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


def split_dataset(dataset: ImageDataset, holdout: int) -> tuple[ImageDataset, ImageDataset]:
    """(training, held-out) parts of a dataset; see `split_holdout` for which images are held out.

    Datasets without files (generated ones) hold out their last `holdout` indices.
    """
    if holdout <= 0:
        return dataset, Subset(dataset, [])
    files = getattr(dataset, "files", None)
    if files is None:
        if holdout >= len(dataset):
            raise GantoolsError(f"holding out {holdout} images leaves none to train on (the data has {len(dataset)})")
        return Subset(dataset, range(len(dataset) - holdout)), Subset(dataset, range(len(dataset) - holdout, len(dataset)))
    _, held = split_holdout(files, holdout)
    held_set = set(held)
    train_idx = [i for i, f in enumerate(files) if f not in held_set]
    held_idx = [i for i, f in enumerate(files) if f in held_set]
    return Subset(dataset, train_idx), Subset(dataset, held_idx)


@dataclass
class DatasetSpec:
    """A named built-in dataset: `factory(image_size, nc, n, seed, version)` builds it.

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
    """Add a named dataset usable as `--data NAME`."""
    BUILTIN_DATASETS[name] = DatasetSpec(name, description, factory, tuple(versions))


def _builtin(spec: str | os.PathLike) -> DatasetSpec | None:
    _register_builtins()
    text = str(spec)
    return BUILTIN_DATASETS[text] if text in BUILTIN_DATASETS and not Path(text).exists() else None


def dataset_version(spec: str | os.PathLike) -> int | None:
    """The current design version of a built-in dataset, or None for a folder."""
    builtin = _builtin(spec)
    return builtin.versions[-1] if builtin else None


def _register_builtins() -> None:
    if "scenes" not in BUILTIN_DATASETS:
        import importlib

        try:
            scenes = importlib.import_module(f"{__package__}.scenes")  # registers itself
        except ModuleNotFoundError as e:  # folders must keep working without the built-in datasets
            if e.name != f"{__package__}.scenes":
                raise
            return
        assert "scenes" in BUILTIN_DATASETS, scenes


def open_dataset(spec: str | os.PathLike, image_size: int = 64, nc: int = 3, n: int | None = None,
                 seed: int = 0, progress: ProgressCallback | None = None, version: int | None = None) -> ImageDataset:
    """A built-in dataset by name ("scenes") or a folder by path.

    A folder with images/, labels/ and concepts.json (as `gantools data scenes` writes it) opens as
    a `LabeledFolder` of (image, label) pairs; any other folder as an `ImageFolder`.

    Args:
        spec: dataset name or folder path.
        image_size, nc: the images' size and channels.
        n: number of images for generated datasets (ignored for folders).
        seed: seed for generated datasets.
        progress: callback (decoding progress, skipped-file notices).
        version: design version of a generated dataset (default: its current one); ignored for folders.
    """
    text = str(spec)
    builtin = _builtin(text)
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
        names = ", ".join(sorted(BUILTIN_DATASETS))
        raise GantoolsError(f"no dataset {text!r}: give a folder of images or a built-in name ({names})")
    if is_labeled_folder(path):
        return LabeledFolder(path, image_size, nc, progress=progress)
    return ImageFolder(path, image_size, nc, progress=progress)


# ---------------------------------------------------------------------------------------------
# Labelled folders (images/ + labels/ + concepts.json), the layout `gantools data scenes` writes


def save_label(labels: torch.Tensor | np.ndarray, path: str | os.PathLike, num_concepts: int) -> Path:
    """Save a label map (H x W concept ids) as a palette PNG whose pixel index is the concept id.

    The palette is `reports.concept_palette`, so label files also look right in an image viewer.
    """
    from PIL import Image

    from .reports import concept_palette

    arr = labels.detach().cpu().numpy() if isinstance(labels, torch.Tensor) else np.asarray(labels)
    if arr.ndim != 2:
        raise GantoolsError(f"a label map must be H x W, got shape {tuple(arr.shape)}")
    if arr.size and (arr.min() < 0 or arr.max() >= min(num_concepts, 256)):
        raise GantoolsError(f"label ids must lie in 0..{min(num_concepts, 256) - 1}, got {arr.min()}..{arr.max()}")
    img = Image.fromarray(arr.astype(np.uint8), "P")
    palette = concept_palette(max(num_concepts, 1)).reshape(-1).tolist()
    img.putpalette(palette + [0] * (768 - len(palette)))
    path = Path(path)
    with atomic_path(path) as tmp:
        img.save(tmp, format="PNG")
    return path


def read_label(path: str | os.PathLike) -> torch.Tensor:
    """Read an index PNG (palette 'P' or grayscale 'L'): int64 tensor H x W of concept ids."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("P", "L"):
                raise GantoolsError(f"label {path} is a {img.mode} image: labels must be palette (P) or "
                                    "grayscale (L) PNGs whose pixel value is the concept id")
            arr = np.asarray(img, dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GantoolsError(f"cannot read label {path}: {e}") from e
    return torch.from_numpy(arr.astype(np.int64))


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


def is_labeled_folder(path: str | os.PathLike) -> bool:
    """Whether a folder has the labelled layout: images/, labels/ and concepts.json."""
    p = Path(path)
    return (p / "images").is_dir() and (p / "labels").is_dir() and (p / "concepts.json").is_file()


def _crop_labels(labels: torch.Tensor, size: int) -> torch.Tensor:
    """Resize labels like `resize_center_crop` resizes images, but by nearest neighbour (ids stay ids)."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    h, w = labels.shape
    if (h, w) == (size, size):
        return labels
    out = TF.resize(labels[None].to(torch.uint8), size, interpolation=InterpolationMode.NEAREST_EXACT,
                    antialias=False)
    return TF.center_crop(out, [size, size])[0].long()


class LabeledFolder:
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
                                    "and concepts.json (as `gantools data scenes` writes them)")
        if nc not in (1, 3):
            raise GantoolsError(f"nc={nc} is not supported: use 1 (grayscale) or 3 (RGB)")
        self.concepts: list[str] = read_concepts(self.root)
        self.nc = nc
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
        self.files = image_files
        self.label_files = [label_files[s] for s in stems]
        images, labels = [], []
        k = len(self.concepts)
        for i, (ipath, lpath) in enumerate(zip(self.files, self.label_files)):
            image = read_image(ipath, nc)
            label = read_label(lpath)
            if tuple(label.shape) != tuple(image.shape[1:]):
                raise GantoolsError(f"label {lpath.name} is {label.shape[1]}x{label.shape[0]} but its image "
                                    f"{ipath.name} is {image.shape[2]}x{image.shape[1]}: they must be the same size")
            top = int(label.max())
            if top >= k:
                raise GantoolsError(f"label {lpath.name} uses concept id {top}, but concepts.json lists only "
                                    f"{k} concepts (ids 0..{k - 1})")
            if image_size is None:
                if image.shape[1] != image.shape[2] or (images and image.shape != images[0].shape):
                    raise GantoolsError(f"images in {self.root} differ in size or are not square "
                                        f"({ipath.name} is {image.shape[2]}x{image.shape[1]}): give an image size")
            else:
                image = resize_center_crop(image, image_size)
                label = _crop_labels(label, image_size)
            images.append(image)
            labels.append(label.to(torch.uint8))
            if i % 256 == 0 or i == len(self.files) - 1:
                report(progress, "decode labelled images", i + 1, len(self.files))
        self.images: torch.Tensor = torch.stack(images)
        self.labels: torch.Tensor = torch.stack(labels)
        self.image_size: int = int(self.images.shape[-1])

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index].long()

    def __repr__(self) -> str:
        return f"LabeledFolder({str(self.root)!r}, {len(self)} images, {self.image_size}px, {len(self.concepts)} concepts)"
