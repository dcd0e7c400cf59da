"""The streaming statistics of a dissection: per-unit histograms split by concept, and the IQR.

`Histogram` counts each unit's values near and above a lower bound, per concept, in a fixed number
of bins whose range doubles when exceeded: memory does not grow with the number of samples. From it
come a unit's quantile level (`level`), the counts of each concept above any threshold (`above`:
the intersections |A_u and S_c| of IoU), and the IQR-optimal threshold and concept (`best_iqr`).
Everything is exact except inside the one bin holding a threshold, where it interpolates linearly.
"""

from __future__ import annotations

import math

import torch

from .. import distributed
from ..defaults import IQR_MIN_CONCEPT_SHARE
from .upsample import Upsampler

MIN_CONCEPT_SHARE = IQR_MIN_CONCEPT_SHARE  # stated once, in defaults (the CLI's help quotes it)
# Pending indices are counted once this many have gathered (one bincount per batch is cheapest for
# the sparse tails of quantile mode; a dense pass through `add`, at a non-integer upsampling factor,
# would otherwise hold a batch's worth, ~200 MB).
FLUSH_VALUES = 1 << 22


class Histogram:
    """Per-unit histograms of values near and above lo[u], split by concept; the range doubles when exceeded.

    Bins are right-closed: with x = (v - lo) / w, slot 0 holds values with x <= -1 (ignored: below the
    tail), slot 1 holds (lo - w, lo] (where an atom at lo, e.g. a ReLU's zeros, lands) and slot b + 1
    holds (lo + (b - 1) w, lo + b w] for b = 1..bins. The last concept is a dump for pixels outside
    the image (rows padded so that every segment has the same length); it is never read.
    Counts are stored concept-major (concepts + 1) x units x (bins + 2), so that a pixel's index is
    its label times `label_stride` plus a per-unit offset plus its slot: labels are scaled once per
    batch, not once per value.
    """

    def __init__(self, lo: torch.Tensor, hi: torch.Tensor, bins: int, concepts: int) -> None:
        self.lo = lo.double()
        span = (hi.double() - self.lo).clamp_min(0)
        self.width = torch.where(span > 0, span / bins, self.lo.abs().clamp_min(1.0) * 1e-6)
        self.bins, self.k1 = bins, concepts + 1
        units = lo.shape[0]
        self.label_stride = units * (bins + 2)
        self._counts = torch.zeros(self.k1, units, bins + 2, dtype=torch.long, device=lo.device)
        self._pending: list[torch.Tensor] = []
        self._pending_values = 0
        self.lo32 = self.lo.float()  # lo as float32, as the values are compared with it
        # slot c + 1 of unit u sits at u * (bins + 2) + c + 1; kept as float to add before one .long()
        self._base = (torch.arange(units, device=lo.device) * (bins + 2) + 1).float()
        self._sync()

    @property
    def counts(self) -> torch.Tensor:
        """units x (bins + 2) x (concepts + 1) view of the counts."""
        self.flush()
        return self._counts.permute(1, 2, 0)

    def _sync(self) -> None:
        self._inv32 = (1 / self.width).float()

    def grow(self, vmax: torch.Tensor) -> None:
        """Widen the bins (merging 2**j neighbours) so that values up to vmax (units,) fit."""
        self.flush()
        top = self.lo + self.bins * self.width
        over = vmax.double() >= top
        if not bool(over.any()):
            return
        ratio = ((vmax.double() - self.lo) / (self.bins * self.width)).clamp_min(1.0)
        self._merge(torch.where(over, torch.exp2(torch.floor(torch.log2(ratio)) + 1), torch.ones_like(ratio)))

    def combine(self) -> None:
        """Make this histogram the sum of every process's (a no-op alone; a collective under torchrun).

        Every process starts from the same lo and first width (see `LayerState.prepare`) and widens
        by powers of two, so each one's bins merge exactly into the widest; the summed counts are
        those one process would have counted over all the samples.
        """
        self.flush()
        if not distributed.active():
            return
        self._merge(distributed.all_reduce_max(self.width.clone()) / self.width)
        distributed.all_reduce_sum(self._counts)

    def _merge(self, factor: torch.Tensor) -> None:
        """Multiply each unit's bin width by `factor` (powers of two, >= 1), merging its bins."""
        if not bool((factor > 1).any()):
            return
        u, b = self.lo.shape[0], self.bins
        # old bin j (1..bins) = (lo + (j-1) w, lo + j w] lies in new bin ceil(j / factor).
        j = torch.arange(1, b + 1, device=factor.device, dtype=torch.float64)
        dest = torch.ceil(j[None] / factor[:, None]).long() + 1
        merged = self._counts.clone()
        merged[:, :, 2:] = 0
        merged.scatter_add_(2, dest[None].expand(self.k1, u, b), self._counts[:, :, 2:])
        self._counts = merged
        self.width = self.width * factor
        self._sync()

    def scale_labels(self, labels: torch.Tensor) -> torch.Tensor:
        """Labels as index offsets (label * label_stride), to pass to `add`. Indices are int32 (the table
        has far fewer than 2**31 cells), which halves the memory traffic of counting."""
        return (labels * self.label_stride).int()

    def add(self, unit: torch.Tensor, a: torch.Tensor, d: torch.Tensor | None, lam: torch.Tensor | None,
            labels: torch.Tensor) -> None:
        """Count values v = a + d * lam (M x L; a, d: M x 1, lam: 1 x L) or v = a (M x L when d is None)
        of units (M,), with labels scaled by `scale_labels` (M x L). Values below lo - w are ignored."""
        if a.numel() == 0:
            return
        # (index_select: much faster than tensor[index] for these gathers)
        inv = self._inv32.index_select(0, unit)[:, None]
        x = (a - self.lo32.index_select(0, unit)[:, None]).mul_(inv)
        if d is not None:
            x = torch.addcmul(x, d * inv, lam)
        x = x.ceil_().clamp_(-1, self.bins).add_(self._base.index_select(0, unit)[:, None])
        # Counted by `flush`, once per batch: one bincount over the whole counts table costs about
        # as much as the indices of a chunk, so doing it per chunk doubled the cost.
        self._pending.append(Upsampler.add_labels(x.int(), labels))
        self._pending_values += x.numel()
        if self._pending_values >= FLUSH_VALUES:  # dense passes: bound the memory of the pending indices
            self.flush()

    def add_dense(self, up: Upsampler, feat: torch.Tensor, scaled_labels: torch.Tensor) -> None:
        """Count every upsampled value of `feat` (n x units x h x w), with labels from `scale_labels`
        (n x hs x ws): the dense counting of an IQR selection pass.

        Bilinear weights sum to 1, so upsampling commutes with the affine map v -> (v - lo) / w: the
        small raw maps are turned into bin coordinates first, and each upsampled value then costs a
        ceil, a conversion and two integer adds (half the passes of `add`). The raw maps bound the
        upsampled values, so when their coordinates lie inside (-1, bins) no clamp is needed; a batch
        reaching outside (values below the first batch's minimum) takes the clamp. Each chunk is
        counted at once, while its indices are in cache.
        """
        n, u = feat.shape[:2]
        coords = (feat - self.lo32.view(1, -1, 1, 1)).mul_(self._inv32.view(1, -1, 1, 1))
        inside = float(coords.amin()) > -1 + 1e-3 and float(coords.amax()) < self.bins - 1e-3
        offsets = scaled_labels.reshape(n, 1, -1)
        base = self._base.int().view(1, -1, 1)
        self.flush()
        table = self._counts.view(-1)
        for a, x in up.dense(coords):
            x = x.ceil_() if inside else x.ceil_().clamp_(-1, self.bins)
            index = x.int().view(x.shape[0], u, -1).add_(base).add_(offsets[a:a + x.shape[0]])
            table.add_(torch.bincount(index.view(-1), minlength=table.numel()))

    def flush(self) -> None:
        """Count the values added since the last flush (call before reading or growing the counts)."""
        if self._pending:
            idx = self._pending[0] if len(self._pending) == 1 else torch.cat(self._pending)
            self._pending, self._pending_values = [], 0
            self._counts.view(-1).add_(torch.bincount(idx, minlength=self._counts.numel()))

    def tail(self) -> torch.Tensor:
        """tail[:, j] = count of values > lo + j w for j = 0..bins (units x (bins + 1) x concepts)."""
        h = self.counts[:, 1:, :-1].double()  # slots 1..bins+1
        t = h.flip(1).cumsum(1).flip(1)  # t[:, s] = values in slots >= s + 1
        return torch.cat([t[:, 1:], torch.zeros_like(t[:, :1])], dim=1)

    def level(self, count: float) -> tuple[torch.Tensor, torch.Tensor]:
        """(t, ok): per unit the level exceeded by `count` values, linear inside a bin. Where fewer
        than `count` values exceed lo but enough lie in (lo - w, lo], t = lo (an atom at lo); ok is
        False where not even that many were counted (the level lies below the histogram)."""
        tail = self.tail().sum(-1)  # units x (bins + 1): count > lo + j w
        near = tail[:, 0] + self.counts[:, 1, :-1].sum(-1).double()
        ok = near >= count - 1e-6
        j = (tail >= count).sum(1) - 1  # last edge with at least `count` values above it
        atom = j < 0
        j = j.clamp(0, self.bins - 1)
        ar = torch.arange(tail.shape[0], device=tail.device)
        inside = (tail[ar, j] - tail[ar, j + 1]).clamp_min(1e-12)
        t = self.lo + self.width * (j.double() + ((tail[ar, j] - count) / inside).clamp(0, 1))
        return torch.where(atom, self.lo, t), ok

    def above(self, t: torch.Tensor) -> torch.Tensor:
        """Counts of values > t[u] per unit and concept (units x concepts), linear inside a bin."""
        tail = self.tail()
        rel = ((t.double() - self.lo) / self.width).clamp_min(0)
        j = rel.floor().long().clamp(max=self.bins - 1)
        ar = torch.arange(tail.shape[0], device=tail.device)
        frac = (j.double() + 1 - rel).clamp(0, 1)  # share of bin (e_j, e_j+1] above t
        inside = tail[ar, j] - tail[ar, j + 1]
        return tail[ar, j + 1] + inside * frac[:, None]

    def best_iqr(self, total: float, concept_totals: torch.Tensor,
                 min_share: float = MIN_CONCEPT_SHARE) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Per unit, the bin edge t and concept maximising IQR(mask > t; concept) over the pairs that
        `_iqr_candidates` allows: (t, concept, iqr); concept -1, iqr 0 and t = lo where none is."""
        tail = self.tail()[:, :-1]  # thresholds lo + j w, j = 0..bins-1
        u = tail.shape[0]
        k = tail.shape[2]
        s_tot = concept_totals.double().to(tail.device)
        best_t, best_k, best_q = (torch.empty(u, dtype=torch.float64, device=tail.device),
                                  torch.empty(u, dtype=torch.long, device=tail.device),
                                  torch.empty(u, dtype=torch.float64, device=tail.device))
        step = max(1, (1 << 21) // max(1, self.bins * k))
        levels = self.lo[:, None] + torch.arange(tail.shape[1], device=tail.device) * self.width[:, None]
        for a in range(0, u, step):
            inter = tail[a:a + step]
            mask = inter.sum(-1, keepdim=True)
            allowed = _iqr_candidates(inter, mask, s_tot, total, levels[a:a + step], min_share)
            iqr = torch.where(allowed, information_quality_ratio(inter, mask, s_tot, total), -1.0)
            q, idx = iqr.reshape(iqr.shape[0], -1).max(dim=1)
            found = q >= 0
            concept = idx % k
            # Where the IQR is flat (no values between two levels), take the middle of the plateau of
            # best levels rather than its lowest edge: it generalises better to other samples.
            curve = iqr.gather(2, concept.view(-1, 1, 1).expand(-1, iqr.shape[1], 1)).squeeze(2)
            plateau = curve >= q[:, None] - 1e-12
            first = plateau.float().argmax(dim=1)
            after = torch.arange(plateau.shape[1], device=plateau.device)[None] >= first[:, None]
            stop = (~plateau & after).float()
            last = torch.where(stop.any(dim=1), stop.argmax(dim=1) - 1, torch.full_like(first, plateau.shape[1] - 1))
            j = torch.where(found, torch.div(first + last, 2, rounding_mode="floor"), 0)
            best_t[a:a + step] = self.lo[a:a + step] + j.double() * self.width[a:a + step]
            best_k[a:a + step] = torch.where(found, concept, -1)
            best_q[a:a + step] = q.clamp_min(0)
        return best_t, best_k, best_q


def _iqr_candidates(inter: torch.Tensor, mask: torch.Tensor, concept: torch.Tensor, total: float,
                    levels: torch.Tensor, min_share: float) -> torch.Tensor:
    """Which (unit, level, concept) pairs IQR mode may choose (GAN Dissection's rules): levels above 0,
    concepts with at least `min_share` of the pixels, and masks that raise the concept's probability,
    P(S | A) > P(S), i.e. |A and S| * total > |A| * |S|. Mutual information cannot tell a mask of where
    a concept is from one of where it is not; this can. The counts are integers, exact in float64.

    Args:
        inter: units x levels x concepts |A and S|; mask: units x levels x 1 |A|; concept: |S| per
        concept; total: pixels; levels: units x levels thresholds.
    """
    positive = inter * total > mask * concept
    return positive & (levels > 0)[:, :, None] & (concept >= min_share * total)


def information_quality_ratio(inter: torch.Tensor, mask: torch.Tensor, concept: torch.Tensor,
                              total: float) -> torch.Tensor:
    """IQR = I(A; S) / H(A, S) of two binary variables from pixel counts (broadcasting).

    Args:
        inter: |A and S|; mask: |A|; concept: |S|; total: number of pixels.
    """
    p11 = inter / total
    p10 = (mask - inter) / total
    p01 = (concept - inter) / total
    p00 = (1 - p11 - p10 - p01).clamp_min(0)
    pa, ps = p11 + p10, p11 + p01

    def plogp(p: torch.Tensor) -> torch.Tensor:
        return torch.where(p > 0, p * torch.log(p.clamp_min(1e-300)), torch.zeros_like(p))

    joint = -(plogp(p11) + plogp(p10) + plogp(p01) + plogp(p00))
    ha = -(plogp(pa) + plogp(1 - pa))
    hs = -(plogp(ps) + plogp(1 - ps))
    mi = (ha + hs - joint).clamp_min(0)
    return torch.where(joint > 1e-12, mi / joint.clamp_min(1e-12), torch.zeros_like(joint))



def top_level(values: torch.Tensor, top: float) -> torch.Tensor:
    """Per row, the value exceeded by about a fraction `top` of the row (the k-th largest)."""
    k = max(1, min(values.shape[1], math.ceil(top * values.shape[1])))
    return values.topk(k, dim=1).values[:, -1]
