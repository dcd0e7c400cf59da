"""`gantools data` (gantools.scenes): write the built-in datasets to disk."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from .common import JsonOpt, QuietOpt, Reporter, check_channels, check_out_dir, on_interrupt, print_json, \
    stdout_console

data_app = typer.Typer(help="Built-in datasets: write them to disk.", no_args_is_help=True)


@data_app.command("scenes")
def data_scenes_cmd(
    out: Annotated[Path, typer.Argument(help="Output folder: images/, labels/, concepts.json, preview.png.")],
    n: Annotated[int, typer.Option("--n", "-n", min=1, help="Number of scenes.")] = 1000,
    size: Annotated[int, typer.Option("--size", "--image-size", min=8, max=1024,
                                      help="Image side in pixels (16 to 128 recommended).")] = 64,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Dataset seed: scene i of a seed is always the same.")] = 0,
    nc: Annotated[int, typer.Option("--nc", help="Channels: 3 (RGB) or 1 (luminance).", callback=check_channels)] = 3,
    preview: Annotated[int, typer.Option("--preview", min=1, help="Scenes shown in preview.png.")] = 16,
    version: Annotated[Optional[int], typer.Option("--data-version", help="Design version: 2 (every concept "
                                                   "drawable at 64 px) or 1 (the first design, for old runs).",
                                                   show_default="the current one")] = None,
    quiet: QuietOpt = False,
    json_out: JsonOpt = False,
) -> None:
    """Write procedural scenes with per-pixel concept labels (palette PNGs) and print concept frequencies."""
    check_out_dir(out, "OUT")
    from ..scenes import write_scenes

    chosen = {} if version is None else {"version": version}
    with Reporter(quiet) as rep, on_interrupt(lambda: _scenes_interrupted(out)):
        result = write_scenes(out, n=n, image_size=size, seed=seed, nc=nc, preview=min(preview, n), progress=rep,
                              **chosen)
    if json_out:
        print_json({"out": str(result.out), "n": result.n, "image_size": result.image_size, "nc": result.nc,
                    "seed": result.seed, "version": result.version, "preview": str(result.preview),
                    "concepts": result.concepts, "frequencies": result.frequencies})
        return
    _show_scenes(result)


def _scenes_interrupted(out: Path) -> str:
    if not out.is_dir():
        return "interrupted: nothing was written; run the command again"
    return (f"interrupted: {out}/ holds the scenes written so far but is not a complete dataset (concepts.json and "
            "preview.png are written last); run the same command again to finish it (scene i of a seed is always "
            "the same)")


def _show_scenes(result: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{result.n} scenes ({result.image_size}x{result.image_size}, seed {result.seed}, design "
                        f"version {result.version}) in {result.out}")
    table.add_column("id", justify="right")
    table.add_column("concept")
    table.add_column("images with it", justify="right")
    table.add_column("pixels", justify="right")
    for i, name in enumerate(result.concepts):
        f = result.frequencies[name]
        table.add_row(str(i), name, f"{100 * f['image_frequency']:.1f}%", f"{100 * f['pixel_frequency']:.2f}%")
    console = stdout_console()
    console.print(table)
    console.print(f"preview: {result.preview}", highlight=False)
