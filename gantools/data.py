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


def _to_mode(img, nc: int):
    """Convert a PIL image of any mode to 'L' (nc=1) or 'RGB' (nc=3); alpha is composited on white."""
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
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, img.convert("RGBA"))
    return img.convert("L" if nc == 1 else "RGB")


def read_image(path: str | os.PathLike, nc: int = 3) -> torch.Tensor:
    """Decode an image file at its own size: uint8 tensor nc x H x W. Raises GantoolsError if unreadable."""
    from PIL import Image, UnidentifiedImageError

    path = Path(path)
    if not path.is_file():
        raise GantoolsError(f"image not found: {path}")
    try:
        with Image.open(path) as img:
            img.load()
            img = _to_mode(img, nc)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise GantoolsError(f"cannot read image {path}: {e}") from e
    arr = np.asarray(img, dtype=np.uint8)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).contiguous()


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


def save_image(image: torch.Tensor, path: str | os.PathLike) -> Path:
    """Save one image (C x H x W, uint8 or float in [-1, 1]) as PNG, atomically."""
    from PIL import Image

    if image.dtype != torch.uint8:
        image = to_uint8(image)
    arr = image.detach().cpu().permute(1, 2, 0).numpy()
    pil = Image.fromarray(arr[:, :, 0] if arr.shape[2] == 1 else arr, "L" if arr.shape[2] == 1 else "RGB")
    path = Path(path)
    with atomic_path(path) as tmp:
        pil.save(tmp, format="PNG")
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


@dataclass
class DatasetSpec:
    """A named built-in dataset: `factory(image_size, nc, n, seed)` builds it."""

    name: str
    description: str
    factory: Callable[..., ImageDataset]


BUILTIN_DATASETS: dict[str, DatasetSpec] = {}


def register_dataset(name: str, description: str, factory: Callable[..., ImageDataset]) -> None:
    """Add a named dataset usable as `--data NAME`."""
    BUILTIN_DATASETS[name] = DatasetSpec(name, description, factory)


def _register_builtins() -> None:
    if "scenes" not in BUILTIN_DATASETS:
        from . import scenes  # registers itself

        assert "scenes" in BUILTIN_DATASETS, scenes


def open_dataset(spec: str | os.PathLike, image_size: int = 64, nc: int = 3, n: int | None = None,
                 seed: int = 0, progress: ProgressCallback | None = None) -> ImageDataset:
    """A built-in dataset by name ("scenes") or a folder of images by path.

    Args:
        spec: dataset name or folder path.
        image_size, nc: the images' size and channels.
        n: number of images for generated datasets (ignored for folders).
        seed: seed for generated datasets.
        progress: callback (decoding progress, skipped-file notices).
    """
    _register_builtins()
    text = str(spec)
    if text in BUILTIN_DATASETS and not Path(text).exists():
        kwargs = {"image_size": image_size, "nc": nc, "seed": seed}
        if n is not None:
            kwargs["n"] = n
        return BUILTIN_DATASETS[text].factory(**kwargs)
    path = Path(text)
    if not path.exists():
        names = ", ".join(sorted(BUILTIN_DATASETS))
        raise GantoolsError(f"no dataset {text!r}: give a folder of images or a built-in name ({names})")
    return ImageFolder(path, image_size, nc, progress=progress)
