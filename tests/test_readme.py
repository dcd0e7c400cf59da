"""Every command line and Python snippet in the README, the model cards and docs/ works as written (#22).

- Each `gantools ...` line (in a code block, continuation lines joined, or in `inline code`; also
  `python -m gantools ...` and `torchrun ... -m gantools ...`) is parsed by the real CLI without
  running it: the command must exist, and every option and argument must be accepted with the value
  given. Lines with placeholders (`path/to/digits`, `runs/scenes`) must parse too. An inline span of
  command words only (`gantools export`) names a command, which must exist.
- Files a line reads from `examples/` must exist, and a line's layers and segmenter must fit its
  model: the run that an earlier `gantools train --out DIR` line of the same file made, or a shipped
  model (the tour once dissected a 32 px grayscale model at layer 4 with an RGB segmenter).
- Each ```python snippet runs in a fresh temporary directory that sees the checkout's `examples/`, on
  the shipped models; a snippet preceded by `<!-- readme-test: tiny models -->` runs with
  GANTOOLS_PRETRAINED pointing at tiny seeded models named scenes64 and mnist32 instead.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
import shlex
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest
import torch
import typer
import typer.main

from gantools.models import Discriminator, Generator, ModelConfig, save_model

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", ROOT / "pretrained" / "README.md", *sorted((ROOT / "docs").glob("*.md")),
             *sorted((ROOT / "examples").rglob("*.md"))]
TINY_MARKER = "<!-- readme-test: tiny models -->"
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
SHELL_SEPARATORS = {"&&", "||", ";", "|"}
# What the shipped models are (checked against their files in test_shipped_shapes_are_current).
SHIPPED = {"scenes64": (64, 3), "mnist32": (32, 1)}
# ... also named by their files, as the model cards' commands that make the shipped companions do
SHIPPED_FILES = {str(Path("pretrained", name, "model.safetensors")): shape for name, shape in SHIPPED.items()}
SNIPPET_SECONDS = 60  # a generous bound: every snippet here takes a few seconds


@dataclass(frozen=True)
class Line:
    """A command line or a Python snippet, and where it stands."""

    doc: Path
    lineno: int
    text: str
    inline: bool = False
    tiny: bool = False

    @property
    def where(self) -> str:
        return f"{self.doc.relative_to(ROOT)}:{self.lineno}"


def _blocks(doc: Path) -> tuple[list[Line], list[Line]]:
    """Shell lines (continuations joined) and inline spans outside code blocks; and the Python snippets."""
    shell: list[Line] = []
    snippets: list[Line] = []
    lang: str | None = None  # None: outside a code block
    start, pending, body, tiny, previous = 0, "", [], False, ""
    for no, line in enumerate(doc.read_text().splitlines(), 1):
        fence = FENCE.match(line)
        if fence and lang is None:
            lang, start, body = fence.group(1) or "text", no + 1, []
            tiny = previous.strip() == TINY_MARKER
        elif fence:
            if lang == "python":
                snippets.append(Line(doc, start, "\n".join(body), tiny=tiny))
            lang = None
        elif lang == "python":
            body.append(line)
        elif lang is not None:
            if not pending:
                start = no
            if line.rstrip().endswith("\\"):
                pending += line.rstrip()[:-1] + " "
                continue
            shell.append(Line(doc, start, pending + line))
            pending = ""
        else:
            shell.extend(Line(doc, no, span, inline=True) for span in re.findall(r"`([^`\n]+)`", line))
        if line.strip():
            previous = line
    return shell, snippets


def _gantools_args(line: Line) -> list[list[str]]:
    """The argument lists of the gantools invocations on a line (after `gantools` or `-m gantools`)."""
    try:
        tokens = shlex.split(line.text, comments=True)
    except ValueError:  # not shell (an unbalanced quote in prose)
        return []
    found, command = [], []
    for token in tokens + [";"]:
        if token not in SHELL_SEPARATORS:
            command.append(token)
            continue
        if command and command[0] == "gantools":
            found.append(command[1:])
        elif "-m" in command[:-1] and command[command.index("-m") + 1] == "gantools":
            found.append(command[command.index("-m") + 2:])
        command = []
    return found


def _collect() -> tuple[list[tuple[Line, list[str]]], list[Line]]:
    commands, snippets = [], []
    for doc in DOCUMENTS:
        shell, python = _blocks(doc)
        commands.extend((line, args) for line in shell for args in _gantools_args(line))
        snippets.extend(python)
    return commands, snippets


COMMANDS, SNIPPETS = _collect()


@lru_cache(maxsize=1)
def _root_command() -> Any:
    from gantools.cli import app

    return typer.main.get_command(app)


def _walk(args: list[str]) -> tuple[Any, list[str], list[str]]:
    """The (sub)command the words name, its path, and the arguments left for it."""
    command, path = _root_command(), ["gantools"]
    while hasattr(command, "commands") and args and args[0] in command.commands:
        command, path, args = command.commands[args[0]], path + [args[0]], args[1:]
    return command, path, args


def parse(line: Line, args: list[str]) -> tuple[list[str], dict[str, Any]]:
    """Parse one invocation as the CLI would, without running it: its command path and parameters.
    A usage error fails the test with the line it came from."""
    command, path, rest = _walk(args)
    if hasattr(command, "commands") and rest and not rest[0].startswith("-"):
        pytest.fail(f"{line.where}: {' '.join(path)} has no command {rest[0]!r}: {line.text.strip()}")
    if line.inline and not rest:
        return path, {}  # `gantools export` in prose names the command
    try:
        with contextlib.redirect_stdout(io.StringIO()):  # --help prints, then exits
            ctx = command.make_context(" ".join(path), list(rest), resilient_parsing=False)
    except typer.Exit:
        return path, {}
    except typer.TyperException as e:  # click's UsageError, BadParameter, NoSuchOption, ...
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        pytest.fail(f"{line.where}: `{' '.join(path + rest)}` does not parse: {message}")
    return path, dict(ctx.params)


@pytest.mark.parametrize("line,args", COMMANDS, ids=[f"{line.where}:{' '.join(a[:2])}" for line, a in COMMANDS])
def test_command_parses(line: Line, args: list[str]):
    parse(line, args)
    for token in args:
        value = token.split("=", 1)[-1]  # --target=examples/... as well
        if value.startswith("examples/"):
            assert (ROOT / value).exists(), f"{line.where}: {value} is not in the checkout"


def test_a_line_that_does_not_parse_is_named():
    for text, message in [("gantools ablate --layer 3 --alpha 0.5 --units 1", "No such option"),
                          ("gantools sample --frames 1 --interpolate", "frames"),
                          ("gantools COMMAND --help", "no command 'COMMAND'")]:
        line = Line(ROOT / "README.md", 7, text)
        with pytest.raises(pytest.fail.Exception, match=rf"README.md:7: (?s:.*){message}"):
            parse(line, _gantools_args(line)[0])


def test_commands_were_found():
    # guards the extraction itself: the tour alone has dozens of lines
    readme = [line for line, _ in COMMANDS if line.doc.name == "README.md" and line.doc.parent == ROOT]
    assert len(readme) >= 30
    assert any("--data-n 50000" in " ".join(args) and "runs/scenes64" in args for _, args in COMMANDS)  # joined
    assert SNIPPETS


def _layer_number(value: Any) -> int | None:
    match = re.fullmatch(r"(?:layer)?(\d+)(?:\..*)?", str(value))
    return int(match.group(1)) if match else None


def _layers_of(size: int) -> int:
    """A DCGAN generator of this image side has one layer per doubling from 4 px (64 px: layer1-layer4)."""
    return int(math.log2(size)) - 2


def _key(spec: Any) -> str | None:
    """A model, segmenter or report spec as one string: `runs/scenes/` and Path("runs/scenes") alike."""
    return None if spec is None else str(Path(str(spec)))


@dataclass
class Made:
    """What the lines of one document have made so far, on top of the shipped models."""

    models: dict[str, tuple[int, int]]  # model spec -> (image side, channels)
    segmenters: dict[str, int]  # segmenter spec -> channels it takes
    reports: set[str]

    def record(self, path: list[str], params: dict[str, Any]) -> None:
        out = _key(params.get("out"))
        if path[1:] == ["train"] and out:
            # None: train's documented defaults (64 px, 3 channels)
            self.models[out] = (params.get("image_size") or 64, params.get("nc") or 3)
            every, steps = params.get("snapshot_every") or 0, params.get("steps") or 0
            for step in range(every, steps + 1, every) if every else ():  # --snapshot-every's model files
                self.models[_key(f"{out}/snapshots/step_{step:06d}.safetensors")] = self.models[out]
        elif path[1:] == ["segmenter", "train"] and out:
            self.segmenters[out] = params.get("nc") or 3
        elif path[1:] == ["dissect"] and out:
            self.reports.add(out)


def _check_fit(line: Line, params: dict[str, Any], made: Made) -> None:
    """The model, segmenter and report a line uses exist (shipped, or made by an earlier line), and fit."""
    model = _key(params.get("model"))
    if model is None:
        return
    assert model in made.models, f"{line.where}: no earlier line trains {model}, and it is not shipped"
    size, nc = made.models[model]
    for key in ("layer", "layers", "layerwise", "invert_layer"):
        values = params.get(key)
        for value in values if isinstance(values, (list, tuple)) else [values]:
            number = _layer_number(value) if value is not None else None
            assert number is None or 1 <= number <= _layers_of(size), (
                f"{line.where}: {model} is {size} px, so it has layers 1-{_layers_of(size)}, not {value}")
    segmenter = _key(params.get("segmenter"))
    if segmenter is not None and segmenter != "color":
        assert segmenter in made.segmenters, f"{line.where}: no earlier line trains the segmenter {segmenter}"
        assert made.segmenters[segmenter] == nc, (
            f"{line.where}: segmenter {segmenter} takes {made.segmenters[segmenter]}-channel images, "
            f"{model} draws {nc}")
    report = _key(params.get("report"))
    assert report is None or report in made.reports, f"{line.where}: no earlier line writes the report {report}"


@pytest.mark.parametrize("doc", DOCUMENTS, ids=[str(d.relative_to(ROOT)) for d in DOCUMENTS])
def test_lines_fit_the_models_they_use(doc: Path):
    made = Made({**SHIPPED, **SHIPPED_FILES}, {name: nc for name, (_, nc) in SHIPPED.items()}, set())
    for line, args in COMMANDS:
        if line.doc == doc:
            path, params = parse(line, args)
            if params:
                _check_fit(line, params, made)
                made.record(path, params)


def test_the_fit_check_catches_the_old_tour():
    # the tour before #22: a 32 px grayscale run, dissected at layer 4 with an RGB segmenter
    made = Made(dict(SHIPPED), {}, set())
    old = ["gantools train --data path/to/images --image-size 32 --nc 1 --out run/",
           "gantools segmenter train --data scenes --out seg.safetensors",
           "gantools dissect --model run/ --layer 4 --segmenter seg.safetensors",
           "gantools dissect --model run/ --layer 3 --segmenter seg.safetensors",
           "gantools ablate --model other/ --layer 3 --units 1"]
    expected = [None, None, "layers 1-3, not 4", "takes 3-channel images", "no earlier line trains other"]
    for text, message in zip(old, expected):
        line = Line(ROOT / "README.md", 0, text)
        path, params = parse(line, _gantools_args(line)[0])
        if message is None:
            _check_fit(line, params, made)
        else:
            with pytest.raises(AssertionError, match=message):
                _check_fit(line, params, made)
        made.record(path, params)


def test_shipped_shapes_are_current():
    import gantools

    for name, (size, nc) in SHIPPED.items():
        config = gantools.load_model(name, device="cpu").config
        assert (config.image_size, config.nc) == (size, nc)


@pytest.fixture(scope="module")
def tiny_pretrained(tmp_path_factory) -> Path:
    """Tiny seeded stand-ins for the shipped models, under their names (as tests/conftest.py builds them)."""
    root = tmp_path_factory.mktemp("pretrained")
    for seed, (name, (size, nc)) in enumerate(SHIPPED.items(), 1):
        torch.manual_seed(seed)
        config = ModelConfig(image_size=size, nc=nc, nz=8, ngf=8, ndf=8)
        save_model(root / name / "model.safetensors", Generator(config).eval(), Discriminator(config).eval())
    return root


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.where for s in SNIPPETS])
def test_python_snippet_runs(snippet: Line, tmp_path: Path, monkeypatch, request):
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    if snippet.tiny:
        monkeypatch.setenv("GANTOOLS_PRETRAINED", str(request.getfixturevalue("tiny_pretrained")))
    began = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(snippet.text, snippet.where, "exec"), {"__name__": "__readme__"})
    seconds = time.perf_counter() - began
    assert seconds < SNIPPET_SECONDS, f"{snippet.where} took {seconds:.0f} s: README snippets must be cheap"


def test_degraded_inputs_fit_the_invert_lines(tmp_path: Path, monkeypatch):
    """The snippet that makes the README's degraded inputs makes what its invert lines need."""
    from gantools.images import read_image

    snippet = next(s for s in SNIPPETS if "digit3_8px.png" in s.text)
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    exec(compile(snippet.text, snippet.where, "exec"), {"__name__": "__readme__"})
    assert read_image("digit3_8px.png", nc=1).shape == (1, 8, 8)  # mnist32 (32 px) / --scale 4
    hole = read_image("hole.png", nc=1)
    assert hole.shape == (1, 64, 64) and 0 < (hole > 0).float().mean() < 0.5
    noisy = read_image("noisy.png").float() / 255
    clean = read_image(ROOT / "examples/inputs/scenes/scene_house_road.png").float() / 255
    assert abs(float((noisy - clean).std()) - 0.1) < 0.02  # --noise-sigma 0.1 on the [0, 1] scale
