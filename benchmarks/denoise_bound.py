"""How close can GAN-prior denoising get to the best classical denoiser? An upper bound for issue 17.

Layer-wise inversion (`gantools.invert(..., layerwise=L)`) is run on noisy fresh scenes with every
combination of refined layer, feature-correction weight and refinement steps below, and each result is
scored against the *clean* images. Taking the best combination is an oracle choice (tuned on the test
images, in gantools' favour), so its PSNR bounds what these settings can reach; it is printed beside
the best classical denoiser (also an oracle choice: `restoration.py`'s `classical_denoise`, each given
the true sigma). The noise and the images are those of `benchmarks/restoration.py` (seed 2 + 0).

    python benchmarks/denoise_bound.py --model runs/x/model.safetensors [--n 8] [--sigma 0.1]
"""

from __future__ import annotations

import argparse
import time

import torch

import gantools
from gantools.restoration import ObjectiveWeights
from restoration import classical_denoise, load_clean, noisy_copy, scores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="scenes64")
    ap.add_argument("--n", type=int, default=8, help="fresh scenes")
    ap.add_argument("--sigma", type=float, default=0.1, help="noise std on the [0, 1] scale")
    ap.add_argument("--layers", default="2,3")
    ap.add_argument("--feature-weights", default="0.05,0.5,5")
    ap.add_argument("--layer-steps", default="10,30,100,300")
    ap.add_argument("--steps", type=int, default=150, help="z-only steps before the refinement")
    ap.add_argument("--restarts", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    gan = gantools.load_model(args.model, device="cpu")
    clean, desc = load_clean(gan, None, args.n)
    noisy = noisy_copy(clean, args.sigma, 2)  # restoration.py's noise for its default seed 0
    classic = {name: scores(x, clean)["psnr"] for name, x in classical_denoise(noisy, args.sigma).items()}
    best_classic = max(classic, key=classic.get)
    print(f"{desc}; input PSNR {scores(noisy, clean)['psnr']:.2f}; best classical {best_classic} "
          f"{classic[best_classic]:.2f}", flush=True)
    best = (float("-inf"), "")
    for layer in (int(v) for v in args.layers.split(",")):
        for fw in (float(v) for v in args.feature_weights.split(",")):
            row, t = [], time.time()
            for ls in (int(v) for v in args.layer_steps.split(",")):
                r = gantools.invert(gan, noisy, "denoise", noise_sigma=args.sigma, steps=args.steps,
                                    restarts=args.restarts, encoder=None, layerwise=layer, layer_steps=ls,
                                    weights=ObjectiveWeights(features=fw), batch_size=args.n)
                p = scores(r.layer_images, clean)["psnr"]
                row.append(f"{ls}: {p:.2f}")
                best = max(best, (p, f"layer {layer}, features {fw}, {ls} steps"))
            print(f"layer {layer}, features {fw}: PSNR after " + ", ".join(row) + f" ({time.time() - t:.0f} s)",
                  flush=True)
    print(f"oracle best gantools {best[0]:.2f} ({best[1]}) - best classical {classic[best_classic]:.2f} = "
          f"{best[0] - classic[best_classic]:+.2f} dB (goal: +1)")


if __name__ == "__main__":
    main()
