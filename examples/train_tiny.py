"""Train a tiny DCGAN on the built-in scenes, then sample from it and walk its latent space.

    python examples/train_tiny.py --steps 300 --out runs/tiny

Only the public gantools API is used.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import gantools


def main(argv: list[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=32)
    parser.add_argument("--width", type=int, default=32, help="ngf = ndf")
    parser.add_argument("--data-n", type=int, default=2000, help="scenes rendered for training")
    parser.add_argument("--out", default="runs/tiny")
    args = parser.parse_args(argv)

    config = gantools.TrainConfig(data="scenes", image_size=args.image_size, ngf=args.width, ndf=args.width,
                                  steps=args.steps, data_n=args.data_n, sample_every=0, checkpoint_every=0,
                                  out=args.out, device="auto")
    result = gantools.train(config)
    last = result.stats  # the last logged losses and D outputs
    print(f"trained {result.step} steps: Loss_D {last.get('Loss_D', float('nan')):.3f}, "
          f"D(x) {last.get('D(x)', float('nan')):.3f} -> {result.model_path}")

    model = gantools.load_model(result.model_path)
    out = Path(args.out)
    gantools.save_grid(gantools.sample(model, n=16, seed=0), out / "grid.png", nrow=4)
    gantools.save_grid(gantools.interpolate(model, seed=0, seed2=1, frames=8), out / "interpolation.png", nrow=8)
    print(f"wrote {out / 'grid.png'} and {out / 'interpolation.png'}")
    return result.model_path


if __name__ == "__main__":
    main()
