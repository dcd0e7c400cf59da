"""What a training run is: `TrainConfig`, the named recipes, and how a resumed run's settings are worked out.

No torch here: the CLI reads these defaults for its `--help`. A run's config.json and checkpoint keep
the config flat (architecture and training fields side by side), as every version has written it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from ..architecture import ModelConfig
from ..utils import GantoolsError

LOSSES = ("nonsaturating", "minimax", "hinge")
AUGMENTATIONS = ("color", "translation", "cutout")

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
DEFAULT_EPOCHS = 5  # when neither steps nor epochs is given

# Fields that may change when a run is resumed: when and how long to train, not what to train.
# ema too: the average is read from G and never feeds back into training; a run resumed with a new
# ema starts its average from the generator of the checkpoint.
RESUMABLE_FIELDS = frozenset({"steps", "epochs", "device", "amp", "cpu_amp", "log_every", "sample_every",
                              "checkpoint_every", "snapshot_every", "eval_every", "eval_n", "track_concepts", "ema",
                              "threads", "channels_last"})


@dataclass
class TrainConfig(ModelConfig):
    """Everything that defines a training run (stored in config.json and in the checkpoint).

    The architecture fields (image_size, nc, nz, ngf, ndf, d_norm) are ModelConfig's, inherited so that
    the stored config stays one flat dict; `model_config()` is the architecture alone. The recipe
    fields (d_norm, loss, lr_g, lr_d, beta1, beta2, r1) default to None, which means "as the recipe
    says"; the stored config holds the resolved values. The default recipe, "dcgan", is the paper's:
    Adam lr 2e-4, betas (0.5, 0.999), BatchNorm in D, non-saturating loss, batch 64.

    Args:
        image_size, nc, nz, ngf, ndf: the architecture (see ModelConfig).
        data: a folder of images or a built-in dataset name ("scenes").
        data_version: version of a built-in dataset's design (scenes: 1 or 2); None: its current one.
            Runs stored without it used version 1.
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
        cpu_amp: bfloat16 autocast on the CPU too (off by default: it changes a run's numerics). A
            DCGAN-64 at ngf 56 steps 2.15x faster with it on this project's 2-core CPUs (one run).
        data_n: number of images for generated datasets (scenes); ignored for folders.
        data_seed: seed of generated datasets.
        holdout: leave `holdout` images out of training, for evaluation: the last by sorted file name
            within each class folder (see data.split_holdout), or the last ones of a flat or generated dataset.
        log_every: steps between stats.jsonl lines (each line averages the steps since the last).
        sample_every: steps between sample grids (0: only at the end).
        checkpoint_every: steps between checkpoints (0: only at the end).
        snapshot_every: steps between model snapshots, `snapshots/step_NNNNNN.safetensors` (the model
            file `export` would write at that step, kept to choose among later; 0: none).
        eval_every: steps between evaluations (0: never): FID, kept as best.pt when lowest, and with
            track_concepts each concept's pixel share in generated images.
        eval_n: generated images per evaluation.
        track_concepts: a segmenter (file or pretrained model name) whose concept pixel shares in
            generated and real images are logged at every evaluation (needs eval_every).
        n_samples: images in the fixed-noise sample grids.
        augment: differentiable augmentation of every image D sees, real and generated, in both
            steps (DiffAugment, Zhao et al. 2020): a comma-separated subset of "color" (brightness,
            saturation, contrast), "translation" (up to 1/8 of the side) and "cutout" (a square of
            half the side). Keeps D from memorising a small dataset; "" (default), "off" or "none" is off.
        augment_p: probability that each image D sees is augmented (1: all of them, as in DiffAugment).
        augment_target: when above 0, augment_p adapts to D's overfitting (ADA, Karras et al. 2020): it
            starts at augment_p and moves so that the mean sign of D's logits on real images stays at this
            target (0.6 is ADA's), by up to 1 per 500,000 real images (`training.augment`).
        g_top_k: share of each batch's generated images that G's loss is taken over: the ones D rates
            most real (top-k training, Sinha et al. 2020), so that G is not pulled by the gradients of
            its worst samples; 1 (default): all of them.
        ema: decay of an exponential moving average of G's weights (0: off; 0.999 is typical). With it,
            grids, FID and the exported model use the averaged generator, which smooths out the
            oscillation of the adversarial game (as in ProGAN and StyleGAN). Its BatchNorm statistics
            are recomputed on a fixed seeded noise set, since running statistics of G do not fit it.
        threads: torch intra-op threads on the CPU (0: torch's default, one per core).
        sync_bn: under torchrun, BatchNorm normalises with the statistics of the global batch (all
            processes' images), so N processes train like one with N times the batch. None: on under
            torchrun. torch's SyncBatchNorm runs on CUDA only: on the CPU each process keeps its own
            batch statistics, with a notice, and the run records false. Unused by one process.
        channels_last: store images and weights channels-last (NHWC): faster on CUDA, and 1.26x faster
            per step than contiguous NCHW on this project's 2-core CPUs with both threads, 1.19x with
            one (benchmarks/cpu_layout.py). Two threads are 1.7x faster than one on a quiet machine.
        init: a run directory or checkpoint file whose G and D weights this run starts from (a warm
            start: same architecture, any recipe; fresh optimisers, step 0, the average restarts from G).
            For example, continue a run that D began to overpower with an R1 penalty or a lower rate,
            which `resume` refuses to change. None: seeded random weights.
    """

    d_norm: str | None = None  # ModelConfig's field, here filled by the recipe when not given
    data: str = "scenes"
    data_version: int | None = None
    batch_size: int = 64
    recipe: str = DEFAULT_RECIPE
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
    cpu_amp: bool = False
    data_n: int | None = None
    data_seed: int = 0
    holdout: int = 0
    log_every: int = 10
    sample_every: int = 500
    checkpoint_every: int = 500
    snapshot_every: int = 0
    eval_every: int = 0
    eval_n: int = 1000
    track_concepts: str | None = None
    n_samples: int = 64
    augment: str = ""
    augment_p: float = 1.0
    augment_target: float = 0.0
    g_top_k: float = 1.0
    ema: float = 0.0
    threads: int = 0
    channels_last: bool = True
    sync_bn: bool | None = None
    init: str | None = None

    def __post_init__(self) -> None:
        if self.recipe not in RECIPES:
            raise GantoolsError(f"unknown recipe {self.recipe!r}: use {' or '.join(RECIPES)}")
        for name, value in RECIPES[self.recipe].items():  # the recipe fills what was not given
            if getattr(self, name) is None:
                setattr(self, name, value)
        if self.data_version is None:
            from ..data import dataset_version

            self.data_version = dataset_version(self.data)
        super().__post_init__()  # checks image_size, nc, nz, ngf, ndf, d_norm
        self._check_training_fields()

    def _check_training_fields(self) -> None:
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
        for name in ("sample_every", "checkpoint_every", "snapshot_every", "eval_every", "holdout", "threads"):
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
        if not 0 <= self.augment_p <= 1:
            raise GantoolsError(f"augment_p must lie in [0, 1], got {self.augment_p}")
        if not 0 <= self.augment_target < 1:
            raise GantoolsError(f"augment_target must lie in [0, 1), got {self.augment_target}")
        if self.augment_target > 0 and not self.augmentations():
            raise GantoolsError("augment_target adapts how often the augmentation is applied: give augment too")
        if not 0 < self.g_top_k <= 1:
            raise GantoolsError(f"g_top_k must lie in (0, 1], got {self.g_top_k}")
        if not 0 <= self.ema < 1:
            raise GantoolsError(f"ema must lie in [0, 1), got {self.ema}")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise GantoolsError(f"Adam betas must lie in [0, 1), got ({self.beta1}, {self.beta2})")

    @classmethod
    def upgrade(cls, d: dict[str, Any]) -> dict[str, Any]:
        """Configs written before recipes existed ran the paper's recipe with one learning rate, scenes
        design version 1, and the contiguous memory layout."""
        if "recipe" not in d:
            d["recipe"] = "dcgan"
            if "lr" in d:
                d.setdefault("lr_g", d["lr"])
                d.setdefault("lr_d", d["lr"])
            if d.get("data") == "scenes":
                d.setdefault("data_version", 1)
            d.setdefault("channels_last", False)  # as they ran on the CPU
        return d

    def to_dict(self) -> dict[str, Any]:
        """The flat dict a run stores (config.json, checkpoints). sync_bn, which only a run on several
        processes settles, is left out while unset, so a one-process run stores the keys it always has."""
        d = super().to_dict()
        if d.get("sync_bn") is None:
            d.pop("sync_bn", None)
        return d

    def model_config(self) -> ModelConfig:
        """The architecture alone: the ModelConfig of the networks this run trains."""
        return ModelConfig(**{f.name: getattr(self, f.name) for f in fields(ModelConfig)})

    def augmentations(self) -> list[str]:
        """The augment policy as a list of names ("off" and "none" name the empty policy)."""
        if self.augment.strip().lower() in ("off", "none"):
            return []
        return [a.strip() for a in self.augment.split(",") if a.strip()]

    def total_steps(self, n: int, processes: int = 1) -> int:
        """Generator steps the run trains in all, with `n` training images (steps, or epochs converted);
        each step takes batch_size images per process from each of `processes` processes."""
        if self.steps is not None:
            return int(self.steps)
        epochs = self.epochs if self.epochs is not None else DEFAULT_EPOCHS
        return max(1, math.ceil(epochs * n / (self.batch_size * self.d_steps * processes)))


def resume_config(stored: dict[str, Any], overrides: dict[str, Any], run_dir: str | Path) -> TrainConfig:
    """The config a resumed run trains with: the one stored in its checkpoint, with `overrides` applied.

    Only RESUMABLE_FIELDS (when and how long to train) may change; another field may be given only
    with its stored value. A new `steps` drops the stored `epochs` and the other way round. A `data`
    folder is compared by its resolved path, as runs store it.
    """
    overrides = dict(overrides)
    if overrides.get("data") is not None and Path(overrides["data"]).exists():
        overrides["data"] = str(Path(overrides["data"]).resolve())
    current = TrainConfig.from_dict(stored).to_dict()  # resolved, so an unchanged value is no change
    bad = sorted(k for k, v in overrides.items() if k not in RESUMABLE_FIELDS and v != current.get(k))
    if bad:
        raise GantoolsError(f"{', '.join(bad)} cannot change when resuming {run_dir} (only when and how "
                            f"long to train can); start a new run instead")
    merged = dict(stored)
    if overrides.get("steps") is not None:
        merged["epochs"] = None
    if overrides.get("epochs") is not None:
        merged["steps"] = None
    merged.update(overrides)
    merged["out"] = str(run_dir)
    return TrainConfig.from_dict(merged)


__all__ = ["AUGMENTATIONS", "DEFAULT_EPOCHS", "DEFAULT_RECIPE", "LOSSES", "RECIPES", "RESUMABLE_FIELDS",
           "TrainConfig", "resume_config"]
