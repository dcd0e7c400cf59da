"""torch.distributed under `torchrun`: detecting the launch, the process group, shards and reductions.

Without torchrun (no WORLD_SIZE in the environment) every helper here is a no-op that describes a
world of one process, so library code calls them unconditionally and behaves exactly as before.
Under torchrun, `start(device)` joins the process group (gloo for CPU tensors, NCCL for CUDA) and
the other helpers shard work by rank and combine results; only the main process (rank 0) reports
progress and writes files. What one process must decide for all (a run directory, a file only it
reads) goes through `on_main`, so that every rank gets the same value or the same error. When a
process of the job dies, the collectives of the others raise `ProcessLost` (a GantoolsError) instead
of the backend's RuntimeError.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Iterator, Sequence, TypeVar

from .utils import GantoolsError

if TYPE_CHECKING:
    import torch

T = TypeVar("T")
ENV_KEYS = ("WORLD_SIZE", "RANK", "LOCAL_RANK")


class ProcessLost(GantoolsError):
    """Another process of the job stopped (killed, crashed) while this one waited for it."""


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
        """More than one process."""
        return self.size > 1

    def shard(self, n: int) -> range:
        """This rank's share of items 0..n-1: a contiguous block, sizes differing by at most one.

        Contiguous blocks (rather than a stride) keep each rank's batches in the order a single
        process would see them, so per-item results are bit-identical to a one-process run.
        """
        base, extra = divmod(n, self.size)
        start = self.rank * base + min(self.rank, extra)
        return range(start, start + base + (1 if self.rank < extra else 0))

    def shard_batches(self, n: int, batch_size: int) -> range:
        """This rank's share of items 0..n-1 in whole batches: the batches of `batch_size` that one
        process would run (the last possibly short), dealt out in contiguous blocks.

        Every batch then holds exactly the items it holds in a one-process run, so results that
        depend on a batch's composition (floating point in batched kernels) stay bit-identical.
        """
        batches = self.shard(-(-n // batch_size) if n > 0 else 0)
        return range(min(n, batches.start * batch_size), min(n, batches.stop * batch_size))


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


def local_processes() -> int:
    """How many processes of the job share this machine (torchrun's LOCAL_WORLD_SIZE; 1 alone): a
    process that sizes its threads by the machine's cores should share them."""
    if not launched():
        return 1
    try:
        return max(1, int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    except ValueError:
        return 1


def start(device: torch.device | None = None) -> World:
    """Join the process group once (idempotent); returns the world. A no-op without torchrun.

    Where CUDA is present each process takes the GPU of its local rank (so 'cuda' means 'my GPU'),
    and the group has both backends: gloo for CPU tensors and objects, NCCL for CUDA tensors; so a
    command can join before it knows its device. `device` is accepted for callers that know it.
    """
    import torch
    import torch.distributed as dist

    w = world()
    if not w.distributed or (dist.is_available() and dist.is_initialized()):
        return w
    if not dist.is_available():
        raise GantoolsError("this torch build has no torch.distributed; run without torchrun")
    cuda = torch.cuda.is_available() and (device is None or device.type == "cuda")
    if cuda:
        torch.cuda.set_device(w.local_rank)
    nccl = torch.cuda.is_available() and dist.is_nccl_available()
    # torch._dynamo (torch.optim imports it) keeps references to a group that exists when it is first
    # imported (torch 2.14); destroy_process_group then cannot join gloo's threads, and a process whose last
    # collective is still being released by one of them aborts at exit. Imported first, it never sees the group.
    import torch._dynamo  # noqa: F401
    dist.init_process_group(backend="cpu:gloo,cuda:nccl" if nccl else "gloo")
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


@contextlib.contextmanager
def _collective() -> Iterator[None]:
    """Turn the backend's error for a peer that went away into ProcessLost."""
    try:
        yield
    except RuntimeError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ProcessLost(f"another process of the job stopped ({first})") from e


def _all_reduce(tensor: torch.Tensor, op: str) -> torch.Tensor:
    if active():
        import torch.distributed as dist

        with _collective():
            dist.all_reduce(tensor, op=getattr(dist.ReduceOp, op))
    return tensor


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes, in place (returned for chaining); a no-op alone.

    Under NCCL the tensor must live on this process's GPU; under gloo, on the CPU.
    """
    return _all_reduce(tensor, "SUM")


def all_reduce_max(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise maximum over all processes, in place (see `all_reduce_sum`)."""
    return _all_reduce(tensor, "MAX")


def all_reduce_min(tensor: torch.Tensor) -> torch.Tensor:
    """Elementwise minimum over all processes, in place (see `all_reduce_sum`)."""
    return _all_reduce(tensor, "MIN")


def gather_objects(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order (a list of one alone)."""
    if not active():
        return [obj]
    import torch.distributed as dist

    out: list[Any] = [None] * dist.get_world_size()
    with _collective():
        dist.all_gather_object(out, obj)
    return out


def broadcast_object(obj: Any, src: int = 0) -> Any:
    """Rank `src`'s `obj` on every rank."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj]
    with _collective():
        dist.broadcast_object_list(box, src=src)
    return box[0]


def broadcast_tensors(tensors: Sequence[torch.Tensor], src: int = 0) -> None:
    """Overwrite `tensors` (in place) with rank `src`'s, on every rank; a no-op alone. They travel
    in one flat tensor per dtype and device."""
    if not active():
        return
    import torch.distributed as dist

    for group in _by_kind(tensors):
        flat = _cat([t.reshape(-1) for t in group])
        with _collective():
            dist.broadcast(flat, src=src)
        _unflatten(flat, group)


def average_gradients(params: Sequence[torch.Tensor]) -> None:
    """Replace each parameter's gradient by its mean over all processes (a no-op alone).

    What DistributedDataParallel does after a backward pass, done by hand so that it also holds for
    a module called several times before one backward, or differentiated twice (a GAN's D, the R1
    penalty). Every process must pass the same parameters with gradients, in the same order; they
    travel in one flat tensor per dtype and device.
    """
    if not active():
        return
    size = world().size
    for group in _by_kind([p.grad for p in params if p.grad is not None]):
        flat = _cat([g.reshape(-1) for g in group])
        all_reduce_sum(flat).div_(size)
        _unflatten(flat, group)


def any_process(flag: bool) -> bool:
    """True when `flag` is true on any process (one small all_reduce); `flag` itself alone. For a
    decision every process must take at the same step (stop, or give up on a NaN)."""
    if not active():
        return flag
    import torch

    return bool(all_reduce_max(torch.tensor([1.0 if flag else 0.0])).item() > 0)


def _by_kind(tensors: Sequence[torch.Tensor]) -> list[list[torch.Tensor]]:
    groups: dict[tuple[Any, Any], list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.dtype, t.device), []).append(t)
    return list(groups.values())


def _cat(parts: list[torch.Tensor]) -> torch.Tensor:
    import torch

    return torch.cat(parts)


def _unflatten(flat: torch.Tensor, group: list[torch.Tensor]) -> None:
    offset = 0
    for t in group:
        t.copy_(flat[offset:offset + t.numel()].view_as(t))
        offset += t.numel()


def on_main(fn: Callable[[], T]) -> T:
    """fn() run by rank 0 alone, and its result, or its GantoolsError, handed to every rank.

    For what one process must decide for all (the name of a new run directory, a file only it needs
    to read): every rank returns the same value or raises the same one-line error, so none is left
    waiting in a collective. Alone, simply fn().
    """
    if not active():
        return fn()
    outcome: tuple[bool, Any] | None = None
    if world().is_main:
        try:
            outcome = (True, fn())
        except GantoolsError as e:
            outcome = (False, str(e))
    ok, value = broadcast_object(outcome)
    if not ok:
        raise GantoolsError(value)
    return value


def barrier() -> None:
    """Wait until every process gets here (a no-op alone)."""
    if active():
        import torch.distributed as dist

        with _collective():
            dist.barrier()


def stop() -> None:
    """Leave the process group (the CLI calls this when a command ends)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
