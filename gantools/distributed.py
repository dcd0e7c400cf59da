"""torch.distributed under `torchrun`: detecting the launch, the process group, shards and reductions.

Without torchrun (no WORLD_SIZE in the environment) every helper here is a no-op that describes a
world of one process, so library code calls them unconditionally and behaves exactly as before.
Under torchrun, `start(device)` joins the process group (gloo for CPU tensors, NCCL for CUDA) and
the other helpers shard work by rank and combine results; only the main process (rank 0) reports
progress and writes files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence, TypeVar

from .utils import GantoolsError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


@dataclass(frozen=True)
class World:
    """The processes of one job: this process's rank among `size`, and its rank on its own node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that reports progress and writes files."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.size > 1

    def shard(self, n: int) -> range:
        """This rank's share of items 0..n-1: a contiguous block, sizes differing by at most one.

        Contiguous blocks (rather than a stride) keep each rank's batches in the order a single
        process would see them, so per-item results are bit-identical to a one-process run.
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    def shard_items(self, items: Sequence[T]) -> list[T]:
        return [items[i] for i in self.shard(len(items))]


def launched() -> bool:
    """True under torchrun (or any launcher that sets WORLD_SIZE, RANK and LOCAL_RANK)."""
    return all(k in os.environ for k in ENV_KEYS)


def world() -> World:
    """The world as the launcher describes it (one process when not launched)."""
    if not launched():
        return World()
    try:
        rank, size, local = (int(os.environ[k]) for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK"))
    except ValueError as e:
        raise GantoolsError(f"torchrun's RANK/WORLD_SIZE/LOCAL_RANK are not integers: {e}") from e
    if not 0 <= rank < size:
        raise GantoolsError(f"RANK={rank} is outside WORLD_SIZE={size}")
    return World(rank, size, local)


def backend_for(device: torch.device) -> str:
    """NCCL for CUDA tensors, gloo for CPU tensors."""
    return "nccl" if device.type == "cuda" else "gloo"


def start(device: torch.device | None = None) -> World:
    """Join the process group once (idempotent); returns the world. A no-op without torchrun.

    On CUDA each process takes the GPU of its local rank, so `device` 'cuda' means 'my GPU'.
    """
    import torch
    import torch.distributed as dist

    w = world()
    if not w.distributed or (dist.is_available() and dist.is_initialized()):
        return w
    if not dist.is_available():
        raise GantoolsError("this torch build has no torch.distributed; run without torchrun")
    device = device or torch.device("cpu")
    if device.type == "cuda":
        torch.cuda.set_device(w.local_rank)
    dist.init_process_group(backend=backend_for(device))
    return w


def local_device(device: torch.device) -> torch.device:
    """Under torchrun a bare 'cuda' means this process's GPU (its local rank)."""
    import torch

    w = world()
    if device.type == "cuda" and w.distributed and device.index is None:
        return torch.device("cuda", w.local_rank)
    return device


def active() -> bool:
    """True when a process group of more than one process is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (returned for chaining); a no-op alone.

    Under NCCL the tensor must live on this process's GPU; under gloo, on the CPU.
    """
    if active():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return tensor


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return tensor


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    if active():
        import torch.distributed as dist

        dist.all_reduce(tensor, op=dist.ReduceOp.MIN)
    return tensor


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one alone)."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def barrier() -> None:
    if active():
        import torch.distributed as dist

        dist.barrier()


def stop() -> None:
    """Leave the process group (the CLI calls this when a command ends)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
