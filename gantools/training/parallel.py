"""Data-parallel training under torchrun: what a run on several processes does differently.

Each process holds a replica of G, D and their optimisers, and trains on its own share of every
global batch (`BatchStream` deals each batch out by rank from one seeded order). After every backward
pass the gradients are averaged over the processes (`distributed.average_gradients`): what
DistributedDataParallel does, done by hand, because a GAN step calls D twice before one backward and
the lazy R1 penalty differentiates D twice, which DDP's reducer does not allow. Equal gradients and
equal Adam updates keep the replicas equal; the buffers (BatchNorm's running statistics, spectral
norm's power-iteration vectors) are broadcast from rank 0 after every step, as DDP does. With sync_bn
(CUDA only), BatchNorm normalises with the global batch's statistics. The EMA generator is a copy of
G's weights with plain BatchNorm, so recomputing its statistics for a grid needs no other process.

Each process draws its noise and DiffAugment's transforms from its own seeded streams; a checkpoint
keeps every process's random state, so a run resumes exactly, on as many processes as it had (another
number is refused: the global batch and the data order depend on it). Rank 0 alone writes files.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .. import distributed
from ..distributed import World
from ..utils import GantoolsError, ProgressCallback, notice
from .batches import derived_seed
from .checkpoint import rng_state
from .config import TrainConfig

TORCH_STREAM = 5  # derived_seed(seed, TORCH_STREAM, rank) seeds each process's global torch RNG


def rank_seed(seed: int, stream: int, world: World) -> int:
    """The seed of one of the run's random streams: alone the run's own (as always), under torchrun
    each process's own, so that the processes draw different noise."""
    return derived_seed(seed, stream, world.rank) if world.distributed else derived_seed(seed, stream)


def seed_process(seed: int, world: World) -> None:
    """Under torchrun, give each process its own global torch random stream (after the networks are
    built alike from the run's seed); alone, leave it as it is."""
    if world.distributed:
        torch.manual_seed(rank_seed(seed, TORCH_STREAM, world))


def settle_sync_bn(config: TrainConfig, world: World, device: torch.device,
                   progress: ProgressCallback | None) -> TrainConfig:
    """The config with sync_bn decided: unset means on under torchrun; on the CPU it is off (torch's
    SyncBatchNorm is CUDA-only), with a notice. A run of one process keeps what it was given."""
    if not world.distributed:
        return config
    wanted = True if config.sync_bn is None else config.sync_bn
    if wanted and device.type != "cuda":
        notice(progress, "sync_bn: torch's SyncBatchNorm runs on CUDA only; on the CPU each process's BatchNorm "
                         "uses its own batch's statistics (the run records sync_bn false)")
        wanted = False
    return config if wanted == config.sync_bn else dataclasses.replace(config, sync_bn=wanted)


def synchronise_batchnorm(G: nn.Module, D: nn.Module, config: TrainConfig,
                          progress: ProgressCallback | None) -> tuple[nn.Module, nn.Module]:
    """G and D with SyncBatchNorm for BatchNorm when config.sync_bn says so (same parameters, same
    state-dict keys). D keeps its own with an R1 penalty, which differentiates D twice: SyncBatchNorm's
    backward cannot be differentiated."""
    if not config.sync_bn:
        return G, D
    G = nn.SyncBatchNorm.convert_sync_batchnorm(G)
    if config.r1 > 0 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in D.modules()):
        notice(progress, "sync_bn: the R1 penalty differentiates D twice, which SyncBatchNorm cannot; "
                         "D's BatchNorm stays per process")
        return G, D
    return G, nn.SyncBatchNorm.convert_sync_batchnorm(D)


def processes(n: int) -> str:
    """'1 process', '2 processes'."""
    return f"{n} process" + ("" if n == 1 else "es")


def check_world_size(ckpt: dict[str, Any], world: World, run_dir: str | Path) -> None:
    """Refuse to resume a run on another number of processes than it was trained on."""
    stored = int(ckpt.get("world_size", 1))
    if stored != world.size:
        raise GantoolsError(f"{run_dir} was trained on {processes(stored)} and cannot resume on "
                            f"{processes(world.size)}: its global batch and data order depend on the number "
                            f"of processes; resume it on {stored}")


def rank_rng(ckpt: dict[str, Any], world: World) -> dict[str, Any]:
    """This process's random state in a checkpoint (`checkpoint_fields`), or the run's alone."""
    states = ckpt.get("rng_ranks")
    return states[world.rank] if world.distributed and states else ckpt["rng"]


def checkpoint_fields(noise_gen: torch.Generator, world: World) -> dict[str, Any]:
    """What a checkpoint adds under torchrun: the number of processes and every process's random
    state (gathered: every process must call this). Alone, nothing: the format stays as it was."""
    if not world.distributed:
        return {}
    return {"world_size": world.size, "rng_ranks": distributed.gather_objects(rng_state(noise_gen))}


def sync_buffers(*modules: nn.Module | None) -> None:
    """Every process takes rank 0's buffers (BatchNorm statistics, spectral-norm vectors), as DDP does."""
    if distributed.active():
        distributed.broadcast_tensors([b for m in modules if m is not None for b in m.buffers()])


def mean_over_processes(sums: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The logged metrics averaged over the processes (each process's window holds the same steps)."""
    if not distributed.active() or not sums:
        return sums
    keys = sorted(sums)
    stacked = torch.stack([sums[k].detach().float() for k in keys])
    distributed.all_reduce_sum(stacked).div_(distributed.world().size)
    return dict(zip(keys, stacked.unbind()))


__all__ = ["TORCH_STREAM", "check_world_size", "checkpoint_fields", "mean_over_processes", "processes", "rank_rng",
           "rank_seed", "seed_process", "settle_sync_bn", "sync_buffers", "synchronise_batchnorm"]
