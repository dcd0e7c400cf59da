"""Trees: where they stand, and each one's trunk and foliage (a deciduous crown or a conifer).

A tree stands on free ground; nearer trees (lower base rows) are taller. The trunk reaches from
inside the foliage down to the ground and is drawn first, so the foliage covers its top.
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

import numpy as np

from .canvas import Box, Stage, Upright, clip_box
from .design import TREE, TRUNK
from .ground import Blocker, is_free

Foliage = tuple[float, Callable[[], Box | None]]  # (lowest row of the foliage, queue its shape: its box or None)


def place_trees(st: Stage, blockers: Sequence[Blocker]) -> list[Upright]:
    """Up to five trees on free ground (a few tries each); trees may stand in front of each other."""
    b, hz, r, U = st.canvas, st.horizon, st.draws.next, st.draws.uniform
    S, D = b.S, b.design
    G = S - hz
    u = r()
    n_trees = 0 if u < 0.25 else int(U(1, 6))
    uprights: list[Upright] = []
    for _ in range(n_trees):
        for _try in range(4):
            t = U(D.tree_depth_min, 1.0) ** 0.8
            yb = hz + 1 + int(round(t * (G - 1)))
            s = (yb - hz) / G
            ht = max(S * U(0.32, 0.6) * max(s, 0.08), S * D.tree_min_height)
            cx = U(-0.05, 1.05) * S
            if D.trunk_min_width:  # the whole trunk inside the image
                cx = min(max(cx, 0.06 * ht + 1), S - 0.06 * ht - 1)
            if not is_free(blockers, cx - 0.05 * ht, cx + 0.05 * ht, yb - 0.5):
                continue
            uprights.append((yb, draw_tree, (cx, ht)))
            break
    return uprights


def draw_tree(st: Stage, yb: int, cx: float, ht: float) -> None:
    """One tree of height ht standing on row yb at column cx: trunk, then foliage."""
    b, D = st.canvas, st.canvas.design
    conifer = st.draws.next() < 0.35
    tw = max(1, int(round(ht * st.draws.uniform(*D.trunk_width))), math.ceil(b.S * D.trunk_min_width))
    tx0 = int(round(cx - tw / 2))
    top = yb - ht
    fb, queue_foliage = (_conifer if conifer else _crown)(st, yb, cx, ht)
    # the trunk reaches from inside the foliage down to the ground; drawn first, so the foliage covers it
    tt = min(max(int(math.floor(fb)) - 1, int(math.floor(top))), yb - 1)
    kt = b.inst(TRUNK, st.palette["trunk"], -10, tt, yb, jitter=10)
    b.rect(kt, tx0, tt, tx0 + tw, yb)
    box = queue_foliage()
    # objects are listed in drawing order: the trunk, then the foliage it carries
    b.obj(TRUNK, (tx0, tt, tx0 + tw, yb), parent=len(b.objects) + 1 if box else None, base=yb)
    if box:
        b.obj(TREE, box, base=yb)


def _conifer(st: Stage, yb: int, cx: float, ht: float) -> Foliage:
    """A conifer's foliage: a tall triangle with a sawtooth edge, above a short visible trunk."""
    b, U = st.canvas, st.draws.uniform
    top = yb - ht
    fb = yb - max(1.0, ht * U(*b.design.conifer_trunk))
    n = int(math.ceil(fb - top))
    y0 = int(math.floor(top))
    ff = (np.arange(y0, y0 + n, dtype=np.float32) + 0.5 - top) / max(fb - top, 1.0)
    half = ht * U(0.22, 0.3) * ff
    half[ff < 0] = 0.0
    # a sawtooth edge suggests tiers of branches
    half = half * (0.82 + 0.18 * ((ff * 4) % 1.0))
    kf = b.inst(TREE, st.palette["conifer"], -18, top, fb, dx=st.light_dx, x0=cx - ht * 0.3, x1=cx + ht * 0.3)
    return fb, lambda: b.spans(kf, y0, y0 + n, cx - half, cx + half)


def _crown(st: Stage, yb: int, cx: float, ht: float) -> Foliage:
    """A deciduous crown: one ellipse, with two smaller ones low at its sides when the tree is large."""
    b, U = st.canvas, st.draws.uniform
    top = yb - ht
    rx, ry = ht * U(0.24, 0.34), ht * U(*b.design.crown_height)
    cy = top + ry
    fb = top + 2 * ry  # lowest point of the main crown, above the trunk
    puffs = [(cx, cy, rx, ry)]
    if ht > 6:
        puffs.append((cx - rx * 0.45, cy + ry * 0.3, rx * 0.7, ry * 0.62))
        puffs.append((cx + rx * 0.45, cy + ry * 0.25, rx * 0.7, ry * 0.62))
    x0f = min(p[0] - p[2] for p in puffs)
    x1f = max(p[0] + p[2] for p in puffs)
    y1f = max(p[1] + p[3] for p in puffs)
    kf = b.inst(TREE, st.palette["foliage"], -24, top, y1f, dx=st.light_dx, x0=x0f, x1=x1f)
    box = clip_box(b.S, x0f, top, x1f, y1f)

    def queue() -> Box | None:
        if box[2] > box[0] and box[3] > box[1]:
            b.ellipses(kf, box, puffs)
            return box
        return None

    return fb, queue
