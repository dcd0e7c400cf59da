"""What a dissection accumulates for one layer during a pass over samples, and what it makes of it.

`LayerState.update` takes one batch (feature maps and segmentation labels): a per-concept tail
histogram of the unit's upsampled activations (mode "quantile"), full-range histograms to choose IQR
thresholds ("iqr"), or exact intersection counts at given thresholds ("fixed"); plus the raw maps'
mean and 0.99 quantile, and the running top-k samples with their images and maps.
`finish_layer` turns a state into a `LayerDissection`, or into a state to redo the layer with lower
histogram bounds when the first batch set them too high (see `engine`'s docstring).

Under torchrun each process accumulates its own share of the samples from bounds taken from the
pass's first batch (`FirstBatch`, measured once and shared), and `LayerState.combine` sums the
processes' states into the one a single process would hold.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from .. import distributed
from .result import Examples, LayerDissection
from .stats import Histogram, top_level
from .upsample import CHUNK, Upsampler

TAIL_MARGIN = 4.0  # histograms start at the level exceeded by TAIL_MARGIN * quantile of the first batch
# Once FLOOR_AFTER samples are counted, values are only binned from the level exceeded by FLOOR_MARGIN *
# quantile of them (a far better estimate than the first batch's), which halves the candidates.
FLOOR_AFTER = 256
FLOOR_MARGIN = 1.5
MAX_BINS = 512
HIST_CELLS = 1 << 22  # units x (bins + 1) x concepts counts per layer, at most (32 MiB of int64)


@dataclass(frozen=True)
class FirstBatch:
    """What a layer's accumulators take from the first batch of a pass: the shapes, each unit's
    extremes, and the levels its histograms start at (None where the state overrides them).

    Args:
        map_shape: units x h x w of the layer's maps; label_hw: the segmentation's size;
        image_shape: C x H x W of the images; fmin, fmax: per unit, the batch's extremes;
        raw_lo: where the raw maps' q99 histogram starts; tail_lo: where the quantile histogram starts.
    """

    map_shape: tuple[int, int, int]
    label_hw: tuple[int, int]
    image_shape: tuple[int, ...]
    fmin: torch.Tensor
    fmax: torch.Tensor
    raw_lo: torch.Tensor | None
    tail_lo: torch.Tensor | None

    def to(self, device: torch.device) -> "FirstBatch":
        """The same, with its tensors on `device`."""
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device)

        return FirstBatch(self.map_shape, self.label_hw, self.image_shape, move(self.fmin), move(self.fmax),
                          move(self.raw_lo), move(self.tail_lo))


class _TopK:
    """Running top-k samples per unit by maximum raw activation, with their images and maps.

    Slots are kept unsorted: a batch's winners are written into the slots of the entries they
    displace, so only new images are copied (not every kept one); `sort` orders them once at the end.
    """

    def __init__(self, units: int, k: int, image_shape: Sequence[int], map_hw: Sequence[int],
                 device: torch.device) -> None:
        self.k = k
        self.values = torch.full((units, k), -math.inf, device=device)
        self.index = torch.full((units, k), -1, dtype=torch.long, device=device)
        self.images = torch.zeros((units, k, *image_shape), dtype=torch.uint8, device=device)
        self.maps = torch.zeros((units, k, *map_hw), device=device)

    def update(self, start: int, feat: torch.Tensor, peak: torch.Tensor, images_u8) -> None:
        """Merge a batch (feat n x u x h x w, peak = its per-image maxima n x u) into the top k."""
        k = self.k
        if k == 0:
            return
        peak = peak.t()  # units x n
        if not bool((peak.max(dim=1).values > self.values.min(dim=1).values).any()):
            return
        sel = torch.cat([self.values, peak], dim=1).topk(k, dim=1).indices  # units x k
        new = sel >= k
        if not bool(new.any()):
            return
        # slots whose entry survives; the others are free for this batch's winners
        kept = torch.zeros(sel.shape[0], k + 1, dtype=torch.bool, device=sel.device)
        kept.scatter_(1, torch.where(new, k, sel), True)
        free = ~kept[:, :k]
        # pair the j-th free slot of a row with the j-th new entry of that row (equal counts)
        order = torch.arange(k, device=sel.device).expand_as(sel)
        slot = torch.where(free, order, k).sort(dim=1).values
        src = torch.where(new, sel - k, peak.shape[1]).sort(dim=1).values
        rows, j = (slot < k).nonzero(as_tuple=True)
        slot, src = slot[rows, j], src[rows, j]
        self.values[rows, slot] = peak[rows, src]
        self.index[rows, slot] = src + start
        self.images[rows, slot] = images_u8()[src]
        self.maps[rows, slot] = feat[src, rows]

    def combine(self) -> None:
        """Keep the top k of every process's kept samples, with their images and maps (a collective).

        Ties are ordered by sample index; each winner's image and map come from the process that
        holds it (summed into zeros, so they arrive bit for bit)."""
        if self.k == 0 or not distributed.active():
            return
        parts = distributed.gather_objects((self.values.cpu(), self.index.cpu()))
        values = torch.cat([v for v, _ in parts], dim=1)
        index = torch.cat([i for _, i in parts], dim=1)
        by_index = index.argsort(dim=1, stable=True)
        by_value = values.gather(1, by_index).argsort(dim=1, descending=True, stable=True)
        cols = by_index.gather(1, by_value)[:, :self.k]  # units x k columns of the gathered slots
        owner, slot = torch.div(cols, self.k, rounding_mode="floor"), cols % self.k
        mine = (owner == distributed.world().rank).to(self.values.device)
        rows = torch.arange(cols.shape[0], device=self.values.device)[:, None].expand_as(cols)
        rows, slot = rows[mine], slot.to(self.values.device)[mine]
        where = mine.nonzero(as_tuple=True)
        images, maps = torch.zeros_like(self.images), torch.zeros_like(self.maps)
        images[where], maps[where] = self.images[rows, slot], self.maps[rows, slot]
        self.images, self.maps = distributed.all_reduce_sum(images), distributed.all_reduce_sum(maps)
        self.values = values.gather(1, cols).to(self.values.device)
        self.index = index.gather(1, cols).to(self.index.device)

    def sort(self) -> None:
        """Order every unit's slots by decreasing activation (empty slots last)."""
        order = self.values.argsort(dim=1, descending=True, stable=True)
        ar = torch.arange(order.shape[0], device=order.device)[:, None]
        self.values, self.index = self.values[ar, order], self.index[ar, order]
        self.images, self.maps = self.images[ar, order], self.maps[ar, order]


class LayerState:
    """Everything accumulated for one layer during a pass.

    mode "quantile": tail histograms for the quantile threshold; "iqr": full-range histograms to
    choose IQR thresholds; "fixed": exact intersection counts at given thresholds.
    """

    def __init__(self, name: str, mode: str, quantile: float, concepts: int, top_k: int,
                 thresholds: torch.Tensor | None = None, lo_override: torch.Tensor | None = None,
                 raw_lo_override: torch.Tensor | None = None, raise_floor: bool = True) -> None:
        self.name, self.mode, self.quantile, self.k, self.top_k = name, mode, quantile, concepts, top_k
        self.thresholds, self.lo_override, self.raw_lo_override = thresholds, lo_override, raw_lo_override
        self.raise_floor = raise_floor and mode == "quantile"
        self.floor: torch.Tensor | None = None  # values below it are no longer binned (see FLOOR_AFTER)
        self.samples = 0  # samples accumulated so far
        self.ready = False

    def first_batch(self, feat: torch.Tensor, labels: torch.Tensor, images_u8) -> FirstBatch:
        """What this layer's accumulators take from the first batch of a pass (see `FirstBatch`)."""
        n, u, h, w = feat.shape
        fmin, fmax = feat.amin(dim=(0, 2, 3)), feat.amax(dim=(0, 2, 3))
        raw_lo = tail_lo = None
        if self.raw_lo_override is None:  # raw-map tail for q99 (margin TAIL_MARGIN over the 1% it needs)
            raw_lo = top_level(feat.transpose(0, 1).reshape(u, -1), min(1.0, TAIL_MARGIN * 0.01))
        if self.mode == "quantile" and self.lo_override is None:
            up = Upsampler((u, h, w), tuple(labels.shape[1:]), feat.device)
            tail_lo = _first_batch_level(up, feat, min(1.0, TAIL_MARGIN * self.quantile))
        return FirstBatch((u, h, w), tuple(labels.shape[1:]), tuple(images_u8().shape[1:]), fmin, fmax,
                          raw_lo, tail_lo)

    def prepare(self, first: FirstBatch) -> None:
        """Set up the accumulators from a pass's first batch (under torchrun, every process from the
        same one, so that their histograms share their bounds and can be summed)."""
        dev = first.fmin.device
        u, h, w = self.shape = first.map_shape
        self.up = Upsampler(self.shape, first.label_hw, dev)
        self.sum = torch.zeros(u, dtype=torch.float64, device=dev)
        self.raw_count = 0
        self.pixels = 0
        fmin, fmax = first.fmin, first.fmax
        self.raw_min, self.raw_max = fmin.clone(), fmax.clone()
        raw_lo = self.raw_lo_override.to(dev).float() if self.raw_lo_override is not None else first.raw_lo
        self.raw_hist = Histogram(raw_lo, fmax + (fmax - raw_lo) * 0.25, MAX_BINS, 1)
        bins = int(min(MAX_BINS, max(64, 2 ** math.floor(math.log2(max(1, HIST_CELLS // (u * (self.k + 1))))))))
        if self.mode == "fixed":
            assert self.thresholds is not None
            self.lo = self.thresholds.to(dev).float()
            self.inter = torch.zeros(u, self.k, dtype=torch.float64, device=dev)
        else:
            if self.lo_override is not None:
                lo = self.lo_override.to(dev).float()
            elif self.mode == "iqr":
                lo = fmin  # the whole range: every threshold is a candidate
            else:
                lo = first.tail_lo
            self.lo = torch.minimum(lo, fmax)
            self.hist = Histogram(self.lo, fmax + (fmax - self.lo) * 0.25, bins, self.k)
        self.top = _TopK(u, self.top_k, first.image_shape, (h, w), dev)
        self.ready = True

    def update(self, start: int, feat: torch.Tensor, labels: torch.Tensor, images_u8) -> None:
        if not self.ready:
            self.prepare(self.first_batch(feat, labels, images_u8))
        n, u = feat.shape[:2]
        self.pixels += labels[0].numel() * n
        self.samples += n
        self.sum += feat.sum(dim=(0, 2, 3), dtype=torch.float64)
        self.raw_count += n * feat.shape[2] * feat.shape[3]
        peak = feat.amax(dim=(2, 3))  # n x u
        bmax = peak.amax(dim=0)
        self.raw_min = torch.minimum(self.raw_min, feat.amin(dim=(0, 2, 3)))
        self.raw_max = torch.maximum(self.raw_max, bmax)
        if self.mode != "iqr":  # the IQR selection pass reports no q99: its samples only choose levels
            self._count_raw_tail(feat, bmax)
        if self.mode == "fixed":
            self._count_above(feat, labels)
        elif self.mode == "iqr":
            self.hist.grow(bmax)  # bilinear interpolation never exceeds the raw maximum
            self.hist.add_dense(self.up, feat, self.hist.scale_labels(labels))
        else:
            self.hist.grow(bmax)
            lo = self.floor if self.floor is not None else self.lo
            scaled = self.hist.scale_labels(labels)
            for unit, a, d, lab in self.up.values(feat, scaled, lo, self.k * self.hist.label_stride, peak):
                self.hist.add(unit, a, d, self.up.lam, lab)
            self.hist.flush()
            if self.raise_floor and self.floor is None and self.samples >= FLOOR_AFTER:
                self._raise_floor()
        if self.top_k:
            self.top.update(start, feat, peak, images_u8)

    def _count_above(self, feat: torch.Tensor, labels: torch.Tensor) -> None:
        """Add |A_u and S_c| at the fixed thresholds ("fixed" mode) for one batch, exactly.

        The maps are shifted by their thresholds before upsampling (bilinear weights sum to 1, so
        the sign of an upsampled value says whether it exceeds the threshold), every value is
        compared with 0, and the 0/1 masks are summed per concept by a matrix product with the
        labels' one-hot encoding: dense work that beats gathering the candidate segments once the
        chosen levels cover much of the image. Per image the sums are at most its pixel count, exact
        in float32; they are added in float64.
        """
        n, u = feat.shape[:2]
        onehot = torch.nn.functional.one_hot(labels.reshape(n, -1).long(), self.k).float()
        shifted = feat - self.lo.view(1, -1, 1, 1)
        for a, x in self.up.dense(shifted):
            m = x.shape[0]
            above = torch.gt(x, 0, out=torch.empty_like(x)).view(m, u, -1)
            self.inter += torch.bmm(above, onehot[a:a + m]).sum(dim=0, dtype=torch.float64)

    def _count_raw_tail(self, feat: torch.Tensor, bmax: torch.Tensor) -> None:
        """Bin the raw maps' values at or above the q99 tail's lower bound (for the report's q99)."""
        u = feat.shape[1]
        self.raw_hist.grow(bmax)
        flat = feat.reshape(-1)
        pos = (feat >= self.raw_hist.lo32.view(1, -1, 1, 1)).view(-1).nonzero().squeeze(1)
        unit = torch.div(pos, feat.shape[2] * feat.shape[3], rounding_mode="floor") % u
        self.raw_hist.add(unit, flat.index_select(0, pos)[:, None], None, None, torch.zeros_like(pos)[:, None])
        self.raw_hist.flush()

    def combine(self) -> None:
        """Sum every process's state into this one (a collective under torchrun; a no-op alone):
        counts and sums are added, extremes reduced, histograms merged (`Histogram.combine`), the
        floor is the highest any process raised, and the top k are those of all the samples."""
        if not distributed.active():
            return
        counts = torch.tensor([self.pixels, self.samples, self.raw_count], dtype=torch.long, device=self.sum.device)
        self.pixels, self.samples, self.raw_count = distributed.all_reduce_sum(counts).tolist()
        distributed.all_reduce_sum(self.sum)
        distributed.all_reduce_min(self.raw_min)
        distributed.all_reduce_max(self.raw_max)
        self.raw_hist.combine()
        if self.mode == "fixed":
            distributed.all_reduce_sum(self.inter)
        else:
            self.hist.combine()
        if self.raise_floor:  # floor_ok then checks the threshold against every process's floor
            floor = self.floor if self.floor is not None else torch.full_like(self.lo, -math.inf)
            floor = distributed.all_reduce_max(floor.clone())
            self.floor = None if bool(torch.isinf(floor).all()) else floor
        self.top.combine()

    def _raise_floor(self) -> None:
        """Stop binning values below the level exceeded by FLOOR_MARGIN * quantile of those counted so
        far, snapped down to a bin edge. Counts above the floor stay complete; `finish_layer` checks that
        the threshold lies above it (else the layer is redone without a floor)."""
        h = self.hist
        t, ok = h.level(FLOOR_MARGIN * self.quantile * self.pixels)
        edge = h.lo + torch.floor(((t - h.lo) / h.width).clamp_min(0)) * h.width
        self.floor = torch.where(ok, torch.maximum(h.lo, edge), h.lo).float()

    def floor_ok(self, t: torch.Tensor) -> torch.Tensor:
        """Per unit: does threshold t lie in bins that are complete (at or above the floor's next edge)?"""
        if self.floor is None:
            return torch.ones_like(t, dtype=torch.bool)
        h = self.hist
        edge = h.lo + torch.ceil(((self.floor.double() - h.lo) / h.width).clamp_min(0)) * h.width
        return (t >= edge) | (self.floor.double() <= h.lo)

    def raw_stats(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(mean, q99, ok) of the raw feature maps; ok is False where the q99 tail was too short."""
        mean = (self.sum / max(1, self.raw_count)).float()
        q99, ok = self.raw_hist.level(0.01 * self.raw_count)
        q99 = q99.clamp(self.raw_min.double(), self.raw_max.double())
        return mean.cpu(), q99.float().cpu(), ok.cpu()

    def exact_counts(self) -> torch.Tensor:
        """|A_u and S_c| (units x concepts) counted exactly in "fixed" mode."""
        return self.inter


def _first_batch_level(up: Upsampler, feat: torch.Tensor, top: float) -> torch.Tensor:
    """Per unit, the level exceeded by a fraction `top` of the first batch's upsampled values
    (on a strided subsample of at most CHUNK values in all)."""
    n, u = feat.shape[:2]
    p = up.hs * up.ws
    stride = max(1, math.ceil(n * p * u / CHUNK))
    parts = [v.reshape(v.shape[0], u, p).transpose(0, 1).reshape(u, -1)[:, ::stride] for _, v in up.dense(feat)]
    return top_level(torch.cat(parts, dim=1), top)


def iqr_choice(s: LayerState, totals: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(thresholds, concepts) per unit from an "iqr" selection pass. A unit with no allowed pair
    gets concept -1 and its maximum as threshold: an empty mask, so it matches nothing."""
    t, concept, _ = s.hist.best_iqr(float(s.pixels), totals)
    t = torch.where(concept >= 0, t, s.raw_max.double())
    return t.float().cpu(), concept.cpu()


def finish_layer(s: LayerState, totals: torch.Tensor, concepts: list[str],
                 min_iou: float) -> LayerDissection | LayerState:
    """The layer's dissection from its accumulators, or a state to redo the layer with lower
    histogram bounds where a tail turned out too short.

    IoU = |A and S| / (|A| + |S| - |A and S|) with |A_u| = sum over concepts of |A_u and S_c| (every
    pixel has one concept) and |S_c| the concept's pixel count.
    """
    mean, q99, raw_ok = s.raw_stats()
    if s.mode == "fixed":
        t, ok = s.lo.double(), torch.ones_like(raw_ok)
    else:
        t, ok = s.hist.level(s.quantile * s.pixels)
        ok = ok.cpu()
    floor_ok = s.floor_ok(t).cpu() if s.mode == "quantile" else torch.ones_like(raw_ok)
    if not bool(ok.all()) or not bool(raw_ok.all()) or not bool(floor_ok.all()):
        lo = None if s.mode == "fixed" else torch.where(ok, s.lo.cpu(), s.raw_min.cpu())
        raw_lo = torch.where(raw_ok, s.raw_hist.lo32.cpu(), s.raw_min.cpu())
        return LayerState(s.name, s.mode, s.quantile, s.k, s.top_k, thresholds=s.thresholds, lo_override=lo,
                          raw_lo_override=raw_lo, raise_floor=False)
    if s.mode == "fixed":
        inter = s.exact_counts().double()
    else:
        t = t.clamp(s.raw_min.double(), s.raw_max.double())  # bilinear values lie within the raw range
        inter = s.hist.above(t)
    area = inter.sum(dim=1, keepdim=True)
    union = area + totals.double().to(inter.device)[None] - inter
    iou = torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(union))
    top = s.top
    if s.top_k:
        top.sort()
    valid = top.index >= 0
    examples = Examples(images=top.images.cpu(), maps=top.maps.cpu()) if s.top_k else None
    return LayerDissection(name=s.name, concepts=list(concepts), threshold=t.float().cpu(), iou=iou.float().cpu(),
                           mean=mean, q99=q99, min_iou=min_iou, shape=s.shape,
                           top_samples=top.index.cpu(), top_values=torch.where(valid, top.values, 0).float().cpu(),
                           examples=examples)
