"""gantools.distributed: a real two-process gloo group on 127.0.0.1, and the one-process no-op world."""

from __future__ import annotations

import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from gantools import distributed as dist_util
from gantools.distributed import World


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _enter(rank: int, size: int, port: int) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)


def run_world(fn, size: int = 2, *args) -> None:
    """Run fn(rank, size, *args) in `size` spawned processes that form a gloo group (as torchrun would)."""
    mp.spawn(_worker, args=(size, free_port(), fn, args), nprocs=size, join=True)


def _worker(rank: int, size: int, port: int, fn, args) -> None:
    _enter(rank, size, port)
    try:
        fn(rank, size, *args)
    finally:
        dist_util.stop()


def _primitives(rank: int, size: int, out_dir: str) -> None:
    w = dist_util.start(torch.device("cpu"))
    assert (w.rank, w.size, w.is_main) == (rank, size, rank == 0)
    total = dist_util.all_reduce_sum(torch.tensor([float(rank + 1)]))
    top = dist_util.all_reduce_max(torch.tensor([float(rank)]))
    gathered = dist_util.gather_objects({"rank": rank})
    chosen = dist_util.broadcast_object("from rank 0" if rank == 0 else None)
    torch.save({"total": total.item(), "top": top.item(), "gathered": gathered, "chosen": chosen},
               os.path.join(out_dir, f"rank{rank}.pt"))


def test_two_process_group_sums_gathers_and_broadcasts(tmp_path):
    run_world(_primitives, 2, str(tmp_path))
    for rank in range(2):
        got = torch.load(tmp_path / f"rank{rank}.pt", weights_only=True)
        assert got == {"total": 3.0, "top": 1.0, "gathered": [{"rank": 0}, {"rank": 1}], "chosen": "from rank 0"}


def test_alone_every_helper_is_a_no_op(monkeypatch):
    for key in dist_util.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert not dist_util.launched() and dist_util.world() == World()
    assert dist_util.start() == World()
    t = torch.tensor([2.0])
    assert dist_util.all_reduce_sum(t) is t and t.item() == 2.0
    assert dist_util.gather_objects(5) == [5] and dist_util.broadcast_object(7) == 7


@pytest.mark.parametrize("n,size", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_are_contiguous_disjoint_and_cover_everything(n, size):
    shards = [World(r, size).shard(n) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_bad_launcher_environment_is_one_line_error(monkeypatch):
    from gantools.utils import GantoolsError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(GantoolsError, match="outside WORLD_SIZE"):
        dist_util.world()
