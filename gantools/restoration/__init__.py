"""Restoration: GAN-prior inversion of real images, the encoders that start it, and the classical baselines.

`from gantools.restoration import invert` is the import to use; the modules hold the details:

- `inversion`: `invert`, which reads the inputs, searches batch by batch and assembles the result;
- `degradations`: the operators A (what an input lacks: pixels, colour, resolution, noise);
- `observations`: reading degraded inputs, masks and clean targets of any size and mode;
- `objectives`: the objective's terms (pixel NLL, discriminator features, latent prior);
- `search`: restarts optimised together with Adam, their starts, the layer-wise refinement;
- `result`: `InversionResult`, scoring against clean images and classical baselines, output files;
- `encoder`: encoders E(x) -> z that give the search its first start;
- `baselines`: the classical restorations (scikit-image) a result is compared with.

Imports run one way: objectives <- degradations <- observations <- result, search <- inversion;
encoder needs only objectives.
"""

from .degradations import (DEFAULT_PIXEL_SIGMA, TASKS, Colorize, Degradation, Denoise, Inpaint, Reconstruct,
                           SuperResolution, estimate_noise_sigma, make_degradation)
from .encoder import (Encoder, EncoderConfig, EncoderEvalResult, EncoderTraining, EncoderTrainResult, encoder_dataset,
                      evaluate_encoder, load_encoder, save_encoder, train_encoder)
from .inversion import InversionSettings, invert
from .objectives import ObjectiveWeights, discriminator_features, perceptual_distance
from .observations import Observations, convert_channels, load_mask, load_observations, load_targets
from .result import InversionResult, compare_strip, save_outputs, score
from .search import Schedule

__all__ = ["DEFAULT_PIXEL_SIGMA", "TASKS", "Colorize", "Degradation", "Denoise", "Encoder", "EncoderConfig",
           "EncoderEvalResult", "EncoderTrainResult", "EncoderTraining", "Inpaint", "InversionResult",
           "InversionSettings", "ObjectiveWeights", "Observations", "Reconstruct", "Schedule", "SuperResolution",
           "compare_strip", "convert_channels", "discriminator_features", "encoder_dataset", "estimate_noise_sigma",
           "evaluate_encoder", "invert", "load_encoder", "load_mask", "load_observations", "load_targets",
           "make_degradation", "perceptual_distance", "save_encoder", "save_outputs", "score", "train_encoder"]
