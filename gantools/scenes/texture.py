"""Texture fields: generated once per image size (fixed seed), cropped at a random offset per image."""

from __future__ import annotations

import numpy as np


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
    """Smooth noise: unit normals on a grid of cells (cell_y x cell_x pixels), interpolated to h x w."""
    gh, gw = max(2, int(round(h / cell_y)) + 1), max(2, int(round(w / cell_x)) + 1)
    grid = rng.standard_normal((gh, gw))
    return _interp_matrix(h, gh) @ grid @ _interp_matrix(w, gw).T


def _normalize(a: np.ndarray) -> np.ndarray:
    """Zero mean, unit standard deviation, float32."""
    a = a - a.mean()
    return (a / (a.std() + 1e-8)).astype(np.float32)


_BANKS: dict[int, np.ndarray] = {}


def textures(size: int) -> np.ndarray:
    """3 x 2S x 2S float32 noise fields (unit std): fine grain, horizontal streaks, coarse blotches.

    Made once per size from a fixed seed and cached; each scene crops them at random offsets.
    """
    bank = _BANKS.get(size)
    if bank is None:
        rng = np.random.default_rng(20240607)
        n = 2 * size
        fine = _normalize(0.7 * rng.standard_normal((n, n)) + _normalize(_value_noise(rng, n, n, 2.0, 2.0)))
        streak = _normalize(_value_noise(rng, n, n, 1.0, max(3.0, size / 10))
                            + 0.3 * _value_noise(rng, n, n, 1.0, 2.0))
        coarse = _normalize(_value_noise(rng, n, n, max(3.0, size / 8), max(3.0, size / 8))
                            + 0.4 * _value_noise(rng, n, n, max(2.0, size / 24), max(2.0, size / 24)))
        bank = np.stack([fine, streak, coarse])
        _BANKS[size] = bank
    return bank
