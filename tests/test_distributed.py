"""gantools.distributed: a real two-process gloo group on 127.0.0.1, and the one-process no-op world.

One group (the `world` fixture) runs every distributed job once, as torchrun would run the commands:
the primitives, dissection, inversion and training; each rank writes what it got to a folder, and
the tests compare that with the same work done here, in one process (on one thread, as the ranks run).
Starting a group costs seconds (each process imports torch), so it is started once.
"""

from __future__ import annotations

import contextlib
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from gantools import distributed as dist_util
from gantools.distributed import World
from gantools.utils import GantoolsError


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


@contextlib.contextmanager
def one_thread():
    """Run the one-process reference on one thread, as each rank does (batched kernels then match)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


# ---------------------------------------------------------------------------------------------
# The work: a tiny seeded model, and what each job runs (the same calls in the group and alone)


def save_tiny_model(path: Path) -> Path:
    """A 16 px DCGAN whose images vary with z: BatchNorm statistics from a batch of its own
    activations, output pre-activations scaled to unit std."""
    from gantools.models import Discriminator, Generator, ModelConfig, save_model

    config = ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8)
    torch.manual_seed(1)
    g, d = Generator(config), Discriminator(config)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
            m.reset_running_stats()
    g.train()
    with torch.no_grad():
        g(torch.randn(256, config.nz))
        g.eval()
        x = torch.randn(128, config.nz).view(128, -1, 1, 1)
        for name in g.layer_names:
            x = getattr(g, name)(x)
        g.output[0].weight.div_(g.output[0](x).std())
    return save_model(path, g, d.eval())


def quadrant_segmenter(images: torch.Tensor) -> torch.Tensor:
    """4 concepts from the colours of the image: (red > green) + 2 * (blue > 0)."""
    return (images[:, 0] > images[:, 1]).long() + 2 * (images[:, 2] > 0).long()


quadrant_segmenter.concepts = ["c0", "c1", "c2", "c3"]

# n and batch sizes chosen so that the ranks hold unequal numbers of batches (the last one short),
# every rank raises its histogram floor (after 256 samples) and widens its bins on its own.
DISSECTIONS = {"quantile": dict(layers=[1, 2], n=650, batch_size=50),
               "iqr": dict(layers=[2], n=90, batch_size=16, threshold="iqr")}


def dissect_record(model_path: str, **kw) -> dict[str, dict[str, torch.Tensor]]:
    from gantools.dissection import dissect
    from gantools.models import load_model

    result = dissect(load_model(model_path, "cpu"), segmenter=quadrant_segmenter, device="cpu", top_k=3, **kw)
    return {name: {"threshold": layer.threshold, "iou": layer.iou, "mean": layer.mean, "q99": layer.q99,
                   "top_samples": layer.top_samples, "top_values": layer.top_values,
                   "images": layer.examples.images, "maps": layer.examples.maps}
            for name, layer in result.layers.items()}


def invert_record(model_path: str, out_dir: Path) -> dict:
    """Invert 5 planted images in batches of 2 (so the ranks hold 2 and 1 batches), scored against
    the clean images, each batch's files written as the CLI writes them."""
    from gantools.models import load_model
    from gantools.restoration.inversion import invert, save_outputs

    gan = load_model(model_path, "cpu")
    with torch.no_grad():
        clean = gan.generator(torch.randn(5, 8, generator=torch.Generator().manual_seed(3)))
    noisy = (clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(4))).clamp(-1, 1)
    result = invert(gan, noisy, "denoise", noise_sigma=0.1, steps=4, restarts=2, batch_size=2, encoder=None,
                    target=clean, seed=5, on_batch=lambda part: save_outputs(part, out_dir))
    return {"names": result.names, "z": result.z, "images": result.images, "history": result.history,
            "metrics": result.metrics, "settings": result.settings}


# ---------------------------------------------------------------------------------------------
# What each rank runs


def _primitives(rank: int, size: int, out: Path) -> None:
    w = dist_util.start(torch.device("cpu"))
    assert (w.rank, w.size, w.is_main) == (rank, size, rank == 0)
    total = dist_util.all_reduce_sum(torch.tensor([float(rank + 1)]))
    top = dist_util.all_reduce_max(torch.tensor([float(rank)]))
    gathered = dist_util.gather_objects({"rank": rank})
    chosen = dist_util.broadcast_object("from rank 0" if rank == 0 else None)
    decided = dist_util.on_main(lambda: f"decided by rank {rank}")
    try:
        dist_util.on_main(lambda: (_ for _ in ()).throw(GantoolsError("rank 0 refused")))
        refused = None
    except GantoolsError as e:
        refused = str(e)
    torch.save({"total": total.item(), "top": top.item(), "gathered": gathered, "chosen": chosen,
                "decided": decided, "refused": refused}, out / f"primitives{rank}.pt")


def _jobs(rank: int, size: int, out_dir: str, model_path: str) -> None:
    out = Path(out_dir)
    _primitives(rank, size, out)
    for name, kw in DISSECTIONS.items():
        torch.save(dissect_record(model_path, **kw), out / f"dissect-{name}{rank}.pt")
    torch.save(invert_record(model_path, out / "inverted"), out / f"invert{rank}.pt")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The folder where each rank of one two-process group wrote what its jobs got."""
    out = tmp_path_factory.mktemp("world")
    model = save_tiny_model(out / "tiny.safetensors")
    run_world(_jobs, 2, str(out), str(model))
    return out


# ---------------------------------------------------------------------------------------------
# The primitives


def test_two_process_group_sums_gathers_and_broadcasts(world):
    for rank in range(2):
        got = torch.load(world / f"primitives{rank}.pt", weights_only=True)
        assert got == {"total": 3.0, "top": 1.0, "gathered": [{"rank": 0}, {"rank": 1}], "chosen": "from rank 0",
                       "decided": "decided by rank 0", "refused": "rank 0 refused"}


def test_alone_every_helper_is_a_no_op(monkeypatch):
    for key in dist_util.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    assert not dist_util.launched() and dist_util.world() == World()
    assert dist_util.start() == World()
    t = torch.tensor([2.0])
    assert dist_util.all_reduce_sum(t) is t and t.item() == 2.0
    assert dist_util.gather_objects(5) == [5] and dist_util.broadcast_object(7) == 7
    assert dist_util.on_main(lambda: 3) == 3
    p = torch.nn.Parameter(torch.ones(2))
    p.grad = torch.full((2,), 4.0)
    dist_util.average_gradients([p])
    assert p.grad.tolist() == [4.0, 4.0]


@pytest.mark.parametrize("n,size", [(10, 3), (2, 4), (0, 2), (7, 1)])
def test_shards_are_contiguous_disjoint_and_cover_everything(n, size):
    shards = [World(r, size).shard(n) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    assert max(map(len, shards)) - min(map(len, shards)) <= 1


@pytest.mark.parametrize("n,batch,size", [(10, 3, 2), (650, 50, 2), (5, 2, 3), (3, 4, 2), (0, 4, 2)])
def test_batch_shards_hold_whole_batches_of_a_one_process_run(n, batch, size):
    shards = [World(r, size).shard_batches(n, batch) for r in range(size)]
    assert [i for s in shards for i in s] == list(range(n))
    for s in shards:  # each starts at a batch boundary, so its batches are the one-process batches
        assert s.start % batch == 0 or s.start == n


def test_bad_launcher_environment_is_one_line_error(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "5")
    monkeypatch.setenv("LOCAL_RANK", "0")
    with pytest.raises(GantoolsError, match="outside WORLD_SIZE"):
        dist_util.world()


# ---------------------------------------------------------------------------------------------
# Dissection: the report of two processes is the report of one


@pytest.mark.parametrize("name", list(DISSECTIONS))
def test_distributed_dissection_equals_one_process(world, name):
    with one_thread():
        alone = dissect_record(str(world / "tiny.safetensors"), **DISSECTIONS[name])
    for rank in range(2):  # every rank ends with the whole result (rank 0 writes it)
        got = torch.load(world / f"dissect-{name}{rank}.pt", weights_only=True)
        assert got.keys() == alone.keys()
        for layer, fields in alone.items():
            for key in ("threshold", "iou", "mean", "q99", "top_values"):
                assert torch.allclose(got[layer][key], fields[key], rtol=0, atol=1e-6), (layer, key)
            # the same top samples, with their images and maps, bit for bit
            for key in ("top_samples", "images", "maps"):
                assert torch.equal(got[layer][key], fields[key]), (layer, key)
        assert any(bool((f["iou"] > 0).any()) for f in alone.values())


# ---------------------------------------------------------------------------------------------
# Inversion: each rank writes its batches; the files are those of one process


def test_distributed_inversion_equals_one_process(world, tmp_path):
    with one_thread():
        alone = invert_record(str(world / "tiny.safetensors"), tmp_path / "alone")
    for rank in range(2):  # every rank returns the whole result, gathered
        got = torch.load(world / f"invert{rank}.pt", weights_only=False)
        assert got["names"] == alone["names"] and got["metrics"] == alone["metrics"]
        assert got["settings"] == alone["settings"]
        for key in ("z", "images", "history"):
            assert torch.equal(got[key], alone[key]), key
    files = sorted(p.name for p in (tmp_path / "alone").iterdir())
    assert files == sorted(p.name for p in (world / "inverted").iterdir()) and len(files) == 15
    for name in files:
        ours, theirs = (tmp_path / "alone" / name), (world / "inverted" / name)
        if name.endswith(".png"):
            assert ours.read_bytes() == theirs.read_bytes(), name
        else:  # torch.save names its zip records after the (random) temporary file: compare the contents
            a, b = torch.load(ours, weights_only=True), torch.load(theirs, weights_only=True)
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) if torch.is_tensor(a[k]) else a[k] == b[k]
                                                for k in a), name
