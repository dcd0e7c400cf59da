"""The drawing toolkit that the element modules (sky, ground, house, tree) share.

A scene is drawn in two passes. The first (`render.generate`, calling the element functions) draws
random numbers and queues *instances* (one concept and one colour model each), *draw operations*
(a shape that writes an instance id into the instance map) and *layout objects* (boxes, for
`Scenes.layout`) on a `Canvas`. The second (`render.rasterize`) runs the operations on the pixel grid
and colours each pixel by its instance, so a pixel's label is always what is visible there.

Every random number comes from one `Draws` stream in a fixed order: image i of seed s depends on
that order, so an element function must draw exactly what it drew before (see `DESIGNS` for how a
new look becomes a new version instead).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .design import CONCEPTS, TEXTURE_AMPLITUDES, SceneDesign

Box = tuple[int, int, int, int]  # (x0, y0, x1, y1) in pixels, half-open
# An upright object placed on the ground: (base row, its draw function, the arguments after the Stage).
Upright = tuple[int, Callable[..., None], tuple]


# ---------------------------------------------------------------------------------------------
# Layout records (what `Scenes.layout` returns)


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
# Random draws


class Draws:
    """The scene's random numbers: uniforms in [0, 1) from numpy.random.default_rng([seed, index]).

    256 are drawn up front (fast to hand out one by one); more come from the generator if a scene
    needs them. `next()` is one uniform, `uniform(a, b)` one in [a, b), `choice(seq)` one item.
    """

    def __init__(self, seed: int, index: int) -> None:
        rng = np.random.default_rng([seed, index])
        self.next: Callable[[], float] = itertools.chain(rng.random(256).tolist(), iter(rng.random, None)).__next__

    def uniform(self, a: float, b: float) -> float:
        """One uniform number in [a, b)."""
        return a + (b - a) * self.next()

    def choice(self, seq: Sequence[Any]) -> Any:
        """One item of seq, each equally likely."""
        return seq[min(int(self.next() * len(seq)), len(seq) - 1)]


# ---------------------------------------------------------------------------------------------
# Rasterisers: each writes an instance id into the instance map M (S x S) where a shape covers a
# pixel centre. Coordinates are pixels; pixel (r, c) has its centre at (c + 0.5, r + 0.5), and c
# holds the pixel centres (S,).


def fill_rect(M: np.ndarray, k: int, x0: int, y0: int, x1: int, y1: int) -> None:
    """Pixels x0..x1, y0..y1 (half-open, negative bounds clipped to 0)."""
    M[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = k


def fill_ellipses(M: np.ndarray, k: int, box: Box, ell: Sequence[tuple[float, float, float, float]],
                  c: np.ndarray) -> None:
    """The union of ellipses (cx, cy, rx, ry), within the box."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    xs, ys = c[x0:x1], c[y0:y1, None]
    mask = None
    for cx, cy, rx, ry in ell:
        m = ((xs - cx) * (1.0 / rx)) ** 2 + ((ys - cy) * (1.0 / ry)) ** 2 <= 1.0
        mask = m if mask is None else mask | m
    M[y0:y1, x0:x1][mask] = k


def fill_spans(M: np.ndarray, k: int, box: Box, left: np.ndarray, right: np.ndarray, c: np.ndarray) -> None:
    """Rows y0..y1 of the box; row r covers pixel centres in [left[r], right[r])."""
    x0, y0, x1, y1 = box
    if x1 <= x0 or y1 <= y0:
        return
    xs = c[x0:x1]
    mask = (xs >= left[:, None]) & (xs < right[:, None])
    M[y0:y1, x0:x1][mask] = k


def fill_ridge(M: np.ndarray, k_lit: int, k_dark: int, y0: int, y1: int, top: np.ndarray, lit: np.ndarray,
               c: np.ndarray) -> None:
    """Columns: rows from top[x] down to y1 (exclusive); lit columns get k_lit, others k_dark."""
    if y1 <= y0:
        return
    mask = c[y0:y1, None] >= top
    ids = np.where(lit, k_lit, k_dark).astype(np.uint8)
    sub = M[y0:y1]
    sub[mask] = np.broadcast_to(ids, mask.shape)[mask]


def clip_box(S: int, x0: float, y0: float, x1: float, y1: float) -> Box:
    """The pixel box (outward-rounded, clipped to the S x S image) around a shape's extent."""
    return (max(0, min(S, int(math.floor(x0)))), max(0, min(S, int(math.floor(y0)))),
            max(0, min(S, int(math.ceil(x1)))), max(0, min(S, int(math.ceil(y1)))))


# ---------------------------------------------------------------------------------------------
# The canvas


class Canvas:
    """Accumulates one scene's instances (concept + colour model), draw operations and layout objects.

    Args:
        size: the image side S.
        light: the palette's tint of lit (ground) objects, per channel.
        jitter: the scene's uniform draw (`Draws.next`), for per-instance colour jitter.
        design: the design version drawn.
    """

    def __init__(self, size: int, light: Sequence[float], jitter: Callable[[], float], design: SceneDesign) -> None:
        self.S = size
        self.design = design
        self.texture = design.texture
        self.light = light
        self.jitter = jitter
        self.concepts: list[int] = []
        self.params: list[tuple[float, ...]] = []
        self.ops: list[tuple] = []
        self.objects: list[tuple] = []  # (concept, box, parent, base)

    def inst(self, concept: int, rgb: Sequence[float], dy: float | Sequence[float] = 0.0, y0: float = 0.0,
             y1: float = 1.0, dx: float = 0.0, x0: float = 0.0, x1: float = 1.0, lit: bool = True,
             jitter: float = 10.0) -> int:
        """A new instance: colour rgb at (x0, y0), +dy by row y1, +dx by column x1 (pixels); returns its id.

        Draws one uniform (the colour jitter, +-jitter on every channel)."""
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
            + tuple(a * self.texture for a in TEXTURE_AMPLITUDES[concept]))
        return len(self.concepts) - 1

    def obj(self, concept: int, box: Sequence[float], parent: int | None = None, base: int | None = None) -> int:
        """Record a layout object (clipped and turned into a SceneObject only when a layout is asked for)."""
        self.objects.append((concept, box, parent, base))
        return len(self.objects) - 1

    def rect(self, k: int, x0: int, y0: int, x1: int, y1: int) -> None:
        """Queue a rectangle of instance k."""
        self.ops.append((fill_rect, k, x0, y0, x1, y1))

    def ellipses(self, k: int, box: Box, ellipses: Sequence[tuple[float, float, float, float]]) -> None:
        """Queue a union of ellipses (cx, cy, rx, ry) of instance k, drawn within box."""
        self.ops.append((fill_ellipses, k, box, tuple(ellipses)))

    def spans(self, k: int, y0: int, y1: int, left: np.ndarray, right: np.ndarray) -> Box | None:
        """Queue a span shape covering rows y0..y1 (clipped to the image); returns its box or None."""
        S = self.S
        lo, hi = max(y0, 0), min(y1, S)
        if hi <= lo:
            return None
        left, right = left[lo - y0:hi - y0], right[lo - y0:hi - y0]
        keep = right > left
        if not keep.any():
            return None
        box = clip_box(S, left[keep].min() - 0.5, lo, right[keep].max() + 0.5, hi)
        if box[2] <= box[0]:
            return None
        self.ops.append((fill_spans, k, box, left, right))
        return box

    def ridge(self, k_lit: int, k_dark: int, y0: int, y1: int, top: np.ndarray, lit: np.ndarray) -> None:
        """Queue a mountain ridge: columns from top[x] down to row y1, lit columns k_lit, others k_dark."""
        self.ops.append((fill_ridge, k_lit, k_dark, y0, y1, top, lit))

    def layout_objects(self) -> list[SceneObject]:
        """The recorded objects as SceneObjects, boxes clipped to the image."""
        S = self.S
        out = []
        for concept, box, parent, base in self.objects:
            x0, y0, x1, y1 = (max(0, min(S, int(v))) for v in box)
            out.append(SceneObject(CONCEPTS[concept], (x0, y0, x1, y1), parent, base))
        return out


@dataclass
class Stage:
    """What every element function draws on and with: the canvas, the random draws, the palette,
    the horizon row and the side the light comes from."""

    canvas: Canvas
    draws: Draws
    palette: dict[str, Any]
    palette_name: str
    horizon: int
    sun_left: bool

    @property
    def light_dx(self) -> int:
        """Horizontal shading of upright objects: brighter on the sun's side."""
        return -14 if self.sun_left else 14
