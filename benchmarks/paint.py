"""`gantools paint` measured end to end, through its HTTP API: Apply and upload times, remove-tree strokes.

- Apply: the round trip of POST /api/apply (the Intervention, the regeneration, the segmentation for
  "what changed", the PNG), at the model's resolution on the CPU. Goal: at most 1 s at 64 px.
- Upload: POST /api/upload of a real scene, inverted layer-wise as `gantools edit` does.
- Remove tree: on --n fresh real scenes (built-in scenes of a seed the model never saw, with at
  least --min-tree of ground-truth tree pixels), uploaded, then one Remove stroke of "tree" over the
  ground-truth trees (grown by --grow pixels, as a brush stroke covers them). Reported: the
  segmenter's tree fraction of the whole image before and after, and inside the stroke. The same
  on --n generated samples with trees, the stroke over the segmented trees.
- Add door: on --doors generated samples with a wall, one Add stroke of "door" over a 12 x 12 px
  square of wall, and on the same samples one over a square of sky (GAN Dissection's finding: units
  add a concept only where the context allows). A stroke succeeds when the segmenter finds at least
  10 more door pixels in the image.
- `--screenshot docs/paint.png`: the page in headless chromium (Playwright) after a remove-tree
  stroke on a real scene (examples/inputs/scenes/scene_trees_lake.png).

    python benchmarks/paint.py [--model scenes64] [--n 10] [--doors 16] [--screenshot docs/paint.png]
                               [--json out.json]
"""

from __future__ import annotations

import argparse
import io
import json
import statistics
import time
import urllib.request
from pathlib import Path

import torch
import torch.nn.functional as F

import gantools
from gantools.paint import PaintSettings, make_server, open_studio

FRESH_SEED = 777  # as benchmarks/edit.py: the shipped model trained on seed-0 scenes
SCREENSHOT_SCENE = Path(__file__).resolve().parent.parent / "examples" / "inputs" / "scenes" / "scene_trees_lake.png"


class Client:
    """The page's side of the API, in Python."""

    def __init__(self, url: str) -> None:
        self.url, self.session = url.rstrip("/"), None

    def call(self, path: str, body: dict | None = None, data: bytes | None = None) -> dict:
        headers = {"X-Paint-Session": self.session} if self.session else {}
        if data is None:
            data, headers["Content-Type"] = json.dumps(body or {}).encode(), "application/json"
        else:
            headers["Content-Type"] = "image/png"
        req = urllib.request.Request(self.url + path, data=data, method="POST", headers=headers)
        with urllib.request.urlopen(req, timeout=3600) as r:
            view = json.loads(r.read())
        self.session = view.get("session", self.session)
        return view


def png_bytes(image: torch.Tensor) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image.permute(1, 2, 0).numpy()).save(buf, format="PNG")
    return buf.getvalue()


def grow(region: torch.Tensor, pixels: int) -> torch.Tensor:
    k = 2 * pixels + 1
    return F.max_pool2d(region[None, None].float(), k, stride=1, padding=pixels)[0, 0] > 0


def wire(region: torch.Tensor) -> str:
    return "".join("1" if v else "0" for v in region.flatten().tolist())


def remove_tree(client: Client, stroke: torch.Tensor) -> tuple[dict, float]:
    t = time.perf_counter()
    view = client.call("/api/apply", {"concept": "tree", "action": "remove", "strength": 1.0, "mask": wire(stroke)})
    return view, time.perf_counter() - t


def row(view: dict, seconds: float, **extra) -> dict:
    change = view["change"]
    tree = change["fractions"]["tree"]
    return {**extra, "before": tree["before"], "after": tree["after"], "inside_before": change["inside"]["before"],
            "inside_after": change["inside"]["after"], "stroke": change["region_fraction"], "apply_s": seconds}


def real_scenes(client: Client, studio, n: int, min_tree: float, pixels: int) -> tuple[list[dict], list[float]]:
    scenes = gantools.Scenes(5000, image_size=studio.size, seed=FRESH_SEED)
    tree = scenes.concepts.index("tree")
    rows, uploads = [], []
    for i in range(5000):
        if len(rows) >= n:
            break
        image, labels = scenes[i]
        if float((labels == tree).float().mean()) < min_tree:
            continue
        t = time.perf_counter()
        client.call("/api/upload?name=scene" + str(i), data=png_bytes(image))
        uploads.append(time.perf_counter() - t)
        view, seconds = remove_tree(client, grow(labels == tree, pixels))
        rows.append(row(view, seconds, scene=i, upload_s=uploads[-1]))
    return rows, uploads


def samples(client: Client, server, n: int, min_tree: float, pixels: int) -> list[dict]:
    tree = server.studio.concepts.index("tree")
    rows = []
    for seed in range(100, 2000):
        if len(rows) >= n:
            break
        client.call("/api/sample", {"seed": seed})
        labels = server.sessions.get(client.session).state.labels  # what the page shows, segmented
        if float((labels == tree).float().mean()) < min_tree:
            continue
        view, seconds = remove_tree(client, grow(labels == tree, pixels))
        rows.append(row(view, seconds, seed=seed))
    return rows


DOOR_SIDE = 12  # px: the door stroke's square, inside an all-wall (or all-sky) patch
MIN_ADDED = 10  # door pixels a stroke must add to count (as benchmarks/edit.py)


def square_inside(region: torch.Tensor, side: int) -> torch.Tensor | None:
    """A side x side square of pixels all inside `region` (S x S bool), near the region's middle; None if none."""
    core = -F.max_pool2d(-region[None, None].float(), side, stride=1)[0, 0] > 0.5  # top-left corners that fit
    ys, xs = torch.nonzero(core, as_tuple=True)
    if len(ys) == 0:
        return None
    i = len(ys) // 2
    square = torch.zeros_like(region)
    square[int(ys[i]):int(ys[i]) + side, int(xs[i]):int(xs[i]) + side] = True
    return square


def door_strokes(client: Client, server, n: int) -> list[dict]:
    concepts = server.studio.concepts
    wall, sky, size = concepts.index("wall"), concepts.index("sky"), server.studio.size
    rows = []
    for seed in range(100, 2000):
        if len(rows) >= n:
            break
        client.call("/api/sample", {"seed": seed})
        labels = server.sessions.get(client.session).state.labels
        squares = {"wall": square_inside(labels == wall, DOOR_SIDE), "sky": square_inside(labels == sky, DOOR_SIDE)}
        if any(v is None for v in squares.values()):
            continue
        added = {}
        for where, square in squares.items():
            client.call("/api/sample", {"seed": seed})  # each stroke on the unedited sample
            view = client.call("/api/apply", {"concept": "door", "action": "add", "strength": 1.0,
                                              "mask": wire(square)})
            door = view["change"]["fractions"]["door"]
            added[where] = (door["after"] - door["before"]) * size * size
        rows.append({"seed": seed, **{f"added_{k}": v for k, v in added.items()}})
    return rows


def summary(rows: list[dict]) -> dict:
    before, after = sum(r["before"] for r in rows), sum(r["after"] for r in rows)
    return {"images": len(rows), "tree_before": before / len(rows), "tree_after": after / len(rows),
            "removed": 1 - after / before if before else float("nan"),
            "inside_before": statistics.mean(r["inside_before"] for r in rows),
            "inside_after": statistics.mean(r["inside_after"] for r in rows),
            "stroke": statistics.mean(r["stroke"] for r in rows)}


def screenshot(url: str, studio, out: Path) -> None:
    """The page after a remove-tree stroke on a real scene (headless chromium through Playwright)."""
    from playwright.sync_api import sync_playwright

    from gantools.data import load_image

    labels = studio.labels(load_image(SCREENSHOT_SCENE, studio.nc, studio.size))
    ys, xs = torch.nonzero(labels == studio.concepts.index("tree"), as_tuple=True)
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--disable-sync", "--no-first-run"]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=args)
        page = browser.new_page(viewport={"width": 1000, "height": 760})
        page.set_default_timeout(600_000)
        page.goto(url)
        page.wait_for_selector("body[data-ready='1']")
        with page.expect_response("**/api/upload*"):
            page.set_input_files("#upload", str(SCREENSHOT_SCENE))
        page.wait_for_function("!document.body.classList.contains('uploading')")
        box = page.locator("#mask").bounding_box()
        scale = box["width"] / studio.size
        page.check("input[name=concept][value=tree]")
        # one zigzag stroke over the trees' bounding box, as a hand would brush them
        x0, x1, y0, y1 = int(xs.min()), int(xs.max()) + 1, int(ys.min()), int(ys.max()) + 1
        page.mouse.move(box["x"] + x0 * scale, box["y"] + y0 * scale)
        page.mouse.down()
        for k, y in enumerate(range(y0, y1 + 1, 3)):
            x = x1 if k % 2 == 0 else x0
            page.mouse.move(box["x"] + x * scale, box["y"] + y * scale, steps=8)
        page.mouse.up()
        with page.expect_response("**/api/apply"):
            page.click("#apply")
        page.wait_for_timeout(300)
        out.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out))
        browser.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="scenes64")
    ap.add_argument("--layer", default=None)
    ap.add_argument("--n", type=int, default=10, help="real scenes (and generated samples) with trees; 0: none "
                    "(with --screenshot: only the screenshot)")
    ap.add_argument("--min-tree", type=float, default=0.03, help="tree fraction an image needs to be used")
    ap.add_argument("--grow", type=int, default=2, help="pixels the stroke extends beyond the trees")
    ap.add_argument("--doors", type=int, default=16, help="generated samples with a wall for the door strokes")
    ap.add_argument("--threshold", default="iqr", help="the palette dissection's thresholds: iqr or quantile")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--screenshot", type=Path, default=None)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    settings = PaintSettings(dissect_threshold=args.threshold)
    studio = open_studio(args.model, layer=args.layer, device="cpu", settings=settings,
                         progress=lambda p: print(p.message) if p.message else None)
    server = make_server(studio)
    server.start_in_thread()
    client = Client(server.url)
    client.call("/api/session")
    try:
        generated = samples(client, server, args.n, args.min_tree, args.grow) if args.n > 0 else []
        real, uploads = real_scenes(client, studio, args.n, args.min_tree, args.grow) if args.n > 0 else ([], [])
        doors = door_strokes(client, server, args.doors) if args.n > 0 else []
        if args.screenshot is not None:
            screenshot(server.url, studio, args.screenshot)
    finally:
        server.shutdown()
        server.server_close()
    if args.n > 0:
        report(args, studio, generated, real, uploads, doors)


def report(args: argparse.Namespace, studio, generated: list[dict], real: list[dict], uploads: list[float],
           doors: list[dict]) -> None:
    applies = [r["apply_s"] for r in generated + real]
    result = {"model": args.model, "layer": studio.layer, "size": studio.size, "top": studio.settings.top,
              "threads": torch.get_num_threads(), "threshold": args.threshold,
              "apply_s": {"median": statistics.median(applies), "max": max(applies), "n": len(applies)},
              "upload_s": {"mean": statistics.mean(uploads), "max": max(uploads), "n": len(uploads)},
              "real": summary(real), "generated": summary(generated),
              "doors": {where: {"samples": len(doors),
                                "success": statistics.mean(r[f"added_{where}"] >= MIN_ADDED for r in doors),
                                "mean_added_px": statistics.mean(r[f"added_{where}"] for r in doors)}
                        for where in ("wall", "sky")} if doors else {},
              "per_image": {"real": real, "generated": generated, "doors": doors}}
    print(f"paint benchmark: {args.model} {studio.size}px, {studio.layer}, top {studio.settings.top} units, "
          f"{result['threads']} torch thread(s), palette dissection: {args.threshold}")
    a, u = result["apply_s"], result["upload_s"]
    print(f"  Apply (HTTP round trip): median {a['median']:.3f} s, max {a['max']:.3f} s over {a['n']} (goal <= 1 s)")
    print(f"  upload + layer-wise inversion: mean {u['mean']:.1f} s, max {u['max']:.1f} s over {u['n']}")
    for name in ("real", "generated"):
        s = result[name]
        print(f"  remove-tree stroke, {s['images']} {'fresh real scenes' if name == 'real' else 'generated samples'}: "
              f"tree {100 * s['tree_before']:.2f}% -> {100 * s['tree_after']:.2f}% of the image "
              f"({100 * s['removed']:.0f}% removed); inside the stroke {100 * s['inside_before']:.0f}% -> "
              f"{100 * s['inside_after']:.0f}% (stroke {100 * s['stroke']:.1f}% of the image)")
    if doors:
        d = result["doors"]
        print(f"  add-door stroke ({DOOR_SIDE} px square), {len(doors)} generated samples: >= {MIN_ADDED} door "
              f"pixels added on a wall in {100 * d['wall']['success']:.0f}% (mean {d['wall']['mean_added_px']:.0f} "
              f"px), in the sky in {100 * d['sky']['success']:.0f}% (mean {d['sky']['mean_added_px']:.0f} px)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
