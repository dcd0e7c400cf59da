"""Forward hooks as context managers: retain a layer's output, edit it, or stop the forward pass.

In the spirit of baukit's Trace/TraceDict:

    with Trace(G, 3) as t:                      # retain layer3's output
        G(z)
    t.output                                    # N x C x H x W

    with Trace(G, "layer3", edit_output=lambda x, name: x * mask):
        G(z)                                    # layer3's output edited on the way through

    with Trace(G, 3, stop=True) as t:
        G(z)                                    # stops right after layer3 (no StopForward escapes)

`resolve_layer` is the one place that turns "3", 3, "layer3" or a dotted module name into a module.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Callable, Iterable, Sequence

import torch
from torch import nn

from .utils import GantoolsError

EditFn = Callable[[torch.Tensor, str], torch.Tensor]


def layer_name(model: nn.Module, layer: int | str) -> str:
    """Canonical dotted name of a layer: 3, "3" -> "layer3"; dotted names are checked and returned."""
    text = str(layer).strip()
    name = f"layer{text}" if text.isdigit() else text
    modules = dict(model.named_modules())
    if name in modules and name != "":
        return name
    top = [n for n in modules if n and "." not in n]
    numbered = [n[len("layer"):] for n in top if n.startswith("layer") and n[len("layer"):].isdigit()]
    hint = f"a number ({', '.join(numbered)})" if numbered else "a module name"
    raise GantoolsError(f"unknown layer {text!r}: use {hint} or a dotted module name ({', '.join(top)})")


def resolve_layer(model: nn.Module, layer: int | str) -> tuple[str, nn.Module]:
    """(canonical name, module) for a layer given by number or dotted name."""
    name = layer_name(model, layer)
    return name, dict(model.named_modules())[name]


class StopForward(Exception):
    """Raised inside a hook to end the forward pass early; Trace/TraceDict swallow it on exit."""


class Trace(contextlib.AbstractContextManager):
    """Hook one layer for the duration of a `with` block.

    Args:
        model: the network.
        layer: number or dotted name of the layer.
        retain_output: keep the (possibly edited) output in `self.output`.
        detach: detach the retained output from the graph (set False to backpropagate through it).
        edit_output: fn(output, layer_name) -> new output, applied on every forward.
        stop: raise StopForward right after this layer, skipping the rest of the network.
    """

    def __init__(self, model: nn.Module, layer: int | str, retain_output: bool = True, detach: bool = True,
                 edit_output: EditFn | None = None, stop: bool = False) -> None:
        self.name, module = resolve_layer(model, layer)
        self.output: torch.Tensor | None = None

        def hook(_module: nn.Module, _inputs, output: torch.Tensor):
            if edit_output is not None:
                edited = edit_output(output, self.name)
                # An edit that works in place and returns None keeps the (modified) output, as
                # PyTorch's own forward hooks do.
                output = output if edited is None else edited
            if retain_output:
                self.output = _detach(output) if detach else output
            if stop:
                raise StopForward()
            return output

        self._handle = module.register_forward_hook(hook)

    def close(self) -> None:
        self._handle.remove()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


class TraceDict(OrderedDict, contextlib.AbstractContextManager):
    """Hook several layers at once; `td[name].output` holds each retained output.

    Args:
        model: the network.
        layers: numbers or dotted names.
        retain_output, detach, edit_output: as for Trace (edit_output receives the layer name).
        stop: stop the forward pass after the last of `layers` in execution order.
    """

    def __init__(self, model: nn.Module, layers: Iterable[int | str], retain_output: bool = True,
                 detach: bool = True, edit_output: EditFn | None = None, stop: bool = False) -> None:
        super().__init__()
        names = [layer_name(model, layer) for layer in layers]
        if not names:
            raise GantoolsError("TraceDict needs at least one layer")
        last = _last_in_execution_order(model, names) if stop else None
        for name in names:
            if name not in self:
                self[name] = Trace(model, name, retain_output, detach, edit_output, stop=(name == last))

    def close(self) -> None:
        for trace in reversed(self.values()):
            trace.close()

    def __exit__(self, exc_type, exc, tb) -> bool:
        self.close()
        return exc_type is not None and issubclass(exc_type, StopForward)


def _last_in_execution_order(model: nn.Module, names: Sequence[str]) -> str:
    # A forward hook fires when its module's forward *finishes*. Children are registered in
    # execution order in our sequential generators, and a parent finishes after all its children,
    # so the hooks fire in post-order ("layer3.0" before "layer3"). Plain registration order
    # (named_modules) would stop after "layer3.0" and never record "layer3".
    order: dict[str, int] = {}

    def visit(module: nn.Module, prefix: str) -> None:
        for child_name, child in module.named_children():
            visit(child, f"{prefix}.{child_name}" if prefix else child_name)
        order.setdefault(prefix, len(order))

    visit(model, "")
    return max(names, key=order.__getitem__)


def _detach(output):
    # Layers may return tuples/lists/dicts of tensors (e.g. attention blocks); detach each tensor.
    if isinstance(output, torch.Tensor):
        return output.detach()
    if isinstance(output, (tuple, list)):
        return type(output)(_detach(o) for o in output)
    if isinstance(output, dict):
        return {k: _detach(v) for k, v in output.items()}
    return output


def layer_output(model: nn.Module, layer: int | str, *inputs: torch.Tensor) -> torch.Tensor:
    """Run the model up to `layer` (stopping early) and return that layer's output."""
    with Trace(model, layer, stop=True) as t:
        model(*inputs)
    assert t.output is not None
    return t.output


def generate_from(generator: nn.Module, layer: int | str, features: torch.Tensor,
                  until: int | str | None = None) -> torch.Tensor:
    """The generator's output when `layer` outputs `features` (layer-wise inversion, interventions).

    For a gantools Generator and one of its blocks `layerK`, only the blocks after it run. For any
    other layer (a dotted sub-module) the whole network runs on a dummy z, with the layer's output
    replaced by `features` through a hook.

    Args:
        until: return this later block's output instead of the image (gantools Generator blocks only).
    """
    config = getattr(generator, "config", None)
    nz = getattr(config, "nz", None)
    if nz is None:
        raise GantoolsError("generate_from needs a gantools Generator (with a config)")
    name = layer_name(generator, layer)
    names = list(getattr(generator, "layer_names", []))
    if name in names and hasattr(generator, "output"):
        expected = _block_output_shape(generator, name, features.shape[0])
        if tuple(features.shape) != expected:
            raise GantoolsError(f"features for {name} must have shape {expected} "
                                f"(batch x channels x height x width), got {tuple(features.shape)}")
        x = features
        stop = layer_name(generator, until) if until is not None else "output"
        if stop != "output" and (stop not in names or names.index(stop) < names.index(name)):
            raise GantoolsError(f"cannot run from {name} to {stop}: give a block at or after {name}")
        start = names.index(name) + 1
        end = len(names) if stop == "output" else names.index(stop) + 1
        for later in names[start:end]:
            x = getattr(generator, later)(x)
        return generator.output(x) if stop == "output" else x

    z = torch.zeros(features.shape[0], nz, device=features.device, dtype=features.dtype)

    def replace(x: torch.Tensor, layer_name_: str) -> torch.Tensor:
        if x.shape != features.shape:  # otherwise the next layer fails with a cryptic shape error
            raise GantoolsError(f"features for {layer_name_} must have shape {tuple(x.shape)} "
                                f"(batch x channels x height x width), got {tuple(features.shape)}")
        return features

    with Trace(generator, name, retain_output=False, edit_output=replace):
        return generator(z)


def _block_output_shape(generator: nn.Module, name: str, batch: int) -> tuple[int, ...]:
    # Block k of a DCGAN generator outputs ngf * 2**(K-k) channels at 4 * 2**(k-1) pixels.
    config = generator.config
    k, total = int(name[len("layer"):]), config.num_layers
    side = 4 * 2 ** (k - 1)
    return (batch, config.ngf * 2 ** (total - k), side, side)
