"""DCGAN training with real checkpoints: bit-exact resume, atomic writes, Ctrl-C and NaN safety.

    from gantools import TrainConfig, train
    result = train(TrainConfig(data="digits/", image_size=32, nc=1, steps=2000))
    result = train(resume=result.run_dir, steps=4000)      # continue the same run

A run directory holds `config.json`, `stats.jsonl` (one line per logged step), `samples/step_NNNNNN.png`
(one fixed noise batch), `loss_curve.png`, `checkpoint.pt` (+ `best.pt` with --eval-every) and, at the
end, `model.safetensors` (what every analysis command loads).

Reproducibility: everything random is derived from the seed. The data order of epoch e is a
permutation drawn from (seed, e), and batches are consecutive slices of the endless stream of epoch
permutations, so the batch of any step follows from the step number alone. The noise comes from a
dedicated generator whose state is checkpointed. So on CPU, N steps + resume + N steps gives the same
weights, bit for bit, as 2N steps in one go.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import threading
import time
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from .models import MODEL_FILE, Discriminator, Generator, ModelConfig, add_spectral_norm, fold_spectral_norm, \
    save_model
from .utils import GantoolsError, ProgressCallback, from_uint8, get_device, notice, report, torch_save, write_json, \
    write_text

CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
STATS_FILE = "stats.jsonl"
CONFIG_FILE = "config.json"
CHECKPOINT_FORMAT = "gantools-checkpoint/1"
LOSSES = ("nonsaturating", "minimax", "hinge")
AUGMENTATIONS = ("color", "translation", "cutout")
# Lazy R1 (StyleGAN2): the penalty is computed on every R1_EVERY-th discriminator step and scaled by
# R1_EVERY, which costs a sixteenth of the work for the same regularisation.
R1_EVERY = 16
# Materialise generated (built-in) datasets in memory up to this many bytes of uint8 pixels.
MATERIALIZE_LIMIT = 4 * 1024**3

# Named recipes: the fields each one sets. A field given explicitly overrides its recipe's value.
# "dcgan" is the paper's (Radford et al. 2016). "stable" keeps the paper's Adam settings but
# normalises every D convolution by its spectral norm instead of BatchNorm (Miyato et al. 2018) and
# uses the hinge loss. (SAGAN's two time-scale rates 1e-4/4e-4 with betas (0, 0.9) left this DCGAN's
# G at grey noise for 1,600 steps on scenes: benchmarks/recipes.py, arm "ttur-v1".)
RECIPES: dict[str, dict[str, Any]] = {
    "dcgan": dict(d_norm="batch", loss="nonsaturating", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, r1=0.0),
    "stable": dict(d_norm="spectral", loss="hinge", lr_g=2e-4, lr_d=2e-4, beta1=0.5, beta2=0.999, r1=0.0),
}
DEFAULT_RECIPE = "dcgan"


@dataclass
class TrainConfig:
    """Everything that defines a training run (stored in config.json and in the checkpoint).

    The recipe fields (d_norm, loss, lr_g, lr_d, beta1, beta2, r1) default to None, which means "as
    the recipe says"; the stored config holds the resolved values. The default recipe, "dcgan", is
    the paper's: Adam lr 2e-4, betas (0.5, 0.999), BatchNorm in D, non-saturating loss, batch 64.

    Args:
        data: a folder of images or a built-in dataset name ("scenes").
        data_version: version of a built-in dataset's design (scenes: 1 or 2); None: its current one.
            Runs stored without it used version 1.
        image_size: 16, 32, 64 or 128.
        nc: image channels, 1 or 3.
        nz, ngf, ndf: latent size and network widths.
        batch_size: real images per discriminator step.
        recipe: a name from RECIPES that sets the fields below at once.
        d_norm: D's normalisation: "batch" (BatchNorm), "spectral" (spectral norm on every
            convolution, no BatchNorm) or "none".
        loss: "nonsaturating" (G maximises log D(G(z))), "minimax" (G minimises log(1 - D(G(z))),
            the original game) or "hinge" (D: relu(1 - D(x)) + relu(1 + D(G(z))); G: -D(G(z))).
        lr_g, lr_d: Adam learning rates of G and D (two time-scale updates when they differ).
        beta1, beta2: Adam betas, both networks.
        r1: weight gamma of the R1 penalty gamma/2 * |grad_x D(x)|^2 on real images (Mescheder et
            al. 2018), applied lazily every R1_EVERY discriminator steps; 0: off.
        d_steps: discriminator steps per generator step; each uses a fresh real batch.
        steps: generator steps to train in all (counted from the start of the run, also on resume).
        epochs: alternatively, passes over the data (converted to steps); default 5 when neither is set.
        seed: seeds the weights, the data order, the noise and the fixed sample noise.
        out: run directory; default runs/<nnnnn>-<data>.
        device: auto, cpu, cuda or cuda:N.
        amp: mixed precision on CUDA (bfloat16 where supported, else float16 with loss scaling).
        data_n: number of images for generated datasets (scenes); ignored for folders.
        data_seed: seed of generated datasets.
        holdout: leave `holdout` images out of training, for evaluation: the last by sorted file name
            within each class folder (see data.split_holdout), or the last ones of a flat or generated dataset.
        log_every: steps between stats.jsonl lines (each line averages the steps since the last).
        sample_every: steps between sample grids (0: only at the end).
        checkpoint_every: steps between checkpoints (0: only at the end).
        eval_every: steps between evaluations (0: never): FID, kept as best.pt when lowest, and with
            track_concepts each concept's pixel share in generated images.
        eval_n: generated images per evaluation.
        track_concepts: a segmenter (file or pretrained model name) whose concept pixel shares in
            generated and real images are logged at every evaluation (needs eval_every).
        n_samples: images in the fixed-noise sample grids.
        augment: differentiable augmentation of every image D sees, real and generated, in both
            steps (DiffAugment, Zhao et al. 2020): a comma-separated subset of "color" (brightness,
            saturation, contrast), "translation" (up to 1/8 of the side) and "cutout" (a square of
            half the side). Keeps D from memorising a small dataset; "" (default) is off.
        ema: decay of an exponential moving average of G's weights (0: off; 0.999 is typical). With it,
            grids, FID and the exported model use the averaged generator, which smooths out the
            oscillation of the adversarial game (as in ProGAN and StyleGAN). Its BatchNorm statistics
            are recomputed on a fixed seeded noise set, since running statistics of G do not fit it.
        threads: torch intra-op threads on the CPU (0: torch's default, one per core).
        channels_last: store images and weights channels-last (NHWC): faster on CUDA, and 1.26x faster
            per step than contiguous NCHW on this project's 2-core CPUs with both threads, 1.19x with
            one (benchmarks/cpu_layout.py). Two threads are 1.7x faster than one on a quiet machine.
    """

    data: str = "scenes"
    data_version: int | None = None
    image_size: int = 64
    nc: int = 3
    nz: int = 100
    ngf: int = 64
    ndf: int = 64
    batch_size: int = 64
    recipe: str = DEFAULT_RECIPE
    d_norm: str | None = None
    loss: str | None = None
    lr_g: float | None = None
    lr_d: float | None = None
    beta1: float | None = None
    beta2: float | None = None
    r1: float | None = None
    d_steps: int = 1
    steps: int | None = None
    epochs: float | None = None
    seed: int = 0
    out: str | None = None
    device: str = "auto"
    amp: bool = True
    data_n: int | None = None
    data_seed: int = 0
    holdout: int = 0
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    eval_every: int = 0
    eval_n: int = 1000
    track_concepts: str | None = None
    n_samples: int = 64
    augment: str = ""
    ema: float = 0.0
    threads: int = 0
    channels_last: bool = True

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise GantoolsError(f"unknown recipe {self.recipe!r}: use {' or '.join(RECIPES)}")
        for name, value in RECIPES[self.recipe].items():  # the recipe fills what was not given
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.data_version is None:
            from .data import dataset_version

            self.data_version = dataset_version(self.data)
        self.model_config()  # checks image_size, nc, nz, ngf, ndf, d_norm
        if self.loss not in LOSSES:
            raise GantoolsError(f"unknown loss {self.loss!r}: use {', '.join(LOSSES)}")
        if self.steps is not None and self.epochs is not None:
            raise GantoolsError("give steps or epochs, not both")
        positive = {"batch_size": self.batch_size, "d_steps": self.d_steps, "log_every": self.log_every,
                    "eval_n": self.eval_n, "n_samples": self.n_samples}
        for name, value in positive.items():
            if value < 1:
                raise GantoolsError(f"{name} must be at least 1, got {value}")
        for name in ("steps", "epochs"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise GantoolsError(f"{name} must be positive, got {value}")
        for name in ("sample_every", "checkpoint_every", "eval_every", "holdout", "threads"):
            if getattr(self, name) < 0:
                raise GantoolsError(f"{name} must be 0 or more, got {getattr(self, name)}")
        for name in ("lr_g", "lr_d"):
            if not getattr(self, name) > 0:
                raise GantoolsError(f"{name} (learning rate) must be positive, got {getattr(self, name)}")
        if not self.r1 >= 0:
            raise GantoolsError(f"r1 must be 0 or more, got {self.r1}")
        if self.track_concepts and not self.eval_every:
            raise GantoolsError("track_concepts logs at each evaluation: give eval_every too")
        unknown = [a for a in self.augmentations() if a not in AUGMENTATIONS]
        if unknown:
            raise GantoolsError(f"unknown augmentation {unknown[0]!r}: use a comma-separated subset of "
                                f"{', '.join(AUGMENTATIONS)}")
        if not 0 <= self.ema < 1:
            raise GantoolsError(f"ema must lie in [0, 1), got {self.ema}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise GantoolsError(f"Adam betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")

    def model_config(self) -> ModelConfig:
        return ModelConfig(self.image_size, self.nc, self.nz, self.ngf, self.ndf, self.d_norm)

    def augmentations(self) -> list[str]:
        return [a.strip() for a in self.augment.split(",") if a.strip()]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        d = dict(d)
        if "recipe" not in d:  # written before recipes existed: the paper's recipe, one learning rate
            d["recipe"] = "dcgan"
            if "lr" in d:
                d.setdefault("lr_g", d["lr"])
                d.setdefault("lr_d", d["lr"])
            if d.get("data") == "scenes":
                d.setdefault("data_version", 1)
            d.setdefault("channels_last", False)  # as they ran on the CPU
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


# Fields that may change when a run is resumed: when and how long to train, not what to train.
# ema too: the average is read from G and never feeds back into training; a run resumed with a new
# --ema starts its average from the generator of the checkpoint.
RESUMABLE_FIELDS = frozenset({"steps", "epochs", "device", "amp", "log_every", "sample_every",
                              "checkpoint_every", "eval_every", "eval_n", "track_concepts", "ema", "threads",
                              "channels_last"})


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


# ---------------------------------------------------------------------------------------------
# Losses (module-level so tests can hook them)


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """D's loss. BCE-with-logits for "nonsaturating" and "minimax": real images labelled 1, generated
    images 0 (summed, as in the DCGAN example). "hinge": mean relu(1 - D(x)) + mean relu(1 + D(G(z)))."""
    if kind == "hinge":
        return F.relu(1.0 - real_logits).mean() + F.relu(1.0 + fake_logits).mean()
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits)))


def generator_loss(fake_logits: torch.Tensor, kind: str = "nonsaturating") -> torch.Tensor:
    """The generator's loss on D's logits for its images.

    "nonsaturating": -log D(G(z)) (strong gradients early, when D rejects everything);
    "minimax": log(1 - D(G(z))), the original game's objective;
    "hinge": -D(G(z)), the raw logit (Lim & Ye 2017; SAGAN, BigGAN).
    """
    if kind == "hinge":
        return -fake_logits.mean()
    if kind == "nonsaturating":
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    if kind == "minimax":
        return -F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))
    raise GantoolsError(f"unknown loss {kind!r}: use {', '.join(LOSSES)}")


def r1_penalty(discriminator: Any, real: torch.Tensor) -> torch.Tensor:
    """|grad_x D(x)|^2 on real images, summed over pixels and averaged over the batch (R1, without
    gamma / 2). Differentiable with respect to D's weights (create_graph), so it can be minimised."""
    real = real.detach().requires_grad_(True)
    logits = discriminator(real)
    (grad,) = torch.autograd.grad(logits.sum(), real, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def diff_augment(x: torch.Tensor, policy: list[str] | tuple[str, ...]) -> torch.Tensor:
    """Differentiable augmentation (DiffAugment): the same random transforms for real and fake images.

    Random numbers come from torch's global generator, which checkpoints save, so resume stays exact.
    Images are in [-1, 1]; translated-in and cut-out pixels become 0, as in the paper.
    """
    n, c, h, w = x.shape
    dev = x.device

    def rand(*shape: int) -> torch.Tensor:
        return torch.rand(*shape, device=dev, dtype=x.dtype)

    if "color" in policy:
        x = x + (rand(n, 1, 1, 1) - 0.5)  # brightness
        if c > 1:
            mean = x.mean(dim=1, keepdim=True)
            x = (x - mean) * (rand(n, 1, 1, 1) * 2) + mean  # saturation
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        x = (x - mean) * (rand(n, 1, 1, 1) + 0.5) + mean  # contrast
    batch = torch.arange(n, device=dev)[:, None, None]
    if "translation" in policy:
        sh, sw = int(h * 0.125 + 0.5), int(w * 0.125 + 0.5)
        ty = torch.randint(-sh, sh + 1, (n, 1, 1), device=dev)
        tx = torch.randint(-sw, sw + 1, (n, 1, 1), device=dev)
        gy, gx = torch.meshgrid(torch.arange(h, device=dev), torch.arange(w, device=dev), indexing="ij")
        # read from a zero border one pixel wide: indices past the image land on it
        gy = (gy[None] + ty + 1).clamp(0, h + 1)
        gx = (gx[None] + tx + 1).clamp(0, w + 1)
        padded = F.pad(x, (1, 1, 1, 1)).permute(0, 2, 3, 1)
        x = padded[batch, gy, gx].permute(0, 3, 1, 2)
    if "cutout" in policy:
        ch, cw = int(h * 0.5 + 0.5), int(w * 0.5 + 0.5)
        oy = torch.randint(0, h + (1 - ch % 2), (n, 1, 1), device=dev)
        ox = torch.randint(0, w + (1 - cw % 2), (n, 1, 1), device=dev)
        gy, gx = torch.meshgrid(torch.arange(ch, device=dev), torch.arange(cw, device=dev), indexing="ij")
        gy = (gy[None] + oy - ch // 2).clamp(0, h - 1)
        gx = (gx[None] + ox - cw // 2).clamp(0, w - 1)
        mask = torch.ones(n, h, w, device=dev, dtype=x.dtype)
        mask[batch, gy, gx] = 0
        x = x * mask[:, None]
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x.contiguous()


# ---------------------------------------------------------------------------------------------
# Data order: an endless stream of per-epoch permutations, each derived from (seed, epoch).


def _derived_seed(*values: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([int(v) & 0xFFFFFFFF for v in values]).generate_state(1, np.uint64)[0]
               >> 1)


class BatchStream:
    """Indices of real batch b: the slice [b*B, (b+1)*B) of the concatenated epoch permutations.

    Any batch follows from its number alone, so a resumed run sees exactly the batches it would have.
    """

    def __init__(self, n: int, batch_size: int, seed: int) -> None:
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self._perms: dict[int, torch.Tensor] = {}

    def permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._perms:
            if len(self._perms) > 4:
                self._perms.pop(min(self._perms))
            gen = torch.Generator().manual_seed(_derived_seed(self.seed, 1, epoch))
            self._perms[epoch] = torch.randperm(self.n, generator=gen)
        return self._perms[epoch]

    def batch(self, index: int) -> torch.Tensor:
        positions = torch.arange(index * self.batch_size, (index + 1) * self.batch_size)
        epochs, offsets = positions // self.n, positions % self.n
        out = torch.empty_like(positions)
        for e in torch.unique(epochs).tolist():
            sel = epochs == e
            out[sel] = self.permutation(e)[offsets[sel]]
        return out


class _Images:
    """Real images as uint8: one tensor (on the training device when it is CUDA) or a streamed dataset."""

    def __init__(self, dataset: Any, n: int, device: torch.device, progress: ProgressCallback | None) -> None:
        from .data import batch_images

        self.dataset, self.n, self.device = dataset, n, device
        images = getattr(dataset, "images", None)
        if not isinstance(images, torch.Tensor):
            size = n * dataset.nc * dataset.image_size**2
            images = self._materialize(dataset, n, batch_images, progress) if size <= MATERIALIZE_LIMIT else None
        if images is not None:
            images = images[:n]
            if device.type == "cuda":
                images = images.to(device)  # resident on the GPU: no host transfer per batch
        self.images = images

    @staticmethod
    def _materialize(dataset: Any, n: int, batch_images: Any, progress: ProgressCallback | None) -> torch.Tensor:
        # Generated datasets (scenes) are rendered once instead of once per epoch.
        chunks, chunk = [], 256
        for start in range(0, n, chunk):
            chunks.append(batch_images(dataset, range(start, min(n, start + chunk))))
            report(progress, "load data", min(n, start + chunk), n)
        return torch.cat(chunks)

    def get(self, indices: torch.Tensor) -> torch.Tensor:
        from .data import batch_images

        if self.images is not None:
            batch = self.images[indices.to(self.images.device)]
        else:
            batch = batch_images(self.dataset, indices)
        return batch.to(self.device, non_blocking=True)


# ---------------------------------------------------------------------------------------------
# Run directories and checkpoints


def _data_name(data: str) -> str:
    name = Path(str(data).rstrip("/\\")).name or "data"
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name)


def default_run_dir(data: str, root: str | os.PathLike = "runs") -> Path:
    """runs/<nnnnn>-<data>: the next free run number under `root`."""
    root = Path(root)
    numbers = [int(p.name[:5]) for p in root.glob("*") if p.name[:5].isdigit()] if root.is_dir() else []
    return root / f"{max(numbers, default=-1) + 1:05d}-{_data_name(data)}"


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint.pt (or best.pt, or a run directory's checkpoint) with weights_only=True."""
    path = Path(path)
    if path.is_dir():
        path = path / CHECKPOINT_FILE
    if not path.is_file():
        raise GantoolsError(f"no checkpoint at {path}: is this a gantools run directory?")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # truncated or foreign files
        # torch's weights-only message advises weights_only=False, which a user must not do for a
        # file that is not a checkpoint; name the file instead.
        reason = "not a torch checkpoint, or one holding more than tensors" if "Weights only" in str(e) \
            else str(e).splitlines()[0]
        raise GantoolsError(f"cannot read checkpoint {path}: {reason}") from e
    if not isinstance(ckpt, dict) or ckpt.get("format") != CHECKPOINT_FORMAT:
        raise GantoolsError(f"{path} is not a gantools checkpoint")
    return ckpt


def _rng_state(noise_gen: torch.Generator) -> dict[str, Any]:
    state = {"noise": noise_gen.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _restore_rng(state: dict[str, Any], noise_gen: torch.Generator) -> None:
    noise_gen.set_state(state["noise"])
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state.get("cuda"):
        cuda = state["cuda"]
        if len(cuda) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda)


def build_models(config: TrainConfig) -> tuple[Generator, Discriminator]:
    """A fresh G and D for a run, D spectral-normalised when the config says so."""
    mc = config.model_config()
    g, d = Generator(mc), Discriminator(mc)
    if mc.d_norm == "spectral":
        add_spectral_norm(d)
    return g, d


def _models_from_checkpoint(ckpt: dict[str, Any]) -> tuple[Generator, Discriminator, TrainConfig]:
    config = TrainConfig.from_dict(ckpt["config"])
    g, d = build_models(config)
    g.load_state_dict(ckpt["generator"])
    d.load_state_dict(ckpt["discriminator"])
    return g, d, config


def export(run_dir: str | os.PathLike, best: bool = False, out: str | os.PathLike | None = None,
           half: bool = False) -> Path:
    """Write a run's model as one model.safetensors (G and D, config in the metadata).

    Args:
        run_dir: the run directory (or a checkpoint file).
        best: export best.pt (lowest FID, with --eval-every) instead of the latest checkpoint.
        out: destination; default <run_dir>/model.safetensors.
        half: store weights in float16 (half the size).
    """
    run_dir = Path(run_dir)
    path = run_dir if run_dir.is_file() else run_dir / (BEST_FILE if best else CHECKPOINT_FILE)
    if best and not path.is_file():
        raise GantoolsError(f"{run_dir} has no {BEST_FILE}: it is written only by runs with --eval-every")
    ckpt = load_checkpoint(path)
    g, d, config = _models_from_checkpoint(ckpt)
    if ckpt.get("generator_ema") is not None:
        g.load_state_dict(ckpt["generator_ema"])
        recalibrate_batchnorm(g, seed=config.seed)
    out = Path(out) if out is not None else (run_dir.parent if run_dir.is_file() else run_dir) / MODEL_FILE
    meta = {"training": {"step": int(ckpt["step"]), "data": config.data, "data_version": config.data_version,
                         "seed": config.seed, "recipe": config.recipe, "loss": config.loss,
                         "batch_size": config.batch_size, "lr_g": config.lr_g, "lr_d": config.lr_d,
                         "fid": ckpt.get("fid"), "checkpoint": path.name,
                         "ema": config.ema if ckpt.get("generator_ema") is not None else 0.0}}
    return save_model(out, g.eval(), fold_spectral_norm(d), extra_metadata=meta, half=half)


def recalibrate_batchnorm(g: Generator, seed: int = 0, batches: int = 16, batch_size: int = 64) -> Generator:
    """Recompute G's BatchNorm running statistics from a fixed, seeded set of noise batches.

    An averaged (EMA) generator's weights never produced the running statistics it carries, so they
    are re-estimated as the plain mean over `batches` batches (momentum=None). Returns g in eval mode.
    """
    bns = [m for m in g.modules() if isinstance(m, torch.nn.modules.batchnorm._BatchNorm)]
    device = next(g.parameters()).device
    momenta = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None  # cumulative average
    gen = torch.Generator().manual_seed(_derived_seed(seed, 4))
    g.train()
    with torch.no_grad():
        for _ in range(batches):
            g(torch.randn(batch_size, g.config.nz, generator=gen).to(device))
    for m, momentum in zip(bns, momenta):
        m.momentum = momentum
    return g.eval()


# ---------------------------------------------------------------------------------------------
# Training


class _Stop:
    """Defers Ctrl-C to the end of the current step, so the checkpoint holds a consistent state.

    A second Ctrl-C interrupts at once (the checkpoint on disk stays the previous complete one).
    """

    def __init__(self) -> None:
        self.requested = False
        self._old: Any = None

    def __enter__(self) -> "_Stop":
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum: int, frame: Any) -> None:
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc: Any) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


def _read_stats(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # a line cut short by a kill
    return rows


def read_stats(run_dir: str | os.PathLike) -> list[dict[str, Any]]:
    """The logged stats of a run (stats.jsonl), one dict per logged step."""
    return _read_stats(Path(run_dir) / STATS_FILE)


def plot_losses(run_dir: str | os.PathLike) -> Path | None:
    """Draw loss_curve.png (Loss_D and Loss_G against the step) from stats.jsonl; FID in fid_curve.png."""
    from .reports import line_plot

    run_dir = Path(run_dir)
    rows = [r for r in read_stats(run_dir) if "Loss_D" in r]
    if not rows:
        return None
    steps = [float(r["step"]) for r in rows]

    def col(key: str) -> list[float]:
        return [float("nan") if r.get(key) is None else float(r[key]) for r in rows]

    path = line_plot({"Loss_D": (steps, col("Loss_D")), "Loss_G": (steps, col("Loss_G")),
                      "D(x)": (steps, col("D(x)")), "D(G(z))": (steps, col("D(G(z))_before"))},
                     run_dir / "loss_curve.png", title=f"{run_dir.name}: losses and D outputs",
                     xlabel="step")
    fids = [r for r in read_stats(run_dir) if r.get("fid") is not None]
    if fids:
        line_plot({"FID": ([float(r["step"]) for r in fids], [float(r["fid"]) for r in fids])},
                  run_dir / "fid_curve.png", title=f"{run_dir.name}: FID", xlabel="step", ylabel="FID")
    return path


def plot_concepts(run_dir: str | os.PathLike) -> Path | None:
    """Draw concepts_curve.png: each concept's share of generated pixels against the step, as a
    fraction of its share in real images (1 = as often as in the data), from the tracked evaluations."""
    from .reports import line_plot

    run_dir = Path(run_dir)
    rows = [r for r in read_stats(run_dir) if r.get("concepts")]
    if not rows:
        return None
    real = rows[-1]["concepts_real"]
    steps = [float(r["step"]) for r in rows]
    series = {name: (steps, [r["concepts"][name] / real[name] if real[name] > 0 else float("nan") for r in rows])
              for name in real}
    return line_plot(series, run_dir / "concepts_curve.png", xlabel="step", ylabel="generated / real share",
                     title=f"{run_dir.name}: concept pixel shares")


class _ConceptTracker:
    """Each concept's pixel share in generated images, through a segmenter, at every evaluation.

    The same seeded latents every time and the real shares measured once on as many training images
    (through the same segmenter), so successive evaluations compare with each other and with the data.
    """

    SEED = 20240607

    def __init__(self, config: TrainConfig, device: torch.device) -> None:
        from .segmenters import load_segmenter

        self.config, self.device = config, device
        self.segmenter = load_segmenter(config.track_concepts, device=device)
        self.concepts = list(self.segmenter.concepts)
        self.real: list[float] | None = None

    def _shares(self, batches: Any) -> list[float]:
        counts = torch.zeros(len(self.concepts), dtype=torch.float64)
        for images in batches:
            with torch.no_grad():
                labels = self.segmenter(images.to(self.device).float())
            counts += torch.bincount(labels.reshape(-1).cpu(), minlength=len(self.concepts))[:len(self.concepts)]
        return (counts / counts.sum().clamp_min(1)).tolist()

    def real_shares(self, images: "_Images") -> list[float]:
        if self.real is None:
            n = min(self.config.eval_n, images.n)
            self.real = self._shares(from_uint8(images.get(torch.arange(i, min(i + 100, n))))
                                     for i in range(0, n, 100))
        return self.real

    def measure(self, generator: Generator, images: "_Images") -> dict[str, Any]:
        n = self.config.eval_n
        z = generator.sample_z(n, self.SEED, device="cpu")
        with torch.no_grad():
            fake = self._shares(generator(z[i:i + 100].to(self.device)).float() for i in range(0, n, 100))
        real = self.real_shares(images)
        tv = 0.5 * sum(abs(a - b) for a, b in zip(fake, real))
        return {"concepts": dict(zip(self.concepts, fake)), "concepts_real": dict(zip(self.concepts, real)),
                "concepts_tv": tv}


def _total_steps(config: TrainConfig, n: int) -> int:
    if config.steps is not None:
        return int(config.steps)
    epochs = config.epochs if config.epochs is not None else 5
    return max(1, math.ceil(epochs * n / (config.batch_size * config.d_steps)))


def _training_fid():
    try:
        from .metrics import training_fid
    except ImportError as e:
        raise GantoolsError("--eval-every needs gantools.metrics.training_fid, which this install lacks") from e
    return training_fid


def train(config: TrainConfig | None = None, *, resume: str | os.PathLike | None = None,
          progress: ProgressCallback | None = None, **overrides: Any) -> TrainResult:
    """Train a DCGAN (or continue a run) and return what it produced.

    Args:
        config: the run's settings; omit it with `resume`.
        resume: a run directory to continue from its checkpoint.pt; its stored config is used, and only
            scheduling fields (steps, epochs, device, amp, *_every, eval_n) may be overridden.
        progress: callback for progress reports (the CLI's Reporter).
        **overrides: TrainConfig fields replacing those of `config` (or of the resumed run).
    """
    if resume is not None:
        if config is not None:
            raise GantoolsError("give a config or a run to resume, not both")
        run_dir = Path(resume)
        ckpt = load_checkpoint(run_dir / CHECKPOINT_FILE)
        stored = dict(ckpt["config"])
        if overrides.get("data") is not None and Path(overrides["data"]).exists():
            overrides["data"] = str(Path(overrides["data"]).resolve())  # stored resolved, see _Trainer
        current = TrainConfig.from_dict(stored).to_dict()  # resolved, so an unchanged value is no change
        bad = sorted(k for k, v in overrides.items() if k not in RESUMABLE_FIELDS and v != current.get(k))
        if bad:
            raise GantoolsError(f"{', '.join(bad)} cannot change when resuming {run_dir} (only when and how "
                                f"long to train can); start a new run instead")
        if "steps" in overrides and overrides["steps"] is not None:
            stored["epochs"] = None
        if "epochs" in overrides and overrides["epochs"] is not None:
            stored["steps"] = None
        stored.update(overrides)
        stored["out"] = str(run_dir)
        config = TrainConfig.from_dict(stored)
    else:
        if config is None:
            config = TrainConfig()
        if overrides:
            config = dataclasses.replace(config, **overrides)
        ckpt = None
    return _Trainer(config, ckpt, progress).run()


class _Trainer:
    def __init__(self, config: TrainConfig, ckpt: dict[str, Any] | None, progress: ProgressCallback | None) -> None:
        from .data import open_dataset, split_dataset
        from .utils import seed_everything

        self.progress = progress
        self.device = get_device(config.device)
        if Path(config.data).exists():  # stored absolute, so --resume works from any directory
            config = dataclasses.replace(config, data=str(Path(config.data).resolve()))
        self.config = config
        self.run_dir = Path(config.out) if config.out else default_run_dir(config.data)
        config = self.config = dataclasses.replace(config, out=str(self.run_dir))
        if ckpt is None and (self.run_dir / CHECKPOINT_FILE).exists():
            raise GantoolsError(f"{self.run_dir} already holds a run: continue it with --resume {self.run_dir}, "
                                f"or choose another --out")
        self.eval_fn = _training_fid() if config.eval_every > 0 else None

        if config.threads and self.device.type == "cpu":
            torch.set_num_threads(config.threads)
        dataset = open_dataset(config.data, config.image_size, config.nc, n=config.data_n,
                               seed=config.data_seed, progress=progress, version=config.data_version)
        dataset, _ = split_dataset(dataset, config.holdout)
        n = len(dataset)
        self.n = n
        self.images = _Images(dataset, n, self.device, progress)
        self.stream = BatchStream(n, config.batch_size, config.seed)
        self.total = _total_steps(config, n)

        # Weights: seeded here (new run) or loaded (resume). Built on CPU first so that the same seed
        # gives the same initial weights on every device.
        seed_everything(config.seed)
        self.G, self.D = build_models(config)
        self.noise_gen = torch.Generator().manual_seed(_derived_seed(config.seed, 2))
        self.fixed_noise = self.G.sample_z(config.n_samples, seed=_derived_seed(config.seed, 3), device="cpu")
        self.step, self.elapsed, self.best_fid = 0, 0.0, None
        if ckpt is not None:
            self.G.load_state_dict(ckpt["generator"])
            self.D.load_state_dict(ckpt["discriminator"])
            self.fixed_noise = ckpt["fixed_noise"]
            self.step = int(ckpt["step"])
            self.elapsed = float(ckpt.get("elapsed", 0.0))
            self.best_fid = ckpt.get("best_fid")
        self.G_ema: Generator | None = None
        if config.ema > 0:
            import copy

            self.G_ema = copy.deepcopy(self.G).requires_grad_(False)
            if ckpt is not None and ckpt.get("generator_ema") is not None:
                self.G_ema.load_state_dict(ckpt["generator_ema"])
            elif ckpt is not None:
                notice(progress, f"the weight average (--ema {config.ema}) starts at step {self.step}")
        cuda = self.device.type == "cuda"
        memory_format = torch.channels_last if config.channels_last else torch.contiguous_format
        self.G.to(self.device, memory_format=memory_format)
        self.D.to(self.device, memory_format=memory_format)
        if self.G_ema is not None:
            self.G_ema.to(self.device, memory_format=memory_format)
        self.memory_format = memory_format
        betas = (config.beta1, config.beta2)
        self.opt_g = torch.optim.Adam(self.G.parameters(), lr=config.lr_g, betas=betas)
        self.opt_d = torch.optim.Adam(self.D.parameters(), lr=config.lr_d, betas=betas)
        self.last_r1: float | None = None
        self.concept_tracker = _ConceptTracker(config, self.device) if config.track_concepts else None
        self.amp_dtype = None
        if cuda and config.amp:
            self.amp_dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
            torch.backends.cudnn.benchmark = True
        # Loss scaling only for float16 (bfloat16 has float32's range).
        self.scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        if ckpt is not None:
            self.opt_g.load_state_dict(ckpt["opt_g"])
            self.opt_d.load_state_dict(ckpt["opt_d"])
            if ckpt.get("scaler"):
                self.scaler.load_state_dict(ckpt["scaler"])
            _restore_rng(ckpt["rng"], self.noise_gen)
        self.last_good_step: int | None = self.step if ckpt is not None else None
        self.last_samples: Path | None = None
        self.last_stats: dict[str, Any] = {}

    # -- state -------------------------------------------------------------------------------------

    def checkpoint_state(self, fid: float | None = None) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "generator": {k: v.detach().cpu() for k, v in self.G.state_dict().items()},
            "discriminator": {k: v.detach().cpu() for k, v in self.D.state_dict().items()},
            "generator_ema": (None if self.G_ema is None else
                              {k: v.detach().cpu() for k, v in self.G_ema.state_dict().items()}),
            "opt_g": self.opt_g.state_dict(),
            "opt_d": self.opt_d.state_dict(),
            "scaler": self.scaler.state_dict(),
            "step": self.step,
            "config": self.config.to_dict(),
            "fixed_noise": self.fixed_noise.cpu(),
            "rng": _rng_state(self.noise_gen),
            "elapsed": self.elapsed,
            "best_fid": self.best_fid,
            "fid": fid,
        }

    def save_checkpoint(self, name: str = CHECKPOINT_FILE, fid: float | None = None) -> Path:
        path = torch_save(self.checkpoint_state(fid), self.run_dir / name)
        if name == CHECKPOINT_FILE:
            self.last_good_step = self.step
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
        from .data import save_grid

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

    def _autocast(self):
        if self.amp_dtype is None:
            import contextlib

            return contextlib.nullcontext()
        return torch.autocast("cuda", dtype=self.amp_dtype)

    def _real_batch(self, batch_index: int) -> torch.Tensor:
        x = from_uint8(self.images.get(self.stream.batch(batch_index)))
        return x.contiguous(memory_format=self.memory_format)

    def _noise(self) -> torch.Tensor:
        z = torch.randn(self.config.batch_size, self.config.nz, generator=self.noise_gen)
        return z.to(self.device, non_blocking=True)

    def train_step(self) -> dict[str, torch.Tensor]:
        """One generator step after d_steps discriminator steps; returns detached metrics."""
        c, G = self.config, self.G
        policy = c.augmentations()

        def D(x: torch.Tensor) -> torch.Tensor:  # D sees augmented images when asked to (DiffAugment)
            return self.D(diff_augment(x, policy) if policy else x)

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
                loss_d = discriminator_loss(real_logits, fake_logits, c.loss)
            self.opt_d.zero_grad(set_to_none=True)
            self.scaler.scale(loss_d).backward()
            if c.r1 > 0 and (self.step * c.d_steps + k) % R1_EVERY == 0:
                # Lazy R1 in float32 on its own forward pass; its gradients add to the D step's.
                penalty = r1_penalty(D, real)
                self.scaler.scale(penalty * (0.5 * c.r1 * R1_EVERY)).backward()
                self.last_r1 = float(penalty.detach())
            self.scaler.step(self.opt_d)
            self.scaler.update()
        # Generator step against the updated D; D's weights need no gradients here.
        self.D.requires_grad_(False)
        try:
            with self._autocast():
                gen_logits = D(fake).float()
                loss_g = generator_loss(gen_logits, c.loss)
            self.opt_g.zero_grad(set_to_none=True)
            self.scaler.scale(loss_g).backward()
            self.scaler.step(self.opt_g)
            self.scaler.update()
        finally:
            self.D.requires_grad_(True)
        if self.G_ema is not None:
            self.update_ema()
        with torch.no_grad():
            return {"Loss_D": loss_d.detach(), "Loss_G": loss_g.detach(),
                    "D(x)": torch.sigmoid(real_logits).mean(),
                    "D(G(z))_before": torch.sigmoid(fake_logits).mean(),
                    "D(G(z))_after": torch.sigmoid(gen_logits).mean()}

    # -- the loop ----------------------------------------------------------------------------------

    def _prepare_run_dir(self, resumed: bool) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        info = self.config.to_dict()
        info["model"] = self.config.model_config().to_dict()
        info["train_images"] = self.n
        info["total_steps"] = self.total
        write_json(self.run_dir / CONFIG_FILE, info)
        stats = self.run_dir / STATS_FILE
        if resumed:
            # Drop lines logged after the checkpoint (a crash between checkpoints): they are redone.
            rows = [r for r in _read_stats(stats) if int(r.get("step", 0)) <= self.step]
            write_text(stats, "".join(json.dumps(r) + "\n" for r in rows))
            fids = [r["fid"] for r in rows if r.get("fid") is not None]
            self.last_stats = next((r for r in reversed(rows) if "Loss_D" in r), {})
            if fids and self.best_fid is None:
                self.best_fid = min(fids)
        elif stats.exists():
            stats.unlink()

    def run(self) -> TrainResult:
        c = self.config
        resumed = self.last_good_step is not None
        self._prepare_run_dir(resumed)
        if resumed:
            notice(self.progress, f"resuming {self.run_dir} at step {self.step} of {self.total}")
        if self.step >= self.total:
            notice(self.progress, f"{self.run_dir} has already trained {self.step} steps; "
                                  f"pass a larger --steps to continue")
            return self._finish(interrupted=False)
        self.G.train()
        self.D.train()
        check_every = 1 if self.device.type == "cpu" else c.log_every  # a NaN check syncs the GPU
        sums: dict[str, torch.Tensor] = {}
        count, window_time = 0, 0.0  # img/s counts training steps only, not sampling/eval/checkpoints
        shown: dict[str, float] = {}
        with open(self.run_dir / STATS_FILE, "a", encoding="utf-8") as log, _Stop() as stop:
            try:
                while self.step < self.total:
                    t0 = time.perf_counter()
                    metrics = self.train_step()
                    self.step += 1
                    for k, v in metrics.items():
                        sums[k] = sums[k] + v if k in sums else v.clone()
                    count += 1
                    boundary = self.step == self.total
                    if self.step % check_every == 0 or self.step % c.log_every == 0 or boundary:
                        self._check_finite(sums)  # on CUDA this syncs, so the time below is real
                    dt = time.perf_counter() - t0
                    self.elapsed += dt
                    window_time += dt
                    if self.step % c.log_every == 0 or boundary:
                        shown = self._log_row(log, sums, count, window_time)
                        sums, count, window_time = {}, 0, 0.0
                    if c.sample_every and self.step % c.sample_every == 0:
                        self.write_samples()
                    if c.eval_every and self.step % c.eval_every == 0:
                        self._check_finite(sums)
                        row = self.evaluate()
                        fid = row["fid"]
                        log.write(json.dumps(row) + "\n")
                        log.flush()
                        if self.best_fid is None or fid < self.best_fid:
                            self.best_fid = fid
                            self.save_checkpoint(BEST_FILE, fid=fid)
                    if c.checkpoint_every and self.step % c.checkpoint_every == 0 and not boundary:
                        self._check_finite(sums)
                        self.save_checkpoint()
                    report(self.progress, "train", self.step, self.total, **shown)
                    if stop.requested:
                        raise KeyboardInterrupt
            except KeyboardInterrupt:
                # Reached only at a step boundary (see _Stop) or from a callback: the state is consistent.
                notice(self.progress, f"interrupted at step {self.step}: saving a checkpoint")
                self._check_finite(sums)
                if count:
                    self._log_row(log, sums, count, window_time)
                self.save_checkpoint()
                return self._finish(interrupted=True)
        self.save_checkpoint()
        return self._finish(interrupted=False)

    def _log_row(self, log: Any, sums: dict[str, torch.Tensor], count: int, seconds: float) -> dict[str, float]:
        """Write one stats.jsonl line (means over the window) and return the progress bar's metrics."""
        imgs_per_step = self.config.batch_size * self.config.d_steps
        row = {"step": self.step, "epoch": round(self.step * imgs_per_step / self.n, 4)}
        row.update({k: float(v) / count for k, v in sums.items()})
        row["img/s"] = count * imgs_per_step / max(seconds, 1e-9)
        if self.config.r1 > 0 and self.last_r1 is not None:
            row["R1"] = self.last_r1  # the latest lazy evaluation of |grad_x D(x)|^2
        row["time"] = round(self.elapsed, 3)
        log.write(json.dumps(row) + "\n")
        log.flush()
        self.last_stats = row
        return {"img/s": row["img/s"], "Loss_D": row["Loss_D"], "Loss_G": row["Loss_G"], "D(x)": row["D(x)"],
                "D(G(z))": row["D(G(z))_before"]}

    def _check_finite(self, sums: dict[str, torch.Tensor]) -> None:
        if not sums:
            return
        losses = torch.stack([sums["Loss_D"], sums["Loss_G"]])
        if bool(torch.isfinite(losses).all()):
            return
        kept = (f"the last good checkpoint (step {self.last_good_step}) is kept in {self.run_dir / CHECKPOINT_FILE}"
                if self.last_good_step is not None else "no checkpoint had been saved yet")
        raise GantoolsError(f"the loss became NaN or infinite by step {self.step} "
                            f"(Loss_D {float(losses[0]):.4g}, Loss_G {float(losses[1]):.4g}); {kept}. "
                            f"Try lower learning rates (lr_g, lr_d).")

    def _finish(self, interrupted: bool) -> TrainResult:
        if self.config.sample_every == 0 or self.step % self.config.sample_every != 0 or self.last_samples is None:
            self.write_samples()
        plot_losses(self.run_dir)
        plot_concepts(self.run_dir)
        model_path = export(self.run_dir)
        return TrainResult(run_dir=self.run_dir, step=self.step, total_steps=self.total, stats=self.last_stats,
                           model_path=model_path, checkpoint=self.run_dir / CHECKPOINT_FILE,
                           best_fid=self.best_fid, interrupted=interrupted, elapsed=self.elapsed,
                           samples=self.last_samples)
