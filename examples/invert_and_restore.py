"""Restore a damaged image with the GAN prior: cut a hole in an image and inpaint it by inversion.

    python examples/train_tiny.py --out runs/tiny   # first, if no pretrained model is installed
    python examples/invert_and_restore.py --model runs/tiny --out restore-example

Only the public gantools API is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

import gantools


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="scenes64")
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--restarts", type=int, default=4)
    parser.add_argument("--out", default="restore-example")
    args = parser.parse_args(argv)

    model = gantools.load_model(args.model)
    size = model.config.image_size
    # A "real" image we know the answer for: one the generator can draw, so the result is checkable.
    clean = gantools.sample(model, n=1, seed=123)
    mask = torch.zeros(1, 1, size, size)
    mask[..., size // 4: size // 2, size // 4: 3 * size // 4] = 1  # the hole (1 = missing)
    damaged = clean * (1 - mask) + mask  # white hole, as a user's damaged photo might have

    out = Path(args.out)
    result = gantools.invert(model, damaged, task="inpaint", mask=mask, target=clean, names=["example"],
                             steps=args.steps, restarts=args.restarts)
    result.save(out)
    metrics = result.metrics[0]
    print(f"inpainting PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.3f}; outputs in {out}")
    return metrics


if __name__ == "__main__":
    main()
