"""`gantools paint`: serve the painting studio (`gantools.paint`) and open it in the browser.

Only typer and the standard library are imported at the top: `gantools --help` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from .common import DEFAULT_DEVICE, DEFAULT_MODEL, DeviceOpt, ModelOpt, Reporter


def paint_cmd(
    model: ModelOpt = DEFAULT_MODEL,
    report: Annotated[Optional[Path], typer.Option(
        "--report", help="Dissection report of the model (report.json or its directory) for the palette.",
        show_default="the layer is dissected once on 1000 samples and cached")] = None,
    layer: Annotated[Optional[str], typer.Option("--layer", help="The layer to paint.",
                                                 show_default="3, or the report's layer")] = None,
    image: Annotated[Optional[Path], typer.Option("--image", help="A real image to paint (any size; resized and "
                                                  "centre-cropped): inverted layer-wise first.",
                                                  show_default=False)] = None,
    seed: Annotated[int, typer.Option("--seed", min=0, help="Seed of the first sample.")] = 0,
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="Port to serve on; 0 takes a free one.")] = 0,
    host: Annotated[str, typer.Option("--host", help="Address to serve on. Anything but 127.0.0.1 lets other "
                                      "machines use the studio.")] = "127.0.0.1",
    no_browser: Annotated[bool, typer.Option("--no-browser", help="Print the address only; open no browser.")] = False,
    device: DeviceOpt = DEFAULT_DEVICE,
) -> None:
    """Paint concepts into generated or real images in the browser, GANPaint-style, offline.

    Brush, pick a concept, Add or Remove: the stroke is redrawn with the concept's units on or off.
    Serves until Ctrl-C.
    """
    if image is not None and not image.is_file():
        raise typer.BadParameter(f"no image file {image}", param_hint="'--image'")
    from ..data import load_image
    from ..paint import image_state, make_server, open_studio, sample_state

    with Reporter() as say:  # the set-up's progress: the palette's dissection, the --image's inversion
        studio = open_studio(model, report, layer, device=device, progress=say)
        named = sum(1 for e in studio.palette if e.units)
        say.print(f"painting {studio.layer} of {model}: {named} concepts with interpretable units; "
                  f"{studio.settings.top} units per edit")
        if image is not None:
            pixels = load_image(image, studio.nc, studio.size)
            say.print(f"inverting {image.name} layer-wise ({studio.settings.steps} steps x "
                      f"{studio.settings.restarts} restarts; a minute or so on a CPU)")
            start = image_state(studio, pixels, image.stem, progress=say)
            say.print(start.source)
        else:
            start = sample_state(studio, seed)
    server = make_server(studio, host, port, start, on_error=lambda trace: say.print(
        "a request failed inside the server (it keeps serving):\n" + trace))
    if not server.loopback:
        say.print(f"warning: serving on {host}: anyone who can reach this machine can use the studio "
                  "(and its CPU); use the default --host 127.0.0.1 to keep it local")
    print(f"gantools paint: {server.url}  (Ctrl-C to stop)", flush=True)
    if not no_browser:
        _open_browser(server.url, say)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("gantools paint: stopped. Goodbye.", flush=True)


def _open_browser(url: str, say: Reporter) -> None:
    import webbrowser

    try:
        opened = webbrowser.open(url)
    except Exception:  # noqa: BLE001 - no browser is not an error: the address is printed
        opened = False
    if not opened:
        say.print(f"could not open a browser here: open {url} yourself")
