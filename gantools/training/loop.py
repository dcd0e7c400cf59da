"""The training loop: `train` runs (or continues) a run, step by step, with checkpoints and logs.

Reproducibility: everything random is derived from the seed. The data order comes from
`batches.BatchStream`, the noise from a dedicated generator whose state is checkpointed. So on CPU,
N steps + resume + N steps gives the same weights, bit for bit, as 2N steps in one go.

Under torchrun the run is data-parallel (see `parallel`): every process trains a replica on its share
of each global batch and the gradients are averaged; rank 0 alone writes the run directory, and what
every process must agree on (the run directory, a stop, a NaN, an evaluation) is decided once.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import signal
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import distributed
from ..data import open_dataset, save_grid, split_dataset
from ..distributed import ProcessLost
from ..models import MODEL_FILE, Generator
from ..utils import GantoolsError, ProgressCallback, from_uint8, get_device, notice, report, seed_everything, \
    torch_save, write_json, write_text
from . import losses
from .augment import Augmentation
from .batches import BatchStream, TrainingImages, derived_seed
from .checkpoint import BEST_FILE, CHECKPOINT_FILE, CHECKPOINT_FORMAT, CONFIG_FILE, SNAPSHOTS_DIR, STATS_FILE, \
    build_models, default_run_dir, load_checkpoint, read_stats, restore_rng, rng_state
from .config import TrainConfig, resume_config
from .exporting import export, recalibrate_batchnorm
from .monitor import ConceptTracker, plot_concepts, plot_losses
from .parallel import check_world_size, checkpoint_fields, mean_over_processes, rank_rng, rank_seed, seed_process, \
    settle_sync_bn, sync_buffers, synchronise_batchnorm


@dataclass
class TrainResult:
    """What a training run produced.

    Args:
        run_dir: the run directory.
        step: generator steps done (in all, including before a resume).
        total_steps: the step the run was asked to reach.
        stats: the last stats.jsonl line (losses, D outputs, img/s), empty if none was logged.
        model_path: model.safetensors, or None when the run stopped without exporting.
        checkpoint: checkpoint.pt.
        best_fid: the lowest FID seen (with eval_every), else None.
        interrupted: True when Ctrl-C stopped the run early (a checkpoint was saved).
        elapsed: seconds of training in all.
        samples: the last sample grid written, if any.
    """

    run_dir: Path
    step: int
    total_steps: int
    stats: dict[str, float] = field(default_factory=dict)
    model_path: Path | None = None
    checkpoint: Path | None = None
    best_fid: float | None = None
    interrupted: bool = False
    elapsed: float = 0.0
    samples: Path | None = None


def train(config: TrainConfig | None = None, *, resume: str | os.PathLike | None = None,
          progress: ProgressCallback | None = None, **overrides: Any) -> TrainResult:
    """Train a DCGAN (or continue a run) and return what it produced.

    Args:
        config: the run's settings; omit it with `resume`.
        resume: a run directory to continue from its checkpoint.pt; its stored config is used, and only
            scheduling fields (steps, epochs, device, amp, *_every, eval_n) may be overridden.
        progress: callback for progress reports (the CLI's Reporter).
        **overrides: TrainConfig fields replacing those of `config` (or of the resumed run).

    Under torchrun every process calls this: they train one run together (see `parallel`).
    """
    world = distributed.start()  # joins the process group under torchrun; alone, a no-op
    if resume is not None:
        if config is not None:
            raise GantoolsError("give a config or a run to resume, not both")
        run_dir = Path(resume)
        ckpt = distributed.on_main(lambda: load_checkpoint(run_dir / CHECKPOINT_FILE))  # read once, shared
        check_world_size(ckpt, world, run_dir)
        config = resume_config(ckpt["config"], overrides, run_dir)
    else:
        if config is None:
            config = TrainConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        ckpt = None
    return _Trainer(config, ckpt, progress).run()


def _training_fid() -> Callable[..., float]:
    from .. import metrics  # the evaluation hook; looked up at run time so that tests can replace it

    fn = getattr(metrics, "training_fid", None)
    if fn is None:
        raise GantoolsError("eval_every needs gantools.metrics.training_fid, which this install lacks")
    return fn


class _Stop:
    """Defers Ctrl-C (SIGINT) and SIGTERM to the end of the current step, so the checkpoint holds a
    consistent state. SIGTERM is what `timeout`, batch schedulers and a closing session send.

    A second signal interrupts at once (the checkpoint on disk stays the previous complete one).
    """

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.requested = False
        self._old: dict[int, Any] = {}

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            self._old = {sig: signal.signal(sig, self._handle) for sig in self.SIGNALS}
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        for sig, old in self._old.items():
            signal.signal(sig, old)


class _Trainer:
    """One run in memory: data, networks, optimisers and their state, and the loop over steps.

    The set-up steps run in a fixed order, since each may draw from torch's global random state.
    """

    def __init__(self, config: TrainConfig, ckpt: dict[str, Any] | None, progress: ProgressCallback | None) -> None:
        self.progress = progress
        self.world = distributed.world()
        self.device = distributed.local_device(get_device(config.device))
        # rank 0 names the run directory (the next free number) for every process
        config = distributed.on_main(lambda: self._settle_run_dir(config, resumed=ckpt is not None))
        self.config = config = settle_sync_bn(config, self.world, self.device, progress)
        self.run_dir = Path(config.out)
        self.eval_fn = _training_fid() if config.eval_every > 0 else None
        if config.threads and self.device.type == "cpu":
            torch.set_num_threads(config.threads)
        # a warm start's source is read and checked before the data, which can take a minute to open
        init = self._read_init(config.init) if ckpt is None and config.init else None
        self._open_data()
        self._build_networks(ckpt, init)
        self._build_optimisers(ckpt)
        self.last_good_step: int | None = self.step if ckpt is not None else None
        self.last_samples: Path | None = None
        self.last_stats: dict[str, Any] = {}

    # -- set-up ------------------------------------------------------------------------------------

    @staticmethod
    def _settle_run_dir(config: TrainConfig, resumed: bool) -> TrainConfig:
        if Path(config.data).exists():  # stored absolute, so resume works from any directory
            config = dataclasses.replace(config, data=str(Path(config.data).resolve()))
        if config.init and Path(config.init).exists():  # the run records where it started
            config = dataclasses.replace(config, init=str(Path(config.init).resolve()))
        run_dir = Path(config.out) if config.out else default_run_dir(config.data)
        if not resumed and (run_dir / CHECKPOINT_FILE).exists():
            raise GantoolsError(f"{run_dir} already holds a run: continue it (resume={str(run_dir)!r}), "
                                f"or choose another out")
        return dataclasses.replace(config, out=str(run_dir))

    def _open_data(self) -> None:
        c = self.config
        dataset = open_dataset(c.data, c.image_size, c.nc, n=c.data_n, seed=c.data_seed, progress=self.progress,
                               version=c.data_version)
        dataset, _ = split_dataset(dataset, c.holdout)
        self.n = len(dataset)
        self.images = TrainingImages(dataset, self.n, self.device, self.progress)
        self.stream = BatchStream(self.n, c.batch_size, c.seed, self.world.rank, self.world.size)
        self.total = c.total_steps(self.n, self.world.size)

    def _build_networks(self, ckpt: dict[str, Any] | None, init: dict[str, Any] | None) -> None:
        # Seeded here (new run) or loaded (resume). Built on CPU first so that the same seed gives the
        # same initial weights on every device.
        c = self.config
        seed_everything(c.seed)
        self.G, self.D = build_models(c)
        self.noise_gen = torch.Generator().manual_seed(rank_seed(c.seed, 2, self.world))
        self.fixed_noise = self.G.sample_z(c.n_samples, seed=derived_seed(c.seed, 3), device="cpu")
        self.step, self.elapsed, self.best_fid = 0, 0.0, None
        if init is not None:  # a warm start (TrainConfig.init)
            self.G.load_state_dict(init["generator"])
            self.D.load_state_dict(init["discriminator"])
            notice(self.progress, f"starting from the weights of {c.init} (step {init['step']})")
        if ckpt is not None:
            self.G.load_state_dict(ckpt["generator"])
            self.D.load_state_dict(ckpt["discriminator"])
            self.fixed_noise = ckpt["fixed_noise"]
            self.step = int(ckpt["step"])
            self.elapsed = float(ckpt.get("elapsed", 0.0))
            self.best_fid = ckpt.get("best_fid")
        self.G_ema: Generator | None = None
        if c.ema > 0:  # copied before sync_bn: its BatchNorm is recomputed by rank 0 alone
            self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
            if ckpt is not None and ckpt.get("generator_ema") is not None:
                self.G_ema.load_state_dict(ckpt["generator_ema"])
            elif ckpt is not None:
                notice(self.progress, f"the weight average (ema {c.ema}) starts at step {self.step}")
        self.G, self.D = synchronise_batchnorm(self.G, self.D, c, self.progress)
        seed_process(c.seed, self.world)
        self.memory_format = torch.channels_last if c.channels_last else torch.contiguous_format
        for net in (self.G, self.D, self.G_ema):
            if net is not None:
                net.to(self.device, memory_format=self.memory_format)

    def _read_init(self, init: str) -> dict[str, Any]:
        """The checkpoint a warm start begins from (`TrainConfig.init`); it must share the architecture."""
        try:
            source = distributed.on_main(lambda: load_checkpoint(init))
        except GantoolsError as e:
            raise GantoolsError(f"init: {e}") from None
        theirs, ours = TrainConfig.from_dict(source["config"]).model_config(), self.config.model_config()
        if theirs != ours:
            raise GantoolsError(f"init {init} has another architecture ({theirs}) than this run ({ours}): "
                                "give the same image_size, nc, nz, ngf, ndf and d_norm")
        return source

    def _build_optimisers(self, ckpt: dict[str, Any] | None) -> None:
        c = self.config
        betas = (c.beta1, c.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=c.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=c.lr_d, betas=betas)
        self.last_r1: float | None = None
        self.augmentation = Augmentation(c.augmentations(), c.augment_p, c.augment_target)
        self.concept_tracker = ConceptTracker(c.track_concepts, c.eval_n, self.device) if c.track_concepts else None
        self.amp_dtype = None
        if self.device.type == "cuda" and c.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            torch.backends.cudnn.benchmark = True
        elif self.device.type == "cpu" and c.cpu_amp:
            self.amp_dtype = torch.bfloat16
        # Loss scaling only for float16 (bfloat16 has float32's range).
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if ckpt is not None:
            self.opt_g.load_state_dict(ckpt["opt_g"])
            self.opt_d.load_state_dict(ckpt["opt_d"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            restore_rng(rank_rng(ckpt, self.world), self.noise_gen)
            if ckpt.get("augment"):
                self.augmentation.load_state_dict(ckpt["augment"])

    # -- state -------------------------------------------------------------------------------------

    def checkpoint_state(self, fid: float | None = None, parallel: dict[str, Any] | None = None) -> dict[str, Any]:
        """Everything a resume needs; `parallel`: what `parallel.checkpoint_fields` adds under torchrun."""
        def cpu(module: torch.nn.Module | None) -> dict[str, torch.Tensor] | None:
            return None if module is None else {k: v.detach().cpu() for k, v in module.state_dict().items()}

        return {
            "format": CHECKPOINT_FORMAT,
            "generator": cpu(self.G),
            "discriminator": cpu(self.D),
            "generator_ema": cpu(self.G_ema),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": self.config.to_dict(),
            "fixed_noise": self.fixed_noise.cpu(),
            "rng": rng_state(self.noise_gen),
            "augment": self.augmentation.state_dict(),
            "elapsed": self.elapsed,
            "best_fid": self.best_fid,
            "fid": fid,
            **(parallel or {}),
        }

    def save_checkpoint(self, name: str = CHECKPOINT_FILE, fid: float | None = None) -> Path:
        """Write a checkpoint atomically (rank 0; under torchrun every process calls this, since the
        random states of all are gathered into it)."""
        parallel = checkpoint_fields(self.noise_gen, self.world)
        path = self.run_dir / name
        if self.world.is_main:
            torch_save(self.checkpoint_state(fid, parallel), path)
        if name == CHECKPOINT_FILE:
            self.last_good_step = self.step
        return path

    def save_snapshot(self) -> Path:
        """Keep the model file of this step in snapshots/ (rank 0), exported from the checkpoint just
        written. Exporting builds fresh networks, which draws from torch's global generator: it is
        forked, so a run with snapshots trains exactly as one without."""
        path = self.run_dir / SNAPSHOTS_DIR / f"step_{self.step:06d}.safetensors"
        if self.world.is_main:
            path.parent.mkdir(exist_ok=True)
            with torch.random.fork_rng(devices=[]):
                export(self.run_dir / CHECKPOINT_FILE, out=path)
        return path

    def shown_generator(self) -> Generator:
        """The generator that grids, FID and export use: G itself, or its recalibrated average."""
        if self.G_ema is None:
            return self.G
        return recalibrate_batchnorm(self.G_ema, seed=self.config.seed)

    @torch.no_grad()
    def update_ema(self) -> None:
        decay = self.config.ema
        for p_ema, p in zip(self.G_ema.parameters(), self.G.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - decay)

    def write_samples(self) -> Path:
        was_training = self.G.training
        g = self.shown_generator()
        g.eval()  # the grids show what an exported (eval-mode) model draws
        with torch.no_grad():
            images = g(self.fixed_noise.to(self.device)).float()
        self.G.train(was_training)
        self.last_samples = save_grid(images, self.run_dir / "samples" / f"step_{self.step:06d}.png")
        return self.last_samples

    def evaluate(self) -> dict[str, Any]:
        """FID (and tracked concept shares): the stats.jsonl row of one evaluation."""
        c = self.config
        report(self.progress, "evaluate", 0, 1)
        was_training = self.G.training
        g = self.shown_generator()
        g.eval()
        try:
            row: dict[str, Any] = {"step": self.step, "fid": float(self.eval_fn(
                g, data=c.data, image_size=c.image_size, nc=c.nc, n=c.eval_n, device=self.device,
                version=c.data_version))}
            if self.concept_tracker is not None:
                row.update(self.concept_tracker.measure(g, self.images))
        finally:
            self.G.train(was_training)
        shown = {"FID": row["fid"]}
        if "concepts_tv" in row:
            shown["concept TV"] = row["concepts_tv"]
        report(self.progress, "evaluate", 1, 1, **shown)
        return row

    # -- one step ----------------------------------------------------------------------------------

    def _autocast(self) -> Any:
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def _real_batch(self, batch_index: int) -> torch.Tensor:
        x = from_uint8(self.images.get(self.stream.batch(batch_index)))
        return x.contiguous(memory_format=self.memory_format)

    def _noise(self) -> torch.Tensor:
        z = torch.randn(self.config.batch_size, self.config.nz, generator=self.noise_gen)
        return z.to(self.device, non_blocking=True)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One generator step after d_steps discriminator steps; returns detached metrics."""
        c, G, augment = self.config, self.G, self.augmentation

        def D(x: torch.Tensor) -> torch.Tensor:  # D sees augmented images when asked to (DiffAugment, ADA)
            return self.D(augment(x))

        for k in range(c.d_steps):
            real = self._real_batch(self.step * c.d_steps + k)
            z = self._noise()
            last = k == c.d_steps - 1
            with self._autocast():
                if last:  # the generator step reuses this batch of fakes, so keep its graph
                    fake = G(z)
                else:
                    with torch.no_grad():
                        fake = G(z)
                real_logits = D(real).float()
                fake_logits = D(fake.detach()).float()
                loss_d = losses.discriminator_loss(real_logits, fake_logits, c.loss)
            augment.observe(real_logits)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(loss_d).backward()
            if c.r1 > 0 and (self.step * c.d_steps + k) % losses.R1_EVERY == 0:
                # Lazy R1 in float32 on its own forward pass; its gradients add to the D step's.
                penalty = losses.r1_penalty(D, real)
                self.scaler.scale(penalty * (0.5 * c.r1 * losses.R1_EVERY)).backward()
                self.last_r1 = float(penalty.detach())
            distributed.average_gradients(list(self.D.parameters()))  # no-op alone
            self.scaler.step(self.opt_d)
            self.scaler.update()
        loss_g, gen_logits = self._generator_step(D, fake)
        sync_buffers(self.G, self.D)  # under torchrun: rank 0's BatchNorm statistics, as DDP does
        if self.G_ema is not None:
            self.update_ema()
        with torch.no_grad():
            metrics = {"Loss_D": loss_d.detach(), "Loss_G": loss_g.detach(),
                       "D(x)": torch.sigmoid(real_logits).mean(),
                       "D(G(z))_before": torch.sigmoid(fake_logits).mean(),
                       "D(G(z))_after": torch.sigmoid(gen_logits).mean()}
            if augment.adaptive:  # ADA's overfitting measure and the probability it steers
                metrics.update({"sign D(x)": torch.sign(real_logits).mean(),
                                "augment_p": real_logits.new_tensor(augment.p)})
            return metrics

    def _generator_step(self, D: Callable[[torch.Tensor], torch.Tensor],
                        fake: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # Against the updated D; D's weights need no gradients here.
        self.D.requires_grad_(False)
        try:
            with self._autocast():
                gen_logits = D(fake).float()
                loss_g = losses.generator_loss(losses.most_real(gen_logits, self.config.g_top_k), self.config.loss)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler.scale(loss_g).backward()
            distributed.average_gradients(list(self.G.parameters()))  # no-op alone
            self.scaler.step(self.opt_g)
            self.scaler.update()
        finally:
            self.D.requires_grad_(True)
        return loss_g, gen_logits

    # -- the loop ----------------------------------------------------------------------------------

    def _prepare_run_dir(self, resumed: bool) -> tuple[float | None, dict[str, Any]]:
        """Write config.json and trim stats.jsonl to the checkpoint (rank 0 alone, through `on_main`);
        returns the best FID and the last stats line logged before the checkpoint."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = self.config.to_dict()
        info["model"] = self.config.model_config().to_dict()
        info["train_images"] = self.n
        info["total_steps"] = self.total
        if self.world.distributed:  # batch_size is per process
            info.update(world_size=self.world.size, global_batch_size=self.config.batch_size * self.world.size)
        write_json(self.run_dir / CONFIG_FILE, info)
        stats = self.run_dir / STATS_FILE
        best_fid, last_stats = self.best_fid, {}
        if resumed:
            # Drop lines logged after the checkpoint (a crash between checkpoints): they are redone.
            rows = [r for r in read_stats(self.run_dir) if int(r.get("step", 0)) <= self.step]
            write_text(stats, "".join(json.dumps(r) + "\n" for r in rows))
            fids = [r["fid"] for r in rows if r.get("fid") is not None]
            last_stats = next((r for r in reversed(rows) if "Loss_D" in r), {})
            if fids and best_fid is None:
                best_fid = min(fids)
        elif stats.exists():
            stats.unlink()
        return best_fid, last_stats

    def run(self) -> TrainResult:
        resumed = self.last_good_step is not None
        self.best_fid, self.last_stats = distributed.on_main(lambda: self._prepare_run_dir(resumed))
        if resumed:
            notice(self.progress, f"resuming {self.run_dir} at step {self.step} of {self.total}")
        if self.step >= self.total:
            notice(self.progress, f"{self.run_dir} has already trained {self.step} steps; "
                                  f"give a larger steps to continue")
            return self._finish(interrupted=False)
        self.G.train()
        self.D.train()
        try:
            return self._loop()
        except ProcessLost as e:  # a kill of another process: the checkpoint on disk is a complete one
            kept = (f"the last checkpoint (step {self.last_good_step}) is kept in {self.run_dir / CHECKPOINT_FILE}"
                    if self.last_good_step is not None else "no checkpoint had been saved yet")
            raise ProcessLost(f"{e} at step {self.step}; {kept}") from e

    def _loop(self) -> TrainResult:
        """The steps until the end, or until a stop (Ctrl-C: checkpoint, export, interrupted=True)."""
        window = _Window()
        log_file = open(self.run_dir / STATS_FILE, "a", encoding="utf-8") if self.world.is_main else None
        with log_file or contextlib.nullcontext(), _Stop() as stop:
            stopping = False
            try:
                while self.step < self.total:
                    self._one_step(log_file, window)
                    # every process stops at the same step (under torchrun one asks, all agree)
                    stopping = distributed.any_process(stop.requested)
                    if stopping:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                if self.world.distributed and not stopping:
                    raise  # not agreed by the others (a second Ctrl-C): the checkpoint on disk stays
                # Reached only at a step boundary (see _Stop) or from a callback: the state is consistent.
                notice(self.progress, f"interrupted at step {self.step}: saving a checkpoint")
                self._check_finite(window.sums)
                if window.count:
                    self._log_row(log_file, window)
                self.save_checkpoint()
                return self._finish(interrupted=True)
        self.save_checkpoint()
        return self._finish(interrupted=False)

    def _one_step(self, log: Any, window: "_Window") -> None:
        """Train one step, then log, draw, evaluate and checkpoint when their turn comes."""
        c = self.config
        t0 = time.perf_counter()
        window.add(self.train_step())
        self.step += 1
        boundary = self.step == self.total
        check_every = 1 if self.device.type == "cpu" else c.log_every  # a NaN check syncs the GPU
        if self.step % check_every == 0 or self.step % c.log_every == 0 or boundary:
            self._check_finite(window.sums)  # on CUDA this syncs, so the time below is real
        dt = time.perf_counter() - t0
        self.elapsed += dt
        window.seconds += dt  # img/s counts training steps only, not sampling/eval/checkpoints
        if self.step % c.log_every == 0 or boundary:
            window.shown = self._log_row(log, window)
            window.reset()
        if c.sample_every and self.step % c.sample_every == 0 and self.world.is_main:
            self.write_samples()
        if c.eval_every and self.step % c.eval_every == 0:
            self._check_finite(window.sums)
            self._evaluate_and_keep_best(log)
        snapshot = c.snapshot_every and self.step % c.snapshot_every == 0
        if (snapshot or c.checkpoint_every and self.step % c.checkpoint_every == 0) and not boundary:
            self._check_finite(window.sums)
            self.save_checkpoint()
            if snapshot:
                self.save_snapshot()
        report(self.progress, "train", self.step, self.total, **window.shown)

    def _evaluate_and_keep_best(self, log: Any) -> None:
        row = distributed.on_main(self.evaluate)  # rank 0 evaluates; every process learns the FID
        fid = row["fid"]
        if log is not None:
            log.write(json.dumps(row) + "\n")
            log.flush()
        if self.best_fid is None or fid < self.best_fid:
            self.best_fid = fid
            self.save_checkpoint(BEST_FILE, fid=fid)

    def _log_row(self, log: Any, window: "_Window") -> dict[str, float]:
        """Write one stats.jsonl line (means over the window, and over the processes under torchrun:
        every process calls this) and return the progress bar's metrics."""
        processes = self.world.size
        imgs_per_step = self.config.batch_size * self.config.d_steps * processes  # the global batch
        row = {"step": self.step, "epoch": round(self.step * imgs_per_step / self.n, 4)}
        row.update({k: float(v) / window.count for k, v in mean_over_processes(window.sums).items()})
        row["img/s"] = window.count * imgs_per_step / max(window.seconds, 1e-9)
        if self.config.r1 > 0 and self.last_r1 is not None:
            row["R1"] = self.last_r1  # the latest lazy evaluation of |grad_x D(x)|^2
        row["time"] = round(self.elapsed, 3)
        if log is not None:
            log.write(json.dumps(row) + "\n")
            log.flush()
        self.last_stats = row
        return {"img/s": row["img/s"], "Loss_D": row["Loss_D"], "Loss_G": row["Loss_G"], "D(x)": row["D(x)"],
                "D(G(z))": row["D(G(z))_before"]}

    def _check_finite(self, sums: dict[str, torch.Tensor]) -> None:
        if not sums:
            return
        values = torch.stack([sums["Loss_D"], sums["Loss_G"]])
        if not distributed.any_process(not bool(torch.isfinite(values).all())):  # all give up together
            return
        kept = (f"the last good checkpoint (step {self.last_good_step}) is kept in {self.run_dir / CHECKPOINT_FILE}"
                if self.last_good_step is not None else "no checkpoint had been saved yet")
        raise GantoolsError(f"the loss became NaN or infinite by step {self.step} "
                            f"(Loss_D {float(values[0]):.4g}, Loss_G {float(values[1]):.4g}); {kept}. "
                            f"Try lower learning rates (lr_g, lr_d).")

    def _finish(self, interrupted: bool) -> TrainResult:
        """Grids, curves and the exported model (rank 0); every process returns once they are written."""
        model_path = self.run_dir / MODEL_FILE
        if self.world.is_main:
            if self.config.sample_every == 0 or self.step % self.config.sample_every != 0 or self.last_samples is None:
                self.write_samples()
            plot_losses(self.run_dir)
            plot_concepts(self.run_dir)
            model_path = export(self.run_dir)
            if self.config.snapshot_every and self.step % self.config.snapshot_every == 0:
                self.save_snapshot()
        distributed.barrier()
        return TrainResult(run_dir=self.run_dir, step=self.step, total_steps=self.total, stats=self.last_stats,
                           model_path=model_path, checkpoint=self.run_dir / CHECKPOINT_FILE,
                           best_fid=self.best_fid, interrupted=interrupted, elapsed=self.elapsed,
                           samples=self.last_samples)


@dataclass
class _Window:
    """The steps since the last stats line: summed metrics, their count, their training time."""

    sums: dict[str, torch.Tensor] = field(default_factory=dict)
    count: int = 0
    seconds: float = 0.0
    shown: dict[str, float] = field(default_factory=dict)  # the progress bar's metrics, kept between lines

    def add(self, metrics: dict[str, torch.Tensor]) -> None:
        for k, v in metrics.items():
            self.sums[k] = self.sums[k] + v if k in self.sums else v.clone()
        self.count += 1

    def reset(self) -> None:
        self.sums, self.count, self.seconds = {}, 0, 0.0


__all__ = ["TrainResult", "train"]
