"""Small shared helpers: the user-error type, the config base, the device rule, atomic writes, progress.

Everything here is used by several modules; look here before writing a helper.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, TypeVar

if TYPE_CHECKING:  # torch is imported lazily so that `gantools --help` stays fast
    import torch


class GantoolsError(Exception):
    """A user mistake (bad path, unknown layer, wrong image size...).

    The CLI prints its message on one line and exits non-zero, without a traceback.
    """


# ---------------------------------------------------------------------------------------------
# The one config base: every saved object (model, segmenter, classifier, encoder, training run)
# keeps its settings in a dataclass that derives from Config and is written beside its weights.

ConfigT = TypeVar("ConfigT", bound="Config")


@dataclass
class Config:
    """Base of every config dataclass: a plain-dict round trip that tolerates files from other versions.

    `from_dict` ignores keys this version does not know (a newer file) and keeps defaults for keys it
    lacks (an older file); a subclass that must translate old keys overrides `upgrade`.
    """

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Translate a dict written by an older version; the base keeps it as it is."""
        return d

    @classmethod
    def from_dict(cls: type[ConfigT], d: dict[str, Any]) -> ConfigT:
        d = cls.upgrade(dict(d))
        names = {f.name for f in fields(cls) if f.init}
        return cls(**{k: v for k, v in d.items() if k in names})

    def replace(self: ConfigT, **changes: Any) -> ConfigT:
        """A copy with some fields changed (validated again by __post_init__)."""
        return type(self).from_dict({**self.to_dict(), **changes})


# ---------------------------------------------------------------------------------------------
# Lazy package exports (PEP 562): a package names what it exports and which submodule holds each
# name; a submodule (and torch with it) is imported on first use, so `--help` stays fast.


def lazy_exports(package: str, table: dict[str, str],
                 namespace: dict[str, Any]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The `__getattr__` and `__dir__` of `package`, whose name -> submodule (relative) `table` is
    imported on first use; each value is then cached in the package's `namespace` (its globals())."""
    import importlib

    def __getattr__(name: str) -> Any:
        module = table.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(list(namespace) + list(table))

    return __getattr__, __dir__


# ---------------------------------------------------------------------------------------------
# Progress reporting: library code never prints; it calls a callback that the CLI renders.


@dataclass
class Progress:
    """One progress report.

    Args:
        task: short description of the work ("train", "dissect layer3", ...).
        completed: units of work done so far.
        total: units in all, or None when unknown.
        metrics: numbers worth showing beside the bar (losses, img/s...).
        message: an optional one-line notice (a warning, a path written).
    """

    task: str
    completed: int = 0
    total: int | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    message: str | None = None


ProgressCallback = Callable[[Progress], None]


def report(callback: ProgressCallback | None, task: str, completed: int = 0, total: int | None = None,
           message: str | None = None, **metrics: float) -> None:
    """Send a progress report if there is a callback."""
    if callback is not None:
        callback(Progress(task, completed, total, dict(metrics), message))


def notice(callback: ProgressCallback | None, message: str, task: str = "notice") -> None:
    """Send a one-line notice (warnings the user should see) through the progress callback."""
    report(callback, task, message=message)


# ---------------------------------------------------------------------------------------------
# Devices


def get_device(spec: str | torch.device | None = "auto") -> torch.device:
    """Parse a device: 'auto' or None (CUDA when present), 'cpu', 'cuda' or 'cuda:N'."""
    import torch

    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").strip().lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError as e:
        raise GantoolsError(f"unknown device {spec!r}: use auto, cpu, cuda or cuda:N") from e
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise GantoolsError(f"device {spec!r} asked for, but CUDA is not available here; use --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise GantoolsError(f"device {spec!r} does not exist: this machine has {torch.cuda.device_count()} GPU(s)")
    elif device.type != "cpu":
        raise GantoolsError(f"unsupported device {spec!r}: use auto, cpu, cuda or cuda:N")
    return device


def module_device(module: Any) -> torch.device | None:
    """The device of a module's first parameter or buffer (None when it has neither, or is not a module)."""
    import torch

    modules = getattr(module, "modules", None)
    if not callable(modules):
        return None
    for m in modules():
        for t in list(m.parameters(recurse=False)) + list(m.buffers(recurse=False)):
            if isinstance(t, torch.Tensor):
                return t.device
    return None


def resolve_device(device: str | torch.device | None, *models: Any) -> torch.device:
    """The one device rule of the API.

    An explicit `device` wins (and the caller moves its models there). With `device=None`, work runs
    where the given, already-loaded model lives; when no loaded model is given (a path or a name is
    about to be loaded), it runs on 'auto': CUDA when present, else the CPU.
    """
    if device is not None:
        return get_device(device)
    for model in models:
        found = module_device(getattr(model, "generator", model))  # a GAN keeps its weights on .generator
        if found is not None:
            return found
    return get_device("auto")


def seed_everything(seed: int) -> torch.Generator:
    """Seed torch's global RNGs and return a CPU generator seeded the same way."""
    import torch

    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------------------------------------
# Atomic file writes: a kill at any moment leaves either the old file or the new one.


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it over `path` when the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        with open(tmp_path, "rb+") as f:
            os.fsync(f.fileno())
        os.chmod(tmp_path, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write a text file atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (indented, UTF-8, non-finite floats as null)."""
    return write_text(path, json.dumps(finite(obj), indent=2) + "\n")


def finite(obj: Any) -> Any:
    """obj with NaN and infinities replaced by None, at any depth of dicts, lists and tuples."""
    # JSON has no NaN/Infinity; browsers and pandas choke on them, so write null instead.
    if isinstance(obj, float):
        return obj if obj == obj and abs(obj) != float("inf") else None
    if isinstance(obj, dict):
        return {k: finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """torch.save atomically (temp file + rename)."""
    import torch

    with atomic_path(path) as tmp, open(tmp, "wb") as f:
        torch.save(obj, f)  # to a file object: torch would otherwise record the random temporary name inside
    return Path(path)


# ---------------------------------------------------------------------------------------------
# Pixel scales: models work in [-1, 1]; users speak in [0, 1] intensity (as scikit-image does).


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> image range [0, 1] (clamped)."""
    return ((x + 1) / 2).clamp(0, 1)


def from_unit(x: torch.Tensor) -> torch.Tensor:
    """Image range [0, 1] -> model range [-1, 1]."""
    return x * 2 - 1


def from_uint8(x: torch.Tensor) -> torch.Tensor:
    """uint8 images [0, 255] -> float model range [-1, 1]."""
    return x.float().div_(127.5).sub_(1.0)


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Model range [-1, 1] -> uint8 [0, 255] (rounded, clamped)."""
    import torch

    return ((x.detach().float() + 1) * 127.5).round_().clamp_(0, 255).to(torch.uint8)


def parse_point(text: str) -> tuple[float, float]:
    """Parse an 'x,y' position given as fractions of the image (0..1)."""
    try:
        x, y = (float(v) for v in text.split(","))
    except ValueError as e:
        raise GantoolsError(f"position {text!r} must be 'x,y' with fractions of the image, e.g. 0.5,0.7") from e
    if not (0 <= x <= 1 and 0 <= y <= 1):
        raise GantoolsError(f"position {text!r} must lie inside the image: x and y between 0 and 1")
    return x, y


# ---------------------------------------------------------------------------------------------
# Pixel colour: luminance, shared by inversion, the encoder and the classical baselines

# ITU-R BT.601 luma weights: the formula PIL uses for mode "L", so a grayscale PNG and our
# luminance of G(z) agree. The weights sum to 1, so the formula is the same on [0,1] and [-1,1].
LUMA_WEIGHTS = (0.299, 0.587, 0.114)


def luminance(x: torch.Tensor) -> torch.Tensor:
    """BT.601 luminance of N x 3 x H x W images (either pixel scale): N x 1 x H x W."""
    w = x.new_tensor(LUMA_WEIGHTS).view(1, 3, 1, 1)
    return (x * w).sum(1, keepdim=True)


def transfer_luminance(color: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Replace the BT.601 luminance of `color` (N x 3 x H x W, [-1, 1]) by `y` (N x 1 x H x W).

    Adding the same offset to R, G and B changes Y by that offset and leaves Cb = B - Y and Cr = R - Y
    unchanged, so Y' + (RGB - Y) is the YCbCr recombination. Where that leaves [-1, 1], the chroma is
    scaled down (hue kept) just enough to fit, so the luminance stays exactly the input's.
    """
    import torch

    chroma = color - luminance(color)
    hi = torch.where(chroma > 0, (1 - y) / chroma.clamp_min(1e-12), torch.full_like(chroma, float("inf")))
    lo = torch.where(chroma < 0, (-1 - y) / chroma.clamp_max(-1e-12), torch.full_like(chroma, float("inf")))
    scale = torch.minimum(hi, lo).amin(1, keepdim=True).clamp(0, 1)
    return y + scale * chroma
