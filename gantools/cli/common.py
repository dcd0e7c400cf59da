"""What every command shares: the error funnel, the progress reporter, JSON output and common options.

Only typer, the standard library and gantools.utils are imported at the top (rich and the library
come inside functions), so `gantools --help` stays fast.
"""

from __future__ import annotations

import json
import re
import sys
import time
from contextlib import contextmanager
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Annotated, Any, Callable, Iterator, Optional

import typer
from typer.core import TyperGroup

from .. import defaults
from ..utils import GantoolsError, Progress

INTERRUPTED_EXIT = 130  # what a shell reports for a process stopped by Ctrl-C (128 + SIGINT)


# ---------------------------------------------------------------------------------------------
# The error funnel: user mistakes and Ctrl-C become one line and an exit code, never a traceback


class Interrupted(Exception):
    """Ctrl-C during a command, with the one line that says what was kept and how to continue."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def say_error(message: str) -> None:
    """One red `error:` line on stderr."""
    from rich.console import Console
    from rich.markup import escape

    # soft_wrap: one line however long (paths); escape: brackets in paths or lists are not markup.
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


def say_line(message: str) -> None:
    """One plain line on stderr, as written (no markup, no wrapping)."""
    from rich.console import Console

    Console(stderr=True).print(message, highlight=False, markup=False, soft_wrap=True)


class CliGroup(TyperGroup):
    """The root group: for every command, GantoolsError and OSError become one red line and exit 1;
    Ctrl-C becomes the command's one line about what it kept (or "interrupted") and exit 130."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except GantoolsError as e:
            say_error(library_message(e))
            raise typer.Exit(1) from None
        except OSError as e:  # a path the user gave cannot be read or written: say which, no traceback
            say_error(os_message(e))
            raise typer.Exit(1) from None
        except Interrupted as e:
            say_line(e.message)
            raise typer.Exit(INTERRUPTED_EXIT) from None
        except KeyboardInterrupt:  # a command that has nothing to say about what it kept
            say_line("interrupted")
            raise typer.Exit(INTERRUPTED_EXIT) from None


def os_message(e: OSError) -> str:
    """An OSError as '<path>: <what is wrong>' in plain words."""
    what = {FileExistsError: "not a directory (a file is in the way)", IsADirectoryError: "is a directory, not a file",
            NotADirectoryError: "a part of this path is a file, not a directory",
            FileNotFoundError: "no such file or directory", PermissionError: "permission denied"}
    reason = next((text for cls, text in what.items() if isinstance(e, cls)), e.strerror or str(e))
    return f"{e.filename}: {reason}" if e.filename else f"{reason}"


# Library messages name Python parameters (the house rule); where a message tells the user what to
# type, the CLI says it with its flags. The parameters so named (as name= or name='value'; other
# names are left alone: a message may quote Python code), and those whose flag has another name:
NAMED_PARAMETERS = ("rank", "remove", "add", "units", "allow_weak", "dissection", "at", "mask")
FLAG_NAMES = {"dissection": "report"}
# Phrases that describe a Python value, and what to type instead:
PHRASES = {
    'give units (e.g. [4, 17, 33] or "4,17,33") or a concept to take the top units of':
        "--units 4,17,33, or --concept NAME (with --top K)",
    "give dissection (a report where rank_units stored it)":
        "give --report DIR (where `gantools rank --report DIR` stored it)",
    "give dissection (a report)": "give --report DIR",
    "give a report or a number": "give --report DIR or a number",
    "give at (a position x, y) or mask (a PNG or tensor)": "give --at x,y or --mask PNG",
    "at and mask say where to add": "--at and --mask say where to add",
    "a local weights file (inception_weights)": "a local weights file (--inception-weights)",
}


def flag(parameter: str) -> str:
    """The CLI flag of a library parameter: allow_weak -> --allow-weak, dissection -> --report."""
    return "--" + FLAG_NAMES.get(parameter, parameter).replace("_", "-")


def in_flags(message: str) -> str:
    """A library message with its parameters as flags: rank='ace' -> --rank ace, (remove= or add=) ->
    (--remove or --add), and the phrases of PHRASES."""
    for phrase, words in PHRASES.items():
        message = message.replace(phrase, words)
    names = "|".join(NAMED_PARAMETERS)
    message = re.sub(rf"\b({names})='([^']*)'", lambda m: f"{flag(m[1])} {m[2]}", message)
    return re.sub(rf"\b({names})=(?=[\s,)]|$)", lambda m: flag(m[1]), message)


def library_message(error: GantoolsError) -> str:
    """A library error in the CLI's words (see `in_flags`)."""
    units = sys.modules.get("gantools.units")  # not loaded: the error cannot be one of its (and --help stays fast)
    if units is not None and isinstance(error, units.WeakConceptError):
        return error.describe(flag("units"), flag("allow_weak"))
    return in_flags(str(error))


@contextmanager
def on_interrupt(kept: Callable[[], str]) -> Iterator[None]:
    """Turn Ctrl-C inside the block into `Interrupted(kept())`: `kept` is called at that moment and
    returns the one line (starting "interrupted") that says what was kept and how to continue."""
    try:
        yield
    except KeyboardInterrupt:
        raise Interrupted(kept()) from None


class InterruptNote:
    """What a command that writes its results at the end has done, for its Ctrl-C line: nothing yet,
    or it was writing (set `writing` to the file or folder just before writing it)."""

    def __init__(self, why: str, rerun: str = "") -> None:
        self.why, self.rerun = why, rerun
        self.writing: Optional[Path] = None

    def line(self) -> str:
        """The one line to print on Ctrl-C."""
        if self.writing is not None:
            return (f"interrupted while writing {self.writing}: what it holds may be incomplete; run the command "
                    "again to rewrite it")
        return nothing_kept(self.why, self.rerun)


def nothing_kept(what: str, rerun: str = "") -> str:
    """The Ctrl-C line of a command that writes its output only at the end."""
    return f"interrupted: nothing was written ({what}); run the command again{rerun}"


def kept_file(out: Optional[Path], what: str, rerun: str) -> str:
    """The Ctrl-C line of a command that writes one file at the end, naming a file from before."""
    before = f"; the existing {out} is unchanged" if out is not None and out.exists() else ""
    return f"interrupted: nothing was kept ({what}{before}); run the command again{rerun}"


# ---------------------------------------------------------------------------------------------
# Progress


class Reporter:
    """Renders library progress callbacks: a rich progress bar on a terminal, log lines otherwise.

    Use as a context manager and pass the instance as `progress=`. Notices (Progress.message) are
    printed as lines above the bar. Under torchrun only rank 0 prints: the other ranks would repeat it.
    """

    def __init__(self, quiet: bool = False, log_every: float = 5.0) -> None:
        from rich.console import Console

        self.console = Console(stderr=True)
        self.silent = not on_rank0()
        self.live = not quiet and not self.silent and self.console.is_terminal
        self.log_every = log_every
        self._bar: Any = None
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
        """A line on stderr (above the bar); nothing on ranks other than 0."""
        if self.silent:
            return
        # soft_wrap: a log file keeps one line per record instead of rich's 80-column wrapping
        self.console.print(text, highlight=False, soft_wrap=not self.console.is_terminal)

    def __call__(self, p: Progress) -> None:
        if self.silent:
            return
        if p.message:
            self.print(p.message)
        if p.total is None and not p.completed:
            return
        metrics = "  ".join(f"{k} {number(v)}" for k, v in p.metrics.items())
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


# ---------------------------------------------------------------------------------------------
# Output


def number(v: float) -> str:
    """A number for a table or log line: integers as they are, floats to 4 significant digits."""
    if isinstance(v, int):
        return str(v)
    return f"{v:.4g}" if abs(v) < 1e4 else f"{v:.0f}"


def optional_number(v: Any, spec: str) -> str:
    """A number formatted with `spec`, or "-" for None."""
    return "-" if v is None else format(v, spec)


def on_rank0() -> bool:
    """Whether this process prints results: always alone, rank 0 alone under torchrun."""
    from ..distributed import world

    return world().is_main


def print_json(obj: Any) -> None:
    """One JSON document on stdout (for --json); NaN and infinities become null, as in the files written."""
    from ..utils import finite

    sys.stdout.write(json.dumps(finite(obj)) + "\n")
    sys.stdout.flush()


def stdout_console() -> Any:
    """A rich console on stdout, for tables."""
    from rich.console import Console

    return Console()


def unit_list(units: list[int], limit: int = 24) -> str:
    """Unit numbers as a short comma list."""
    text = ", ".join(str(u) for u in units[:limit])
    return text + (f", ... ({len(units)} in all)" if len(units) > limit else "")


# ---------------------------------------------------------------------------------------------
# Checks done before any work


def check_out_dir(path: Optional[Path], option: str = "--out") -> None:
    """Fail before any work when an output directory is already a file."""
    if path is not None and path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; give a directory", param_hint=f"'{option}'")


def check_out_file(path: Optional[Path], option: str = "--out") -> None:
    """Fail before any work when an output file is already a directory."""
    if path is not None and path.is_dir():
        raise typer.BadParameter(f"{path} is a directory; give a file name", param_hint=f"'{option}'")


def default_companion(model_path: Path, component: str) -> Path:
    """The file beside the model, unless that would silently replace a shipped model's companion."""
    from ..models import companion_path, pretrained_dir

    path = companion_path(model_path, component)
    if path.exists() and path.resolve().is_relative_to(pretrained_dir().resolve()):
        raise typer.BadParameter(f"this would replace the shipped {path}; give another file (or that path, "
                                 "to replace it on purpose)", param_hint="'--out'")
    return path


def check_channels(nc: Optional[int]) -> Optional[int]:
    """The --nc option's callback: 1 or 3 channels, checked while parsing."""
    if nc is not None and nc not in (1, 3):
        raise typer.BadParameter(f"{nc}: use 1 (grayscale) or 3 (RGB)")
    return nc


def defaults_of(config: type) -> dict[str, Any]:
    """A config dataclass's field defaults by name (default factories called): the one place the
    options' defaults come from, so `--help` never restates a number."""
    found = {}
    for f in fields(config):
        if f.default is not MISSING:
            found[f.name] = f.default
        elif f.default_factory is not MISSING:  # type: ignore[misc]
            found[f.name] = f.default_factory()  # type: ignore[misc]
    return found


# ---------------------------------------------------------------------------------------------
# Options that many commands share

DEFAULT_MODEL = defaults.MODEL
DEFAULT_DEVICE = defaults.DEVICE
ModelOpt = Annotated[str, typer.Option("--model", "-m", help="Model: a .safetensors file, a run directory, "
                                       "or a pretrained name (scenes64, mnist32).")]
DeviceOpt = Annotated[str, typer.Option("--device", help="auto (CUDA when present), cpu, cuda or cuda:N.")]
SeedOpt = Annotated[int, typer.Option("--seed", help="Random seed; the same seed gives the same result.")]
QuietOpt = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar: plain log lines only, for scripts.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print the result as JSON on stdout instead of a table.")]
OutOpt = Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory. Nothing is written "
                                                "without it.", show_default=False)]
