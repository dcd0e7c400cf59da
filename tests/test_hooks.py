"""gantools.hooks: layer resolution, retaining, editing and stopping forward passes."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from gantools.hooks import StopForward, Trace, TraceDict, generate_from, layer_name, layer_output, resolve_layer
from gantools.models import Generator
from gantools.utils import GantoolsError


@pytest.fixture
def gen(tiny_config) -> Generator:
    torch.manual_seed(3)
    return Generator(tiny_config).eval()


@pytest.fixture
def z(gen) -> torch.Tensor:
    return gen.sample_z(5, seed=1)


def _manual_layer(gen: Generator, z: torch.Tensor, upto: str) -> torch.Tensor:
    x = z.reshape(z.shape[0], -1, 1, 1)
    for name in gen.layer_names:
        x = getattr(gen, name)(x)
        if name == upto:
            return x
    raise AssertionError(upto)


class Nested(nn.Module):
    """A sequential model with nested blocks, to test dotted names and hook order."""

    def __init__(self) -> None:
        super().__init__()
        self.layer1 = nn.Sequential(nn.Linear(4, 4), nn.ReLU())
        self.layer2 = nn.Sequential(nn.Linear(4, 3), nn.Tanh())
        self.head = nn.Linear(3, 2)
        self.calls: list[str] = []
        for name, module in self.named_modules():
            if name:
                module.register_forward_hook(lambda m, i, o, name=name: self.calls.append(name))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.layer2(self.layer1(x)))


# ---------------------------------------------------------------------------------------------
# Layer names


@pytest.mark.parametrize("spec", [2, "2", " 2 ", "layer2"])
def test_layer_name_forms(gen, spec):
    assert layer_name(gen, spec) == "layer2"
    name, module = resolve_layer(gen, spec)
    assert name == "layer2" and module is gen.layer2


def test_dotted_names(gen):
    name, module = resolve_layer(gen, "layer2.0")
    assert name == "layer2.0" and isinstance(module, nn.ConvTranspose2d)
    assert resolve_layer(gen, "output")[1] is gen.output


@pytest.mark.parametrize("spec", [0, 7, "layer9", "nope", "", "layer2.9"])
def test_unknown_layer_names_valid_choices(gen, spec):
    with pytest.raises(GantoolsError) as e:
        layer_name(gen, spec)
    msg = str(e.value)
    assert "unknown layer" in msg and "1, 2" in msg and "layer1" in msg and "output" in msg


def test_unknown_layer_without_numbered_blocks():
    m = nn.Sequential(nn.Linear(2, 2))
    with pytest.raises(GantoolsError, match="a module name"):
        layer_name(m, 3)


# ---------------------------------------------------------------------------------------------
# Trace


def test_trace_retains_exact_output_and_removes_hook(gen, z):
    with torch.no_grad(), Trace(gen, 2) as t:
        out = gen(z)
    assert torch.equal(t.output, _manual_layer(gen, z, "layer2"))
    assert t.name == "layer2"
    assert len(gen.layer2._forward_hooks) == 0
    with torch.no_grad():  # the hook is gone: nothing retained any more
        t.output = None
        assert torch.equal(gen(z), out)
        assert t.output is None


def test_trace_detach_and_gradients(gen, z):
    with Trace(gen, 1) as t:
        gen(z)
    assert not t.output.requires_grad
    with Trace(gen, 1, detach=False) as t:
        out = gen(z)
    assert t.output.requires_grad
    grad, = torch.autograd.grad(out.sum(), t.output)
    assert grad.shape == t.output.shape and grad.abs().sum() > 0


def test_edit_output_changes_downstream(gen, z):
    seen = []

    def zero(x, name):
        seen.append(name)
        return torch.zeros_like(x)

    with torch.no_grad(), Trace(gen, "layer1", edit_output=zero) as t:
        edited = gen(z)
    assert seen == ["layer1"]
    assert torch.equal(t.output, torch.zeros_like(t.output))  # the retained output is the edited one
    with torch.no_grad():
        expected = gen.output(gen.layer2(torch.zeros_like(t.output)))
        assert torch.allclose(edited, expected)
        assert not torch.allclose(edited, gen(z))


def test_edit_in_place_returning_none(gen, z):
    # Like a PyTorch forward hook, an edit that modifies the output in place may return None.
    def halve(x, name):
        x.mul_(0.5)

    with torch.no_grad(), Trace(gen, 2, edit_output=halve) as t:
        edited = gen(z)
    with torch.no_grad():
        base = _manual_layer(gen, z, "layer2")
        assert torch.allclose(t.output, base * 0.5)
        assert torch.allclose(edited, gen.output(base * 0.5))


def test_stop_skips_the_rest_and_swallows(gen, z):
    calls = []
    handle = gen.output.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad(), Trace(gen, 1, stop=True) as t:
            result = gen(z)
            pytest.fail("the forward pass should have stopped")  # pragma: no cover
    finally:
        handle.remove()
    assert "result" not in locals()
    assert calls == []
    assert torch.equal(t.output, _manual_layer(gen, z, "layer1"))
    assert len(gen.layer1._forward_hooks) == 0


def test_other_exceptions_propagate_and_hooks_removed(gen, z):
    with pytest.raises(ValueError):
        with Trace(gen, 2):
            raise ValueError("boom")
    assert len(gen.layer2._forward_hooks) == 0
    # StopForward raised by hand (no stop=True) is still swallowed, as documented
    with Trace(gen, 2):
        raise StopForward()


def test_tuple_outputs_are_detached():
    class Pair(nn.Module):
        def forward(self, x):
            return x * 2, [x + 1]

    m = nn.Sequential()
    m.add_module("pair", Pair())
    x = torch.ones(2, requires_grad=True)
    with Trace(m, "pair") as t:
        m(x)
    a, (b,) = t.output
    assert not a.requires_grad and not b.requires_grad
    assert torch.equal(a, torch.full((2,), 2.0)) and torch.equal(b, torch.full((2,), 2.0))


# ---------------------------------------------------------------------------------------------
# TraceDict


def test_tracedict_retains_several_and_dedupes(gen, z):
    with torch.no_grad(), TraceDict(gen, [2, "layer1", "layer2", "1"]) as td:
        gen(z)
    assert list(td) == ["layer2", "layer1"]
    assert torch.equal(td["layer1"].output, _manual_layer(gen, z, "layer1"))
    assert torch.equal(td["layer2"].output, _manual_layer(gen, z, "layer2"))
    assert all(len(getattr(gen, n)._forward_hooks) == 0 for n in ("layer1", "layer2"))


def test_tracedict_edit_receives_each_name(gen, z):
    names = []

    def edit(x, name):
        names.append(name)
        return x + 1 if name == "layer1" else x

    with torch.no_grad(), TraceDict(gen, [1, 2], edit_output=edit) as td:
        gen(z)
    assert names == ["layer1", "layer2"]
    with torch.no_grad():
        assert torch.allclose(td["layer2"].output, gen.layer2(_manual_layer(gen, z, "layer1") + 1))


def test_tracedict_stop_after_last_in_execution_order(gen, z):
    calls = []
    handle = gen.output.register_forward_hook(lambda *a: calls.append(1))
    try:
        with torch.no_grad(), TraceDict(gen, [2, 1], stop=True) as td:  # given out of order
            gen(z)
    finally:
        handle.remove()
    assert calls == []
    assert td["layer1"].output is not None and td["layer2"].output is not None


def test_tracedict_stop_with_nested_layers():
    # A parent's hook fires after its children's: stopping at the child would lose the parent.
    m = Nested()
    with torch.no_grad(), TraceDict(m, ["layer1", "layer1.0"], stop=True) as td:
        m(torch.randn(3, 4))
    assert td["layer1"].output is not None and td["layer1.0"].output is not None
    assert "layer2" not in m.calls
    m.calls.clear()
    with torch.no_grad(), TraceDict(m, ["layer2.0", "layer1"], stop=True) as td:
        m(torch.randn(3, 4))
    assert "head" not in m.calls and "layer2" not in m.calls and "layer2.0" in m.calls


def test_tracedict_needs_a_layer(gen):
    with pytest.raises(GantoolsError, match="at least one layer"):
        TraceDict(gen, [])


def test_tracedict_unknown_layer_registers_nothing(gen):
    with pytest.raises(GantoolsError):
        TraceDict(gen, [1, "layer7"])
    assert len(gen.layer1._forward_hooks) == 0


# ---------------------------------------------------------------------------------------------
# layer_output and generate_from


def test_layer_output_matches_full_run(gen, z):
    with torch.no_grad():
        out = layer_output(gen, 2, z)
        assert torch.equal(out, _manual_layer(gen, z, "layer2"))


@pytest.mark.parametrize("layer", [1, 2])
def test_generate_from_inverts_layer_output(gen, z, layer):
    with torch.no_grad():
        features = layer_output(gen, layer, z)
        assert torch.allclose(generate_from(gen, layer, features), gen(z), atol=1e-6)
        # and from edited features
        edited = features.clone()
        edited[:, 0] = 5.0
        with Trace(gen, layer, edit_output=lambda x, n: edited):
            expected = gen(z)
        assert torch.allclose(generate_from(gen, layer, edited), expected, atol=1e-6)


def test_generate_from_until_a_later_block(gen, z):
    with torch.no_grad():
        f1 = layer_output(gen, 1, z)
        assert torch.allclose(generate_from(gen, 1, f1, until=2), layer_output(gen, 2, z), atol=1e-6)
        assert torch.allclose(generate_from(gen, 1, f1, until="layer2"), layer_output(gen, 2, z), atol=1e-6)
        assert torch.equal(generate_from(gen, 1, f1, until=1), f1)
        with pytest.raises(GantoolsError, match="at or after layer2"):
            generate_from(gen, 2, layer_output(gen, 2, z), until=1)


def test_generate_from_checks_shape_and_model(gen, z):
    with torch.no_grad():
        features = layer_output(gen, 2, z)
        with pytest.raises(GantoolsError, match="must have shape"):
            generate_from(gen, 2, features[:, :3])
        with pytest.raises(GantoolsError, match="must have shape"):
            generate_from(gen, 1, features)
    with pytest.raises(GantoolsError, match="gantools Generator"):
        generate_from(nn.Sequential(nn.Linear(2, 2)), "0", torch.zeros(1, 2))
