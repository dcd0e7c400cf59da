"""Houses: where they stand, and each one's wall, roof, door and windows.

A house stands on free ground; nearer houses (lower base rows) are larger. Its roof sits on top of
the wall, its door stands on the ground and its windows sit in a row across the wall.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .canvas import Stage, Upright
from .design import DOOR, ROOF, WALL, WINDOW
from .ground import Blocker, is_free

_WALLS = ((228, 216, 190), (226, 198, 128), (186, 196, 206), (216, 170, 158), (178, 134, 94), (206, 206, 198))
_ROOFS = ((168, 70, 50), (98, 62, 44), (70, 76, 96), (132, 40, 42))
_DOORS = ((82, 50, 30), (122, 30, 32), (30, 82, 56), (40, 50, 108), (58, 58, 62))


def place_houses(st: Stage, blockers: Sequence[Blocker]) -> list[Upright]:
    """Up to three houses on free ground, apart from each other (a few tries each)."""
    b, hz, r, U = st.canvas, st.horizon, st.draws.next, st.draws.uniform
    S, D = b.S, b.design
    G = S - hz
    u = r()
    c0, c1, c2 = D.house_counts
    n_houses = 0 if u < c0 else (1 if u < c1 else (2 if u < c2 else 3))
    placed: list[tuple[float, float, int]] = []
    uprights: list[Upright] = []
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
            if not is_free(blockers, x0, x1, yb - 0.5):
                continue
            if any(x0 < px1 and x1 > px0 and abs(yb - pyb) < 0.25 * G for px0, px1, pyb in placed):
                continue
            placed.append((x0, x1, yb))
            uprights.append((yb, draw_house, (x0, x1)))
            break
    return uprights


def draw_house(st: Stage, yb: int, x0: int, x1: int) -> None:
    """One house standing on row yb between columns x0 and x1: wall, roof, door, windows."""
    b, U = st.canvas, st.draws.uniform
    W = x1 - x0
    H = max(3, int(round(W * U(0.5, 0.78))))
    yt = yb - H
    wall_col = st.draws.choice(_WALLS)
    kw = b.inst(WALL, wall_col, -12, yt, yb, dx=st.light_dx, x0=x0, x1=x1, jitter=10)
    b.rect(kw, x0, yt, x1, yb)
    iw = b.obj(WALL, (x0, yt, x1, yb), base=yb)
    _draw_roof(st, iw, x0, x1, yt, H)
    _draw_door_and_windows(st, iw, x0, x1, yt, yb)


def _draw_roof(st: Stage, iw: int, x0: int, x1: int, yt: int, H: int) -> None:
    """A gable (triangle) or a hip (trapezoid) roof on top of wall iw, with a small overhang."""
    b, r, U = st.canvas, st.draws.next, st.draws.uniform
    W = x1 - x0
    oh = int(round(W * 0.07))
    rh = max(2, int(round(H * U(0.45, 0.85))))
    ry0 = yt - rh
    hw_full = W / 2 + oh
    top_frac = 0.0 if r() < 0.6 else U(0.25, 0.55)
    f = (np.arange(rh, dtype=np.float32) + 0.5) / rh
    half = hw_full * (top_frac + (1 - top_frac) * f)
    cxh = 0.5 * (x0 + x1)
    kr = b.inst(ROOF, st.draws.choice(_ROOFS), 14, ry0, yt, dx=-st.light_dx * 0.8, x0=x0, x1=x1, jitter=10)
    box = b.spans(kr, ry0, yt, cxh - half, cxh + half)
    if box:
        b.obj(ROOF, box, parent=iw)


def _draw_door_and_windows(st: Stage, iw: int, x0: int, x1: int, yt: int, yb: int) -> None:
    """Slots across wall iw: the door takes one, windows (at one height) some of the others."""
    b, P, r, U, choice = st.canvas, st.palette, st.draws.next, st.draws.uniform, st.draws.choice
    S, D = b.S, b.design
    W, H = x1 - x0, yb - yt
    nslot = 3 if W < S * D.four_slots_from else 4
    slot_w = W / nslot
    door_slot = int(r() * nslot)
    dw = max(1, int(round(W * U(D.door_size[0], D.door_size[1]))), math.ceil(S * D.door_min[0]))
    dh = max(2, min(H - 1, max(int(round(H * U(D.door_size[2], D.door_size[3]))),
                               math.ceil(S * D.door_min[1]))))
    dx0 = int(round(x0 + (door_slot + 0.5) * slot_w - dw / 2))
    dx0 = max(x0, min(x1 - dw, dx0))
    kd = b.inst(DOOR, choice(_DOORS), -6, yb - dh, yb, jitter=8)
    b.rect(kd, dx0, yb - dh, dx0 + dw, yb)
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
            b.rect(kwin, wx0, wy0, wx0 + ws, wy1)
            b.obj(WINDOW, (wx0, wy0, wx0 + ws, wy1), parent=iw)
