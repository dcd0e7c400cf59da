"""The ground below the horizon: grass, water (a lake, the sea or a river) and roads.

Water and roads recede toward the horizon in perspective: narrower and higher up when further away.
Each returns a *blocker* (a test whether a ground point is covered), so that houses and trees are
placed only on free ground (`is_free`).
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from .canvas import Stage
from .design import GRASS, ROAD, WATER

Blocker = Callable[[float, float], bool]  # (x, y) -> whether that ground point is taken


def is_free(blockers: Sequence[Blocker], x0: float, x1: float, y: float) -> bool:
    """Whether ground row y is free at x0, x1 and their middle (what a house or a trunk stands on)."""
    for xx in (x0, 0.5 * (x0 + x1), x1):
        for f in blockers:
            if f(xx, y):
                return False
    return True


def _ground_rows(st: Stage) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre rows below the horizon, and their perspective depth fraction (0 at the horizon,
    1 at the bottom edge)."""
    S, hz = st.canvas.S, st.horizon
    rows = np.arange(hz, S, dtype=np.float32) + 0.5
    return rows, (rows - hz) / (S - hz)


def _band_blocker(st: Stage, vx: float, xb: float, bend: float, wb: float, margin: float) -> Blocker:
    """The ground a receding band (a river or a road) covers, widened by `margin` pixels."""
    hz, G = st.horizon, st.canvas.S - st.horizon

    def covers(x: float, y: float) -> bool:
        return abs(x - (vx + (xb - vx) * ((y - hz) / G) + bend * ((y - hz) / G) * (1 - (y - hz) / G))) \
            < 0.5 * wb * (y - hz) / G + margin

    return covers


def draw_grass(st: Stage) -> None:
    """Grass over the whole ground, lighter toward the horizon."""
    b, P, hz, S = st.canvas, st.palette, st.horizon, st.canvas.S
    k = b.inst(GRASS, P["grass_far"], [n - f for n, f in zip(P["grass_near"], P["grass_far"])], hz, S, jitter=10)
    b.rect(k, 0, hz, S, S)
    b.obj(GRASS, (0, hz, S, S))


def draw_water(st: Stage) -> Blocker | None:
    """Water some of the time: a lake (twice as likely), the sea or a river; returns its blocker."""
    b, P, hz, S, r, U = st.canvas, st.palette, st.horizon, st.canvas.S, st.draws.next, st.draws.uniform
    if not r() < 0.45:
        return None
    G = S - hz
    rows, tt = _ground_rows(st)
    kind = st.draws.choice(("lake", "lake", "sea", "river"))
    k = b.inst(WATER, P["water"], 18, hz, S, jitter=10)
    if kind == "river":
        vx, xb = U(0.2, 0.8) * S, U(-0.1, 1.1) * S
        wb, bend = U(0.25, 0.55) * S, U(-0.25, 0.25) * S
        cen = vx + (xb - vx) * tt + bend * tt * (1 - tt)
        hw = 0.5 * wb * tt + 0.3
        box = b.spans(k, hz, S, cen - hw, cen + hw)
        if not box:
            return None
        b.obj(WATER, box)
        return _band_blocker(st, vx, xb, bend, wb, 0.02 * S)
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
    box = b.spans(k, hz, S, cx - half, cx + half)
    if not box:
        return None
    b.obj(WATER, box)
    return lambda x, y: ((x - cx) / (rx + 0.02 * S)) ** 2 + ((y - cy) / (ry + 1.0)) ** 2 <= 1.0


def draw_road(st: Stage) -> Blocker | None:
    """A road some of the time: asphalt (sometimes with a dashed centre line) or dirt, receding to a
    vanishing point on the horizon; returns its blocker."""
    b, P, hz, S, r, U = st.canvas, st.palette, st.horizon, st.canvas.S, st.draws.next, st.draws.uniform
    if not r() < 0.45:
        return None
    _, tt = _ground_rows(st)
    vx, xb = U(0.15, 0.85) * S, U(0.0, 1.0) * S
    wb, bend = U(0.3, 0.6) * S, U(-0.2, 0.2) * S
    cen = vx + (xb - vx) * tt + bend * tt * (1 - tt)
    hw = 0.5 * wb * tt + 0.25
    dirt = r() < 0.3
    k = b.inst(ROAD, P["dirt"] if dirt else P["road"], 14 if dirt else -10, hz, S, jitter=8)
    box = b.spans(k, hz, S, cen - hw, cen + hw)
    if not box:
        return None
    b.obj(ROAD, box)
    if not dirt and r() < 0.6:
        # dashes of equal length on the ground: on when floor(depth) is even, depth ~ 1/t
        on = (np.floor(U(0, 2) + 3.0 / np.maximum(tt, 1e-3)) % 2 == 0) & (hw > 2.0)
        mw = np.where(on, np.maximum(hw * 0.06, 0.5), 0.0)
        km = b.inst(ROAD, P["mark"], 0, hz, S, jitter=6)
        b.spans(km, hz, S, cen - mw, cen + mw)
    return _band_blocker(st, vx, xb, bend, wb, 0.03 * S)
