"""How many CPU threads the dissection's bookkeeping uses (the accumulators and the report's drawing).

They run many medium-sized elementwise ops. On a CPU shared with other processes, each
multi-threaded op waits for descheduled OpenMP workers (we measured 5-20 ms per op under load,
against 0.03 ms single-threaded), while G's large convolutions amortise that. So that work runs on
BOOKKEEPING_THREADS threads, and G and the segmenter keep theirs.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch

BOOKKEEPING_THREADS: int | None = 1  # None: leave torch's thread count alone


@contextlib.contextmanager
def bookkeeping_threads(device: torch.device | str = "cpu") -> Iterator[None]:
    """Run the block on at most BOOKKEEPING_THREADS intra-op threads when `device` is the CPU
    (torch's setting is per thread, and restored afterwards)."""
    if torch.device(device).type != "cpu" or BOOKKEEPING_THREADS is None:
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(min(before, BOOKKEEPING_THREADS))
    try:
        yield
    finally:
        torch.set_num_threads(before)
