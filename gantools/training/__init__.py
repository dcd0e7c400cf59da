"""DCGAN training with real checkpoints: bit-exact resume, atomic writes, Ctrl-C and NaN safety.

    from gantools.training import TrainConfig, train
    result = train(TrainConfig(data="digits/", image_size=32, nc=1, steps=2000))
    result = train(resume=result.run_dir, steps=4000)      # continue the same run

The modules follow a run: `config` (TrainConfig, recipes, resume rules; no torch), `batches` (the data
order), `losses` (losses, R1, DiffAugment), `loop` (train), `monitor` (curves, concept tracking),
`checkpoint` (the run directory on disk), `exporting` (the model file) and `parallel` (what a run on
several processes under torchrun does differently). Every public name is
re-exported here; all but the config load lazily, so reading TrainConfig's defaults costs no torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..utils import lazy_exports

from .config import AUGMENTATIONS, DEFAULT_EPOCHS, DEFAULT_RECIPE, LOSSES, RECIPES, RESUMABLE_FIELDS, TrainConfig, \
    resume_config

if TYPE_CHECKING:  # what tools see; at run time __getattr__ imports these on first use
    from .batches import MATERIALIZE_LIMIT, BatchStream, TrainingImages, derived_seed
    from .augment import Augmentation, adapted_p
    from .checkpoint import BEST_FILE, CHECKPOINT_FILE, CHECKPOINT_FORMAT, CONFIG_FILE, STATS_FILE, build_models, \
        default_run_dir, load_checkpoint, models_from_checkpoint, read_stats
    from .exporting import export, recalibrate_batchnorm
    from .loop import TrainResult, train
    from .losses import R1_EVERY, diff_augment, discriminator_loss, generator_loss, most_real, r1_penalty
    from .monitor import ConceptTracker, plot_concepts, plot_losses

_LAZY = {
    "Augmentation": "augment", "adapted_p": "augment",
    "MATERIALIZE_LIMIT": "batches", "BatchStream": "batches", "TrainingImages": "batches", "derived_seed": "batches",
    "BEST_FILE": "checkpoint", "CHECKPOINT_FILE": "checkpoint", "CHECKPOINT_FORMAT": "checkpoint",
    "CONFIG_FILE": "checkpoint", "STATS_FILE": "checkpoint", "build_models": "checkpoint",
    "default_run_dir": "checkpoint", "load_checkpoint": "checkpoint", "models_from_checkpoint": "checkpoint",
    "read_stats": "checkpoint",
    "export": "exporting", "recalibrate_batchnorm": "exporting",
    "TrainResult": "loop", "train": "loop",
    "R1_EVERY": "losses", "diff_augment": "losses", "discriminator_loss": "losses", "generator_loss": "losses",
    "most_real": "losses", "r1_penalty": "losses",
    "ConceptTracker": "monitor", "plot_concepts": "monitor", "plot_losses": "monitor",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = ["AUGMENTATIONS", "Augmentation", "BEST_FILE", "BatchStream", "CHECKPOINT_FILE", "CHECKPOINT_FORMAT",
           "CONFIG_FILE", "ConceptTracker", "DEFAULT_EPOCHS", "DEFAULT_RECIPE", "LOSSES",
           "MATERIALIZE_LIMIT", "R1_EVERY", "RECIPES", "RESUMABLE_FIELDS", "STATS_FILE", "TrainConfig",
           "TrainResult", "TrainingImages", "adapted_p", "build_models", "default_run_dir", "derived_seed",
           "diff_augment", "discriminator_loss", "export", "generator_loss", "load_checkpoint",
           "models_from_checkpoint", "most_real", "plot_concepts", "plot_losses", "r1_penalty", "read_stats",
           "recalibrate_batchnorm", "resume_config", "train"]
