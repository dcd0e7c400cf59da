"""How much does an encoder start save? Steps to reach a random start's final loss, for each model.

Issue #18's row: "steps to reach a random start's final loss: random ÷ from the encoder" (goal >= 5).
For each model this inverts the same test images twice with the same objective and schedule
(`--steps` Adam steps, one start, no search among random candidates): once from E(x), once from a
random z. Per image the target is the larger of the two final losses (the random start's, whenever
the encoder start ends lower), and each start's step count is the first step at which it reaches
the target. The ratio is median(random steps) / median(encoder steps). It counts steps, not
seconds, so the figure does not move with the machine's load.

Test images are those of benchmarks/restoration.py: the held-out digits of ../shared/data/mnist4k
for a 1-channel model (evenly spaced over the 500, all classes), fresh seeds of the built-in scenes
for an RGB model. The encoder is the model's own (encoder.safetensors beside it) unless --encoder
names a file (one model only). Its start steps at the encoder's own `start_rate` times the learning
rate; `--start-rates 0.06,0.12,0.25` measures the ratio at each of those instead (the random starts
are inverted once), to choose the `--start-rate` that `gantools encoder train` stores.

    python benchmarks/encoder_start.py [--models mnist32,scenes64] [--n 32] [--steps 300] [--start-rates R,...]
        [--seed 0] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

import gantools
from restoration import load_clean, start_history, time_to_quality


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--models", default="mnist32,scenes64", help="comma-separated model specs")
    ap.add_argument("--encoder", default=None, help="encoder file to use instead of the model's own (one model)")
    ap.add_argument("--n", type=int, default=32, help="test images per model")
    ap.add_argument("--steps", type=int, default=300, help="Adam steps of each inversion")
    ap.add_argument("--start-rates", default=None,
                    help="comma-separated start rates to measure (default: the encoder's own)")
    ap.add_argument("--seed", type=int, default=0, help="seeds the random starts (and so each image's target)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    models = [m for m in args.models.split(",") if m]
    if args.encoder and len(models) != 1:
        ap.error("--encoder goes with exactly one model")
    rows = []
    for spec in models:
        gan = gantools.load_model(spec, device="cpu")
        encoder_path = args.encoder or gan.companion("encoder")
        if encoder_path is None:
            print(f"{spec}: no encoder beside the model; skipped")
            continue
        encoder = gantools.load_encoder(encoder_path, gan)
        clean, described = load_clean(gan, None, args.n)
        settings = argparse.Namespace(steps=args.steps, batch_size=50, seed=args.seed)
        start = time.time()
        random_history = start_history(gan, clean[: args.n], None, settings)
        rates = [float(r) for r in args.start_rates.split(",")] if args.start_rates else [encoder.config.start_rate]
        for rate in rates:
            encoder.config = encoder.config.replace(start_rate=rate)
            ttq = time_to_quality(gan, clean[: args.n], encoder, settings, random_history)
            ratio = ttq["median_steps_random"] / max(ttq["median_steps_encoder"], 1.0)
            rows.append({"model": spec, "encoder": str(encoder_path), "start_rate": rate, "data": described,
                         "ratio": ratio, "seconds": round(time.time() - start, 1), **ttq})
            print(f"{spec}, start rate {rate:g}: encoder start {ttq['median_steps_encoder']} steps, random start "
                  f"{ttq['median_steps_random']} (median of {ttq['images']}; {described}): ratio {ratio:.2f} "
                  f"(goal >= 5); initial loss {ttq['init_loss_encoder']:.3f} vs {ttq['init_loss_random']:.3f}",
                  flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
