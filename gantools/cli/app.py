"""The `gantools` command line: the root app, where every command is registered, and `main()`.

Each command lives in the module of its part of the library (train.py, dissect.py, ...); what they
share (the error funnel, the progress reporter, JSON output, common options) is in common.py. Those
modules import only typer and torch-free configs at the top, so `gantools --help` stays fast.
"""

from __future__ import annotations

import sys

import typer

from ..utils import GantoolsError
from .classifier import classifier_app
from .common import INTERRUPTED_EXIT, CliGroup, library_message, say_error
from .data import data_app
from .dissect import dissect_cmd
from .edit import edit_cmd
from .encoder import encoder_app
from .evaluate import eval_cmd
from .interventions import ablate_cmd, insert_cmd, rank_cmd
from .invert import invert_cmd
from .sample import sample_cmd
from .segmenter import segmenter_app
from .train import export_cmd, train_cmd

app = typer.Typer(
    cls=CliGroup,
    name="gantools",
    help="Train DCGANs, then open them up: dissection, unit ablation/insertion, and GAN-prior inversion.\n\n"
    "Every analysis command takes --model: a .safetensors file, a run directory, or a pretrained name "
    "(default scenes64).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)

# In the order of the work: data and training, then analysis, then restoration and editing.
app.command("train")(train_cmd)
app.command("export")(export_cmd)
app.command("sample")(sample_cmd)
app.command("dissect")(dissect_cmd)
app.command("ablate")(ablate_cmd)
app.command("insert")(insert_cmd)
app.command("rank")(rank_cmd)
app.command("invert")(invert_cmd)
app.command("eval")(eval_cmd)
app.command("edit")(edit_cmd)
app.add_typer(data_app, name="data")
app.add_typer(segmenter_app, name="segmenter")
app.add_typer(encoder_app, name="encoder")
app.add_typer(classifier_app, name="classifier")

# === paint (gantools.paint): the command module imports typer only, so --help stays fast ===
from .paint import paint_cmd  # noqa: E402

app.command("paint")(paint_cmd)


def main() -> None:
    """Console entry point: user mistakes print one line and exit 1, Ctrl-C exits 130, without a traceback.

    Under torchrun, the process group is left on the way out."""
    try:
        _join_process_group()
        app()
    except GantoolsError as e:  # raised outside a command (rare); commands are covered by CliGroup
        say_error(library_message(e))
        sys.exit(1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(INTERRUPTED_EXIT)
    finally:
        _leave_process_group()


def _join_process_group() -> None:
    # Under torchrun, join before any model loads, so that each process takes its own GPU
    # ('cuda' then means the GPU of its local rank). Alone, this imports nothing heavy.
    from ..distributed import launched

    if launched():
        from ..distributed import start

        start()


def _leave_process_group() -> None:
    # Only a command that imported torch.distributed can have joined a group; --help never imports torch.
    if "torch.distributed" in sys.modules:
        from ..distributed import stop

        stop()
