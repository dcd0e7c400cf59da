"""DCGAN generator and discriminator, and the one model file format (safetensors + config metadata).

The generator is a stack of named blocks `layer1 ... layerK` (transposed conv + BatchNorm + ReLU)
followed by `output` (transposed conv + Tanh). Dissection, interventions and inversion address
those blocks by number (`3` means `layer3`) through `gantools.hooks.resolve_layer`.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .architecture import D_NORMS, SUPPORTED_SIZES, ModelConfig
from .defaults import MODEL as DEFAULT_MODEL
from .utils import GantoolsError, atomic_path, resolve_device

if TYPE_CHECKING:
    # gantools.types names GAN and Generator from here, so this module spells its aliases out
    DeviceSpec = str | torch.device | None

__all__ = ["D_NORMS", "FORMAT_VERSION", "GAN", "MODEL_FILE", "SUPPORTED_SIZES", "Discriminator", "Generator",
           "ModelConfig", "add_spectral_norm", "companion_path", "component_state", "find_companion",
           "fingerprint", "fold_spectral_norm", "init_weights", "load_model", "load_state", "pretrained_dir",
           "pretrained_names", "read_safetensors", "resolve_model_path", "save_model", "save_safetensors"]

FORMAT_VERSION = "1"


def init_weights(module: nn.Module) -> None:
    """DCGAN init: conv weights N(0, 0.02); BatchNorm weights N(1, 0.02), biases 0."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
            nn.init.normal_(m.weight, 0.0, 0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.normal_(m.weight, 1.0, 0.02)
            nn.init.zeros_(m.bias)


class Generator(nn.Module):
    """DCGAN generator: z (N x nz) -> image (N x nc x S x S) in [-1, 1].

    Block `layer1` maps z to a 4x4 map with ngf * 2**(K-1) channels; each following block doubles the
    resolution and halves the channels, down to ngf at S/2; `output` doubles once more to nc channels.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k = config.num_layers
        channels = [config.ngf * 2 ** (k - 1 - i) for i in range(k)]
        in_ch = config.nz
        for i, out_ch in enumerate(channels):
            stride, padding = (1, 0) if i == 0 else (2, 1)
            block = nn.Sequential(
                nn.ConvTranspose2d(in_ch, out_ch, 4, stride, padding, bias=False),
                nn.BatchNorm2d(out_ch),
                nn.ReLU(inplace=False),  # not in-place: hooks retain and edit these outputs
            )
            self.add_module(f"layer{i + 1}", block)
            in_ch = out_ch
        self.output = nn.Sequential(nn.ConvTranspose2d(in_ch, config.nc, 4, 2, 1, bias=False), nn.Tanh())
        init_weights(self)

    @property
    def layer_names(self) -> list[str]:
        """The hidden blocks' names, layer1 ... layerK."""
        return [f"layer{i + 1}" for i in range(self.config.num_layers)]

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = z.reshape(z.shape[0], -1, 1, 1)
        for name in self.layer_names:
            x = getattr(self, name)(x)
        return self.output(x)

    def sample_z(self, n: int, seed: int | None = None, device: torch.device | str | None = None) -> torch.Tensor:
        """n latent vectors from N(0, I), reproducible for a given seed whatever the device."""
        gen = torch.Generator().manual_seed(seed) if seed is not None else None
        # Draw 16 values more than needed: torch's vectorised randn redraws the last (partial) block of
        # 16, so without the margin the last latent of a batch depended on n. With it, latent i of a seed
        # is the same for every n > i (a grid's image 5 is `sample_z(6, seed)[5]`).
        nz = self.config.nz
        z = torch.randn(n * nz + 16, generator=gen)[: n * nz].reshape(n, nz)
        return z.to(device if device is not None else next(self.parameters()).device)


class Discriminator(nn.Module):
    """DCGAN discriminator: image -> one logit per image (train with BCE-with-logits).

    `forward(x, return_features=True)` also returns the output of every block `layer1 ... layerK`,
    which inversion uses as a perceptual loss. With `config.d_norm` "spectral" or "none" the hidden
    blocks have no BatchNorm; training adds the spectral-norm parametrisation (`add_spectral_norm`).
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        k = config.num_layers
        in_ch = config.nc
        for i in range(k):
            out_ch = config.ndf * 2**i
            layers: list[nn.Module] = [nn.Conv2d(in_ch, out_ch, 4, 2, 1, bias=False)]
            if i > 0 and config.d_norm == "batch":  # no BatchNorm on D's input layer
                layers.append(nn.BatchNorm2d(out_ch))
            layers.append(nn.LeakyReLU(0.2, inplace=False))
            self.add_module(f"layer{i + 1}", nn.Sequential(*layers))
            in_ch = out_ch
        self.output = nn.Conv2d(in_ch, 1, 4, 1, 0, bias=False)
        init_weights(self)

    @property
    def layer_names(self) -> list[str]:
        """The hidden blocks' names, layer1 ... layerK."""
        return [f"layer{i + 1}" for i in range(self.config.num_layers)]

    def forward(self, x: torch.Tensor, return_features: bool = False):
        features = []
        for name in self.layer_names:
            x = getattr(self, name)(x)
            features.append(x)
        logits = self.output(x).flatten()
        return (logits, features) if return_features else logits


def add_spectral_norm(discriminator: Discriminator) -> Discriminator:
    """Parametrise every convolution of D by its weight over its spectral norm (one power iteration
    per training forward, torch's `parametrizations.spectral_norm`). In place; returns D."""
    from torch.nn.utils.parametrizations import spectral_norm

    for module in list(discriminator.modules()):
        if isinstance(module, nn.Conv2d):
            spectral_norm(module)
    return discriminator


def fold_spectral_norm(discriminator: Discriminator) -> Discriminator:
    """A plain copy of a spectral-norm D whose weights are the normalised ones (W / sigma): what a
    model file stores, so that every analysis loads it as an ordinary D."""
    import copy

    from torch.nn.utils import parametrize

    plain = copy.deepcopy(discriminator).eval()  # eval: use the stored power-iteration vectors as they are
    for module in plain.modules():
        if parametrize.is_parametrized(module, "weight"):
            parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
    return plain


# ---------------------------------------------------------------------------------------------
# The model file: one safetensors file with tensors prefixed by component name
# ("generator.", "discriminator.") and the config as JSON in the metadata.


def save_safetensors(path: str | os.PathLike, modules: dict[str, nn.Module], metadata: dict[str, Any],
                     half: bool = False) -> Path:
    """Write modules' state dicts into one safetensors file, atomically.

    Args:
        path: destination file.
        modules: component name -> module; tensors are stored as "<name>.<param>".
        metadata: JSON-serialisable values, stored as JSON strings in the safetensors header.
        half: store floating-point tensors in float16 (halves the file; loading casts back).
    """
    from safetensors.torch import save_file

    tensors = {}
    for prefix, module in modules.items():
        for key, value in module.state_dict().items():
            value = value.detach().cpu()
            if half and value.is_floating_point():
                value = value.half()
            tensors[f"{prefix}.{key}"] = value.contiguous()
    meta = {"format": "gantools", "format_version": FORMAT_VERSION}
    meta.update({k: json.dumps(v) for k, v in metadata.items()})
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=meta)
    return Path(path)


def read_safetensors(path: str | os.PathLike, what: str = "model") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a safetensors file written by `save_safetensors`: (tensors, decoded metadata).
    `what` names the file in errors (model, encoder, classifier, segmenter)."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise GantoolsError(f"{what} file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except Exception as e:  # safetensors raises its own error types for corrupt headers
        hint = (": it is a training checkpoint; give its run directory, or `gantools export` it"
                if path.suffix in (".pt", ".pth") else f" ({e})")
        raise GantoolsError(f"{path} is not a readable safetensors file{hint}") from e
    meta: dict[str, Any] = {}
    for k, v in raw.items():
        try:
            meta[k] = json.loads(v)
        except (json.JSONDecodeError, TypeError):
            meta[k] = v
    return tensors, meta


def component_state(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors of one component ("generator", "encoder"...) with the prefix stripped."""
    p = prefix + "."
    return {k[len(p):]: v for k, v in tensors.items() if k.startswith(p)}


def load_state(module: nn.Module, state: dict[str, torch.Tensor], what: str) -> None:
    """Load a state dict, casting half-precision files back to the module's dtypes."""
    own = module.state_dict()
    try:
        module.load_state_dict({k: v.to(own[k].dtype) if k in own else v for k, v in state.items()})
    except RuntimeError as e:
        raise GantoolsError(f"the {what} weights do not fit its config: {str(e).splitlines()[0]}") from e


# ---------------------------------------------------------------------------------------------
# Finding and loading models: a .safetensors path, a run directory, or a pretrained name.

MODEL_FILE = "model.safetensors"


def pretrained_dir() -> Path:
    """Where the shipped models live: GANTOOLS_PRETRAINED if set, else inside the installed package
    (a wheel carries the top-level `pretrained/` as `gantools/pretrained/`), else the checkout's `pretrained/`."""
    env = os.environ.get("GANTOOLS_PRETRAINED")
    if env:
        return Path(env)
    package = Path(__file__).resolve().parent
    installed = package / "pretrained"
    return installed if installed.is_dir() else package.parent / "pretrained"


def pretrained_names() -> list[str]:
    """The names of the shipped models (folders of pretrained_dir() holding a model file)."""
    root = pretrained_dir()
    return sorted(p.name for p in root.iterdir() if (p / MODEL_FILE).is_file()) if root.is_dir() else []


def resolve_model_path(spec: str | os.PathLike) -> Path:
    """The model file for `spec`: a .safetensors file, a run directory, or a pretrained model name."""
    path = Path(spec)
    if path.is_file():
        return path
    if path.is_dir():
        if (path / MODEL_FILE).is_file():
            return path / MODEL_FILE
        if (path / "checkpoint.pt").is_file():
            raise GantoolsError(f"{path} holds no {MODEL_FILE}: run `gantools export {path}` first")
        raise GantoolsError(f"{path} is a folder without a model ({MODEL_FILE} or checkpoint.pt): give a "
                            ".safetensors file, a run directory, or a pretrained name")
    named = pretrained_dir() / str(spec) / MODEL_FILE
    if named.is_file():
        return named
    names = ", ".join(pretrained_names()) or "none installed"
    raise GantoolsError(f"no model {str(spec)!r}: give a .safetensors file, a run directory, "
                        f"or a pretrained name ({names})")


def companion_path(model_path: str | os.PathLike, component: str, suffix: str = ".safetensors") -> Path:
    """Files stored with a model sit beside it: <dir>/<component>.safetensors (encoder, segmenter,
    classifier), or another suffix (the dissection report, dissection.json)."""
    return Path(model_path).parent / f"{component}{suffix}"


@dataclass
class GAN:
    """A loaded model: generator, discriminator, config, and where it came from.

    Companions stored beside the model file (an encoder, a segmenter, a classifier) are found with
    `companion(name)`, which returns a path or None.
    """

    generator: Generator
    discriminator: Discriminator
    config: ModelConfig
    path: Path | None = None
    metadata: dict[str, Any] | None = None

    @property
    def device(self) -> torch.device:
        """Where the generator's weights live."""
        return next(self.generator.parameters()).device

    def companion(self, component: str, suffix: str = ".safetensors") -> Path | None:
        """<component><suffix> beside the model file, or None (no such file, or a model in memory)."""
        if self.path is None:
            return None
        p = companion_path(self.path, component, suffix)
        return p if p.is_file() else None

    def to(self, device: torch.device | str) -> "GAN":
        """Move G and D to `device` (in place); returns the GAN."""
        self.generator.to(device)
        self.discriminator.to(device)
        return self


def save_model(path: str | os.PathLike, generator: Generator, discriminator: Discriminator,
               extra_metadata: dict[str, Any] | None = None, half: bool = False) -> Path:
    """Write G and D into one model.safetensors with the model config in its metadata."""
    meta = {"config": generator.config.to_dict()}
    meta.update(extra_metadata or {})
    return save_safetensors(path, {"generator": generator, "discriminator": discriminator}, meta, half=half)


def load_model(spec: "GAN | str | os.PathLike" = DEFAULT_MODEL, device: "DeviceSpec" = None) -> GAN:
    """Load a model in eval mode.

    Args:
        spec: a .safetensors file, a run directory, a pretrained name ("scenes64", "mnist32"), or an
            already loaded GAN (returned as it is).
        device: where to put it ("auto", "cpu", "cuda", ...); None: a loaded GAN stays where it is,
            a file is loaded on "auto" (CUDA when present).
    """
    if isinstance(spec, GAN):
        return spec.to(resolve_device(device, spec))
    path = resolve_model_path(spec)
    tensors, meta = read_safetensors(path)
    if "config" not in meta:
        raise GantoolsError(f"{path} has no gantools model config in its metadata")
    config = ModelConfig.from_dict(meta["config"])
    g, d = Generator(config), Discriminator(config)
    load_state(g, component_state(tensors, "generator"), "generator")
    load_state(d, component_state(tensors, "discriminator"), "discriminator")
    gan = GAN(g.eval(), d.eval(), config, path, meta)
    return gan.to(resolve_device(device))


def find_companion(model: "GAN | str | os.PathLike", component: str, suffix: str = ".safetensors") -> Path | None:
    """The <component><suffix> stored beside a model (a loaded GAN or a model spec), or None.

    Only resolves the model's path: nothing is loaded.
    """
    if isinstance(model, GAN):
        return model.companion(component, suffix)
    path = companion_path(resolve_model_path(model), component, suffix)
    return path if path.is_file() else None


def fingerprint(module: nn.Module) -> str:
    """A short hash of a module's weights: reports record it so they can't be applied to another model."""
    import hashlib

    h = hashlib.sha256()
    for key, value in sorted(module.state_dict().items()):
        h.update(key.encode())
        h.update(value.detach().float().cpu().numpy().tobytes())
    return h.hexdigest()[:16]
