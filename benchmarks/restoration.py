"""GAN-prior restoration against scikit-image's classical methods, on real images the model never saw.

For each task the clean images are degraded once (seeded), then restored by `gantools.invert`
(the degraded image goes in; the degradation is applied to G(z) inside the loss) and by:

- inpaint:   skimage.restoration.inpaint_biharmonic (random rectangular holes, ~25% of the image);
- denoise:   the best (by mean PSNR, i.e. tuned on the test set: an oracle choice in the classics'
             favour) of denoise_tv_chambolle, denoise_nl_means and denoise_wavelet, each given the
             true sigma; gantools also gets the true sigma;
- superres:  bicubic resizing (skimage.transform.resize, order 3) of the area-downsampled input;
- colorize:  RGB models only: the input's luminance plus the mean chroma (per pixel) of 500
             reference images of the same domain (`gantools invert --target` uses the model's own
             samples as the reference instead);
- reconstruct: the plain inversion, for reference (no classical counterpart).

The classical methods are gantools.restoration.baselines, the ones `gantools invert --target` reports beside
every result. PSNR and SSIM are computed with gantools.metrics (scikit-image, [0, 1] scale). Also measured:

- time to quality: Adam steps needed from encoder initialisation and from random initialisation
  (one start each, no search) to reach the same objective (the larger of the two final values);
- throughput: images/s inverting N images in one batch versus one at a time (same steps, same
  restarts; the results agree, since every latent is optimised independently).

Data: for a 1-channel model the 500 held-out images of ../shared/data/mnist4k, split exactly as
`gantools train --holdout 500` splits it (gantools.data.split_holdout: the last images by sorted file
name within each class folder, since mnist4k's names run class by class); for an RGB model fresh
seeds of the built-in scenes. With --n below 500, evenly spaced held-out images (all classes). Only the
public API is used. On a shared CPU the timings move with other people's load.

    python benchmarks/restoration.py --model mnist32 [--n 500] [--steps 300] [--json out.json]
    python benchmarks/restoration.py --model runs/x/model.safetensors --n 16 --steps 30   # quick check
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import gantools
from gantools.restoration import baselines
from gantools.data import find_images, load_image, split_holdout
from gantools.metrics import psnr, ssim
from gantools.utils import from_uint8, luminance

ROOT = Path(__file__).resolve().parent.parent
MNIST = ROOT.parent / "shared" / "data" / "mnist4k"
HELDOUT = 500
SCENES_TEST_SEED = 20240607  # never used for training
SCENES_REFERENCE_SEED = 7  # reference chroma for the colorization baseline


# ---------------------------------------------------------------------------------------------
# Data and degradations


def load_clean(gan: gantools.GAN, data: str | None, n: int) -> tuple[torch.Tensor, str]:
    """n clean images in [-1, 1] at the generator's resolution, and a description."""
    cfg = gan.config
    if data is None:
        data = str(MNIST) if cfg.nc == 1 else "scenes"
    if data == "scenes":
        from gantools.scenes import Scenes

        ds = Scenes(n=n, image_size=cfg.image_size, seed=SCENES_TEST_SEED, nc=cfg.nc)
        images = torch.stack([ds[i][0] for i in range(n)])
        return from_uint8(images), f"scenes, seed {SCENES_TEST_SEED}, {n} images"
    _, held = split_holdout(find_images(data), HELDOUT)  # exactly what `gantools train --holdout 500` left out
    files = _spread(held, n)
    images = torch.stack([load_image(f, cfg.nc, cfg.image_size) for f in files])
    return from_uint8(images), f"{data}: {len(files)} of the {HELDOUT} held-out images (data.split_holdout)"


def _spread(files: list, n: int) -> list:
    """n of the files, evenly spaced (every class of a class-folder split is represented)."""
    if n >= len(files):
        return list(files)
    return [files[int(i * len(files) / n)] for i in range(n)]


def quantise(x: torch.Tensor) -> torch.Tensor:
    """What a saved 8-bit image holds: clipped and rounded."""
    return ((x.clamp(-1, 1) + 1) * 127.5).round() / 127.5 - 1


def noisy_copy(clean: torch.Tensor, sigma: float, seed: int) -> torch.Tensor:
    """clean plus Gaussian noise of std sigma on the [0, 1] scale (2 sigma in [-1, 1]), saved as 8 bits."""
    g = torch.Generator().manual_seed(seed)
    return quantise(clean + 2 * sigma * torch.randn(clean.shape, generator=g))


def random_holes(n: int, size: int, seed: int) -> torch.Tensor:
    """N x 1 x S x S masks (1 = missing): one rectangle per image, half the side each way (~25%)."""
    g = torch.Generator().manual_seed(seed)
    masks = torch.zeros(n, 1, size, size)
    for i in range(n):
        h = w = size // 2
        top = int(torch.randint(0, size - h + 1, (1,), generator=g))
        left = int(torch.randint(0, size - w + 1, (1,), generator=g))
        masks[i, 0, top:top + h, left:left + w] = 1
    return masks


# ---------------------------------------------------------------------------------------------
# Classical methods: gantools.restoration.baselines, the same code `gantools invert --target` compares against.


def classical_denoise(noisy: torch.Tensor, sigma: float) -> dict[str, torch.Tensor]:
    """Each classical denoiser with a few settings; the caller keeps the best by mean PSNR."""
    candidates = baselines.denoise_candidates(noisy, sigma)
    if not any(name.startswith("wavelet") for name in candidates):
        print("denoise_wavelet skipped: PyWavelets is not installed (pip install PyWavelets)", flush=True)
    return candidates


def scores(images: torch.Tensor, clean: torch.Tensor) -> dict[str, float]:
    p = [psnr(a, b) for a, b in zip(images, clean)]
    s = [ssim(a, b) for a, b in zip(images, clean)]
    finite = [v for v in p if np.isfinite(v)]
    return {"psnr": float(np.mean(finite)), "psnr_sd": float(np.std(finite)),
            "ssim": float(np.mean(s)), "ssim_sd": float(np.std(s))}


# ---------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mnist32", help="model spec: pretrained name, file or run directory")
    ap.add_argument("--data", default=None, help="'scenes' or an image folder (default: by the model's channels)")
    ap.add_argument("--n", type=int, default=100, help="test images (at most 500 for mnist4k)")
    ap.add_argument("--tasks", default="reconstruct,inpaint,denoise,superres,colorize")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--restarts", type=int, default=4)
    ap.add_argument("--batch-size", type=int, default=50)
    ap.add_argument("--layerwise", default=None, help="also report layer-wise inversion at this layer")
    ap.add_argument("--sigma", type=float, default=0.1, help="denoise: noise std on the [0,1] scale")
    ap.add_argument("--scale", type=int, default=4, help="superres factor")
    ap.add_argument("--encoder-steps", type=int, default=1500,
                    help="train an in-memory encoder this long when the model has none (0: no encoder)")
    ap.add_argument("--ttq-n", type=int, default=32, help="images for time-to-quality")
    ap.add_argument("--throughput-n", type=int, default=16, help="images for the throughput comparison")
    ap.add_argument("--throughput-steps", type=int, default=50)
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    t_start = time.time()
    gan = gantools.load_model(args.model, device="cpu")
    cfg = gan.config
    clean, data_desc = load_clean(gan, args.data, args.n)
    n = clean.shape[0]
    print(f"model {args.model} ({cfg.image_size}px, nc={cfg.nc}, nz={cfg.nz}); data: {data_desc}; "
          f"steps {args.steps}, restarts {args.restarts}; load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs",
          flush=True)

    encoder, enc_desc = None, "none"
    if gan.companion("encoder") is not None:
        encoder, enc_desc = gantools.load_encoder(gan.companion("encoder"), gan), str(gan.companion("encoder"))
    elif args.encoder_steps > 0:
        t = time.time()
        encoder = gantools.train_encoder(gan, steps=args.encoder_steps, seed=args.seed).encoder
        enc_desc = f"trained here in memory: {args.encoder_steps} steps, {time.time() - t:.0f} s"
    print(f"encoder: {enc_desc}", flush=True)

    common = dict(steps=args.steps, restarts=args.restarts, batch_size=args.batch_size, encoder=encoder,
                  seed=args.seed)
    tasks = [t.strip() for t in args.tasks.split(",") if t.strip()]
    rows: list[dict] = []
    layer_rows: dict[str, dict] = {}

    def run(task: str, degraded: torch.Tensor, **kw) -> tuple[torch.Tensor, float]:
        t = time.time()
        res = gantools.invert(gan, degraded, task, layerwise=args.layerwise, **common, **kw)
        if res.layer_images is not None:
            layer_rows[task] = scores(res.layer_images, clean)
        return res.images, time.time() - t

    for task in tasks:
        if task == "colorize" and cfg.nc != 3:
            print("colorize: skipped (grayscale model)", flush=True)
            continue
        if task == "reconstruct":
            ours, secs = run(task, clean)
            rows.append({"task": task, "gantools": scores(ours, clean), "classical": None,
                         "classical_name": "-", "input": None, "seconds": secs})
        elif task == "inpaint":
            masks = random_holes(n, cfg.image_size, args.seed + 1)
            degraded = quantise(clean * (1 - masks))
            ours, secs = run(task, degraded, mask=masks)
            classic = baselines.inpaint(degraded, masks)
            rows.append({"task": task, "gantools": scores(ours, clean), "classical": scores(classic, clean),
                         "classical_name": "inpaint_biharmonic", "input": scores(degraded, clean), "seconds": secs})
        elif task == "denoise":
            noisy = noisy_copy(clean, args.sigma, args.seed + 2)
            ours, secs = run(task, noisy, noise_sigma=args.sigma)
            all_classic = {name: scores(x, clean) for name, x in classical_denoise(noisy, args.sigma).items()}
            best = max(all_classic, key=lambda k: all_classic[k]["psnr"])
            rows.append({"task": task, "gantools": scores(ours, clean), "classical": all_classic[best],
                         "classical_name": f"best: {best}", "all_classical": all_classic,
                         "input": scores(noisy, clean), "seconds": secs})
        elif task == "superres":
            low = quantise(F.avg_pool2d(clean, args.scale))
            ours, secs = run(task, low, scale=args.scale)
            classic = baselines.bicubic(low, cfg.image_size)
            rows.append({"task": task, "gantools": scores(ours, clean), "classical": scores(classic, clean),
                         "classical_name": f"bicubic x{args.scale}", "input": None, "seconds": secs})
        elif task == "colorize":
            gray = quantise(luminance(clean))
            ours, secs = run(task, gray)
            reference, _ = _reference(gan, args.data)
            classic = baselines.colorize(gray, baselines.mean_chroma(reference))
            rows.append({"task": task, "gantools": scores(ours, clean), "classical": scores(classic, clean),
                         "classical_name": "mean chroma", "input": None, "seconds": secs})
        else:
            raise SystemExit(f"unknown task {task}")
        r = rows[-1]
        if task in layer_rows:
            r["gantools_layerwise"] = layer_rows[task]
        c = r["classical"]
        lw = r.get("gantools_layerwise")
        print(f"{task}: gantools PSNR {r['gantools']['psnr']:.2f} SSIM {r['gantools']['ssim']:.3f}"
              + (f" (layer-wise {lw['psnr']:.2f} / {lw['ssim']:.3f})" if lw else "")
              + (f" | {r['classical_name']} PSNR {c['psnr']:.2f} SSIM {c['ssim']:.3f}" if c else "")
              + f"  ({r['seconds']:.0f} s)", flush=True)

    ttq = time_to_quality(gan, clean[: args.ttq_n], encoder, args) if encoder is not None and args.ttq_n else None
    thr = throughput(gan, clean[: args.throughput_n], args) if args.throughput_n else None

    print()
    print("| task | gantools PSNR | gantools SSIM | classical | classical PSNR | classical SSIM | input PSNR |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        g, c, i = r["gantools"], r["classical"], r["input"]
        print(f"| {r['task']} | {g['psnr']:.2f} ± {g['psnr_sd']:.2f} | {g['ssim']:.3f} | {r['classical_name']} | "
              + (f"{c['psnr']:.2f} ± {c['psnr_sd']:.2f} | {c['ssim']:.3f}" if c else "- | -")
              + (f" | {i['psnr']:.2f} |" if i else " | - |"))
        if "gantools_layerwise" in r:
            lw = r["gantools_layerwise"]
            print(f"| {r['task']} (layer-wise {args.layerwise}) | {lw['psnr']:.2f} ± {lw['psnr_sd']:.2f} | "
                  f"{lw['ssim']:.3f} | | | | |")
    if ttq:
        print(f"\ntime to quality ({ttq['images']} images, reconstruct, one start each): median steps to reach "
              f"the common loss: encoder init {ttq['median_steps_encoder']}, random init "
              f"{ttq['median_steps_random']} (of {ttq['steps']}); reached by encoder init for "
              f"{ttq['encoder_reached']}/{ttq['images']}, random init for {ttq['random_reached']}/{ttq['images']}")
    if thr:
        print(f"throughput ({thr['images']} images, {thr['steps']} steps, {thr['restarts']} restarts): batched "
              f"{thr['batched_img_per_s']:.2f} img/s vs one at a time {thr['single_img_per_s']:.2f} img/s "
              f"(x{thr['speedup']:.1f}); max |z| difference {thr['max_z_diff']:.2e}")
    print(f"total {time.time() - t_start:.0f} s")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"model": args.model, "data": data_desc, "encoder": enc_desc,
                                         "settings": {k: (str(v) if isinstance(v, Path) else v)
                                                      for k, v in vars(args).items()},
                                         "tasks": rows, "time_to_quality": ttq, "throughput": thr}, indent=2))


def _reference(gan: gantools.GAN, data: str | None) -> tuple[torch.Tensor, str]:
    """Reference images for the mean-chroma baseline: another seed of scenes, or the folder's training part."""
    cfg = gan.config
    if data is None or data == "scenes":
        from gantools.scenes import Scenes

        ds = Scenes(n=500, image_size=cfg.image_size, seed=SCENES_REFERENCE_SEED, nc=cfg.nc)
        return from_uint8(torch.stack([ds[i][0] for i in range(500)])), "scenes"
    files = _spread(split_holdout(find_images(data), HELDOUT)[0], 500)
    return from_uint8(torch.stack([load_image(f, cfg.nc, cfg.image_size) for f in files])), data


def start_history(gan: gantools.GAN, images: torch.Tensor, encoder, args) -> torch.Tensor:
    """The loss of each image's single start (E(x), or random with encoder None) before each step:
    (steps + 1) x N."""
    kw = dict(steps=args.steps, restarts=1, init_samples=1, batch_size=args.batch_size, seed=args.seed)
    return gantools.invert(gan, images, encoder=encoder, **kw).history


def time_to_quality(gan: gantools.GAN, images: torch.Tensor, encoder, args,
                    random_history: torch.Tensor | None = None) -> dict:
    """Steps each start takes to reach the larger of the two final losses (see encoder_start.py);
    `random_history` (from `start_history`) saves inverting from random starts again."""
    enc = start_history(gan, images, encoder, args)
    rnd = start_history(gan, images, None, args) if random_history is None else random_history
    target = torch.maximum(enc[-1], rnd[-1])

    def first(h: torch.Tensor) -> list[int | None]:
        out = []
        for i in range(h.shape[1]):
            hit = (h[:, i] <= target[i] + 1e-6).nonzero()
            out.append(int(hit[0]) if len(hit) else None)
        return out

    se, sr = first(enc), first(rnd)
    med = lambda v: float(np.median([x for x in v if x is not None])) if any(x is not None for x in v) else None  # noqa: E731
    return {"images": images.shape[0], "steps": args.steps, "median_steps_encoder": med(se),
            "median_steps_random": med(sr), "encoder_reached": sum(x is not None for x in se),
            "random_reached": sum(x is not None for x in sr), "steps_encoder": se, "steps_random": sr,
            "init_loss_encoder": float(enc[0].mean()), "init_loss_random": float(rnd[0].mean()),
            "final_loss_encoder": float(enc[-1].mean()), "final_loss_random": float(rnd[-1].mean())}


def throughput(gan: gantools.GAN, images: torch.Tensor, args) -> dict:
    kw = dict(steps=args.throughput_steps, restarts=args.restarts, encoder=None, seed=args.seed)
    t = time.time()
    batched = gantools.invert(gan, images, batch_size=images.shape[0], **kw)
    tb = time.time() - t
    t = time.time()
    single = gantools.invert(gan, images, batch_size=1, **kw)
    ts = time.time() - t
    n = images.shape[0]
    return {"images": n, "steps": args.throughput_steps, "restarts": args.restarts,
            "batched_img_per_s": n / tb, "single_img_per_s": n / ts, "speedup": ts / tb,
            "max_z_diff": float((batched.z - single.z).abs().max())}


if __name__ == "__main__":
    main()
