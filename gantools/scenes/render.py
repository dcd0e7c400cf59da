"""Composing a scene: draw its elements far to near (`generate`), then colour the pixels (`rasterize`).

The order of the element calls in `generate` is the order of the scene's random draws, which
image i of seed s depends on: it must not change within a design version.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .canvas import Canvas, Draws, SceneLayout, Stage, Upright, fill_rect
from .design import DESIGNS, PALETTE_ODDS, PALETTES, VERSION, design
from .ground import draw_grass, draw_road, draw_water
from .house import place_houses
from .sky import draw_clouds, draw_mountains, draw_sky, draw_sun
from .texture import textures
from .tree import place_trees

SceneInfo = tuple[int, str]  # (horizon row, palette name)


def generate(seed: int, index: int, S: int, version: int = VERSION) -> tuple[Canvas, SceneInfo, tuple[int, ...]]:
    """Draw scene `index` of `seed`: its canvas (instances, draw ops far to near, layout objects),
    (horizon, palette name), and the six texture-crop offsets."""
    draws = Draws(seed, index)
    r, U = draws.next, draws.uniform
    u = r()
    pname = "day" if u < PALETTE_ODDS[0] else ("dusk" if u < PALETTE_ODDS[0] + PALETTE_ODDS[1] else "overcast")
    P = PALETTES[pname]
    b = Canvas(S, P["light"], r, DESIGNS[version])
    hz = int(round(S * U(0.3, 0.58)))
    hz = max(2, min(S - 3, hz))
    st = Stage(b, draws, P, pname, hz, sun_left=r() < 0.5)

    draw_sky(st)
    sun_box = draw_sun(st)
    draw_clouds(st, sun_box)
    draw_mountains(st)
    draw_grass(st)
    blockers = [f for f in (draw_water(st), draw_road(st)) if f is not None]
    # Upright objects (houses and trees), placed on free ground, drawn far to near.
    uprights: list[Upright] = place_houses(st, blockers) + place_trees(st, blockers)
    uprights.sort(key=lambda o: o[0])
    for yb, draw, args in uprights:
        draw(st, yb, *args)

    offsets = tuple(int(r() * S) for _ in range(6))
    return b, (hz, pname), offsets


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _grids(S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (S,), rows as fractions (S x 1), columns as fractions (1 x S)."""
    g = _GRIDS.get(S)
    if g is None:
        c = np.arange(S, dtype=np.float32) + 0.5
        g = _GRIDS[S] = (c, (c / S)[:, None], (c / S)[None, :])
    return g


def rasterize(b: Canvas, offsets: Sequence[int], nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Instance map -> (uint8 image nc x H x W, int64 labels H x W)."""
    S = b.S
    c, yn, xn = _grids(S)
    M = np.zeros((S, S), dtype=np.intp)
    for op in b.ops:
        fn = op[0]
        if fn is fill_rect:
            fn(M, *op[1:])
        else:
            fn(M, *op[1:], c)
    table = np.array(b.params, dtype=np.float32)  # K x 12
    # one gather of all per-instance coefficients, then planar (contiguous) arithmetic
    T = np.take(table, M, axis=0).transpose(2, 0, 1).copy()  # 12 x S x S
    bank = textures(S)
    oy0, ox0, oy1, ox1, oy2, ox2 = offsets
    noise = T[9] * bank[0, oy0:oy0 + S, ox0:ox0 + S]
    noise += T[10] * bank[1, oy1:oy1 + S, ox1:ox1 + S]
    noise += T[11] * bank[2, oy2:oy2 + S, ox2:ox2 + S]
    img = T[0:3]
    img += T[3:6] * yn
    img += T[6:9] * xn
    img += noise
    if nc == 1:
        if b.design.version >= 2:  # the luminance of the RGB image as drawn (version 1 skipped this clip)
            np.clip(img, 0, 255, out=img)
        img = (0.299 * img[0] + 0.587 * img[1] + 0.114 * img[2])[None]
    np.clip(img, 0, 255, out=img)
    labels = np.take(np.array(b.concepts, dtype=np.int64), M)
    return img.astype(np.uint8), labels


def scene_layout(b: Canvas, info: SceneInfo, seed: int, index: int) -> SceneLayout:
    """The layout of a generated scene (its objects' boxes clipped to the image)."""
    hz, pname = info
    return SceneLayout(index, seed, b.S, hz, pname, b.layout_objects())


def render_scene(seed: int, index: int, image_size: int = 64, nc: int = 3,
                 version: int = VERSION) -> tuple[np.ndarray, np.ndarray, SceneLayout]:
    """Render one scene as numpy arrays: (image nc x S x S uint8, labels S x S int64, layout).

    Args:
        seed: dataset seed (>= 0).
        index: image index (>= 0).
        image_size: side in pixels.
        nc: 1 (luminance) or 3 (RGB).
        version: the design version (see SceneDesign).
    """
    b, info, offsets = generate(seed, index, image_size, design(version).version)
    img, labels = rasterize(b, offsets, nc)
    return img, labels, scene_layout(b, info, seed, index)
