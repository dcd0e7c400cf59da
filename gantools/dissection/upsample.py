"""Bilinear upsampling of a layer's feature maps to the segmentation's size, exactly as F.interpolate
does it (align_corners=False), without upsampling values that cannot reach a unit's level.

Maps are interpolated along x by a matrix product; along y, each output row lies between two source
rows, and within such a segment of rows the values of a column are linear in the interpolation
weight, so their maximum is known exactly from the two rows. Only segments that can reach the
level (about a tenth of them) are interpolated.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn.functional as F

from .result import ALIGN_CORNERS

CHUNK = 1 << 20  # elements per temporary tensor when upsampling: bounds memory per batch (4 MiB floats)


def _interp_matrix(n_in: int, n_out: int) -> torch.Tensor:
    """n_out x n_in weights of 1-D linear interpolation, taken from F.interpolate itself (align_corners=False)."""
    eye = torch.eye(n_in, dtype=torch.float64)[None]
    return F.interpolate(eye, size=n_out, mode="linear", align_corners=ALIGN_CORNERS)[0].t().contiguous()


class Upsampler:
    """Bilinear upsampling (align_corners=False) of a layer's maps to the segmentation's size, done
    separably (x by a matrix product, then y), and extraction of the upsampled values that may reach
    a per-unit level without upsampling everything.

    With an integer vertical factor f, output rows fall into segments of f rows between two
    consecutive source rows (the first and last row repeated at the borders, like F.interpolate's
    clamping): segment p holds rows (p - 1) f + floor(f / 2) + s, s = 0..f-1, valued
    (1 - lam_s) row[p - 1] + lam_s row[p] with lam_s = (floor(f / 2) + s + 0.5) / f - 0.5 for every p.
    In each column these values are linear in lam, so the segment's maximum is at lam_0 or
    lam_{f-1}: an exact test of whether any of its pixels reaches the level. Only candidate
    segments (about a tenth at the levels used) are interpolated. Border segments reach outside the
    image by f/2 rows; those pixels get the dump label (labels are padded), so they are never
    counted. A non-integer vertical factor falls back to dense upsampling. (We also tried skipping
    2x2 source blocks below the level first: the gathers cost more than they saved.)
    """

    def __init__(self, shape: tuple[int, int, int], seg_hw: tuple[int, int], device: torch.device) -> None:
        _, h, w = shape
        hs, ws = seg_hw
        self.h, self.w, self.hs, self.ws = h, w, hs, ws
        self.mx_t = _interp_matrix(w, ws).t().contiguous().float().to(device)  # w x ws
        self.my = _interp_matrix(h, hs).float().to(device)  # hs x h
        self.f = hs // h if hs % h == 0 else 0
        self.lam: torch.Tensor | None = None
        if self.f:
            f = self.f
            lam = [(f // 2 + s + 0.5) / f - 0.5 for s in range(f)]
            self.lam = torch.tensor(lam, device=device)[None]
            self.lam_lo, self.lam_hi = lam[0], lam[-1]
            self.pad_top, self.pad_bottom = (f + 1) // 2, f // 2
            self.row_offsets = (torch.arange(f, device=device, dtype=torch.int32) * ws)[None]

    @staticmethod
    def add_labels(index: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """index (M x L, integer) + the labels `values` yielded with it, in place; flattened."""
        return index.view(labels.shape).add_(labels).view(-1)

    def dense(self, feat: torch.Tensor) -> Iterable[tuple[int, torch.Tensor]]:
        """(first image, upsampled chunk n x units x hs x ws), in chunks of at most CHUNK values."""
        n, u = feat.shape[:2]
        step = max(1, CHUNK // max(1, u * self.hs * self.ws))
        for a in range(0, n, step):
            yield a, torch.matmul(self.my, torch.matmul(feat[a:a + step], self.mx_t))

    def values(self, feat: torch.Tensor, labels: torch.Tensor, lo: torch.Tensor | None, dump: int,
               peak: torch.Tensor | None = None):
        """Yield (unit (M,), a, d, labels) covering every upsampled value >= lo[unit] (and some below
        it): the values are a + d * self.lam (a, d: M x 1) for row segments, with labels M x L; or a
        (M x L) with d None when upsampled densely (lo=None: every value), with labels images x units x
        L, a broadcast view (M = images * units) that is never copied. Pixels outside the image carry
        label `dump`. Add labels with `add_labels`."""
        n, u = feat.shape[:2]
        if lo is None or not self.f:
            lab = labels.reshape(n, 1, -1)
            for a, up in self.dense(feat):
                m = up.shape[0]
                yield (torch.arange(u, device=feat.device).repeat(m), up.reshape(m * u, -1), None,
                       lab[a:a + m].expand(m, u, lab.shape[-1]))
            return
        yield from self._segments(feat, labels, lo, dump, peak)

    def _segments(self, feat: torch.Tensor, labels: torch.Tensor, lo: torch.Tensor, dump: int,
                  peak: torch.Tensor | None = None):
        n, u, h, w = feat.shape
        ws, hs, f = self.ws, self.hs, self.f
        lab = F.pad(labels, (0, 0, self.pad_top, self.pad_bottom), value=dump).reshape(-1)
        # Only maps whose maximum reaches their unit's level can hold a candidate segment (an
        # interpolated value never exceeds the map's maximum); most maps of a selective unit don't.
        if peak is None:
            peak = feat.amax(dim=(2, 3))
        live = (peak >= lo.view(1, -1)).view(-1).nonzero().squeeze(1)  # image * u + unit
        if live.numel() == 0:
            return
        maps = feat.reshape(n * u, h, w)
        plane = (h + 1) * ws  # candidate segments per map
        step = max(1, CHUNK // max(1, (h + 2) * ws))
        lo_flat = lo.float()
        for a in range(0, live.numel(), step):
            which = live[a:a + step]
            unit_of = which % u
            img_of = torch.div(which, u, rounding_mode="floor")
            r = torch.matmul(maps.index_select(0, which), self.mx_t)  # upsampled along x: m x h x ws
            rp = F.pad(r[:, None], (0, 0, 1, 1), mode="replicate")[:, 0]  # border rows repeated
            d = rp[:, 1:] - rp[:, :-1]
            # a segment's largest value: a + lam_lo d + (lam_hi - lam_lo) max(d, 0)
            top = torch.add(rp[:, :-1], d, alpha=self.lam_lo)
            top.add_(d.relu(), alpha=self.lam_hi - self.lam_lo)
            idx = (top >= lo_flat.index_select(0, unit_of).view(-1, 1, 1)).view(-1).nonzero().squeeze(1)
            del top
            if idx.numel() == 0:
                continue
            rpf, df = rp.reshape(-1), d.reshape(-1)
            # int32 index arithmetic (2-3x faster divisions than int64); every index here is below
            # the chunk's size or the batch's padded label count, far from 2**31.
            index_type = torch.int32 if max(rpf.numel(), lab.numel()) < 2**31 - 1 else torch.long
            img_of, unit_of = img_of.to(index_type), unit_of.to(index_type)
            sub = max(1, CHUNK // f)
            for b in range(0, idx.numel(), sub):
                i = idx[b:b + sub].to(index_type)
                m = torch.div(i, plane, rounding_mode="floor")  # map in chunk
                rem = i - m * plane  # segment * ws + column
                seg = torch.div(rem, ws, rounding_mode="floor")
                img = img_of.index_select(0, m)
                # padded label row of segment `seg`, slot s: seg * f + s
                base = (img * (hs + f) + seg * f) * ws + (rem - seg * ws)
                pix = (base[:, None] + self.row_offsets).view(-1)
                yield (unit_of.index_select(0, m), rpf.index_select(0, i + m * ws)[:, None],
                       df.index_select(0, i)[:, None], lab.index_select(0, pix).view(-1, f))

