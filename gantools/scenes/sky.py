"""The sky and what stands in it: the sky gradient, the sun, clouds and mountain ranges.

All of it lies above the horizon. Drawn first (far to near): the sky, the sun, clouds, mountains.
"""

from __future__ import annotations

import math

import numpy as np

from .canvas import Box, Stage, clip_box
from .design import CLOUD, MOUNTAIN, PALETTE_NAMES, SKY, SUN
from .texture import textures


def draw_sky(st: Stage) -> None:
    """The sky: a vertical gradient, instance 0, which covers the whole image until the ground is drawn."""
    b, P, hz = st.canvas, st.palette, st.horizon
    k = b.inst(SKY, P["sky_top"], [h - t for h, t in zip(P["sky_hor"], P["sky_top"])], 0, hz, lit=False, jitter=8)
    b.obj(SKY, (0, 0, b.S, hz))
    assert k == 0


def draw_sun(st: Stage) -> Box | None:
    """The sun (some palettes, some of the time): a disc cut off at the horizon; returns its box."""
    b, P, pname, hz, D = st.canvas, st.palette, st.palette_name, st.horizon, st.canvas.design
    S, r, U = b.S, st.draws.next, st.draws.uniform
    sun_p = dict(zip(PALETTE_NAMES, D.sun_p))[pname]
    if not r() < sun_p:
        return None
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
    box = clip_box(S, cx - rad, cy - rad, cx + rad, min(cy + rad, hz))
    k = b.inst(SUN, P["sun"], -8, cy - rad, cy + rad, lit=False, jitter=4)
    b.ellipses(k, box, ((cx, cy, rad, rad),))
    b.obj(SUN, box)
    return box


def _cloud_puffs(st: Stage) -> list[tuple[float, float, float, float]]:
    """Three puffs (ellipses cx, cy, rx, ry) of one cloud, the middle one the largest."""
    S, hz, U = st.canvas.S, st.horizon, st.draws.uniform
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
    return puffs


def draw_clouds(st: Stage, sun_box: Box | None) -> None:
    """A few clouds above the horizon (always some when overcast); in designs that keep the sun clear,
    clouds that would cover it are left out."""
    b, P, hz, S, r, U = st.canvas, st.palette, st.horizon, st.canvas.S, st.draws.next, st.draws.uniform
    n_clouds = int(U(2, 6)) if st.palette_name == "overcast" else (int(U(1, 4)) if r() < 0.62 else 0)
    for _ in range(n_clouds):
        puffs = _cloud_puffs(st)
        x0 = min(p[0] - p[2] for p in puffs)
        x1 = max(p[0] + p[2] for p in puffs)
        y0 = min(p[1] - p[3] for p in puffs)
        y1 = min(max(p[1] + p[3] for p in puffs), hz)
        box = clip_box(S, x0, y0, x1, y1)
        if box[2] <= box[0] or box[3] <= box[1]:
            continue
        if b.design.sun_clear and sun_box and box[0] < sun_box[2] and box[2] > sun_box[0] \
                and box[1] < sun_box[3] and box[3] > sun_box[1]:
            continue  # keep the sun whole
        k = b.inst(CLOUD, P["cloud"], P["cloud_shade"], y0, y1, dx=(-8 if st.sun_left else 8), x0=x0, x1=x1,
                   lit=False, jitter=8)
        b.ellipses(k, box, puffs)
        b.obj(CLOUD, box)


def draw_mountains(st: Stage) -> None:
    """Mountain ranges on the horizon (some of the time): a far, paler range and sometimes a nearer,
    darker one, each a few peaks lit on the sun's side."""
    r = st.draws.next
    if r() < 0.62:
        ranges = [("mount_far", 0.12, 0.42)]
        if r() < 0.45:
            ranges.append(("mount_near", 0.05, 0.2))
        for key, hmin, hmax in ranges:
            _draw_range(st, key, hmin, hmax)


def _draw_range(st: Stage, key: str, hmin: float, hmax: float) -> None:
    """One range: peaks of heights hmin..hmax (of the sky's height) with a jagged ridge."""
    b, hz, S, r, U = st.canvas, st.horizon, st.canvas.S, st.draws.next, st.draws.uniform
    c = np.arange(S, dtype=np.float32) + 0.5
    npk = int(U(1, 4))
    px = np.array([U(-0.15, 1.15) * S for _ in range(npk)], dtype=np.float32)
    ph = np.array([U(hmin, hmax) * hz for _ in range(npk)], dtype=np.float32)
    sl = np.array([U(0.45, 1.3) for _ in range(npk)], dtype=np.float32)
    vals = ph[:, None] - np.abs(c[None, :] - px[:, None]) * sl[:, None]
    arg = vals.argmax(0)
    height = vals[arg, np.arange(S)]
    # jagged ridge: a row of coarse texture
    oy = int(r() * S)
    height = height + textures(S)[2, oy, :S] * (0.012 * S + 0.4)
    top = hz - height
    if not (top < hz - 0.5).any():
        return
    lit = (c < px[arg]) if st.sun_left else (c >= px[arg])
    y0 = max(0, int(math.floor(top.min())))
    col = st.palette[key]
    peak = float(top.min())
    k_lit = b.inst(MOUNTAIN, [v + 16 for v in col], 14, peak, hz, lit=False, jitter=8)
    k_dark = b.inst(MOUNTAIN, [v - 16 for v in col], 14, peak, hz, lit=False, jitter=8)
    b.ridge(k_lit, k_dark, y0, hz, top, lit)
    cols = np.nonzero(top < hz - 0.5)[0]
    b.obj(MOUNTAIN, (int(cols.min()), y0, int(cols.max()) + 1, hz))
