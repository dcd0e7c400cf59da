"""Restoration: GAN-prior inversion of real images, the encoders that start it, and the classical baselines.

`from gantools.restoration import invert` is the import to use; the modules hold the details.
"""

from .encoder import Encoder, EncoderConfig, EncoderTraining, load_encoder, save_encoder, train_encoder
from .inversion import (DEFAULT_PIXEL_SIGMA, TASKS, Colorize, Degradation, Denoise, Inpaint, InversionResult,
                        ObjectiveWeights, Reconstruct, SuperResolution, compare_strip, estimate_noise_sigma, invert,
                        make_degradation, save_outputs)

__all__ = ["DEFAULT_PIXEL_SIGMA", "TASKS", "Colorize", "Degradation", "Denoise", "Encoder", "EncoderConfig",
           "EncoderTraining", "Inpaint", "InversionResult", "ObjectiveWeights", "Reconstruct", "SuperResolution",
           "compare_strip", "estimate_noise_sigma", "invert", "load_encoder", "make_degradation", "save_encoder",
           "save_outputs", "train_encoder"]
