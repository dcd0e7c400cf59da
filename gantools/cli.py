"""The `gantools` command line: a thin typer layer over the Python API.

Commands parse options, call the library, and render its results and progress with rich. torch and
the heavy modules are imported inside the commands, so `gantools --help` stays fast.
"""

from __future__ import annotations

import json
import sys
import time
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from typer.core import TyperGroup

from .utils import GantoolsError, Progress


def _error(message: str) -> None:
    from rich.console import Console

    Console(stderr=True).print(f"[bold red]error:[/] {message}", highlight=False)


class _Group(TyperGroup):
    """Turns user mistakes (GantoolsError) into one red line and exit code 1, for every command."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except GantoolsError as e:
            _error(str(e))
            raise typer.Exit(1) from None


app = typer.Typer(
    cls=_Group,
    name="gantools",
    help="Train DCGANs, then open them up: dissection, unit ablation/insertion, and GAN-prior inversion.\n\n"
    "Every analysis command takes --model: a .safetensors file, a run directory, or a pretrained name "
    "(default scenes64).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)
data_app = typer.Typer(help="Built-in datasets: write them to disk.", no_args_is_help=True)
segmenter_app = typer.Typer(help="Segmenters that label generated images with concepts.", no_args_is_help=True)
encoder_app = typer.Typer(help="Encoders that give inversion a starting latent.", no_args_is_help=True)
app.add_typer(data_app, name="data")
app.add_typer(segmenter_app, name="segmenter")
app.add_typer(encoder_app, name="encoder")


# ---------------------------------------------------------------------------------------------
# Shared options

ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model: a .safetensors file, a run directory, "
                                       "or a pretrained name (scenes64, mnist32).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar: plain log lines only, for scripts.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory.")]
DEFAULT_MODEL = "scenes64"


class Reporter:
    """Renders library progress callbacks: a rich progress bar on a terminal, log lines otherwise.

    Use as a context manager and pass the instance as `progress=`. Notices (Progress.message) are
    printed as lines above the bar.
    """

    def __init__(self, quiet: bool = False, log_every: float = 5.0) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.live = not quiet and self.console.is_terminal
        self.log_every = log_every
        self._bar = None
        self._tasks: dict[str, Any] = {}
        self._last_log: dict[str, float] = {}

    def __enter__(self) -> "Reporter":
        if self.live:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress as Bar, TextColumn, \
                TimeElapsedColumn, TimeRemainingColumn

            self._bar = Bar(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                            TimeElapsedColumn(), TimeRemainingColumn(), TextColumn("{task.fields[metrics]}"),
                            console=self.console, transient=False)
            self._bar.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._bar is not None:
            self._bar.__exit__(*exc)

    def print(self, text: str) -> None:
        self.console.print(text, highlight=False)

    def __call__(self, p: Progress) -> None:
        if p.message:
            self.print(p.message)
        if p.total is None and not p.completed:
            return
        metrics = "  ".join(f"{k} {_fmt(v)}" for k, v in p.metrics.items())
        if self._bar is not None:
            if p.task not in self._tasks:
                self._tasks[p.task] = self._bar.add_task(p.task, total=p.total, metrics="")
            self._bar.update(self._tasks[p.task], completed=p.completed, total=p.total, metrics=metrics)
            return
        now = time.monotonic()
        done = p.total is not None and p.completed >= p.total
        if done or now - self._last_log.get(p.task, 0.0) >= self.log_every:
            self._last_log[p.task] = now
            of = f"/{p.total}" if p.total is not None else ""
            self.print(f"{p.task}: {p.completed}{of}  {metrics}".rstrip())


def _fmt(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def print_json(obj: Any) -> None:
    """One JSON document on stdout (for --json)."""
    from .utils import _finite

    sys.stdout.write(json.dumps(_finite(obj)) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Commands. Each block belongs to one part of the library; keep them thin.

# === training, export, sampling (gantools.training, gantools.sampling) ===

# === built-in data (gantools.scenes) ===

# === segmenters (gantools.segmenters) ===

# === dissection (gantools.dissection) ===

# === interventions (gantools.interventions) ===

# === inversion and encoders (gantools.inversion) ===

# === evaluation (gantools.metrics) ===

# === editing (gantools.editing) ===


def main() -> None:
    """Console entry point: user mistakes print one line and exit 1, without a traceback."""
    try:
        app()
    except GantoolsError as e:  # raised outside a command (rare); commands are covered by _Group
        _error(str(e))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
