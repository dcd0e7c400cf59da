"""gantools.distributed: a real two-process gloo group on 127.0.0.1, and the one-process no-op world.

One group (the `world` fixture) runs every distributed job once, as torchrun would run the commands:
the primitives, dissection, inversion and training; each rank writes what it got to a folder, and
the tests compare that with the same work done here, in one process (on one thread, as the ranks run).
Starting a group costs seconds (each process imports torch), so it is started once.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
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
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(size),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
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
# "redo": a floor raised after 16 samples at the top 0.5% lies above the top-1% threshold, so the
# layer is measured again (from the same shared first batch) without one.
DISSECTIONS = {"quantile": dict(layers=[1, 2], n=650, batch_size=50),
               "iqr": dict(layers=[2], n=90, batch_size=16, threshold="iqr"),
               "redo": dict(layers=[2], n=64, batch_size=16, seed=4, floor=(16, 0.5))}


def dissect_record(model_path: str, floor: tuple[int, float] | None = None, **kw) -> dict[str, dict[str, torch.Tensor]]:
    from gantools.dissection import accumulate, dissect
    from gantools.models import load_model

    saved = accumulate.FLOOR_AFTER, accumulate.FLOOR_MARGIN
    if floor is not None:
        accumulate.FLOOR_AFTER, accumulate.FLOOR_MARGIN = floor
    notes: list[str] = []
    try:
        result = dissect(load_model(model_path, "cpu"), segmenter=quadrant_segmenter, device="cpu", top_k=3,
                         progress=lambda p: notes.append(p.message) if p.message else None, **kw)
    finally:
        accumulate.FLOOR_AFTER, accumulate.FLOOR_MARGIN = saved
    layers = {name: {"threshold": layer.threshold, "iou": layer.iou, "mean": layer.mean, "q99": layer.q99,
                     "top_samples": layer.top_samples, "top_values": layer.top_values,
                     "images": layer.examples.images, "maps": layer.examples.maps}
              for name, layer in result.layers.items()}
    return {"layers": layers, "redone": any("again" in m for m in notes)}


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


def save_easy_folder(root: Path) -> Path:
    """24 images of a bright square at a random place on a dark background, 16x16."""
    import numpy as np
    from PIL import Image

    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(24):
        arr = np.full((16, 16, 3), 30, np.uint8)
        y, x = rng.integers(2, 10, 2)
        arr[y:y + 6, x:x + 6] = (220, 200, 40)
        Image.fromarray(arr).save(root / f"{i:02d}.png")
    return root


def train_config(data: Path, out: Path, **kw):
    from gantools.training import TrainConfig

    base = dict(data=str(data), image_size=16, nc=3, nz=8, ngf=8, ndf=8, batch_size=4, steps=6, log_every=2,
                sample_every=3, checkpoint_every=0, seed=1, out=str(out))
    return TrainConfig(**{**base, **kw})


# "batch": BatchNorm D, EMA, trained 6 steps in one go and 3 + 3 with a resume; "stable": spectral-norm
# D, hinge loss, the lazy R1 penalty (double backward, at step 0) and DiffAugment (each rank's own RNG)
# on an adaptive share of the images (its counts summed over the ranks: one adjustment in 4 steps).
TRAININGS = {"batch": dict(ema=0.9, checkpoint_every=3),
             "stable": dict(recipe="stable", r1=1.0, augment="translation", augment_p=0.5, augment_target=0.6,
                            steps=4)}
WRITERS = ("torch_save", "write_json", "write_text", "save_grid", "export", "plot_losses")


def _train_and_keep_replicas(rank: int, out: Path, name: str, config=None, **kw) -> None:
    """train(), with this rank's replica (and every file it wrote) kept for the tests to compare."""
    from gantools.training import loop, train

    writes: list[str] = []
    saved = {w: getattr(loop, w) for w in WRITERS}
    finish = loop._Trainer._finish

    def counted(writer):
        def call(*args, **kwargs):
            writes.append(writer)
            return saved[writer](*args, **kwargs)
        return call

    def keep(self, interrupted):
        # (the average's BatchNorm statistics are recomputed from nothing by rank 0 for its grids: its weights)
        average = {k: p.detach() for k, p in self.G_ema.named_parameters()} if self.G_ema else None
        replica = {"G": self.G.state_dict(), "D": self.D.state_dict(), "opt_g": self.opt_g.state_dict(),
                   "opt_d": self.opt_d.state_dict(), "G_ema": average}
        torch.save(replica, out / f"replica-{name}{rank}.pt")
        return finish(self, interrupted)

    notes: list[str] = []
    for w in WRITERS:
        setattr(loop, w, counted(w))
    loop._Trainer._finish = keep
    try:
        result = train(config, progress=lambda p: notes.append(p.message) if p.message else None, **kw)
    finally:
        for w in WRITERS:
            setattr(loop, w, saved[w])
        loop._Trainer._finish = finish
    torch.save({"step": result.step, "writes": writes, "notes": notes}, out / f"train-{name}{rank}.pt")


def evaluate_record(model_path: str, data: Path) -> dict:
    """FID, KID and precision/recall of 40 samples in batches of 16 (so the ranks hold 2 and 1)."""
    from gantools.metrics import evaluate

    result = evaluate(model_path, data=data, n=40, metrics="fid,kid,pr", extractor="random", batch_size=16,
                      kid_subsets=5, kid_subset_size=10, use_cache=False, device="cpu")
    return {"metrics": result.metrics, "floor": result.floor, "n_real": result.n_real}


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
    torch.save(evaluate_record(model_path, out / "easy"), out / f"evaluate{rank}.pt")
    for name, kw in TRAININGS.items():
        _train_and_keep_replicas(rank, out, name, train_config(out / "easy", out / f"run-{name}", **kw))
    # the same run as "batch", stopped at step 3 and resumed to 6
    _train_and_keep_replicas(rank, out, "first-half", train_config(out / "easy", out / "run-split",
                                                                   **{**TRAININGS["batch"], "steps": 3}))
    _train_and_keep_replicas(rank, out, "resumed", resume=out / "run-split", steps=6)
    dist_util.stop()
    torch.save({"threads": gloo_threads()}, out / f"left{rank}.pt")


def gloo_threads() -> list[str]:
    """The names of this process's gloo threads (Linux; empty elsewhere)."""
    tasks = Path("/proc/self/task")
    names = [(t / "comm").read_text().strip() for t in tasks.iterdir()] if tasks.is_dir() else []
    return sorted(n for n in names if "gloo" in n)


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> Path:
    """The folder where each rank of one two-process group wrote what its jobs got."""
    out = tmp_path_factory.mktemp("world")
    model = save_tiny_model(out / "tiny.safetensors")
    save_easy_folder(out / "easy")
    run_world(_jobs, 2, str(out), str(model))
    return out


# ---------------------------------------------------------------------------------------------
# The primitives


def test_two_process_group_sums_gathers_and_broadcasts(world):
    for rank in range(2):
        got = torch.load(world / f"primitives{rank}.pt", weights_only=True)
        assert got == {"total": 3.0, "top": 1.0, "gathered": [{"rank": 0}, {"rank": 1}], "chosen": "from rank 0",
                       "decided": "decided by rank 0", "refused": "rank 0 refused"}


def test_leaving_the_group_ends_its_threads(world):
    # A group kept alive after stop() (torch._dynamo, imported after joining, holds one) leaves gloo's
    # threads running into interpreter shutdown, where one releasing a finished collective aborts the process.
    for rank in range(2):
        assert torch.load(world / f"left{rank}.pt", weights_only=True) == {"threads": []}


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
        assert got["layers"].keys() == alone["layers"].keys()
        for layer, fields in alone["layers"].items():
            for key in ("threshold", "iou", "mean", "q99", "top_values"):
                assert torch.allclose(got["layers"][layer][key], fields[key], rtol=0, atol=1e-6), (layer, key)
            # the same top samples, with their images and maps, bit for bit
            for key in ("top_samples", "images", "maps"):
                assert torch.equal(got["layers"][layer][key], fields[key]), (layer, key)
        assert got["redone"] == alone["redone"] == (name == "redo")  # the redo path ran where asked
    assert any(bool((f["iou"] > 0).any()) for f in alone["layers"].values())


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


# ---------------------------------------------------------------------------------------------
# Evaluation: the generated samples are sharded, the scores are one process's


def test_distributed_evaluation_equals_one_process(world):
    with one_thread():
        alone = evaluate_record(str(world / "tiny.safetensors"), world / "easy")
    assert {"fid", "kid", "precision", "recall"} <= alone["metrics"].keys() and alone["n_real"] == 24
    for rank in range(2):
        assert torch.load(world / f"evaluate{rank}.pt", weights_only=False) == alone


# ---------------------------------------------------------------------------------------------
# Training: equal replicas, rank 0 writes, a resume continues exactly, another world size is refused


def _assert_equal_states(a: dict | list, b: dict | list, where: str = "") -> None:
    if isinstance(a, list):
        a, b = dict(enumerate(a)), dict(enumerate(b))
    assert a.keys() == b.keys(), where
    for key in a:
        if isinstance(a[key], (dict, list)):
            _assert_equal_states(a[key], b[key], f"{where}.{key}")
        elif torch.is_tensor(a[key]):
            assert torch.equal(a[key], b[key]), f"{where}.{key}"
        else:
            assert a[key] == b[key], f"{where}.{key}"


@pytest.mark.parametrize("name", list(TRAININGS) + ["resumed"])
def test_distributed_training_keeps_the_replicas_identical(world, name):
    replicas = [torch.load(world / f"replica-{name}{rank}.pt", weights_only=True) for rank in range(2)]
    _assert_equal_states(replicas[0], replicas[1], name)
    done = [torch.load(world / f"train-{name}{rank}.pt", weights_only=True) for rank in range(2)]
    assert done[0]["step"] == done[1]["step"] == (4 if name == "stable" else 6)
    assert done[1]["writes"] == [] and {"torch_save", "write_json", "export"} <= set(done[0]["writes"])
    if name == "stable":  # one adjustment of the augmentation share, from the signs of both ranks' 4 x 4 reals
        from gantools.training import load_checkpoint

        assert abs(load_checkpoint(world / "run-stable")["augment"]["p"] - 0.5) == pytest.approx(32 / 500_000)


def test_a_distributed_run_records_its_processes_and_resumes_exactly(world):
    import json

    from gantools.models import load_model
    from gantools.training import load_checkpoint, read_stats

    config = json.loads((world / "run-batch" / "config.json").read_text())
    assert (config["world_size"], config["batch_size"], config["global_batch_size"]) == (2, 4, 8)
    assert config["sync_bn"] is False  # SyncBatchNorm is CUDA-only: the CPU run says so, and records it
    notes = torch.load(world / "train-batch0.pt", weights_only=True)["notes"]
    assert any("SyncBatchNorm runs on CUDA only" in n for n in notes)
    rows = read_stats(world / "run-batch")
    assert [r["step"] for r in rows] == [2, 4, 6] and all(r["epoch"] == round(r["step"] * 8 / 24, 4) for r in rows)
    # 3 steps + resume + 3 steps = 6 steps in one go, bit for bit (every rank's random state is kept)
    straight, split = load_checkpoint(world / "run-batch"), load_checkpoint(world / "run-split")
    assert straight["world_size"] == 2 and len(straight["rng_ranks"]) == 2
    for key in ("generator", "discriminator", "generator_ema", "opt_g", "opt_d", "rng_ranks"):
        _assert_equal_states({key: straight[key]}, {key: split[key]}, key)
    _assert_equal_states(torch.load(world / "replica-batch0.pt", weights_only=True),
                         torch.load(world / "replica-resumed0.pt", weights_only=True))
    # the exported model is the usual single-process file
    gan = load_model(world / "run-batch" / "model.safetensors", "cpu")
    assert gan.config.image_size == 16 and not any(isinstance(m, torch.nn.SyncBatchNorm) for m in gan.generator.modules())


def test_resuming_on_another_number_of_processes_is_refused(world, monkeypatch):
    from gantools.training import train

    for key in dist_util.ENV_KEYS:
        monkeypatch.delenv(key, raising=False)
    with pytest.raises(GantoolsError, match="trained on 2 processes and cannot resume on 1 process") as e:
        train(resume=world / "run-batch", steps=8)
    assert "\n" not in str(e.value)


def test_each_rank_sees_its_own_share_of_every_epoch():
    from gantools.training import BatchStream

    ranks = [BatchStream(n=10, batch_size=3, seed=4, rank=r, processes=2) for r in range(2)]
    # global batch b is the 6 positions [6b, 6b + 6) of the epoch permutations, 3 per rank
    flat = torch.cat([torch.cat([s.batch(b) for s in ranks]) for b in range(5)])  # 30 positions = 3 epochs
    alone = BatchStream(n=10, batch_size=6, seed=4)
    assert torch.equal(flat, torch.cat([alone.batch(b) for b in range(5)]))
    for e in range(3):
        assert sorted(flat[10 * e:10 * e + 10].tolist()) == list(range(10))
    assert torch.equal(BatchStream(10, 3, 4).batch(2), BatchStream(10, 3, 4, rank=0, processes=1).batch(2))


KILLED_RUN = """
import sys, torch
from gantools.training import TrainConfig, train
torch.set_num_threads(1)
train(TrainConfig(data=sys.argv[1], image_size=16, nc=3, nz=8, ngf=8, ndf=8, batch_size=4, steps=100000,
                  log_every=1, sample_every=0, checkpoint_every=1, seed=1, out=sys.argv[2]))
"""


def test_a_killed_rank_ends_the_job_and_leaves_the_last_checkpoint_intact(tmp_path):
    """Rank 0 (the one that writes) is killed with its whole process group while it checkpoints every
    step; rank 1 stops by itself with a one-line reason, and the checkpoint on disk loads."""
    from gantools.training import load_checkpoint

    run, data = tmp_path / "run", save_easy_folder(tmp_path / "easy")
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()), "WORLD_SIZE": "2",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    ranks = [subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(data), str(run)],
                              env={**env, "RANK": str(r), "LOCAL_RANK": str(r)}, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for r in range(2)]
    try:
        deadline = time.time() + 120
        while not (run / "checkpoint.pt").exists() and time.time() < deadline and ranks[0].poll() is None:
            time.sleep(0.1)
        time.sleep(1.0)  # a few more steps, each with a checkpoint
        assert ranks[0].poll() is None and ranks[1].poll() is None, ranks[1].stderr.read()
        os.killpg(ranks[0].pid, signal.SIGKILL)
        code = ranks[1].wait(timeout=60)
        err = ranks[1].stderr.read()
    finally:
        for p in ranks:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
    assert code != 0 and "ProcessLost: another process of the job stopped" in err, err[-2000:]
    assert "the last checkpoint (step" in err.splitlines()[-1]
    ck = load_checkpoint(run)
    assert ck["step"] >= 1 and ck["world_size"] == 2


# ---------------------------------------------------------------------------------------------
# The commands themselves under a real torchrun: the CLI joins the group, rank 0 alone writes and prints


def _torchrun(*args: str, cwd) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                           "-m", "gantools", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=240)


def test_torchrun_dissect_and_invert_commands_equal_one_process(tiny_model_file, tmp_path):
    from PIL import Image

    alone = subprocess.run([sys.executable, "-m", "gantools", "dissect", "--model", str(tiny_model_file), "--layer",
                            "2", "-n", "24", "--segmenter", "color", "--batch-size", "4", "--out", "one", "--quiet"],
                           cwd=tmp_path, capture_output=True, text=True, timeout=240)
    assert alone.returncode == 0, alone.stderr
    run = _torchrun("dissect", "--model", str(tiny_model_file), "--layer", "2", "-n", "24", "--segmenter", "color",
                    "--batch-size", "4", "--out", "two", "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    one = json.loads((tmp_path / "one" / "report.json").read_text())
    two = json.loads((tmp_path / "two" / "report.json").read_text())
    assert one["layers"] == two["layers"]
    assert run.stdout.count("interpretable units per concept") == 1  # rank 0 alone prints the table
    images = tmp_path / "images"
    images.mkdir()
    rng = np.random.default_rng(0)
    for i in range(4):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(images / f"im{i}.png")
    inv = ["invert", str(images), "--model", str(tiny_model_file), "--steps", "3", "--restarts", "1", "--no-encoder",
           "--batch-size", "1", "--json"]
    alone = subprocess.run([sys.executable, "-m", "gantools", *inv, "--out", "inv1"], cwd=tmp_path,
                           capture_output=True, text=True, timeout=240)
    assert alone.returncode == 0, alone.stderr
    run = _torchrun(*inv, "--out", "inv2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    names = sorted(p.name for p in (tmp_path / "inv1").glob("*.png"))
    assert names and names == sorted(p.name for p in (tmp_path / "inv2").glob("*.png"))
    for name in names:
        assert (tmp_path / "inv1" / name).read_bytes() == (tmp_path / "inv2" / name).read_bytes(), name
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert len(records) == 4  # rank 0 reports every image, the other rank prints nothing


# ---------------------------------------------------------------------------------------------
# Interventions (#20): ablate, insert and rank split their samples by rank; every rank gets the result
# of one process, and rank 0's pictures are those of one process

# n=10 in batches of 4: rank 0 measures 2 batches (8 samples), rank 1 the short last one (2).
INTERVENTIONS = dict(segmenter=quadrant_segmenter, n=10, batch_size=4, seed=2, device="cpu")


def interventions_record(model_path: str, out: Path | None) -> dict:
    """ablate (given units; and a concept's top units from a dissection on the fly), insert and
    rank_units on the tiny model; the pictures saved into `out` (when given)."""
    from gantools.interventions import ablate, insert, rank_units

    measured: dict[str, int] = {}  # task -> the samples (rank: sample-units) this process measured

    def progress(p) -> None:
        if p.total is not None and p.completed == p.total:
            measured[p.task] = p.total

    kw = dict(INTERVENTIONS, progress=progress)
    results = {"ablate": ablate(model_path, 2, [0, 3, 5], curve_points=3, grid=3, **kw),
               "ablate-top": ablate(model_path, 2, concept="c1", top=3, dissect_n=24, grid=0, **kw),
               "insert": insert(model_path, 2, [1, 2], at=(0.3, 0.6), value=4.0, grid=3, **kw),
               "rank": rank_units(model_path, 2, "c1", max_images=8, **kw)}
    record = {name: {"dict": r.to_dict()} for name, r in results.items()}
    record["measured"] = {task: total for task, total in measured.items() if task.split()[0] in results}
    for name in ("ablate", "insert"):
        s = results[name].samples
        record[name]["samples"] = {"before": s.before, "after": s.after, "labels_before": s.labels_before,
                                   "labels_after": s.labels_after, "region": s.region}
        if out is not None:
            results[name].save(out / name)
    return record


def _intervention_jobs(rank: int, size: int, out_dir: str, model_path: str) -> None:
    out = Path(out_dir)
    dist_util.start(torch.device("cpu"))
    record = interventions_record(model_path, out / "saved" if rank == 0 else None)
    torch.save(record, out / f"interventions{rank}.pt")


@pytest.fixture(scope="module")
def intervention_world(tmp_path_factory) -> Path:
    """The folder where each rank of a two-process group wrote its intervention results."""
    out = tmp_path_factory.mktemp("interventions")
    model = save_tiny_model(out / "tiny.safetensors")
    run_world(_intervention_jobs, 2, str(out), str(model))
    return out


def _assert_close(a, b, where: str = "") -> None:
    """Equal structures; numbers equal to 1e-6 (NaN equal to NaN), everything else exactly."""
    if isinstance(a, dict):
        assert a.keys() == b.keys(), where
        for key in a:
            _assert_close(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_close(x, y, f"{where}[{i}]")
    elif isinstance(a, float):
        assert isinstance(b, float) and (a == b or abs(a - b) <= 1e-6 or (a != a and b != b)), (where, a, b)
    else:
        assert a == b, (where, a, b)


def test_distributed_interventions_equal_one_process(intervention_world, tmp_path):
    with one_thread():
        alone = interventions_record(str(intervention_world / "tiny.safetensors"), tmp_path)
    for rank in range(2):  # every rank returns the whole result
        got = torch.load(intervention_world / f"interventions{rank}.pt", weights_only=False)
        assert got.keys() == alone.keys()
        # the work was split: rank 0 measured the first 2 batches (8 samples), rank 1 the last (2)
        share = 8 if rank == 0 else 2
        assert got["measured"] == {"ablate layer2": share, "insert layer2": share, "rank layer2 units": share * 8}
        for name in ("ablate", "ablate-top", "insert"):
            # per-sample values gathered in order: the very same numbers
            assert got[name]["dict"] == alone[name]["dict"], (rank, name)
        _assert_close(got["rank"]["dict"], alone["rank"]["dict"], f"rank{rank}")  # sums added over ranks
        for name in ("ablate", "insert"):
            for key, value in alone[name]["samples"].items():
                theirs = got[name]["samples"][key]
                assert (theirs is None and value is None) or torch.equal(theirs, value), (rank, name, key)
    assert alone["measured"] == {"ablate layer2": 10, "insert layer2": 10, "rank layer2 units": 80}
    assert alone["ablate"]["dict"]["effect"]["n"] == 10 and alone["insert"]["dict"]["effect"]["mean"] != 0
    assert len({round(a, 9) for a in alone["rank"]["dict"]["ace"].values()}) > 1
    assert sorted(alone["rank"]["dict"]["ranked_units"]) == list(range(8))
    for name in ("ablate", "insert"):  # rank 0's pictures are one process's, byte for byte
        files = sorted(p.name for p in (tmp_path / name).iterdir())
        assert "before_after.png" in files and files == sorted(p.name for p in (intervention_world / "saved" /
                                                                                 name).iterdir())
        for file in files:
            if file.endswith(".png"):
                assert (tmp_path / name / file).read_bytes() == (intervention_world / "saved" / name /
                                                                 file).read_bytes(), (name, file)


def test_torchrun_ablate_and_rank_commands_write_and_print_on_rank0(tiny_model_file, tmp_path):
    common = ["--model", str(tiny_model_file), "--layer", "2", "-n", "6", "--segmenter", "color",
              "--batch-size", "2", "--json"]
    ablate = ["ablate", "--units", "0,3", "--grid", "2", *common]
    rank = ["rank", "--concept", "red", *common]
    for args, out in ((ablate, "ab"), (rank, "rk")):
        alone = subprocess.run([sys.executable, "-m", "gantools", *args, "--out", f"{out}1"], cwd=tmp_path,
                               capture_output=True, text=True, timeout=240)
        assert alone.returncode == 0, alone.stderr
        run = _torchrun(*args, "--out", f"{out}2", cwd=tmp_path)
        assert run.returncode == 0, run.stderr[-2000:]
        docs = [line for line in run.stdout.splitlines() if line.startswith("{")]
        assert len(docs) == 1  # rank 0 alone prints
        one, two = json.loads(alone.stdout), json.loads(docs[0])
        _assert_close(two, one, out)
        names = sorted(p.name for p in (tmp_path / f"{out}1").iterdir())
        assert names and names == sorted(p.name for p in (tmp_path / f"{out}2").iterdir())
        if out == "ab":
            for name in names:
                assert (tmp_path / "ab1" / name).read_bytes() == (tmp_path / "ab2" / name).read_bytes(), name
