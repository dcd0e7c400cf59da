"""The built-in `scenes` dataset: procedural outdoor scenes with exact per-pixel concept labels.

Each scene has a horizon at a varying height, sky above it (gradient, clouds, sun, mountain ranges)
and ground below it (grass, water, roads, trees and houses standing on the ground). Objects recede
toward the horizon (smaller and higher up when further away) and are drawn far to near, so nearer
objects occlude further ones. Doors and windows sit on walls, roofs on top of walls, trunks under
foliage. Three palettes (day, dusk, overcast), per-object colour jitter, gradients and noise textures
keep the images from being flat colour fields.

Rendering is exact and unaliased: every shape is rasterised with a mask on the pixel grid into an
instance map, each instance has one concept, so a pixel's label is always what is visible there.
Image `i` of seed `s` depends only on `(s, i)` (numpy.random.default_rng([s, i])), never on access
order, and nothing is stored on disk. Vectorised numpy renders a few thousand 64x64 scenes per
second on one CPU core (see benchmarks/scenes_speed.py).
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch

from .utils import GantoolsError, ProgressCallback, notice, report

CONCEPTS: list[str] = ["sky", "cloud", "sun", "mountain", "grass", "water", "road", "tree", "trunk",
                       "wall", "roof", "door", "window"]
SKY, CLOUD, SUN, MOUNTAIN, GRASS, WATER, ROAD, TREE, TRUNK, WALL, ROOF, DOOR, WINDOW = range(len(CONCEPTS))
PALETTE_NAMES = ("day", "dusk", "overcast")
MIN_SIZE, MAX_SIZE = 8, 1024
VERSIONS = (1, 2)
VERSION = VERSIONS[-1]  # the current design; image i of seed s never changes within a version


@dataclass(frozen=True)
class SceneDesign:
    """What differs between versions of the scenes' design (sizes are fractions of the image side).

    Version 1 drew objects in true perspective, so most doors, windows, trunks and suns came out a
    few pixels across at 64 px: too small for a 64 px generator to learn (0.36-0.49% of pixels each).
    Version 2 sizes every concept for 64 px: houses and trees stand nearer and never shrink below a
    drawable size, doors, windows and trunks have minimum sizes, the sun is larger and clear of the
    horizon and clouds, and the texture noise is halved, so that D cannot win on texture alone.
    """

    version: int
    sun_p: tuple[float, float, float]  # probability of a sun per palette (day, dusk, overcast)
    sun_radius: tuple[float, float]
    sun_clear: bool  # the whole sun above the horizon, and no cloud in front of it
    house_counts: tuple[float, float, float]  # cumulative P(0 houses), P(<= 1), P(<= 2); else 3
    house_depth_min: float  # nearest depth fraction range starts here (0 = horizon, 1 = bottom edge)
    house_width: tuple[float, float]
    house_min_width: float  # 0: none
    house_inside: bool  # the whole house inside the image
    door_min: tuple[float, float]  # (width, height) at least, as fractions of the side
    door_size: tuple[float, float, float, float]  # width range (of W), height range (of H)
    window_min: float
    four_slots_from: float  # houses at least this wide get four door/window slots, narrower ones three
    window_size: tuple[float, float]
    tree_min_height: float
    tree_depth_min: float
    trunk_min_width: float
    trunk_width: tuple[float, float]  # of the tree's height
    crown_height: tuple[float, float]  # deciduous crown's half-height ry, of the tree's height
    conifer_trunk: tuple[float, float]  # visible trunk below a conifer, of its height
    texture: float  # scale of the noise amplitudes in _TEX


DESIGNS: dict[int, SceneDesign] = {
    1: SceneDesign(1, sun_p=(0.55, 0.85, 0.0), sun_radius=(0.045, 0.075), sun_clear=False,
                   house_counts=(0.22, 0.66, 0.93), house_depth_min=0.12, house_width=(0.32, 0.52),
                   house_min_width=0.0, house_inside=False, door_min=(0.0, 0.0), door_size=(0.14, 0.2, 0.5, 0.68),
                   window_min=0.0, four_slots_from=0.3, window_size=(0.12, 0.17), tree_min_height=0.0, tree_depth_min=0.04,
                   trunk_min_width=0.0, trunk_width=(0.07, 0.1), crown_height=(0.28, 0.36),
                   conifer_trunk=(0.15, 0.22), texture=1.0),
    2: SceneDesign(2, sun_p=(0.65, 0.9, 0.0), sun_radius=(0.085, 0.115), sun_clear=True,
                   house_counts=(0.1, 0.5, 0.88), house_depth_min=0.3, house_width=(0.42, 0.62),
                   house_min_width=0.3, house_inside=True, door_min=(4 / 64, 6 / 64), door_size=(0.2, 0.26, 0.58, 0.72),
                   window_min=4 / 64, four_slots_from=0.45, window_size=(0.17, 0.22), tree_min_height=0.28,
                   tree_depth_min=0.15, trunk_min_width=3 / 64, trunk_width=(0.12, 0.16), crown_height=(0.22, 0.27),
                   conifer_trunk=(0.24, 0.32), texture=0.5),
}


def design(version: int = VERSION) -> SceneDesign:
    """The design of a version (1 or 2)."""
    if version not in DESIGNS:
        raise GantoolsError(f"scenes have no version {version}: use {', '.join(map(str, VERSIONS))}")
    return DESIGNS[version]

# Colours per palette (RGB 0-255 before jitter). `light` tints everything lit by the sun (ground
# objects); skies, clouds, the sun and lit windows are not tinted.
_PALETTES: dict[str, dict[str, Any]] = {
    "day": dict(
        sky_top=(68, 128, 210), sky_hor=(172, 206, 236), cloud=(246, 246, 250), cloud_shade=-42,
        sun=(255, 248, 185), mount_far=(118, 136, 172), mount_near=(86, 112, 94),
        grass_far=(150, 186, 96), grass_near=(78, 150, 52), water=(42, 92, 165), road=(100, 100, 106),
        dirt=(162, 132, 94), mark=(236, 236, 222), foliage=(44, 110, 40), conifer=(28, 84, 50),
        trunk=(108, 72, 44), window=(92, 132, 176), window_lit=False, light=(1.0, 1.0, 1.0)),
    "dusk": dict(
        sky_top=(52, 44, 104), sky_hor=(246, 150, 84), cloud=(204, 118, 150), cloud_shade=-45,
        sun=(255, 236, 150), mount_far=(124, 82, 124), mount_near=(72, 52, 84),
        grass_far=(124, 118, 74), grass_near=(74, 102, 46), water=(72, 58, 112), road=(82, 76, 84),
        dirt=(128, 100, 80), mark=(222, 210, 190), foliage=(24, 60, 30), conifer=(18, 50, 36),
        trunk=(74, 48, 34), window=(250, 196, 96), window_lit=True, light=(0.86, 0.74, 0.74)),
    "overcast": dict(
        sky_top=(148, 152, 160), sky_hor=(198, 198, 200), cloud=(100, 102, 112), cloud_shade=-20,
        sun=(255, 250, 220), mount_far=(138, 146, 156), mount_near=(88, 100, 94),
        grass_far=(136, 150, 112), grass_near=(84, 124, 68), water=(70, 86, 108), road=(98, 98, 102),
        dirt=(142, 126, 100), mark=(216, 216, 210), foliage=(46, 90, 50), conifer=(34, 74, 52),
        trunk=(92, 72, 54), window=(110, 128, 150), window_lit=False, light=(0.88, 0.9, 0.93)),
}
_PALETTE_P = (0.5, 0.25, 0.25)
_WALLS = ((228, 216, 190), (226, 198, 128), (186, 196, 206), (216, 170, 158), (178, 134, 94), (206, 206, 198))
_ROOFS = ((168, 70, 50), (98, 62, 44), (70, 76, 96), (132, 40, 42))
_DOORS = ((82, 50, 30), (122, 30, 32), (30, 82, 56), (40, 50, 108), (58, 58, 62))

# Noise amplitudes (colour units) for the three texture fields: fine grain, horizontal streaks
# (ripples, siding, tiles), coarse blotches.
_TEX = {
    SKY: (1.2, 0.0, 2.0), CLOUD: (4.0, 0.0, 5.0), SUN: (0.0, 0.0, 0.0), MOUNTAIN: (4.0, 0.0, 8.0),
    GRASS: (6.0, 2.0, 9.0), WATER: (2.0, 13.0, 3.0), ROAD: (6.0, 0.0, 3.0), TREE: (13.0, 0.0, 6.0),
    TRUNK: (6.0, 0.0, 2.0), WALL: (2.5, 4.0, 2.0), ROOF: (3.0, 8.0, 2.0), DOOR: (2.5, 0.0, 0.0),
    WINDOW: (1.5, 0.0, 0.0),
}


# ---------------------------------------------------------------------------------------------
# Geometry records (what `Scenes.layout` returns)


@dataclass
class SceneObject:
    """One drawn object, before occlusion.

    Args:
        concept: concept name.
        box: (x0, y0, x1, y1) pixel bounds, half-open and clipped to the image; every pixel that
            this object labels lies inside it.
        parent: index (in `SceneLayout.objects`) of the object it sits on (a door's wall, a roof's
            wall, a trunk's foliage), or None.
        base: the ground row it stands on (upright objects: trees and houses), else None.
    """

    concept: str
    box: tuple[int, int, int, int]
    parent: int | None = None
    base: int | None = None


@dataclass
class SceneLayout:
    """The geometry of one scene: horizon row, palette and objects in drawing order (far to near)."""

    index: int
    seed: int
    image_size: int
    horizon: int
    palette: str
    objects: list[SceneObject] = field(default_factory=list)

    def boxes(self, concept: str) -> list[tuple[int, int, int, int]]:
        """Boxes of all objects of one concept."""
        return [o.box for o in self.objects if o.concept == concept]


# ---------------------------------------------------------------------------------------------
# Texture fields: generated once per image size (fixed seed), cropped at a random offset per image.


def _interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear-interpolation weights (n_out x n_in) that stretch n_in samples over n_out pixels."""
    pos = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    lo = np.clip(np.floor(pos).astype(int), 0, n_in - 1)
    hi = np.clip(lo + 1, 0, n_in - 1)
    w = np.clip(pos - lo, 0.0, 1.0)
    m = np.zeros((n_out, n_in))
    m[np.arange(n_out), lo] += 1 - w
    m[np.arange(n_out), hi] += w
    return m


def _value_noise(rng: np.random.Generator, h: int, w: int, cell_y: float, cell_x: float) -> np.ndarray:
    gh, gw = max(2, int(round(h / cell_y)) + 1), max(2, int(round(w / cell_x)) + 1)
    grid = rng.standard_normal((gh, gw))
    return _interp_matrix(h, gh) @ grid @ _interp_matrix(w, gw).T


def _normalize(a: np.ndarray) -> np.ndarray:
    a = a - a.mean()
    return (a / (a.std() + 1e-8)).astype(np.float32)


_TEXTURES: dict[int, np.ndarray] = {}


def _textures(size: int) -> np.ndarray:
    """3 x 2S x 2S float32 noise fields (unit std): fine grain, horizontal streaks, coarse blotches."""
    bank = _TEXTURES.get(size)
    if bank is None:
        rng = np.random.default_rng(20240607)
        n = 2 * size
        fine = _normalize(0.7 * rng.standard_normal((n, n)) + _normalize(_value_noise(rng, n, n, 2.0, 2.0)))
        streak = _normalize(_value_noise(rng, n, n, 1.0, max(3.0, size / 10))
                            + 0.3 * _value_noise(rng, n, n, 1.0, 2.0))
        coarse = _normalize(_value_noise(rng, n, n, max(3.0, size / 8), max(3.0, size / 8))
                            + 0.4 * _value_noise(rng, n, n, max(2.0, size / 24), max(2.0, size / 24)))
        bank = np.stack([fine, streak, coarse])
        _TEXTURES[size] = bank
    return bank


# ---------------------------------------------------------------------------------------------
# Rasterisers: each writes an instance id into the instance map M (S x S uint8) where a shape
# covers a pixel centre. Coordinates are pixels; pixel (r, c) has its centre at (c + 0.5, r + 0.5).


def _r_rect(M: np.ndarray, k: int, x0: int, y0: int, x1: int, y1: int) -> None:
    M[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = k


def _r_ellipses(M: np.ndarray, k: int, box: tuple[int, int, int, int], ell: Sequence[tuple[float, float, float, float]],
                c: np.ndarray) -> None:
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    xs, ys = c[x0:x1], c[y0:y1, None]
    mask = None
    for cx, cy, rx, ry in ell:
        m = ((xs - cx) * (1.0 / rx)) ** 2 + ((ys - cy) * (1.0 / ry)) ** 2 <= 1.0
        mask = m if mask is None else mask | m
    M[y0:y1, x0:x1][mask] = k


def _r_spans(M: np.ndarray, k: int, box: tuple[int, int, int, int], left: np.ndarray, right: np.ndarray,
             c: np.ndarray) -> None:
    """Rows y0..y1 of the box; row r covers pixel centres in [left[r], right[r])."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    xs = c[x0:x1]
    mask = (xs >= left[:, None]) & (xs < right[:, None])
    M[y0:y1, x0:x1][mask] = k


def _r_ridge(M: np.ndarray, k_lit: int, k_dark: int, y0: int, y1: int, top: np.ndarray, lit: np.ndarray,
             c: np.ndarray) -> None:
    """Columns: rows from top[x] down to y1 (exclusive); lit columns get k_lit, others k_dark."""
    if y1 <= y0:
        return
    mask = c[y0:y1, None] >= top
    ids = np.where(lit, k_lit, k_dark).astype(np.uint8)
    sub = M[y0:y1]
    sub[mask] = np.broadcast_to(ids, mask.shape)[mask]


# ---------------------------------------------------------------------------------------------
# Scene generation


class _Builder:
    """Accumulates instances (concept + colour model), draw operations and layout objects."""

    def __init__(self, size: int, light: Sequence[float], jitter: Callable[[], float], design: SceneDesign) -> None:
        self.S = size
        self.design = design
        self.texture = design.texture
        self.light = light
        self.jitter = jitter
        self.concepts: list[int] = []
        self.params: list[list[float]] = []
        self.ops: list[tuple] = []
        self.objects: list[tuple] = []  # (concept, box, parent, base)

    def inst(self, concept: int, rgb: Sequence[float], dy: float | Sequence[float] = 0.0, y0: float = 0.0,
             y1: float = 1.0, dx: float = 0.0, x0: float = 0.0, x1: float = 1.0, lit: bool = True,
             jitter: float = 10.0) -> int:
        """A new instance: colour rgb at (x0, y0), +dy by row y1, +dx by column x1 (pixels)."""
        S = self.S
        l0, l1, l2 = self.light if lit else (1.0, 1.0, 1.0)
        if isinstance(dy, (int, float)):
            dy = (dy, dy, dy)
        ky = S / max(y1 - y0, 1.0)
        gx = dx * S / max(x1 - x0, 1.0)
        gy0, gy1, gy2 = dy[0] * ky * l0, dy[1] * ky * l1, dy[2] * ky * l2
        gx0, gx1, gx2 = gx * l0, gx * l1, gx * l2
        # fold the gradients' origin and the +0.5 of rounding into the base colour
        j = jitter * (2 * self.jitter() - 1) + 0.0
        fy, fx = y0 / S, x0 / S
        self.concepts.append(concept)
        self.params.append((
            (rgb[0] + j) * l0 - gy0 * fy - gx0 * fx + 0.5, (rgb[1] + j) * l1 - gy1 * fy - gx1 * fx + 0.5,
            (rgb[2] + j) * l2 - gy2 * fy - gx2 * fx + 0.5, gy0, gy1, gy2, gx0, gx1, gx2)
            + tuple(a * self.texture for a in _TEX[concept]))
        return len(self.concepts) - 1

    def obj(self, concept: int, box: Sequence[float], parent: int | None = None, base: int | None = None) -> int:
        """Record a layout object (clipped and turned into a SceneObject only when a layout is asked for)."""
        self.objects.append((concept, box, parent, base))
        return len(self.objects) - 1

    def layout_objects(self) -> list[SceneObject]:
        S = self.S
        out = []
        for concept, box, parent, base in self.objects:
            x0, y0, x1, y1 = (max(0, min(S, int(v))) for v in box)
            out.append(SceneObject(CONCEPTS[concept], (x0, y0, x1, y1), parent, base))
        return out


def _clip_box(S: int, x0: float, y0: float, x1: float, y1: float) -> tuple[int, int, int, int]:
    return (max(0, min(S, int(math.floor(x0)))), max(0, min(S, int(math.floor(y0)))),
            max(0, min(S, int(math.ceil(x1)))), max(0, min(S, int(math.ceil(y1)))))


def _spans_op(b: _Builder, k: int, y0: int, y1: int, left: np.ndarray, right: np.ndarray) -> tuple[int, int, int, int] | None:
    """Queue a span shape covering rows y0..y1 (clipped to the image); returns its box or None."""
    S = b.S
    lo, hi = max(y0, 0), min(y1, S)
    if hi <= lo:
        return None
    left, right = left[lo - y0:hi - y0], right[lo - y0:hi - y0]
    keep = right > left
    if not keep.any():
        return None
    box = _clip_box(S, left[keep].min() - 0.5, lo, right[keep].max() + 0.5, hi)
    if box[2] <= box[0]:
        return None
    b.ops.append((_r_spans, k, box, left, right))
    return box


def _generate(seed: int, index: int, S: int, version: int = VERSION) -> tuple[_Builder, tuple[int, str], tuple[int, ...]]:
    """Draw a scene's random layout: instances, draw ops (far to near) and layout objects."""
    D = DESIGNS[version]
    rng = np.random.default_rng([seed, index])
    # Pre-drawn uniforms (fast to hand out one by one); more come from rng if a scene needs them.
    stream = itertools.chain(rng.random(256).tolist(), iter(rng.random, None))
    r = stream.__next__

    def U(a: float, b: float) -> float:
        return a + (b - a) * r()

    def choice(seq: Sequence[Any]) -> Any:
        return seq[min(int(r() * len(seq)), len(seq) - 1)]

    u = r()
    pname = "day" if u < _PALETTE_P[0] else ("dusk" if u < _PALETTE_P[0] + _PALETTE_P[1] else "overcast")
    P = _PALETTES[pname]
    b = _Builder(S, P["light"], r, D)
    c = np.arange(S, dtype=np.float32) + 0.5
    hz = int(round(S * U(0.3, 0.58)))
    hz = max(2, min(S - 3, hz))
    G = S - hz  # ground rows
    sun_left = r() < 0.5

    # Sky (the background instance 0 covers the whole image until the ground is drawn).
    k = b.inst(SKY, P["sky_top"], [h - t for h, t in zip(P["sky_hor"], P["sky_top"])], 0, hz, lit=False, jitter=8)
    b.obj(SKY, (0, 0, S, hz))
    assert k == 0

    # Sun
    sun_p = dict(zip(PALETTE_NAMES, D.sun_p))[pname]
    sun_box = None
    if r() < sun_p:
        rad = S * U(*D.sun_radius)
        cx = U(0.1, 0.9) * S
        if D.sun_clear:  # wholly in the sky, above the horizon (low at dusk)
            cx = min(max(cx, rad + 1), S - rad - 1)
            top = max(rad + 1, hz - rad - 1 - (0.12 * S if pname == "dusk" else hz))
            cy = U(top, max(top, hz - rad - 1))
        elif pname == "dusk":
            cy = U(hz - rad - 0.12 * S, hz - 0.3 * rad)
        else:
            cy = U(rad + 1, max(rad + 1, hz - rad - 2))
        box = sun_box = _clip_box(S, cx - rad, cy - rad, cx + rad, min(cy + rad, hz))
        k = b.inst(SUN, P["sun"], -8, cy - rad, cy + rad, lit=False, jitter=4)
        b.ops.append((_r_ellipses, k, box, ((cx, cy, rad, rad),)))
        b.obj(SUN, box)

    # Clouds: a few puffs (ellipses) each, above the horizon.
    n_clouds = int(U(2, 6)) if pname == "overcast" else (int(U(1, 4)) if r() < 0.62 else 0)
    for _ in range(n_clouds):
        w = S * U(0.12, 0.34)
        cx = U(-0.05, 1.05) * S
        cy = U(0.06 * S, max(0.06 * S, hz - 0.1 * S))
        ry0 = w * U(0.18, 0.26)
        puffs = []
        for j in range(3):
            px = cx + (j - 1) * w * U(0.25, 0.38)
            rx = w * U(0.22, 0.34) * (1.25 if j == 1 else 1.0)
            ry = ry0 * (U(1.2, 1.6) if j == 1 else U(0.8, 1.1))
            py = cy + ry0 - ry  # flat-ish bottoms
            puffs.append((px, py, rx, ry))
        x0 = min(p[0] - p[2] for p in puffs)
        x1 = max(p[0] + p[2] for p in puffs)
        y0 = min(p[1] - p[3] for p in puffs)
        y1 = min(max(p[1] + p[3] for p in puffs), hz)
        box = _clip_box(S, x0, y0, x1, y1)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        if D.sun_clear and sun_box and box[0] < sun_box[2] and box[2] > sun_box[0] and box[1] < sun_box[3] \
                and box[3] > sun_box[1]:
            continue  # keep the sun whole
        k = b.inst(CLOUD, P["cloud"], P["cloud_shade"], y0, y1, dx=(-8 if sun_left else 8), x0=x0, x1=x1,
                   lit=False, jitter=8)
        b.ops.append((_r_ellipses, k, box, tuple(puffs)))
        b.obj(CLOUD, box)

    # Mountain ranges: a far, paler range and sometimes a nearer, darker one.
    if r() < 0.62:
        ranges = [("mount_far", 0.12, 0.42)]
        if r() < 0.45:
            ranges.append(("mount_near", 0.05, 0.2))
        for key, hmin, hmax in ranges:
            npk = int(U(1, 4))
            px = np.array([U(-0.15, 1.15) * S for _ in range(npk)], dtype=np.float32)
            ph = np.array([U(hmin, hmax) * hz for _ in range(npk)], dtype=np.float32)
            sl = np.array([U(0.45, 1.3) for _ in range(npk)], dtype=np.float32)
            vals = ph[:, None] - np.abs(c[None, :] - px[:, None]) * sl[:, None]
            arg = vals.argmax(0)
            height = vals[arg, np.arange(S)]
            # jagged ridge: a row of coarse texture
            bank = _textures(S)
            oy = int(r() * S)
            height = height + bank[2, oy, :S] * (0.012 * S + 0.4)
            top = hz - height
            if not (top < hz - 0.5).any():
                continue
            lit = (c < px[arg]) if sun_left else (c >= px[arg])
            y0 = max(0, int(math.floor(top.min())))
            col = P[key]
            peak = float(top.min())
            k_lit = b.inst(MOUNTAIN, [v + 16 for v in col], 14, peak, hz, lit=False, jitter=8)
            k_dark = b.inst(MOUNTAIN, [v - 16 for v in col], 14, peak, hz, lit=False, jitter=8)
            b.ops.append((_r_ridge, k_lit, k_dark, y0, hz, top, lit))
            cols = np.nonzero(top < hz - 0.5)[0]
            b.obj(MOUNTAIN, (int(cols.min()), y0, int(cols.max()) + 1, hz))

    # Ground
    k = b.inst(GRASS, P["grass_far"], [n - f for n, f in zip(P["grass_near"], P["grass_far"])], hz, S, jitter=10)
    b.ops.append((_r_rect, k, 0, hz, S, S))
    b.obj(GRASS, (0, hz, S, S))

    rows = np.arange(hz, S, dtype=np.float32) + 0.5
    tt = (rows - hz) / G  # 0 at the horizon, 1 at the bottom edge: perspective depth fraction
    blockers: list[Callable[[float, float], bool]] = []

    # Water: a lake, the sea, or a river.
    if r() < 0.45:
        kind = choice(("lake", "lake", "sea", "river"))
        k = b.inst(WATER, P["water"], 18, hz, S, jitter=10)
        if kind == "river":
            vx, xb = U(0.2, 0.8) * S, U(-0.1, 1.1) * S
            wb, bend = U(0.25, 0.55) * S, U(-0.25, 0.25) * S
            cen = vx + (xb - vx) * tt + bend * tt * (1 - tt)
            hw = 0.5 * wb * tt + 0.3
            box = _spans_op(b, k, hz, S, cen - hw, cen + hw)
            if box:
                b.obj(WATER, box)
                blockers.append(lambda x, y, vx=vx, xb=xb, bend=bend, wb=wb: abs(
                    x - (vx + (xb - vx) * ((y - hz) / G) + bend * ((y - hz) / G) * (1 - (y - hz) / G)))
                    < 0.5 * wb * (y - hz) / G + 0.02 * S)
        else:
            if kind == "sea":
                # a bay reaching the horizon: the lower half of a wide ellipse
                cy, cx, rx, ry = hz, S * U(0.3, 0.7), S * U(1.0, 2.0), G * U(0.15, 0.4)
            else:
                # a lake: an ellipse flattened by perspective, wholly on the ground
                cy, cx = hz + G * U(0.12, 0.6), S * U(0.1, 0.9)
                depth = (cy - hz) / G
                rx = S * U(0.14, 0.3) * (0.5 + depth)
                ry = min(rx * U(0.2, 0.4) * (0.4 + depth), cy - hz - 0.5)
            half = np.sqrt(np.clip(1.0 - ((rows - cy) / ry) ** 2, 0.0, None)) * rx
            half[rows < cy - ry] = 0.0
            box = _spans_op(b, k, hz, S, cx - half, cx + half)
            if box:
                b.obj(WATER, box)
                blockers.append(lambda x, y, cx=cx, cy=cy, rx=rx, ry=ry: (
                    ((x - cx) / (rx + 0.02 * S)) ** 2 + ((y - cy) / (ry + 1.0)) ** 2 <= 1.0))

    # Road: asphalt (sometimes with a dashed centre line) or dirt, receding to a vanishing point.
    if r() < 0.45:
        vx, xb = U(0.15, 0.85) * S, U(0.0, 1.0) * S
        wb, bend = U(0.3, 0.6) * S, U(-0.2, 0.2) * S
        cen = vx + (xb - vx) * tt + bend * tt * (1 - tt)
        hw = 0.5 * wb * tt + 0.25
        dirt = r() < 0.3
        k = b.inst(ROAD, P["dirt"] if dirt else P["road"], 14 if dirt else -10, hz, S, jitter=8)
        box = _spans_op(b, k, hz, S, cen - hw, cen + hw)
        if box:
            b.obj(ROAD, box)
            blockers.append(lambda x, y, vx=vx, xb=xb, bend=bend, wb=wb: abs(
                x - (vx + (xb - vx) * ((y - hz) / G) + bend * ((y - hz) / G) * (1 - (y - hz) / G)))
                < 0.5 * wb * (y - hz) / G + 0.03 * S)
            if not dirt and r() < 0.6:
                # dashes of equal length on the ground: on when floor(depth) is even, depth ~ 1/t
                on = (np.floor(U(0, 2) + 3.0 / np.maximum(tt, 1e-3)) % 2 == 0) & (hw > 2.0)
                mw = np.where(on, np.maximum(hw * 0.06, 0.5), 0.0)
                km = b.inst(ROAD, P["mark"], 0, hz, S, jitter=6)
                _spans_op(b, km, hz, S, cen - mw, cen + mw)

    # Upright objects (houses and trees), placed on free ground, drawn far to near.
    def free(x0: float, x1: float, y: float) -> bool:
        for xx in (x0, 0.5 * (x0 + x1), x1):
            for f in blockers:
                if f(xx, y):
                    return False
        return True

    uprights: list[tuple[int, str, tuple]] = []
    u = r()
    c0, c1, c2 = D.house_counts
    n_houses = 0 if u < c0 else (1 if u < c1 else (2 if u < c2 else 3))
    placed: list[tuple[float, float, int]] = []
    for _ in range(n_houses):
        for _try in range(6):
            t = U(D.house_depth_min, 1.0) ** 0.7
            yb = hz + 1 + int(round(t * (G - 1)))
            s = (yb - hz) / G
            W = max(S * U(*D.house_width) * s, S * D.house_min_width)
            cx = U(0.08, 0.92) * S
            if D.house_inside:
                cx = min(max(cx, W / 2 + 1), S - W / 2 - 1)
            x0 = int(round(cx - W / 2))
            x1 = max(x0 + 3, int(round(cx + W / 2)))
            if not free(x0, x1, yb - 0.5):
                continue
            if any(x0 < px1 and x1 > px0 and abs(yb - pyb) < 0.25 * G for px0, px1, pyb in placed):
                continue
            placed.append((x0, x1, yb))
            uprights.append((yb, "house", (x0, x1, s)))
            break
    u = r()
    n_trees = 0 if u < 0.25 else int(U(1, 6))
    for _ in range(n_trees):
        for _try in range(4):
            t = U(D.tree_depth_min, 1.0) ** 0.8
            yb = hz + 1 + int(round(t * (G - 1)))
            s = (yb - hz) / G
            ht = max(S * U(0.32, 0.6) * max(s, 0.08), S * D.tree_min_height)
            cx = U(-0.05, 1.05) * S
            if D.trunk_min_width:  # the whole trunk inside the image
                cx = min(max(cx, 0.06 * ht + 1), S - 0.06 * ht - 1)
            if not free(cx - 0.05 * ht, cx + 0.05 * ht, yb - 0.5):
                continue
            uprights.append((yb, "tree", (cx, ht)))
            break
    uprights.sort(key=lambda o: o[0])

    light_dx = -14 if sun_left else 14
    for yb, what, args in uprights:
        if what == "house":
            x0, x1, s = args
            W = x1 - x0
            H = max(3, int(round(W * U(0.5, 0.78))))
            yt = yb - H
            wall_col = choice(_WALLS)
            kw = b.inst(WALL, wall_col, -12, yt, yb, dx=light_dx, x0=x0, x1=x1, jitter=10)
            b.ops.append((_r_rect, kw, x0, yt, x1, yb))
            iw = b.obj(WALL, (x0, yt, x1, yb), base=yb)
            # Roof: a gable (triangle) or a hip (trapezoid), with a small overhang.
            oh = int(round(W * 0.07))
            rh = max(2, int(round(H * U(0.45, 0.85))))
            ry0 = yt - rh
            hw_full = W / 2 + oh
            top_frac = 0.0 if r() < 0.6 else U(0.25, 0.55)
            f = (np.arange(rh, dtype=np.float32) + 0.5) / rh
            half = hw_full * (top_frac + (1 - top_frac) * f)
            cxh = 0.5 * (x0 + x1)
            kr = b.inst(ROOF, choice(_ROOFS), 14, ry0, yt, dx=-light_dx * 0.8, x0=x0, x1=x1, jitter=10)
            box = _spans_op(b, kr, ry0, yt, cxh - half, cxh + half)
            if box:
                b.obj(ROOF, box, parent=iw)
            # Door and windows: slots across the wall; the door takes one, windows some others.
            nslot = 3 if W < S * D.four_slots_from else 4
            slot_w = W / nslot
            door_slot = int(r() * nslot)
            dw = max(1, int(round(W * U(D.door_size[0], D.door_size[1]))), math.ceil(S * D.door_min[0]))
            dh = max(2, min(H - 1, max(int(round(H * U(D.door_size[2], D.door_size[3]))),
                                       math.ceil(S * D.door_min[1]))))
            dx0 = int(round(x0 + (door_slot + 0.5) * slot_w - dw / 2))
            dx0 = max(x0, min(x1 - dw, dx0))
            kd = b.inst(DOOR, choice(_DOORS), -6, yb - dh, yb, jitter=8)
            b.ops.append((_r_rect, kd, dx0, yb - dh, dx0 + dw, yb))
            b.obj(DOOR, (dx0, yb - dh, dx0 + dw, yb), parent=iw)
            ws = max(1, int(round(W * U(*D.window_size))), math.ceil(S * D.window_min))
            wh = max(1, min(int(round(ws * U(1.0, 1.35))), H - 2))
            wy0 = yt + max(1, int(round(H * U(0.18, 0.28))))
            wy1 = min(wy0 + wh, yb - 1)
            lit = P["window_lit"]
            kwin = b.inst(WINDOW, P["window"], 0 if lit else 24, wy0, wy1, lit=not lit, jitter=8)
            slots = [j for j in range(nslot) if j != door_slot]
            chosen = [j for j in slots if r() < 0.75] or [choice(slots)]
            for j in chosen:
                wx0 = int(round(x0 + (j + 0.5) * slot_w - ws / 2))
                wx0 = max(x0, min(x1 - ws, wx0))
                if wy1 > wy0:
                    b.ops.append((_r_rect, kwin, wx0, wy0, wx0 + ws, wy1))
                    b.obj(WINDOW, (wx0, wy0, wx0 + ws, wy1), parent=iw)
        else:
            cx, ht = args
            conifer = r() < 0.35
            tw = max(1, int(round(ht * U(*D.trunk_width))), math.ceil(S * D.trunk_min_width))
            tx0 = int(round(cx - tw / 2))
            top = yb - ht
            if conifer:
                fb = yb - max(1.0, ht * U(*D.conifer_trunk))
                n = int(math.ceil(fb - top))
                y0 = int(math.floor(top))
                ff = (np.arange(y0, y0 + n, dtype=np.float32) + 0.5 - top) / max(fb - top, 1.0)
                half = ht * U(0.22, 0.3) * ff
                half[ff < 0] = 0.0
                # a sawtooth edge suggests tiers of branches
                half = half * (0.82 + 0.18 * ((ff * 4) % 1.0))
                kf = b.inst(TREE, P["conifer"], -18, top, fb, dx=light_dx, x0=cx - ht * 0.3, x1=cx + ht * 0.3)
                shape = (_spans_op, kf, y0, y0 + n, cx - half, cx + half)
            else:
                rx, ry = ht * U(0.24, 0.34), ht * U(*D.crown_height)
                cy = top + ry
                fb = top + 2 * ry  # lowest point of the main crown, above the trunk
                puffs = [(cx, cy, rx, ry)]
                if ht > 6:
                    puffs.append((cx - rx * 0.45, cy + ry * 0.3, rx * 0.7, ry * 0.62))
                    puffs.append((cx + rx * 0.45, cy + ry * 0.25, rx * 0.7, ry * 0.62))
                x0f = min(p[0] - p[2] for p in puffs)
                x1f = max(p[0] + p[2] for p in puffs)
                y1f = max(p[1] + p[3] for p in puffs)
                kf = b.inst(TREE, P["foliage"], -24, top, y1f, dx=light_dx, x0=x0f, x1=x1f)
                shape = (_clip_box(S, x0f, top, x1f, y1f), kf, puffs)
            # the trunk reaches from inside the crown down to the ground; drawn first, so the crown covers it
            tt = min(max(int(math.floor(fb)) - 1, int(math.floor(top))), yb - 1)
            kt = b.inst(TRUNK, P["trunk"], -10, tt, yb, jitter=10)
            b.ops.append((_r_rect, kt, tx0, tt, tx0 + tw, yb))
            if conifer:
                box = shape[0](b, *shape[1:])
            else:
                box, kf, puffs = shape
                if box[2] > box[0] and box[3] > box[1]:
                    b.ops.append((_r_ellipses, kf, box, tuple(puffs)))
                else:
                    box = None
            # objects are listed in drawing order: the trunk, then the foliage it carries
            b.obj(TRUNK, (tx0, tt, tx0 + tw, yb), parent=len(b.objects) + 1 if box else None, base=yb)
            if box:
                b.obj(TREE, box, base=yb)

    offsets = tuple(int(r() * S) for _ in range(6))
    return b, (hz, pname), offsets


def _rasterize(b: _Builder, offsets: Sequence[int], nc: int) -> tuple[np.ndarray, np.ndarray]:
    """Instance map -> (uint8 image nc x H x W, int64 labels H x W)."""
    S = b.S
    c, yn, xn = _grids(S)
    M = np.zeros((S, S), dtype=np.intp)
    for op in b.ops:
        fn = op[0]
        if fn is _r_rect:
            fn(M, *op[1:])
        else:
            fn(M, *op[1:], c)
    table = np.array(b.params, dtype=np.float32)  # K x 12
    # one gather of all per-instance coefficients, then planar (contiguous) arithmetic
    T = np.take(table, M, axis=0).transpose(2, 0, 1).copy()  # 12 x S x S
    bank = _textures(S)
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


_GRIDS: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}


def _grids(S: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (S,), rows as fractions (S x 1), columns as fractions (1 x S)."""
    g = _GRIDS.get(S)
    if g is None:
        c = np.arange(S, dtype=np.float32) + 0.5
        g = _GRIDS[S] = (c, (c / S)[:, None], (c / S)[None, :])
    return g


def _layout(b: _Builder, info: tuple[int, str], seed: int, index: int) -> SceneLayout:
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
    b, info, offsets = _generate(seed, index, image_size, design(version).version)
    img, labels = _rasterize(b, offsets, nc)
    return img, labels, _layout(b, info, seed, index)


# ---------------------------------------------------------------------------------------------
# The dataset


class Scenes:
    """Procedural outdoor scenes with exact per-pixel labels; image i of seed s is always the same.

    Args:
        n: number of images (the dataset's length; any index below it renders on demand).
        image_size: side in pixels (8 to 1024; 16 to 128 is what the scenes are designed for).
        seed: dataset seed (>= 0); different seeds give different scenes.
        nc: 1 (luminance) or 3 (RGB).
        version: the design version (default: the current one, VERSION); see SceneDesign.

    `scenes[i]` returns (image uint8 nc x S x S, label int64 S x S); `layout(i)` returns the
    scene's geometry (horizon row, palette, object boxes).
    """

    def __init__(self, n: int = 10000, image_size: int = 64, seed: int = 0, nc: int = 3, version: int = VERSION) -> None:
        if int(n) < 1:
            raise GantoolsError(f"scenes: n must be at least 1, got {n}")
        if not MIN_SIZE <= int(image_size) <= MAX_SIZE:
            raise GantoolsError(f"scenes: image size {image_size} is out of range: use {MIN_SIZE} to {MAX_SIZE} "
                                "(16 to 128 recommended)")
        if nc not in (1, 3):
            raise GantoolsError(f"scenes: nc={nc} is not supported: use 1 (luminance) or 3 (RGB)")
        if int(seed) < 0:
            raise GantoolsError(f"scenes: seed must be >= 0, got {seed}")
        self.n, self.image_size, self.seed, self.nc = int(n), int(image_size), int(seed), int(nc)
        self.version = design(int(version)).version
        self.concepts: list[str] = list(CONCEPTS)
        _textures(self.image_size)

    def __len__(self) -> int:
        return self.n

    def _index(self, index: int) -> int:
        i = int(index)
        if i < 0:
            i += self.n
        if not 0 <= i < self.n:
            raise IndexError(f"scene index {index} out of range for {self.n} images")
        return i

    def render(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Numpy arrays: (image nc x S x S uint8, labels S x S int64)."""
        b, _, offsets = _generate(self.seed, self._index(index), self.image_size, self.version)
        return _rasterize(b, offsets, self.nc)

    def layout(self, index: int) -> SceneLayout:
        """The geometry of scene `index` (without rendering it)."""
        i = self._index(index)
        b, info, _ = _generate(self.seed, i, self.image_size, self.version)
        return _layout(b, info, self.seed, i)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        img, labels = self.render(index)
        return torch.from_numpy(img), torch.from_numpy(labels)

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Stacked (images N x nc x S x S uint8, labels N x S x S int64)."""
        pairs = [self.render(i) for i in indices]
        return torch.from_numpy(np.stack([p[0] for p in pairs])), torch.from_numpy(np.stack([p[1] for p in pairs]))

    def __repr__(self) -> str:
        return (f"Scenes(n={self.n}, image_size={self.image_size}, seed={self.seed}, nc={self.nc}, "
                f"version={self.version})")


def _factory(image_size: int = 64, nc: int = 3, seed: int = 0, n: int = 10000, version: int = VERSION) -> Scenes:
    return Scenes(n=n, image_size=image_size, seed=seed, nc=nc, version=version)


# ---------------------------------------------------------------------------------------------
# Concept statistics


class _FrequencyCounter:
    """Accumulates per-concept image counts and pixel counts over label maps."""

    def __init__(self, num_concepts: int) -> None:
        self.k = num_concepts
        self.images = np.zeros(num_concepts, dtype=np.int64)
        self.pixels = np.zeros(num_concepts, dtype=np.int64)
        self.n = 0
        self.total_pixels = 0

    def add(self, labels: np.ndarray | torch.Tensor) -> None:
        if isinstance(labels, torch.Tensor):
            labels = labels.cpu().numpy()
        counts = np.bincount(labels.reshape(-1), minlength=self.k)[: self.k]
        self.pixels += counts
        self.images += counts > 0
        self.n += 1
        self.total_pixels += labels.size

    def result(self, concepts: Sequence[str]) -> dict[str, dict[str, float]]:
        n, tp = max(self.n, 1), max(self.total_pixels, 1)
        return {name: {"image_frequency": float(self.images[i] / n), "pixel_frequency": float(self.pixels[i] / tp)}
                for i, name in enumerate(concepts)}


def concept_frequencies(dataset: Any, n: int | None = None,
                        progress: ProgressCallback | None = None) -> dict[str, dict[str, float]]:
    """Per-concept image frequency and pixel frequency over the first n items of a labelled dataset.

    Args:
        dataset: anything indexable returning (image, label) with a `.concepts` list (Scenes,
            LabeledFolder).
        n: how many items (default: all of them).
        progress: callback for progress.

    Returns:
        {concept: {"image_frequency": fraction of images containing it,
                   "pixel_frequency": fraction of all pixels labelled with it}}.
    """
    concepts = getattr(dataset, "concepts", None)
    if not concepts:
        raise GantoolsError("concept frequencies need a labelled dataset (scenes or a folder with labels/)")
    total = len(dataset) if n is None else min(int(n), len(dataset))
    counter = _FrequencyCounter(len(concepts))
    render = dataset.render if isinstance(dataset, Scenes) else None
    for i in range(total):
        labels = render(i)[1] if render else dataset[i][1]
        counter.add(labels)
        if i % 256 == 255 or i == total - 1:
            report(progress, "concept frequencies", i + 1, total)
    return counter.result(concepts)


# ---------------------------------------------------------------------------------------------
# Writing the dataset to disk


@dataclass
class ScenesWritten:
    """What `write_scenes` wrote."""

    out: Path
    n: int
    image_size: int
    nc: int
    seed: int
    version: int
    concepts: list[str]
    frequencies: dict[str, dict[str, float]]
    preview: Path


def save_preview(images: torch.Tensor, labels: torch.Tensor, concepts: Sequence[str],
                 path: str | os.PathLike, columns: int = 4, scale: int | None = None) -> Path:
    """A sheet of images beside their label maps blended over them, with a legend of concept names.

    Args:
        images: N x C x S x S uint8.
        labels: N x S x S int64 concept ids.
        concepts: concept names (id order), for colours and the legend.
        path: PNG to write.
        columns: image/label pairs per row.
        scale: integer upscaling (nearest) of each tile; default brings tiles to about 128 px.
    """
    from PIL import Image, ImageDraw

    from .reports import colorize_labels, concept_palette
    from .utils import atomic_path

    n, c, s = images.shape[0], images.shape[1], images.shape[-1]
    scale = scale or max(1, 128 // s)
    rgb = images if c == 3 else images.expand(-1, 3, -1, -1)
    colors = colorize_labels(labels, len(concepts))
    blended = (0.35 * rgb.float() + 0.65 * colors.float()).round().to(torch.uint8)
    tile, pad = s * scale, 4
    columns = max(1, min(columns, n))
    nrows = int(math.ceil(n / columns))
    legend_h = 18 * int(math.ceil(len(concepts) / 5)) + 8
    width = columns * (2 * tile + 3 * pad) + pad
    height = nrows * (tile + pad) + pad + legend_h
    sheet = Image.new("RGB", (width, height), (255, 255, 255))

    def to_pil(t: torch.Tensor) -> Image.Image:
        img = Image.fromarray(t.permute(1, 2, 0).numpy(), "RGB")
        return img.resize((tile, tile), Image.NEAREST) if scale > 1 else img

    for i in range(n):
        r, col = divmod(i, columns)
        x = pad + col * (2 * tile + 3 * pad)
        y = pad + r * (tile + pad)
        sheet.paste(to_pil(rgb[i]), (x, y))
        sheet.paste(to_pil(blended[i]), (x + tile + pad, y))
    draw = ImageDraw.Draw(sheet)
    palette = concept_palette(len(concepts)).tolist()
    y0 = nrows * (tile + pad) + pad + 4
    colw = width // 5
    for i, name in enumerate(concepts):
        r, col = divmod(i, 5)
        x, y = 8 + col * colw, y0 + r * 18
        draw.rectangle([x, y, x + 12, y + 12], fill=tuple(palette[i]), outline=(60, 60, 60))
        draw.text((x + 17, y), f"{i} {name}", fill=(20, 20, 20))
    path = Path(path)
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")
    return path


def write_scenes(out: str | os.PathLike, n: int = 1000, image_size: int = 64, seed: int = 0, nc: int = 3,
                 preview: int = 16, progress: ProgressCallback | None = None, version: int = VERSION) -> ScenesWritten:
    """Write scenes to a folder that `LabeledFolder` (and `open_dataset`) read back.

    Writes `images/NNNNNN.png`, `labels/NNNNNN.png` (palette PNGs whose index is the concept id),
    `concepts.json` ({"concepts": [...], "dataset": "scenes", "version": V, "seed": s}) and `preview.png`.

    Args:
        out: output folder (created). Scenes of an earlier write there are replaced, and those beyond
            this write's n are removed, so the folder holds exactly this dataset.
        n, image_size, seed, nc, version: as for `Scenes`.
        preview: number of scenes shown in preview.png.
        progress: callback for progress.
    """
    from .data import save_image, save_label
    from .utils import write_json

    scenes = Scenes(n=n, image_size=image_size, seed=seed, nc=nc, version=version)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise GantoolsError(f"output {out} exists and is not a folder")
    (out / "images").mkdir(parents=True, exist_ok=True)
    (out / "labels").mkdir(parents=True, exist_ok=True)
    digits = max(6, len(str(n - 1)))
    # Only files named as this function names them: anything else in the folder is the user's.
    earlier = [f for sub in ("images", "labels") for f in (out / sub).glob("*.png") if f.stem.isdigit()]
    counter = _FrequencyCounter(len(CONCEPTS))
    shown_images, shown_labels = [], []
    # Each file is written atomically (temp file, fsync, rename); fsync waits on the disk, so a few
    # threads overlap those waits while this thread keeps rendering.
    from concurrent.futures import ThreadPoolExecutor

    def save(i: int, image: torch.Tensor, labels: torch.Tensor) -> None:
        name = f"{i:0{digits}d}.png"
        save_image(image, out / "images" / name)
        save_label(labels, out / "labels" / name, len(CONCEPTS))

    pending: list = []
    with ThreadPoolExecutor(max_workers=8) as pool:
        for i in range(n):
            image, labels = scenes[i]
            pending.append(pool.submit(save, i, image, labels))
            counter.add(labels)
            if i < preview:
                shown_images.append(image)
                shown_labels.append(labels)
            if len(pending) >= 64:
                for f in pending:
                    f.result()  # re-raises a failed write
                pending.clear()
                report(progress, "write scenes", i + 1, n)
        for f in pending:
            f.result()
    report(progress, "write scenes", n, n)
    stale = [f for f in earlier if f.name != f"{int(f.stem):0{digits}d}.png" or int(f.stem) >= n]
    for f in stale:
        f.unlink(missing_ok=True)
    if stale:
        count = sum(f.parent.name == "images" for f in stale)
        notice(progress, f"removed {count} scene(s) of an earlier write to {out}")
    write_json(out / "concepts.json", {"concepts": list(CONCEPTS), "dataset": "scenes", "version": scenes.version,
                                       "seed": seed})
    preview_path = save_preview(torch.stack(shown_images), torch.stack(shown_labels), CONCEPTS,
                                out / "preview.png")
    return ScenesWritten(out, n, image_size, nc, seed, scenes.version, list(CONCEPTS), counter.result(CONCEPTS),
                         preview_path)


# Register as the built-in dataset `scenes` (gantools.data imports this module on first use).
def _register() -> None:
    from .data import register_dataset

    register_dataset("scenes", f"procedural outdoor scenes with per-pixel labels ({len(CONCEPTS)} concepts)",
                     _factory, versions=VERSIONS)


_register()
