"""gantools: train DCGANs, then open them up (dissection, unit interventions, GAN-prior inversion).

The public API is imported lazily (PEP 562), so `import gantools` and `gantools --help` stay fast:
torch loads the first time a name that needs it is used.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# public name -> module that defines it. Each issue's module adds its names here.
_EXPORTS: dict[str, str] = {
    # foundation
    "GantoolsError": "utils",
    "Progress": "utils",
    "get_device": "utils",
    "ModelConfig": "models",
    "Generator": "models",
    "Discriminator": "models",
    "GAN": "models",
    "load_model": "models",
    "save_model": "models",
    "load_image": "data",
    "save_image": "data",
    "save_grid": "data",
    "open_dataset": "data",
    "ImageFolder": "data",
    "Trace": "hooks",
    "TraceDict": "hooks",
    "resolve_layer": "hooks",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'gantools' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(list(globals()) + list(_EXPORTS))


__all__ = sorted(_EXPORTS)
