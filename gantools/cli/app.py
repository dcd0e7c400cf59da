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

from ..utils import GantoolsError, Progress


def _error(message: str) -> None:
    from rich.console import Console
    from rich.markup import escape

    # soft_wrap: one line however long (paths); escape: brackets in paths or lists are not markup.
    Console(stderr=True).print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)


class _Group(TyperGroup):
    """Turns user mistakes (GantoolsError) into one red line and exit code 1, for every command."""

    def invoke(self, ctx):  # type: ignore[override]
        try:
            return super().invoke(ctx)
        except GantoolsError as e:
            _error(str(e))
            raise typer.Exit(1) from None
        except OSError as e:  # a path the user gave cannot be read or written: say which, no traceback
            _error(_os_message(e))
            raise typer.Exit(1) from None


def _os_message(e: OSError) -> str:
    what = {FileExistsError: "not a directory (a file is in the way)", IsADirectoryError: "is a directory, not a file",
            NotADirectoryError: "a part of this path is a file, not a directory",
            FileNotFoundError: "no such file or directory", PermissionError: "permission denied"}
    reason = next((text for cls, text in what.items() if isinstance(e, cls)), e.strerror or str(e))
    return f"{e.filename}: {reason}" if e.filename else f"{reason}"


def _check_out_dir(path: Optional[Path], option: str = "--out") -> None:
    """Fail before any work when an output directory is already a file."""
    if path is not None and path.exists() and not path.is_dir():
        raise typer.BadParameter(f"{path} is a file; give a directory", param_hint=f"'{option}'")


def _default_companion(model_path: Path, component: str) -> Path:
    """The file beside the model, unless that would silently replace a shipped model's companion."""
    from ..models import companion_path, pretrained_dir

    path = companion_path(model_path, component)
    if path.exists() and path.resolve().is_relative_to(pretrained_dir().resolve()):
        raise typer.BadParameter(f"this would replace the shipped {path}; give another file (or that path, "
                                 "to replace it on purpose)", param_hint="'--out'")
    return path


def _check_out_file(path: Optional[Path], option: str = "--out") -> None:
    """Fail before any work when an output file is already a directory."""
    if path is not None and path.is_dir():
        raise typer.BadParameter(f"{path} is a directory; give a file name", param_hint=f"'{option}'")


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
        # soft_wrap: a log file keeps one line per record instead of rich's 80-column wrapping
        self.console.print(text, highlight=False, soft_wrap=not self.console.is_terminal)

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
    from ..utils import _finite

    sys.stdout.write(json.dumps(_finite(obj)) + "\n")
    sys.stdout.flush()


# ---------------------------------------------------------------------------------------------
# Commands. Each block belongs to one part of the library; keep them thin.

# === training, export, sampling (gantools.training, gantools.sampling) ===


class GanLoss(str, Enum):
    nonsaturating = "nonsaturating"
    minimax = "minimax"
    hinge = "hinge"


class Recipe(str, Enum):
    dcgan = "dcgan"
    stable = "stable"


class DNorm(str, Enum):
    batch = "batch"
    spectral = "spectral"
    none = "none"


def _parse_betas(text: str | None) -> tuple[float, float] | None:
    if text is None:
        return None
    try:
        b1, b2 = (float(v) for v in text.split(","))
    except ValueError:
        raise typer.BadParameter(f"--betas takes two numbers, e.g. 0.5,0.999; got {text!r}") from None
    return b1, b2


class InterpMethod(str, Enum):
    slerp = "slerp"
    lerp = "lerp"


def _opt(*names: str, help: str) -> Any:
    return typer.Option(*names, help=help, show_default=False)


@app.command("train")
def train_cmd(
    data: Annotated[Optional[str], _opt("--data", "-d", help="Folder of images (searched recursively) or a "
                                        "built-in dataset name (scenes). (default: scenes)")] = None,
    image_size: Annotated[Optional[int], _opt("--image-size", help="Image side: 16, 32, 64 or 128. (default: 64)")] = None,
    nc: Annotated[Optional[int], _opt("--nc", help="Channels: 1 (grayscale) or 3 (RGB). (default: 3)")] = None,
    nz: Annotated[Optional[int], _opt("--nz", help="Latent size. (default: 100)")] = None,
    ngf: Annotated[Optional[int], _opt("--ngf", help="Generator width. (default: 64)")] = None,
    ndf: Annotated[Optional[int], _opt("--ndf", help="Discriminator width. (default: 64)")] = None,
    batch_size: Annotated[Optional[int], _opt("--batch-size", "-b", help="Batch size. (default: 64)")] = None,
    recipe: Annotated[Optional[Recipe], _opt("--recipe", help="A set of the options below chosen together. dcgan: "
                                             "the paper's (BatchNorm D, nonsaturating loss, Adam 2e-4, betas "
                                             "0.5,0.999). stable: the same Adam settings with a spectral-norm D "
                                             "(no BatchNorm) and the hinge loss. Options "
                                             "given explicitly override the recipe. (default: dcgan, which "
                                             "measured best on scenes: concept TV 0.06 and FID 0.9 at 3,000 "
                                             "steps against 0.78 and 17.5 for stable; see docs/recipes.md)")] = None,
    d_norm: Annotated[Optional[DNorm], _opt("--d-norm", help="D's normalisation: batch (BatchNorm), spectral "
                                            "(spectral norm on every convolution, no BatchNorm) or none.")] = None,
    loss: Annotated[Optional[GanLoss], _opt("--loss", help="nonsaturating (G maximises log D(G(z))), minimax (G "
                                            "minimises log(1-D(G(z)))) or hinge.")] = None,
    lr: Annotated[Optional[float], _opt("--lr", help="Adam learning rate of both nets (sets --lr-g and --lr-d).")] = None,
    lr_g: Annotated[Optional[float], _opt("--lr-g", help="Adam learning rate of G.")] = None,
    lr_d: Annotated[Optional[float], _opt("--lr-d", help="Adam learning rate of D (two time-scale updates when it "
                                          "differs from --lr-g).")] = None,
    betas: Annotated[Optional[str], _opt("--betas", help="Adam betas of both nets, e.g. 0.5,0.999.")] = None,
    r1: Annotated[Optional[float], _opt("--r1", help="R1 penalty weight gamma on real images (gamma/2 |grad D|^2), "
                                        "applied every 16 D steps; 0: off. (default: 0)")] = None,
    d_steps: Annotated[Optional[int], _opt("--d-steps", help="Discriminator steps per generator step. (default: 1)")] = None,
    steps: Annotated[Optional[int], _opt("--steps", help="Stop after this many generator steps in all.")] = None,
    epochs: Annotated[Optional[float], _opt("--epochs", help="Stop after this many passes over the data "
                                            "(default 5 when --steps is not given).")] = None,
    seed: Annotated[Optional[int], _opt("--seed", help="Seed of weights, data order and noise. (default: 0)")] = None,
    out: Annotated[Optional[Path], _opt("--out", "-o", help="Run directory. (default: runs/<nnnnn>-<data>)")] = None,
    device: Annotated[Optional[str], _opt("--device", help="auto (CUDA when present), cpu, cuda or cuda:N. "
                                          "(default: auto)")] = None,
    resume: Annotated[Optional[Path], _opt("--resume", help="Continue this run directory from its checkpoint "
                                           "(give a larger --steps or --epochs to train longer).")] = None,
    sample_every: Annotated[Optional[int], _opt("--sample-every", help="Steps between sample grids; 0: at the "
                                                "end only. (default: 500)")] = None,
    checkpoint_every: Annotated[Optional[int], _opt("--checkpoint-every", help="Steps between checkpoints; 0: at "
                                                    "the end only. (default: 500)")] = None,
    log_every: Annotated[Optional[int], _opt("--log-every", help="Steps per stats.jsonl line. (default: 10)")] = None,
    eval_every: Annotated[Optional[int], _opt("--eval-every", help="Steps between FID evaluations; keeps best.pt "
                                              "(lowest FID). 0: never. (default: 0)")] = None,
    eval_n: Annotated[Optional[int], _opt("--eval-n", help="Generated images per FID evaluation. (default: 1000)")] = None,
    track_concepts: Annotated[Optional[str], _opt("--track-concepts", help="At every --eval-every, also log each "
                                                  "concept's pixel share in generated and real images through "
                                                  "this segmenter (a file or a pretrained name) and plot "
                                                  "concepts_curve.png.")] = None,
    data_version: Annotated[Optional[int], _opt("--data-version", help="Design version of a built-in dataset "
                                                "(scenes: 1 or 2). (default: the current one)")] = None,
    threads: Annotated[Optional[int], _opt("--threads", help="CPU threads for torch; 0: one per core. (default: 0)")] = None,
    channels_last: Annotated[Optional[bool], _opt("--channels-last/--no-channels-last", help="Channels-last "
                                                  "memory layout (measured 1.26x faster per step on 2 "
                                                  "CPU cores, and faster on CUDA). (default: on)")] = None,
    holdout: Annotated[Optional[int], _opt("--holdout", help="Leave N images out of training: the last by sorted "
                                           "file name in each class folder (equal shares). (default: 0)")] = None,
    data_n: Annotated[Optional[int], _opt("--data-n", help="Images of a generated dataset (scenes).")] = None,
    amp: Annotated[Optional[bool], _opt("--amp/--no-amp", help="Mixed precision on CUDA. (default: on)")] = None,
    augment: Annotated[Optional[str], _opt("--augment", help="Differentiable augmentation of what D sees (real "
                                                             "and generated), for small datasets: a comma list of "
                                                             "color, translation, cutout. (default: off)")] = None,
    ema: Annotated[Optional[float], _opt("--ema", help="Keep a moving average of G's weights with this decay "
                                                       "(e.g. 0.999) and export it; 0: off. (default: 0)")] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a DCGAN on a folder of images or a built-in dataset (Ctrl-C saves and stops)."""
    _check_out_dir(out)
    from ..training import TrainConfig, train

    if lr is not None and (lr_g is not None or lr_d is not None):
        raise typer.BadParameter("--lr sets both learning rates: give it, or --lr-g/--lr-d, not both")
    beta_pair = _parse_betas(betas)
    given = {k: v for k, v in dict(
        data=data, image_size=image_size, nc=nc, nz=nz, ngf=ngf, ndf=ndf, batch_size=batch_size,
        recipe=recipe.value if recipe else None, d_norm=d_norm.value if d_norm else None,
        lr_g=lr if lr is not None else lr_g, lr_d=lr if lr is not None else lr_d,
        beta1=beta_pair[0] if beta_pair else None, beta2=beta_pair[1] if beta_pair else None, r1=r1,
        track_concepts=track_concepts, data_version=data_version, threads=threads, channels_last=channels_last,
        loss=loss.value if loss else None, d_steps=d_steps, steps=steps, epochs=epochs, seed=seed,
        device=device, sample_every=sample_every, checkpoint_every=checkpoint_every, log_every=log_every,
        eval_every=eval_every, eval_n=eval_n, holdout=holdout, data_n=data_n, amp=amp, augment=augment, ema=ema).items() if v is not None}
    with Reporter(quiet) as rep:
        if resume is not None:
            if out is not None:
                raise typer.BadParameter("--resume continues in the run directory itself; drop --out")
            result = train(resume=resume, progress=rep, **given)
        else:
            result = train(TrainConfig(out=str(out) if out else None, **given), progress=rep)
    summary = {"run_dir": str(result.run_dir), "step": result.step, "total_steps": result.total_steps,
               "interrupted": result.interrupted, "model": str(result.model_path) if result.model_path else None,
               "best_fid": result.best_fid, "seconds": round(result.elapsed, 1), **result.stats}
    if json_out:
        print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="training interrupted (checkpoint saved)" if result.interrupted else "training done",
                  show_header=False)
    for key in ("run_dir", "step", "Loss_D", "Loss_G", "D(x)", "D(G(z))_before", "D(G(z))_after", "img/s",
                "best_fid", "model"):
        if summary.get(key) is not None:
            v = summary[key]
            table.add_row(key, _fmt(v) if isinstance(v, float) else str(v))
    Console().print(table)
    if result.interrupted:
        Console(stderr=True).print(f"continue with: gantools train --resume {result.run_dir}", highlight=False)


@app.command("export")
def export_cmd(
    run_dir: Annotated[Path, typer.Argument(help="Run directory (or a checkpoint file).")],
    best: Annotated[bool, typer.Option("--best", help="Export best.pt (lowest FID) instead of the latest checkpoint.")] = False,
    half: Annotated[bool, typer.Option("--half", help="Store weights in float16 (half the file size).")] = False,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output file. (default: RUN_DIR/model.safetensors)",
                                                show_default=False)] = None,
) -> None:
    """Write a run's model.safetensors (G, D and config) for the analysis commands."""
    _check_out_file(out)
    from ..training import export

    path = export(run_dir, best=best, out=out, half=half)
    typer.echo(str(path))


@app.command("sample")
def sample_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    n: Annotated[int, typer.Option("--n", "-n", help="Images in the grid.")] = 64,
    seed: SeedOpt = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="PNG to write. (default: samples.png, "
                                                "interpolation.png or arithmetic.png)", show_default=False)] = None,
    nrow: Annotated[Optional[int], typer.Option("--nrow", min=1, help="Images per row (default: a square grid).",
                                                show_default=False)] = None,
    interpolate: Annotated[bool, typer.Option("--interpolate", help="Write a strip from the latent of --seed to "
                                              "that of --seed2 instead of a grid.")] = False,
    seed2: Annotated[Optional[int], typer.Option("--seed2", help="Other end of --interpolate. (default: seed + 1)",
                                                 show_default=False)] = None,
    frames: Annotated[Optional[int], typer.Option("--frames", min=2, help="Images in the --interpolate strip. "
                                                  "(default: 10)", show_default=False)] = None,
    method: Annotated[InterpMethod, typer.Option("--method", help="slerp (spherical) or lerp (straight line).")]
    = InterpMethod.slerp,
    arithmetic: Annotated[Optional[str], typer.Option(
        "--arithmetic", help="Latent arithmetic A-B+C on indices of this seed's grid (index = row * nrow + "
        "column), e.g. '3,17,22-5,8,9+10,11,12'. Writes a row per group with its mean, then the result and "
        "variations.", show_default=False)] = None,
    device: DeviceOpt = "auto",
) -> None:
    """Draw samples from a model: a grid, an interpolation strip, or latent vector arithmetic."""
    _check_out_file(out)
    from ..data import save_grid
    from ..models import load_model
    from .. import sampling

    if interpolate and arithmetic:
        raise typer.BadParameter("choose --interpolate or --arithmetic, not both")
    if not interpolate and (seed2 is not None or frames is not None):
        raise typer.BadParameter("--seed2 and --frames are for --interpolate")
    frames = 10 if frames is None else frames
    gan = load_model(model, device=device)
    if interpolate:
        images = sampling.interpolate(gan, seed, seed + 1 if seed2 is None else seed2, frames, method.value)
        path = save_grid(images, out or Path("interpolation.png"), nrow=frames)
    elif arithmetic:
        a, b, c = sampling.parse_arithmetic(arithmetic)
        result = sampling.latent_arithmetic(gan, a, b, c, seed=seed)
        path = sampling.save_arithmetic(result, out or Path("arithmetic.png"))
    else:
        path = save_grid(sampling.sample(gan, n, seed), out or Path("samples.png"), nrow=nrow)
    typer.echo(str(path))

# === built-in data (gantools.scenes) ===


@data_app.command("scenes")
def data_scenes_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder: images/, labels/, concepts.json, preview.png.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of scenes.")] = 1000,
    size: Annotated[int, typer.Option("--size", "--image-size", min=8, max=1024,
                                      help="Image side in pixels (16 to 128 recommended).")] = 64,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Dataset seed: scene i of a seed is always the same.")] = 0,
    nc: Annotated[int, typer.Option("--nc", help="Channels: 3 (RGB) or 1 (luminance).")] = 3,
    preview: Annotated[int, typer.Option("--preview", min=1, help="Scenes shown in preview.png.")] = 16,
    version: Annotated[Optional[int], typer.Option("--data-version", help="Design version: 2 (current; every "
                                                   "concept drawable at 64 px) or 1 (the first design, for "
                                                   "old runs). (default: the current one)",
                                                   show_default=False)] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write procedural scenes with per-pixel concept labels (palette PNGs) and print concept frequencies."""
    from ..scenes import VERSION, write_scenes

    if nc not in (1, 3):
        raise typer.BadParameter("--nc must be 1 (luminance) or 3 (RGB)")
    with Reporter(quiet) as rep:
        result = write_scenes(out, n=n, image_size=size, seed=seed, nc=nc, preview=min(preview, n), progress=rep,
                              version=VERSION if version is None else version)
    if json_out:
        print_json({"out": str(result.out), "n": result.n, "image_size": result.image_size, "nc": result.nc,
                    "seed": result.seed, "version": result.version, "preview": str(result.preview),
                    "concepts": result.concepts, "frequencies": result.frequencies})
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"{n} scenes ({size}x{size}, seed {seed}, design version {result.version}) in {result.out}")
    table.add_column("id", justify="right")
    table.add_column("concept")
    table.add_column("images with it", justify="right")
    table.add_column("pixels", justify="right")
    for i, name in enumerate(result.concepts):
        f = result.frequencies[name]
        table.add_row(str(i), name, f"{100 * f['image_frequency']:.1f}%", f"{100 * f['pixel_frequency']:.2f}%")
    console = Console()
    console.print(table)
    console.print(f"preview: {result.preview}", highlight=False)

# === segmenters (gantools.segmenters) ===


class SegArch(str, Enum):
    """segmentation-models-pytorch architectures (gantools.segmenters.architectures())."""

    unet = "unet"
    unetplusplus = "unetplusplus"
    manet = "manet"
    linknet = "linknet"
    fpn = "fpn"
    pspnet = "pspnet"
    deeplabv3 = "deeplabv3"
    deeplabv3plus = "deeplabv3plus"
    pan = "pan"
    upernet = "upernet"
    segformer = "segformer"
    dpt = "dpt"


# Kept in step with gantools.segmenters.DEFAULT_* (not imported here so `--help` stays fast).
_SEG_ENCODER = "tu-regnetx_002"
_SEG_DECODER = "64,32,16,16"


def _segmenter_table(result: Any, title: str) -> None:
    """Per-concept IoU of a SegmenterEval as a rich table on stdout."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    table.add_column("id", justify="right")
    table.add_column("concept")
    table.add_column("IoU", justify="right")
    table.add_column("pixels", justify="right")
    total = max(sum(result.support), 1)
    for i, (name, iou) in enumerate(zip(result.concepts, result.iou)):
        table.add_row(str(i), name, "-" if iou is None else f"{iou:.4f}", f"{100 * result.support[i] / total:.2f}%")
    table.add_section()
    table.add_row("", "[bold]mIoU[/]", f"[bold]{result.miou:.4f}[/]", "")
    table.add_row("", "pixel accuracy", f"{result.pixel_accuracy:.4f}", "")
    Console().print(table)


def _eval_dict(result: Any) -> dict[str, Any]:
    return {"miou": result.miou, "pixel_accuracy": result.pixel_accuracy, "n": result.n,
            "segmenter": result.segmenter, "iou": result.per_concept(),
            "concepts": result.concepts, "intersection": result.intersection, "union": result.union,
            "support": result.support}


@segmenter_app.command("train")
def segmenter_train_cmd(
    out: Annotated[Path, typer.Option("--out", "-o", help="Segmenter file to write (.safetensors).")],
    data: Annotated[str, typer.Option("--data", help="'scenes', or a folder with images/, labels/ and "
                                      "concepts.json (as `gantools data scenes` writes).")] = "scenes",
    arch: Annotated[SegArch, typer.Option("--arch", help="segmentation-models-pytorch architecture.")] = SegArch.unet,
    encoder: Annotated[str, typer.Option("--encoder", help="smp encoder name, or tu-<timm model> "
                                         "(e.g. tu-regnetx_002, tu-mobilenetv3_small_050, resnet18).")] = _SEG_ENCODER,
    encoder_weights: Annotated[Optional[Path], typer.Option(
        "--encoder-weights", help="Local encoder weights file (safetensors or torch state dict); nothing is "
        "ever downloaded. Default: start from scratch.")] = None,
    encoder_depth: Annotated[int, typer.Option("--encoder-depth", min=1, max=5,
                                               help="Encoder stages (image size must divide by 2**depth).")] = 4,
    decoder_channels: Annotated[str, typer.Option(
        "--decoder-channels", help="Unet-family decoder widths, comma-separated, one per encoder stage; "
        "'default' for the architecture's own.")] = _SEG_DECODER,
    steps: Annotated[Optional[int], typer.Option("--steps", min=1, help="Optimisation steps (default 3000).")] = None,
    epochs: Annotated[Optional[float], typer.Option("--epochs", min=0.0, help="Passes over the training images "
                                                    "(instead of --steps).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per step.")] = 32,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (cosine decay).")] = 6e-3,
    n: Annotated[int, typer.Option("--n", "-n", min=2, help="Training scenes (folders use all their images).")] = 10000,
    image_size: Annotated[Optional[int], typer.Option("--image-size", min=8, help="Training resolution "
                                                      "(default: 64 for scenes, a folder's own size).")] = None,
    nc: Annotated[int, typer.Option("--nc", help="Channels: 3 (RGB) or 1 (grayscale).")] = 3,
    val_n: Annotated[int, typer.Option("--val-n", min=1, help="Held-out scenes (from another seed).")] = 500,
    val_fraction: Annotated[float, typer.Option("--val-fraction", min=0.0, max=0.9,
                                                help="Held-out fraction of a folder.")] = 0.1,
    flip: Annotated[bool, typer.Option("--flip/--no-flip", help="Augment with horizontal flips.")] = True,
    half: Annotated[bool, typer.Option("--half/--full", help="Store weights in float16 (half the file).")] = True,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a segmenter (segmentation-models-pytorch) on labelled images; report held-out IoU."""
    _check_out_file(out)
    from ..segmenters import train_segmenter

    if steps is not None and epochs is not None:
        raise typer.BadParameter("give --steps or --epochs, not both")
    if nc not in (1, 3):
        raise typer.BadParameter("--nc must be 1 (grayscale) or 3 (RGB)")
    if decoder_channels.strip().lower() == "default":
        channels = None
    else:
        try:
            channels = [int(c) for c in decoder_channels.split(",") if c.strip()]
        except ValueError:
            raise typer.BadParameter(f"--decoder-channels {decoder_channels!r}: give integers like 64,32,16,16") from None
        if len(channels) != encoder_depth or min(channels) < 1:
            raise typer.BadParameter(f"--decoder-channels needs {encoder_depth} positive widths "
                                     f"(one per encoder stage), got {decoder_channels!r}")
    if data == "scenes" and image_size is None:
        image_size = 64
    with Reporter(quiet) as rep:
        try:
            result = train_segmenter(data, out, arch=arch.value, encoder=encoder, encoder_weights=encoder_weights,
                                     encoder_depth=encoder_depth, decoder_channels=channels, image_size=image_size,
                                     nc=nc, n=n, steps=steps, epochs=epochs, batch_size=batch_size, lr=lr,
                                     val_n=val_n, val_fraction=val_fraction, flip=flip, seed=seed, half=half,
                                     device=device, progress=rep)
        except KeyboardInterrupt:
            rep.print("interrupted: nothing was kept (the segmenter is written only when training ends"
                      + (f"; the existing {out} is unchanged" if out.exists() else "")
                      + "); run the command again, with fewer --steps to finish sooner")
            raise typer.Exit(130) from None
    summary = {"out": str(result.path), "file_bytes": result.file_bytes, "steps": result.steps,
               "train_seconds": round(result.seconds, 1), "train_images": result.train_images,
               "val_images": result.val_images, "validation": _eval_dict(result.validation)}
    if json_out:
        print_json(summary)
        return
    _segmenter_table(result.validation, f"held-out IoU ({result.val_images} images)")
    from rich.console import Console

    Console().print(f"wrote {result.path} ({result.file_bytes / 1e6:.2f} MB); {result.steps} steps in "
                    f"{result.seconds / 60:.1f} min", highlight=False)


@segmenter_app.command("eval")
def segmenter_eval_cmd(
    segmenter: Annotated[str, typer.Option("--segmenter", "-s", help="'color', a segmenter .safetensors file, "
                                           "a folder holding segmenter.safetensors, or a pretrained model name "
                                           "that ships one (scenes64).")],
    data: Annotated[str, typer.Option("--data", help="'scenes', or a folder with images/, labels/ and "
                                      "concepts.json.")] = "scenes",
    n: Annotated[Optional[int], typer.Option("--n", "-n", min=1, help="Images to evaluate "
                                             "(default: 1000 scenes, or all of a folder).")] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Scenes seed; pick one the segmenter was not "
                                      "trained on (training uses 0 by default).")] = 1,
    image_size: Annotated[Optional[int], typer.Option("--image-size", min=8, help="Image size (default: the "
                                                      "segmenter's training size, or 64).")] = None,
    nc: Annotated[Optional[int], typer.Option("--nc", help="Channels (default: the segmenter's, or 3).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images per batch.")] = 64,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Per-concept IoU and mIoU of a segmenter on labelled images (scenes or a labelled folder)."""
    from ..segmenters import evaluate_segmenter, load_segmenter, open_labelled
    from ..utils import notice

    seg = load_segmenter(segmenter, device=device)
    config = getattr(seg, "config", None)
    size = image_size or (config.image_size if config is not None else None)
    channels = nc or (config.nc if config is not None else 3)
    if channels not in (1, 3):
        raise typer.BadParameter("--nc must be 1 (grayscale) or 3 (RGB)")
    is_scenes = data == "scenes" and not Path(data).exists()
    if is_scenes:
        size = size or 64
        n = n or 1000
    with Reporter(quiet) as rep:
        training = (getattr(seg, "metadata", None) or {}).get("training") or {}
        if is_scenes and seed in (training.get("seed"), training.get("validation_seed")):
            notice(rep, f"warning: seed {seed} is one this segmenter was trained or validated on; "
                        "use another --seed for an unbiased score")
        dataset = open_labelled(data, image_size=size, nc=channels, n=n, seed=seed, progress=rep)
        result = evaluate_segmenter(seg, dataset, n=n, batch_size=batch_size, device=device, progress=rep)
    if json_out:
        print_json(_eval_dict(result))
        return
    where = f"scenes seed {seed}" if is_scenes else data
    _segmenter_table(result, f"{result.segmenter} on {result.n} images ({where})")


# === dissection (gantools.dissection) ===


class ThresholdMethod(str, Enum):
    quantile = "quantile"
    iqr = "iqr"


def _model_label(spec: str) -> str:
    """A short name for a model spec, for default output folders: scenes64, a run's folder name, a file stem."""
    p = Path(spec)
    if p.suffix == ".safetensors":
        return p.parent.name if p.name == "model.safetensors" and p.parent.name else p.stem
    return p.name or str(spec)


def _dissection_table(result: Any, limit: int = 8) -> Any:
    """Interpretable units per concept (rows) and layer (columns): count, then the best units with their IoU."""
    from rich.table import Table

    summary = result.summary()
    table = Table(title=f"interpretable units per concept (IoU >= {result.settings['min_iou']:g}, "
                        f"N={result.settings['n']})", title_justify="left")
    table.add_column("concept")
    for name in result.layers:
        table.add_column(f"{name}", justify="right")
        table.add_column("best units (IoU)")
    concepts = sorted({c for per in summary.values() for c in per},
                      key=lambda c: (-sum(len(per.get(c, [])) for per in summary.values()), c))
    for c in concepts:
        row = [c]
        for name, layer in result.layers.items():
            units = summary[name].get(c, [])
            k = layer.concepts.index(c)
            shown = ", ".join(f"{u} ({float(layer.iou[u, k]):.2f})" for u in units[:limit])
            row += [str(len(units)) if units else "-", shown + (", ..." if len(units) > limit else "")]
        table.add_row(*row)
    if not concepts:
        table.add_row("[dim](none)[/]", *[""] * (2 * len(result.layers)))
    table.add_section()
    totals = ["[bold]interpretable[/]"]
    for layer in result.layers.values():
        totals += [f"[bold]{len(layer.interpretable)}/{layer.units}[/]", ""]
    table.add_row(*totals)
    return table


@app.command("dissect")
def dissect_cmd(
    layer: Annotated[Optional[list[str]], typer.Option(
        "--layer", "-l", help="Layer: a number (3 = layer3) or a dotted module name. Repeat for several "
        "layers (dissected in one pass). (default: 3, or 2 on a 16px model)", show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Generated samples.")] = 2000,
    quantile: Annotated[Optional[float], typer.Option("--quantile", help="Threshold each unit at the level "
                                                      "exceeded by this top fraction (0 < q < 1) of its upsampled "
                                                      "activations. (default: 0.01)", show_default=False)] = None,
    threshold: Annotated[ThresholdMethod, typer.Option(
        "--threshold", help="quantile (--quantile), or iqr: the level and concept maximising the information "
        "quality ratio over positively associated pairs (levels above 0, concepts over 0.1% of pixels), chosen "
        "on n other samples; the unit is labelled with that concept.")] = ThresholdMethod.quantile,
    min_iou: Annotated[float, typer.Option("--min-iou", min=0.0, max=1.0,
                                           help="A unit is interpretable when its best IoU reaches this.")] = 0.04,
    segmenter: Annotated[Optional[str], typer.Option(
        "--segmenter", "-s", help="color, or a segmenter .safetensors file. (default: the model's own segmenter, "
        "else color)", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Samples per batch.")] = 64,
    strip: Annotated[int, typer.Option("--strip", min=0, help="Top-activating images per unit in the HTML "
                                       "report.")] = 6,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Output directory. (default: "
                                                "dissect/<model>-<layers>)", show_default=False)] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Dissect generator layers: which units match which concepts (unit-mask IoU over N samples).

    Each unit's map is upsampled, thresholded at its top --quantile (or --threshold iqr), and compared
    with the segmentation of every generated image.

    Writes report.json, units.csv and a self-contained report.html (offline; open it from disk).
    """
    _check_out_dir(out)
    from ..dissection import dissect

    if quantile is not None and threshold != ThresholdMethod.quantile:
        raise typer.BadParameter("--quantile is for --threshold quantile (iqr chooses each unit's level itself)")
    quantile = 0.01 if quantile is None else quantile
    layers, target = layer, model
    if not layers:  # layer 3, or the last hidden layer of a 16px model (which has two)
        from ..models import load_model

        target = load_model(model, device)
        layers = [str(min(3, target.config.num_layers))]
    with Reporter(quiet) as rep:
        folder = None
        try:
            result = dissect(target, layers=layers, segmenter=segmenter, n=n, seed=seed, quantile=quantile,
                             threshold=threshold.value, min_iou=min_iou, batch_size=batch_size, device=device,
                             progress=rep, top_k=strip)
            folder = out if out is not None else Path("dissect") / f"{_model_label(model)}-{'-'.join(result.layers)}"
            paths = result.save(folder)
        except KeyboardInterrupt:
            if folder is not None and folder.is_dir():
                rep.print(f"interrupted while writing the report to {folder}/: its files may be incomplete; run the "
                          "command again to rewrite them")
            else:
                rep.print("interrupted: nothing was written (dissect writes its report once every sample is "
                          "measured); run the command again, with a smaller --n to finish sooner")
            raise typer.Exit(130) from None
    if json_out:
        print_json({"out": str(folder), **{k: str(v) for k, v in paths.items()}, "settings": result.settings,
                    "layers": {name: {"units": ld.units, "interpretable": len(ld.interpretable),
                                      "concepts": result.summary()[name]} for name, ld in result.layers.items()}})
        return
    from rich.console import Console

    console = Console()
    console.print(_dissection_table(result))
    console.print(f"report: {paths['html']}  (also {paths['json'].name}, {paths['csv'].name})", highlight=False)

# === interventions (gantools.interventions) ===


class UnitRanking(str, Enum):
    iou = "iou"
    ace = "ace"


_IV_LAYER = typer.Option("--layer", "-l", help="Layer: a number (3 = layer3) or a dotted module name.")
_IV_UNITS = typer.Option("--units", "-u", help="Units to edit, e.g. 4,17,33 or 0-7 (instead of --concept/--top).",
                         show_default=False)
_IV_CONCEPT = typer.Option("--concept", "-c", help="Target concept; with no --units, edit its --top units.",
                           show_default=False)
_IV_TOP = typer.Option("--top", "-k", min=1, help="How many of the concept's top-ranked units to edit.")
_IV_RANK = typer.Option("--rank", help="Rank units by dissection IoU, or by causal effect (ace, from `gantools rank`).")
_IV_REPORT = typer.Option("--report", "-r", help="Dissection report (directory or report.json) to rank units and "
                          "read unit levels from. (default: dissect on the fly)", show_default=False)
_IV_DISSECT_N = typer.Option("--dissect-n", min=1, help="Samples for a dissection computed on the fly (no --report).")
_IV_STRENGTH = typer.Option("--strength", min=0.0, max=1.0, help="Edit strength s: x' = (1-s)*x + s*v "
                            "(1 = set the units to v, 0.5 = halfway).")
_IV_ALLOW_WEAK = typer.Option("--allow-weak", help="With --concept: edit its top units even when none of them "
                              "matches it (best IoU below the report's interpretable line), instead of stopping.")
_IV_N = typer.Option("--n", "-n", min=2, help="Samples measured (at least 2: effects come with a 95% CI).")
_IV_SEGMENTER = typer.Option("--segmenter", "-s", help="color, or a segmenter .safetensors file. (default: the "
                             "model's own segmenter, else color)", show_default=False)
_IV_BATCH = typer.Option("--batch-size", "-b", min=1, help="Latents per batch.")
_IV_GRID = typer.Option("--grid", min=0, help="Before/after pairs in the picture.")


def _iv_effects_table(title: str, effects: dict[str, Any], target: str, limit: int = 12) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in ("concept", "before", "after", "change", "95% CI"):
        table.add_column(col, justify="left" if col == "concept" else "right")
    ordered = [target] + sorted((c for c in effects if c != target), key=lambda c: -abs(effects[c].mean))
    for c in ordered[:limit]:
        e = effects[c]
        if c != target and e.mean == 0 and e.before == 0:
            continue
        table.add_row(f"[bold]{c}[/]" if c == target else c, f"{e.before:.4f}", f"{e.after:.4f}",
                      f"{e.mean:+.4f}", f"[{e.ci_low:+.4f}, {e.ci_high:+.4f}]")
    return table


def _iv_written(paths: list[Path]) -> None:
    from rich.console import Console

    if paths:
        Console(stderr=True).print(f"wrote {', '.join(p.name for p in paths)} to {paths[0].parent}", highlight=False)


def _iv_selection(units: Optional[str], concept: Optional[str], rank: Optional[UnitRanking] = None,
                  report_dir: Optional[Path] = None) -> None:
    if units is None and concept is None:
        raise typer.BadParameter("say which units: --units 4,17,33, or --concept NAME (with --top K)")
    if units is None and rank == UnitRanking.ace and report_dir is None:
        raise typer.BadParameter("--rank ace reads the causal ranking from a dissection report: give --report DIR "
                                 "(where gantools rank --report DIR stored it), or --rank iou", param_hint="'--rank'")


class _IvFlags:
    """Re-words a library error that names Python parameters (units=, allow_weak=) with the CLI's flags."""

    def __enter__(self) -> "_IvFlags":
        return self

    def __exit__(self, kind: Any, error: Any, tb: Any) -> bool:
        if isinstance(error, GantoolsError):
            from ..interventions import WeakConceptError

            if isinstance(error, WeakConceptError):
                raise GantoolsError(error.describe("--units", "--allow-weak")) from None
        return False


@app.command("ablate")
def ablate_cmd(
    layer: Annotated[str, _IV_LAYER],
    units: Annotated[Optional[str], _IV_UNITS] = None,
    concept: Annotated[Optional[str], _IV_CONCEPT] = None,
    top: Annotated[int, _IV_TOP] = 10,
    rank: Annotated[UnitRanking, _IV_RANK] = UnitRanking.iou,
    report_dir: Annotated[Optional[Path], _IV_REPORT] = None,
    value: Annotated[str, typer.Option("--value", help="Level the units are set to: zero, mean (each unit's mean "
                                       "activation, from the dissection) or a number.")] = "zero",
    strength: Annotated[float, _IV_STRENGTH] = 1.0,
    allow_weak: Annotated[bool, _IV_ALLOW_WEAK] = False,
    n: Annotated[int, _IV_N] = 500,
    curve_points: Annotated[int, typer.Option("--curve-points", min=2, help="At most this many k values on the "
                                              "curve of the effect against units ablated.")] = 21,
    dissect_n: Annotated[int, _IV_DISSECT_N] = 1000,
    segmenter: Annotated[Optional[str], _IV_SEGMENTER] = None,
    batch_size: Annotated[int, _IV_BATCH] = 50,
    grid: Annotated[int, _IV_GRID] = 8,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Ablate units and measure the average causal effect on every concept (with 95% CIs).

    Writes effect.json, curve.json, curve.png (effect against k units ablated) and before/after pictures to --out.
    """
    _check_out_dir(out)
    from ..interventions import ablate

    _iv_selection(units, concept, rank, report_dir)
    with Reporter(quiet) as rep, _IvFlags():
        result = ablate(model, layer, units, concept=concept, top=top, rank=rank.value, value=value,
                        strength=strength, dissection=report_dir, segmenter=segmenter, n=n, seed=seed,
                        batch_size=batch_size, curve_points=curve_points, grid=grid, dissect_n=dissect_n,
                        allow_weak=allow_weak, device=device, progress=rep)
    paths = result.save(out) if out is not None else []
    if json_out:
        print_json(result.to_dict())
    else:
        from rich.console import Console

        e = result.effect
        console = Console()
        console.print(f"ablated {len(result.units)} unit(s) of {result.layer}: {_iv_unit_list(result.units)}",
                      highlight=False)
        console.print(_iv_effects_table(f"effect on pixel fractions, N={e.n}", result.effects, result.concept))
        curve = result.curve[result.concept]
        console.print("k units ablated -> change in " + result.concept + ": " + ", ".join(
            f"{k}: {c.mean:+.4f}" for k, c in zip(result.ks, curve)), highlight=False)
    _iv_written(paths)


def _iv_unit_list(units: list[int], limit: int = 24) -> str:
    text = ", ".join(str(u) for u in units[:limit])
    return text + (f", ... ({len(units)} in all)" if len(units) > limit else "")


@app.command("insert")
def insert_cmd(
    layer: Annotated[str, _IV_LAYER],
    at: Annotated[Optional[str], typer.Option("--at", help="Where to insert: x,y as fractions of the image "
                                              "(0,0 top left), e.g. 0.5,0.7.", show_default=False)] = None,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="Where to insert: a mask PNG (white = inside), "
                                                 "instead of --at.", show_default=False)] = None,
    patch: Annotated[int, typer.Option("--patch", min=1, help="With --at: edit a patch x patch block of "
                                       "feature-map cells centred on the point.")] = 3,
    units: Annotated[Optional[str], _IV_UNITS] = None,
    concept: Annotated[Optional[str], _IV_CONCEPT] = None,
    top: Annotated[int, _IV_TOP] = 10,
    rank: Annotated[UnitRanking, _IV_RANK] = UnitRanking.iou,
    report_dir: Annotated[Optional[Path], _IV_REPORT] = None,
    value: Annotated[str, typer.Option("--value", help="Level the units are set to: q99 (each unit's 0.99 "
                                       "quantile, from the dissection), mean, or a number.")] = "q99",
    strength: Annotated[float, _IV_STRENGTH] = 1.0,
    allow_weak: Annotated[bool, _IV_ALLOW_WEAK] = False,
    n: Annotated[int, _IV_N] = 500,
    dissect_n: Annotated[int, _IV_DISSECT_N] = 1000,
    segmenter: Annotated[Optional[str], _IV_SEGMENTER] = None,
    batch_size: Annotated[int, _IV_BATCH] = 50,
    grid: Annotated[int, _IV_GRID] = 8,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Force units on at a place and measure the concept pixels added, by what was there before.

    Writes effect.json and before/after pictures (the region highlighted) to --out.
    """
    _check_out_dir(out)
    from ..interventions import insert
    from ..utils import parse_point

    _iv_selection(units, concept, rank, report_dir)
    if (at is None) == (mask is None):
        raise typer.BadParameter("say where to insert: --at x,y or --mask PNG (one of them)")
    point = parse_point(at) if at is not None else None
    with Reporter(quiet) as rep, _IvFlags():
        result = insert(model, layer, units, concept=concept, top=top, rank=rank.value, at=point, mask=mask,
                        patch=patch, value=value, strength=strength, dissection=report_dir, segmenter=segmenter,
                        n=n, seed=seed, batch_size=batch_size, grid=grid, dissect_n=dissect_n,
                        allow_weak=allow_weak, device=device, progress=rep)
    paths = result.save(out) if out is not None else []
    if json_out:
        print_json(result.to_dict())
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        where = f"at {at}" if at is not None else f"inside {mask}"
        console.print(f"inserted {len(result.units)} unit(s) of {result.layer} {where} "
                      f"({result.location['region_pixels']} pixels): {_iv_unit_list(result.units)}", highlight=False)
        r = result.region_effect
        console.print(f"{result.concept} inside the region: {r.before:.4f} -> {r.after:.4f} ({r.mean:+.4f}, "
                      f"95% CI [{r.ci_low:+.4f}, {r.ci_high:+.4f}])", highlight=False)
        table = Table(title=f"{result.concept} added, by what the region showed before (context)", title_justify="left")
        for col in ("context", "samples", "in region", "95% CI", "whole image", "95% CI "):
            table.add_column(col, justify="left" if col == "context" else "right")
        for ce in result.by_context.values():
            table.add_row(ce.context, str(ce.count), f"{ce.region.mean:+.4f}",
                          f"[{ce.region.ci_low:+.4f}, {ce.region.ci_high:+.4f}]", f"{ce.effect.mean:+.4f}",
                          f"[{ce.effect.ci_low:+.4f}, {ce.effect.ci_high:+.4f}]")
        console.print(table)
        console.print(_iv_effects_table(f"whole-image pixel fractions, N={r.n}", result.effects, result.concept))
    _iv_written(paths)


@app.command("rank")
def rank_cmd(
    layer: Annotated[str, _IV_LAYER],
    concept: Annotated[str, typer.Option("--concept", "-c", help="Concept whose pixels are measured.")],
    report_dir: Annotated[Optional[Path], typer.Option(
        "--report", "-r", help="Dissection report (directory or report.json): the ranking is stored in it as "
        "ace (per concept), so --rank ace works in ablate/insert.", show_default=False)] = None,
    units: Annotated[Optional[str], typer.Option("--units", "-u", help="Only these units, e.g. 0-63. "
                                                 "(default: all)", show_default=False)] = None,
    value: Annotated[str, typer.Option("--value", help="Ablation level: zero, mean (needs --report) or a number.")]
    = "zero",
    n: Annotated[int, typer.Option("--n", "-n", min=2, help="Samples per unit (at least 2: each ACE comes with "
                                   "a 95% CI).")] = 200,
    show: Annotated[int, typer.Option("--show", min=1, help="Units listed in the table.")] = 20,
    segmenter: Annotated[Optional[str], _IV_SEGMENTER] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Latents per batch (each batch is "
                                            "repeated once per unit measured with it).")] = 32,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Rank a layer's units by the causal effect on a concept of ablating each one alone."""
    _check_out_dir(out)
    from ..interventions import rank_units
    from ..models import load_model

    if report_dir is None and value.strip().lower() in ("mean", "q99"):
        raise typer.BadParameter(f"{value} is read from a dissection: give --report DIR, or a number",
                                 param_hint="'--value'")
    dissection = None
    if report_dir is not None:
        from ..dissection import HTML_FILE, load_report

        dissection = load_report(report_dir)
        report_dir = report_dir.parent if report_dir.is_file() else report_dir
    gan = load_model(model, device=device)
    with Reporter(quiet) as rep:
        result = rank_units(gan, layer, concept, units=units, value=value, dissection=dissection,
                            segmenter=segmenter, n=n, seed=seed, batch_size=batch_size, progress=rep)
        paths = result.save(out) if out is not None else []
        if dissection is not None:
            result.store(dissection)
            # Rewrite report.html only where there was one; gan: its image strips are regenerated.
            dissection.save(report_dir, html=(report_dir / HTML_FILE).is_file(), gan=gan)
            rep.print(f"stored ace[{concept}] for {result.layer} in {report_dir / 'report.json'}")
        elif not quiet:
            rep.print("not stored in a report: give --report DIR to make --rank ace available to ablate/insert")
    if json_out:
        print_json(result.to_dict())
    else:
        from rich.console import Console
        from rich.table import Table

        stats = dissection.layers.get(result.layer) if dissection is not None else None
        table = Table(title=f"units of {result.layer} by causal effect on {concept} (N={n}; ACE = pixel fraction "
                      "lost when the unit alone is ablated)", title_justify="left")
        for col in ("rank", "unit", "ACE", "95% CI") + (("IoU label", "IoU") if stats is not None else ()):
            table.add_column(col, justify="right")
        for i, u in enumerate(result.units[:show]):
            e = result.effects[u]
            # The ACE is minus the signed effect, so its CI is the effect's CI mirrored (0.0 - x: no "-0").
            row = [str(i + 1), str(u), f"{result.ace[u]:+.4f}", f"[{0.0 - e.ci_high:+.4f}, {0.0 - e.ci_low:+.4f}]"]
            if stats is not None:
                row += [str(stats.label[u]), f"{float(stats.best_iou[u]):.3f}"]
            table.add_row(*row)
        Console().print(table)
    _iv_written(paths)


# === inversion and encoders (gantools.inversion) ===


class InvertTask(str, Enum):
    reconstruct = "reconstruct"
    inpaint = "inpaint"
    colorize = "colorize"
    denoise = "denoise"
    superres = "superres"


@app.command("invert")
def invert_cmd(
    images: Annotated[list[Path], typer.Argument(help="The real degraded images, or folders of them (any size, "
                                                 "mode and common format; superres: exactly the generator's size / "
                                                 "--scale).")],
    model: ModelOpt = DEFAULT_MODEL,
    task: Annotated[InvertTask, typer.Option("--task", "-t", help="What the input lacks: reconstruct (nothing), "
                                             "inpaint (--mask), colorize (colour), denoise (Gaussian noise), "
                                             "superres (resolution).")] = InvertTask.reconstruct,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="inpaint: PNG of the input's size whose nonzero "
                                                 "pixels are missing.", show_default=False)] = None,
    scale: Annotated[Optional[int], typer.Option("--scale", help="superres: the input is the generator's size "
                                                 "divided by this. (default: 4)", show_default=False)] = None,
    noise_sigma: Annotated[Optional[float], typer.Option(
        "--noise-sigma", help="denoise: noise std on the [0,1] scale (e.g. 0.1). (default: estimated per image)",
        show_default=False)] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Adam steps per image.")] = 300,
    restarts: Annotated[int, typer.Option("--restarts", min=1, help="Starting points per image, optimised "
                                          "together; the lowest final loss wins.")] = 4,
    layerwise: Annotated[Optional[str], typer.Option(
        "--layerwise", help="Also optimise this generator layer's features (number or name) to reach details "
        "outside the generator's range; both results are reported.", show_default=False)] = None,
    layer_steps: Annotated[Optional[int], typer.Option("--layer-steps", min=1, help="Steps of the layer-wise "
                                                       "refinement. (default: --steps)", show_default=False)] = None,
    composite: Annotated[bool, typer.Option("--composite/--no-composite", help="inpaint: paste the known pixels "
                                            "back; colorize: keep the input's luminance. --no-composite keeps "
                                            "the raw generator output.")] = True,
    encoder: Annotated[Optional[Path], typer.Option("--encoder", help="Encoder file to start from. (default: the "
                                                    "model's encoder.safetensors, when present)",
                                                    show_default=False)] = None,
    no_encoder: Annotated[bool, typer.Option("--no-encoder", help="Start from random latents only.")] = False,
    target: Annotated[Optional[Path], typer.Option(
        "--target", help="Clean image (one input) or a folder of clean images named like the inputs: reports "
        "PSNR and SSIM beside those of the degraded input itself (superres: bicubic) and of a classical "
        "baseline (biharmonic inpainting, the best of TV/NL-means/wavelet denoising, bicubic, mean-chroma "
        "colorization), and warns when the result is worse than either.", show_default=False)] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=1, help="Images inverted together.")] = 16,
    out: Annotated[Path, typer.Option("--out", "-o", help="Output directory: <stem>.png, <stem>_compare.png, "
                                      "<stem>.latent.pt.")] = Path("inverted"),
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per image (losses, metrics, "
                                           "paths) instead of a table.")] = False,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
) -> None:
    """Invert real images into the GAN and restore what they lack (GAN-prior restoration)."""
    _check_out_dir(out)
    from ..restoration.inversion import invert, save_outputs
    from ..models import load_model

    t = task.value
    if mask is not None and t != "inpaint":
        raise typer.BadParameter("--mask is for --task inpaint")
    if t == "inpaint" and mask is None:
        raise typer.BadParameter("--task inpaint needs --mask MASK.png (nonzero pixels = missing)")
    if layer_steps is not None and layerwise is None:
        raise typer.BadParameter("--layer-steps is for --layerwise")
    if noise_sigma is not None and t != "denoise":
        raise typer.BadParameter("--noise-sigma is for --task denoise")
    if noise_sigma is not None and not 0 < noise_sigma < 1:
        raise typer.BadParameter("--noise-sigma is on the [0,1] scale: give a value between 0 and 1, e.g. 0.1")
    if scale is not None and t != "superres":
        raise typer.BadParameter("--scale is for --task superres")
    if encoder is not None and no_encoder:
        raise typer.BadParameter("give --encoder or --no-encoder, not both")
    paths: list[dict[str, str]] = []
    with Reporter(quiet) as rep:
        gan = load_model(model, device=device)
        try:  # each batch's files are written as soon as it is done
            result = invert(gan, images, t, mask=mask, scale=4 if scale is None else scale, noise_sigma=noise_sigma,
                            steps=steps, restarts=restarts, layerwise=layerwise, layer_steps=layer_steps,
                            composite=composite, encoder=None if no_encoder else (encoder if encoder is not None
                                                                                   else "auto"),
                            target=target, batch_size=batch_size, seed=seed, progress=rep,
                            on_batch=lambda part: paths.extend(save_outputs(part, out)))
        except KeyboardInterrupt:
            if paths:
                last = Path(paths[-1]["output"]).stem
                rep.print(f"interrupted: kept the {len(paths)} result(s) of the finished batches in {out}/ (the "
                          f"last is {last}); the images after it were not inverted: invert those to finish")
            else:
                rep.print("interrupted before the first batch finished: nothing was written; run the command "
                          "again (a smaller --batch-size writes results sooner)")
            raise typer.Exit(130) from None
    records = []
    for i, p in enumerate(paths):
        rec = result.record(i)
        rec.update(**p)
        records.append(rec)
    if json_out:
        for rec in records:
            print_json(rec)
        return
    from rich.console import Console
    from rich.table import Table

    lw = result.layer is not None
    has_metrics = any(r.get("psnr") is not None for r in records)
    table = Table(title=f"invert --task {t}")
    for col in ["image", "result", "loss", "mse"] + (["psnr", "ssim"] if has_metrics else []):
        table.add_column(col, justify="left" if col in ("image", "result") else "right")
    for r in records:
        results = [("z-only", r)] + ([(f"layer-wise {result.layer}", r["layerwise"])] if lw else [])
        for j, (label, v) in enumerate(results):
            row = [r["name"] if j == 0 else "", label, f"{v['total_loss']:.3f}", f"{v['mse']:.2e}"]
            if has_metrics:
                row += [_opt_num(v.get("psnr"), ".2f"), _opt_num(v.get("ssim"), ".3f")]
            table.add_row(*row)
        # what the result has to beat: the degraded input itself and the classical baseline
        compare = []
        if r.get("input_psnr") is not None and t != "superres":  # superres: the baseline row is the input's
            compare.append(("input as given", r["input_psnr"], r["input_ssim"]))
        if r.get("baseline_psnr") is not None:
            compare.append((f"baseline: {r['baseline']}", r["baseline_psnr"], r["baseline_ssim"]))
        for label, p_, s_ in compare:
            table.add_row("", label, "-", "-", _opt_num(p_, ".2f"), _opt_num(s_, ".3f"))
    Console().print(table)
    Console().print(f"wrote {len(records)} result(s) to {out}/ (<stem>.png, <stem>_compare.png, <stem>.latent.pt)",
                    highlight=False)


def _opt_num(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


@encoder_app.command("train")
def encoder_train_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Also train on real images: a folder "
                                                "(searched recursively) or a built-in dataset name (scenes).",
                                                show_default=False)] = None,
    holdout: Annotated[int, typer.Option("--holdout", min=0, help="With a folder: leave N images out, split as "
                                         "`gantools train --holdout` does (the last by sorted file name, per "
                                         "class folder).")] = 0,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimisation steps.")] = 2000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", min=2, help="Images per step.")] = 64,
    width: Annotated[int, typer.Option("--width", min=4, help="Channels of the first conv block.")] = 32,
    lr: Annotated[float, typer.Option("--lr", min=0.0, help="Adam learning rate (cosine decay).")] = 1e-3,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Encoder file. (default: encoder.safetensors "
                                                "beside the model, where invert finds it)",
                                                show_default=False)] = None,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train an encoder E(x) -> z for a model; `gantools invert` starts from E(x) when it exists."""
    _check_out_file(out)
    from ..restoration.encoder import Encoder, EncoderConfig, encoder_errors, train_encoder
    from ..models import load_model

    gan = load_model(model, device=device)
    if out is None:
        if gan.path is None:
            raise typer.BadParameter("give --out: the model has no file to store the encoder beside")
        out = _default_companion(gan.path, "encoder")
    with Reporter(quiet) as rep:
        dataset = None
        if data is not None:
            dataset = _encoder_data(data, gan.config.image_size, gan.config.nc, holdout, seed, rep)
        elif holdout:
            raise typer.BadParameter("--holdout needs --data FOLDER")
        try:
            result = train_encoder(gan, steps=steps, batch_size=batch_size, data=dataset, width=width, lr=lr,
                                   out=out, device=device, seed=seed, progress=rep)
        except KeyboardInterrupt:
            rep.print("interrupted: nothing was kept (the encoder is written only when training ends"
                      + (f"; the existing {out} is unchanged" if out.exists() else "")
                      + "); run the command again, with fewer --steps to finish sooner")
            raise typer.Exit(130) from None
    untrained = Encoder(EncoderConfig(gan.config.image_size, gan.config.nc, gan.config.nz, width)).to(gan.device)
    before, after = encoder_errors(untrained, gan), encoder_errors(result.encoder, gan)
    summary = {"out": str(result.path), "steps": steps, "seconds": result.settings["seconds"],
               "data": data, "latent_mse": after["latent"], "pixel_mse": after["pixel"],
               "untrained_latent_mse": before["latent"], "untrained_pixel_mse": before["pixel"]}
    if json_out:
        print_json(summary)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title="encoder on 256 fresh generated samples")
    for col in ("", "latent MSE", "pixel MSE [0,1]"):
        table.add_column(col, justify="right")
    table.add_row("untrained", f"{before['latent']:.4f}", f"{before['pixel']:.5f}")
    table.add_row("trained", f"{after['latent']:.4f}", f"{after['pixel']:.5f}")
    Console().print(table)
    Console().print(f"wrote {result.path} ({steps} steps in {result.settings['seconds']:.0f} s)", highlight=False)


def _encoder_data(data: str, image_size: int, nc: int, holdout: int, seed: int, progress: Any) -> Any:
    from ..data import ImageFolder, find_images, open_dataset, split_holdout

    path = Path(data)
    if path.is_dir():
        files, _ = split_holdout(find_images(path), holdout)  # the same split as `gantools train --holdout`
        return ImageFolder(path, image_size, nc, files=files, progress=progress)
    if holdout:
        raise typer.BadParameter("--holdout is for a folder of images")
    return open_dataset(data, image_size, nc, seed=seed + 1, progress=progress)

# === evaluation (gantools.metrics) ===

classifier_app = typer.Typer(help="Domain classifiers: eval's feature extractor and class-coverage judge.",
                             no_args_is_help=True)
app.add_typer(classifier_app, name="classifier")


def _eval_table(result: Any) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console()
    ex = result.extractor
    console.print(f"{result.model} vs {result.data}: {result.n_generated} generated, {result.n_real} real images",
                  highlight=False)
    if result.metrics:
        floor = getattr(result, "floor", None) or {}
        table = Table(show_header=True)
        table.add_column("metric")
        table.add_column("model", justify="right")
        if floor.get("n"):  # what a perfect model would score: real images against other real images
            table.add_column(f"real vs real ({floor['n']} + {floor['n']})", justify="right")
        m = result.metrics

        def row(label: str, key: str, fmt: Any) -> None:
            cells = [label, fmt(m, key)]
            if floor.get("n"):
                cells.append(fmt(floor, key) if key in floor else "-")
            table.add_row(*cells)

        if "fid" in m:
            row("FID", "fid", lambda d, k: f"{d[k]:.4g}")
        if "kid" in m:
            row("KID (x1000)", "kid", lambda d, k: f"{1000 * d['kid']:.4g} ± {1000 * d['kid_std']:.2g}")
        if "precision" in m:
            row(f"precision (k={result.settings['k']})", "precision", lambda d, k: f"{d[k]:.3f}")
            row(f"recall (k={result.settings['k']})", "recall", lambda d, k: f"{d[k]:.3f}")
        console.print(table)
        names = {"fid": "FID", "kid": "KID", "precision": "precision", "recall": "recall"}
        for key, text in result.explain().items():
            console.print(f"{names.get(key, key)}: {text}", highlight=False, markup=False, soft_wrap=True)
        console.print(f"extractor: {ex['description']}  (fingerprint {ex['fingerprint']}, {ex['dim']} features) "
                      "- compare scores only between results with the same extractor fingerprint", highlight=False,
                      markup=False)
    cov = result.class_coverage
    if cov is not None:
        table = Table(title=f"class coverage: {100 * cov.confident_fraction:.1f}% of samples classified with "
                            f"confidence >= {cov.threshold:g}")
        table.add_column("class")
        table.add_column("share of samples", justify="right")
        table.add_column("confident", justify="right")
        for c, f, s in zip(cov.classes, cov.fractions, cov.confident_per_class):
            table.add_row(c, f"{100 * f:.1f}%", f"{100 * s:.1f}%")
        console.print(table)
    con = result.concepts
    if con is not None:
        table = Table(title=f"concept pixel frequencies ({con.segmenter}); total variation distance "
                            f"{con.tv_distance:.3f}")
        table.add_column("concept")
        table.add_column("real", justify="right")
        table.add_column("generated", justify="right")
        table.add_column("relative difference", justify="right")
        for c, r, g in zip(con.concepts, con.real, con.generated):
            rel = f"{100 * (g - r) / r:+.0f}%" if r > 0.01 else ""
            table.add_row(c, f"{100 * r:.2f}%", f"{100 * g:.2f}%", rel)
        console.print(table)


@app.command("eval")
def eval_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="Real images: a folder or a built-in dataset "
                                                "(scenes). Default: the data the model was trained on, when its "
                                                "file records it.", show_default=False)] = None,
    n: Annotated[int, typer.Option("--n", "-n", help="Generated images (and at most this many real ones).")] = 5000,
    metrics: Annotated[str, typer.Option("--metrics", help="Comma-separated: fid, kid, pr (precision/recall), classes "
                                         "(class coverage), concepts (concept pixel frequencies); auto = fid,kid,pr "
                                         "plus classes/concepts when the model has a classifier/segmenter beside "
                                         "it; all.")] = "auto",
    extractor: Annotated[str, typer.Option("--extractor", help="Features for FID/KID/PR: auto, classifier (the "
                                           "model's classifier.safetensors), segmenter (its learned segmenter's "
                                           "encoder), inception (needs --inception-weights), random (seeded untrained "
                                           "CNN), or a classifier/segmenter .safetensors or inception .pth file.")]
    = "auto",
    inception_weights: Annotated[Optional[Path], typer.Option("--inception-weights", help="Local torchvision "
                                                              "Inception-v3 weights (.pth); never downloaded.",
                                                              show_default=False)] = None,
    holdout: Annotated[int, typer.Option("--holdout", help="Compare with only the N images of the --data "
                                         "folder that `train --holdout N` leaves out (the last by file name in "
                                         "each class folder).")] = 0,
    k: Annotated[int, typer.Option("--k", min=1, help="Nearest neighbours for precision/recall.")] = 3,
    kid_subsets: Annotated[int, typer.Option("--kid-subsets", min=1, help="Random subsets for KID.")] = 100,
    kid_subset_size: Annotated[int, typer.Option("--kid-subset-size", min=2, help="Images per KID subset.")] = 1000,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")] = 100,
    no_cache: Annotated[bool, typer.Option("--no-cache", help="Recompute the reference statistics (cached in "
                                           "$GANTOOLS_CACHE/stats, default ~/.cache/gantools/stats).")] = False,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Sample quality: FID, KID, precision/recall, class coverage and concept frequencies, offline."""
    from ..metrics import evaluate

    if n < 2:
        raise typer.BadParameter("--n must be at least 2")
    started = time.time()
    with Reporter(quiet) as rep:
        try:
            result = evaluate(model, data=data, n=n, metrics=metrics, extractor=extractor,
                              inception_weights=inception_weights, seed=seed, holdout=holdout, k=k,
                              kid_subsets=kid_subsets, kid_subset_size=kid_subset_size, batch_size=batch_size,
                              use_cache=not no_cache, device=device, progress=rep)
        except KeyboardInterrupt:
            from ..metrics import cache_dir

            cache = cache_dir()
            # reference statistics are cached (atomically) as soon as they are complete
            kept = [f for f in cache.glob("*.pt") if f.stat().st_mtime >= started - 1] if cache.is_dir() else []
            if kept:
                rep.print(f"interrupted: kept the reference statistics computed so far ({len(kept)} file(s) in "
                          f"{cache}/); run the command again: it reuses them and measures the generated samples")
            else:
                rep.print("interrupted: nothing was written; run the command again (a smaller --n finishes sooner)")
            raise typer.Exit(130) from None
    if json_out:
        print_json(result.to_dict())
    else:
        _eval_table(result)


@classifier_app.command("train")
def classifier_train_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="Class-folder dataset: one subfolder of images per class.")],
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="File to write (default: classifier.safetensors "
                                                "beside --model, else ./classifier.safetensors).", show_default=False)]
    = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Train for this model: its image size and "
                                                 "channels, and --out beside it (where eval finds it).",
                                                 show_default=False)] = None,
    image_size: Annotated[Optional[int], typer.Option("--image-size", help="Input side (default: the model's, "
                                                      "else 32).", show_default=False)] = None,
    nc: Annotated[Optional[int], typer.Option("--nc", help="Channels, 1 or 3 (default: the model's, else 1).",
                                              show_default=False)] = None,
    epochs: Annotated[int, typer.Option("--epochs", help="Passes over the training images.")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Batch size.")] = 64,
    lr: Annotated[float, typer.Option("--lr", help="Peak AdamW learning rate (one-cycle schedule).")] = 2e-3,
    width: Annotated[int, typer.Option("--width", help="Channels of the first conv stage.")] = 32,
    feature_dim: Annotated[int, typer.Option("--feature-dim", help="Length of the feature vector eval uses.")] = 128,
    val_fraction: Annotated[float, typer.Option("--val-fraction", help="Share of training images kept aside to "
                                                "measure accuracy.")] = 0.1,
    holdout: Annotated[int, typer.Option("--holdout", help="Leave out N images, the last by file name in each "
                                         "class folder (as `gantools train --holdout`); evaluate on them with "
                                         "`classifier eval --holdout N`.")] = 0,
    augment: Annotated[bool, typer.Option("--augment/--no-augment", help="Random small shifts and scalings.")] = True,
    seed: SeedOpt = 0,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Train a small CNN classifier on class folders (e.g. digits in 0/ ... 9/)."""
    _check_out_file(out)
    from ..classifier import train_classifier

    if model is not None:
        from ..models import load_model

        gan = load_model(model)
        image_size = image_size or gan.config.image_size
        nc = nc or gan.config.nc
        out = out or _default_companion(gan.path, "classifier")
    out = out or Path("classifier.safetensors")
    with Reporter(quiet) as rep:
        try:
            result = train_classifier(data, image_size=image_size or 32, nc=nc or 1, out=out, epochs=epochs,
                                      batch_size=batch_size, lr=lr, width=width, feature_dim=feature_dim,
                                      val_fraction=val_fraction, holdout=holdout, augment=augment, seed=seed,
                                      device=device, progress=rep)
        except KeyboardInterrupt:
            rep.print("interrupted: nothing was kept (the classifier is written only when training ends"
                      + (f"; the existing {out} is unchanged" if out.exists() else "")
                      + "); run the command again, with fewer --epochs to finish sooner")
            raise typer.Exit(130) from None
    if json_out:
        print_json(result.to_dict())
        return
    val = f"{100 * result.val_accuracy:.2f}%" if result.val_accuracy is not None else "n/a"
    held = (f"{holdout} images held out: `classifier eval --holdout {holdout}` scores them" if holdout else
            "no images held out: `classifier eval` on this folder scores training images")
    typer.echo(f"{result.path}  ({len(result.classifier.classes)} classes, {result.n_train} training images, "
               f"validation accuracy {val}, {result.seconds:.0f} s; {held})")


@classifier_app.command("eval")
def classifier_eval_cmd(
    data: Annotated[Path, typer.Option("--data", "-d", help="Class-folder dataset to classify.")],
    classifier: Annotated[Optional[Path], typer.Option("--classifier", help="Classifier .safetensors "
                                                       "(default: the one beside --model).", show_default=False)] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="Use this model's classifier.safetensors.",
                                                 show_default=False)] = None,
    holdout: Annotated[int, typer.Option("--holdout", help="Classify only the N images that `train --holdout N` "
                                         "leaves out (the last by file name in each class folder); an error when "
                                         "the classifier was trained on some of them.")] = 0,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")] = 256,
    device: DeviceOpt = "auto",
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Accuracy of a classifier on a class-folder dataset, overall and per class."""
    from ..classifier import evaluate_classifier

    if classifier is None:
        if model is None:
            raise typer.BadParameter("give --classifier PATH or --model M (whose classifier.safetensors is used)")
        from ..models import companion_path, resolve_model_path

        classifier = companion_path(resolve_model_path(model), "classifier")
        if not classifier.is_file():
            raise GantoolsError(f"model {model} has no {classifier.name} beside it: give --classifier PATH")
    elif model is not None:
        raise typer.BadParameter("give --classifier or --model, not both")
    with Reporter(quiet) as rep:
        result = evaluate_classifier(classifier, data, holdout=holdout, batch_size=batch_size, device=device,
                                     progress=rep)
    if json_out:
        print_json(result.to_dict())
        return
    from rich.console import Console
    from rich.table import Table

    if result.trained_on:
        what = f" ({result.trained_on} of them training images: not a held-out score)"
    elif result.trained_on == 0:
        what = " (held out: none of them was a training image)"
    else:
        what = f" (the last {holdout} of each folder's share)" if holdout else ""
    table = Table(title=f"accuracy {100 * result.accuracy:.2f}% on {result.n} images of {result.data}{what}")
    table.add_column("class")
    table.add_column("images", justify="right")
    table.add_column("accuracy", justify="right")
    for c, acc in result.per_class.items():
        table.add_row(c, str(result.counts[c]), f"{100 * acc:.1f}%")
    Console().print(table)


# === editing (gantools.editing) ===


class EditBlend(str, Enum):
    input = "input"
    reconstruction = "reconstruction"


@app.command("edit")
def edit_cmd(
    image: Annotated[Path, typer.Argument(help="The image to edit (any size; resized and centre-cropped).")],
    layer: Annotated[str, _IV_LAYER],
    remove: Annotated[Optional[str], typer.Option("--remove", help="Concept to remove: its top units are switched "
                                                  "off over the whole image.", show_default=False)] = None,
    add: Annotated[Optional[str], typer.Option("--add", help="Concept to add at --at or inside --mask: its top "
                                               "units are set to their q99 level there.", show_default=False)] = None,
    at: Annotated[Optional[str], typer.Option("--at", help="With --add: x,y as fractions of the image (0,0 top "
                                              "left), e.g. 0.5,0.7.", show_default=False)] = None,
    mask: Annotated[Optional[Path], typer.Option("--mask", help="With --add: a mask PNG of the image's size "
                                                 "(white = inside), instead of --at.", show_default=False)] = None,
    top: Annotated[int, _IV_TOP] = 20,
    strength: Annotated[float, _IV_STRENGTH] = 1.0,
    allow_weak: Annotated[bool, _IV_ALLOW_WEAK] = False,
    units: Annotated[Optional[str], _IV_UNITS] = None,
    rank: Annotated[UnitRanking, _IV_RANK] = UnitRanking.iou,
    report_dir: Annotated[Optional[Path], _IV_REPORT] = None,
    segmenter: Annotated[Optional[str], _IV_SEGMENTER] = None,
    blend: Annotated[EditBlend, typer.Option("--blend", help="Outside the edited region keep the input's pixels "
                                             "or the reconstruction's.")] = EditBlend.input,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Inversion steps.")] = 200,
    restarts: Annotated[int, typer.Option("--restarts", min=1, help="Inversion restarts.")] = 2,
    invert_layer: Annotated[Optional[str], typer.Option("--invert-layer", help="Layer whose features the inversion "
                                                        "refines, at or below --layer. (default: the one below it)",
                                                        show_default=False)] = None,
    dissect_n: Annotated[int, _IV_DISSECT_N] = 1000,
    model: ModelOpt = DEFAULT_MODEL,
    device: DeviceOpt = "auto",
    seed: SeedOpt = 0,
    out: OutOpt = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Edit a real image: invert it, switch a concept's units off (--remove) or on (--add), regenerate.

    Outside the edited region the input's pixels are kept. Writes <stem>_edited.png, strip.png
    (input | reconstruction | edited | difference) and edit.json (concept pixel fractions before and
    after) to --out.
    """
    _check_out_dir(out)
    from ..editing import edit

    if (remove is None) == (add is None):
        raise typer.BadParameter("say what to edit: --remove CONCEPT or --add CONCEPT (one of them)")
    if add is not None and (at is None) == (mask is None):
        raise typer.BadParameter("say where to add: --at x,y or --mask PNG (one of them)")
    if remove is not None and (at is not None or mask is not None):
        raise typer.BadParameter("--at and --mask only go with --add")
    _iv_selection(units, remove or add, rank, report_dir)
    with Reporter(quiet) as rep, _IvFlags():
        result = edit(model, image, layer, remove=remove, add=add, at=at, mask=mask, top=top, strength=strength,
                      units=units, rank=rank.value, dissection=report_dir, segmenter=segmenter, blend=blend.value,
                      steps=steps, restarts=restarts, invert_layer=invert_layer, dissect_n=dissect_n, seed=seed,
                      allow_weak=allow_weak, device=device, progress=rep)
    paths = result.save(out) if out is not None else []
    if json_out:
        print_json(result.to_dict())
    else:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        console.print(f"{'removed' if result.action == 'remove' else 'added'} {result.concept}: "
                      f"{len(result.units)} unit(s) of {result.layer}: {_iv_unit_list(result.units)}; "
                      f"reconstruction PSNR {result.psnr:.1f} dB; edited region "
                      f"{100 * float(result.region.float().mean()):.1f}% of the image", highlight=False)
        table = Table(title=f"concept pixel fractions (before = {result.blend})", title_justify="left")
        for col in ("concept", "before", "reconstruction", "after", "change"):
            table.add_column(col, justify="left" if col == "concept" else "right")
        for c in sorted(result.before, key=lambda c: (c != result.concept, -abs(result.after[c] - result.before[c]))):
            if c != result.concept and result.before[c] == 0 and result.after[c] == 0:
                continue
            table.add_row(f"[bold]{c}[/]" if c == result.concept else c, f"{result.before[c]:.4f}",
                          f"{result.reconstructed[c]:.4f}", f"{result.after[c]:.4f}",
                          f"{result.after[c] - result.before[c]:+.4f}")
        console.print(table)
    _iv_written(paths)


# === paint (gantools.paint): the command module imports typer only, so --help stays fast ===
from .paint import paint_cmd  # noqa: E402

app.command("paint")(paint_cmd)


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
