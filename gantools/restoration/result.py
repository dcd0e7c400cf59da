"""What an inversion produced (`InversionResult`), how it scores against clean images, and its files.

`score` puts each result beside the degraded input itself and the task's classical baseline
(`restoration.baselines`), so a user sees when the GAN prior did not help; `compare_strip` and
`save_outputs` write what the CLI's `invert --out` directory holds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import torch
import torch.nn.functional as F

from ..data import make_grid, resize_center_crop, save_image
from ..metrics import psnr, ssim
from ..types import ImageSource
from ..utils import ProgressCallback, notice, to_uint8, torch_save
from . import baselines as classical
from .observations import convert_channels, load_targets


@dataclass
class InversionResult:
    """What `invert` found, per image (tensors are on the CPU, images in [-1, 1]).

    Args:
        task: the task.
        names: input stems.
        observed: the inputs as the model saw them (observation space).
        seen: the observations shown at generator resolution (encoder input / display).
        z: N x nz, the winning latent of the z-only optimisation.
        raw: G(z), N x C x S x S.
        images: the restored images (known pixels composited, luminance kept, block means matched).
        losses: per-image final terms of the z-only objective: total, pixel (NLL), perceptual,
            prior, mse (observation space, [0, 1] scale).
        init_loss: per-image objective at the winning restart's starting point.
        restart_losses: N x K final objective of every restart.
        best_restart: N, index of the winning restart.
        init: how each restart started ("encoder" or "random").
        history: (steps + 1) x N, the best objective over restarts before each step, then the final one.
        layer: canonical layer name of the layer-wise refinement, or None.
        layer_z, features, layer_raw, layer_images, layer_losses, layer_history: the same for the
            layer-wise refinement (features = the layer's output for layer_z plus the optimised
            correction); `hooks.generate_from(G, layer, features)` reproduces layer_raw.
        metrics: per image, when a clean target was given: PSNR/SSIM of the result (psnr, ssim, and
            layer_psnr, layer_ssim with layer-wise), of the degraded input (input_psnr, input_ssim)
            and of the classical baseline (baseline, baseline_psnr, baseline_ssim), and worse_than
            (see `score`).
        settings: the parameters used.
        originals: the inputs as read (uint8, their own size), for display.
        sources: the file each input came from (None for tensor inputs).
        missing: inpaint: the hole (N|1 x 1 x S x S, 1 = missing) at generator resolution.
    """

    task: str
    names: list[str]
    observed: torch.Tensor
    seen: torch.Tensor
    z: torch.Tensor
    raw: torch.Tensor
    images: torch.Tensor
    losses: dict[str, torch.Tensor]
    init_loss: torch.Tensor
    restart_losses: torch.Tensor
    best_restart: torch.Tensor
    init: list[str]
    history: torch.Tensor
    layer: str | None = None
    layer_z: torch.Tensor | None = None
    features: torch.Tensor | None = None
    layer_raw: torch.Tensor | None = None
    layer_images: torch.Tensor | None = None
    layer_losses: dict[str, torch.Tensor] | None = None
    layer_history: torch.Tensor | None = None
    metrics: list[dict[str, Any]] = field(default_factory=list)
    settings: dict[str, Any] = field(default_factory=dict)
    originals: list[torch.Tensor] | None = field(default=None, repr=False)
    missing: torch.Tensor | None = field(default=None, repr=False)
    sources: list[str | None] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.names)

    @property
    def final_images(self) -> torch.Tensor:
        """The result to keep: the layer-wise images when that refinement ran, else the z-only ones."""
        return self.layer_images if self.layer_images is not None else self.images

    def save(self, out_dir: str | os.PathLike) -> Path:
        """Write <stem>.png, <stem>_compare.png and <stem>.latent.pt per image into `out_dir` (see
        `save_outputs`, which also returns each image's paths); returns the directory."""
        save_outputs(self, out_dir)
        return Path(out_dir)

    def latent(self, i: int) -> dict[str, Any]:
        """What `<stem>.latent.pt` holds for image i (tensors and strings; loads with weights_only=True)."""
        out: dict[str, Any] = {"z": self.z[i].clone(), "task": self.task,
                               "model_fingerprint": self.settings.get("model_fingerprint", "")}
        if self.layer is not None:
            out.update(layer=self.layer, layer_z=self.layer_z[i].clone(), features=self.features[i].clone())
        return out

    def record(self, i: int) -> dict[str, Any]:
        """One JSON-ready dict of image i's losses and metrics."""
        rec: dict[str, Any] = {"name": self.names[i], "task": self.task}
        if self.sources and self.sources[i] is not None:
            rec["input"] = self.sources[i]
        rec.update({f"{k}_loss" if k not in ("mse",) else k: float(v[i]) for k, v in self.losses.items()})
        rec["init_loss"] = float(self.init_loss[i])
        rec["restart"] = int(self.best_restart[i])
        rec["init"] = self.init[int(self.best_restart[i])]
        rec["restart_losses"] = [float(v) for v in self.restart_losses[i]]
        sigma = self.settings.get("noise_sigma")
        if sigma is not None:
            rec["noise_sigma"] = float(sigma[i])
        if self.layer is not None and self.layer_losses is not None:
            rec["layerwise"] = {"layer": self.layer, **{f"{k}_loss" if k != "mse" else k: float(v[i])
                                                          for k, v in self.layer_losses.items()}}
        if self.metrics and self.metrics[i]:
            m = dict(self.metrics[i])
            rec["psnr"], rec["ssim"] = m.get("psnr"), m.get("ssim")
            if "layer_psnr" in m and "layerwise" in rec:
                rec["layerwise"].update(psnr=m["layer_psnr"], ssim=m["layer_ssim"])
            for key in ("input_psnr", "input_ssim", "baseline", "baseline_psnr", "baseline_ssim", "worse_than"):
                if key in m:
                    rec[key] = m[key]
        return rec


def score(result: InversionResult, target: ImageSource | Sequence[torch.Tensor | None], progress: ProgressCallback | None = None, *,
          baselines: bool = True, chroma: torch.Tensor | None = None) -> list[dict[str, Any]]:
    """PSNR and SSIM ([0, 1] scale) of each result against its clean target, beside the same numbers
    for the degraded input itself and for the task's classical baseline.

    Args:
        result: an inversion result (or one batch of it).
        target: the clean images: anything `load_targets` reads, or the list it returns.
        progress: callback (notices about missing or resized targets).
        baselines: also score the degraded input and the classical baseline.
        chroma: colorize: the domain's mean chroma for the baseline (`baselines.mean_chroma`; `invert`
            uses its model's own samples); None: no colorization baseline.

    Returns, per image (an empty dict where there is no target):
        psnr, ssim: the z-only result; layer_psnr, layer_ssim: the layer-wise result, when it ran.
        input_psnr, input_ssim: the degraded input against the target: the noisy or masked input as
            it is, the gray input as RGB; for superres (another size) its bicubic upsampling.
        baseline, baseline_psnr, baseline_ssim: the classical method (see `restoration.baselines`:
            biharmonic inpainting, the best of TV / NL-means / wavelet denoising for this image,
            bicubic upsampling, mean-chroma colorization) and its scores.
        worse_than: which of "input" and "baseline" have a higher PSNR than the final result (the
            layer-wise one when it ran): then the GAN prior did not help this image.
    """
    s = result.images.shape[-1]
    nc = result.images.shape[1]
    loaded = isinstance(target, list) and all(t is None or isinstance(t, torch.Tensor) for t in target)
    clean = target if loaded else load_targets(target, result.names, s, nc, progress)
    out: list[dict[str, Any]] = []
    for i, t in enumerate(clean):
        if t is None:
            out.append({})
            continue
        m: dict[str, Any] = {"psnr": psnr(result.images[i], t), "ssim": ssim(result.images[i], t)}
        if result.layer_images is not None:
            m.update(layer_psnr=psnr(result.layer_images[i], t), layer_ssim=ssim(result.layer_images[i], t))
        out.append(m)
    if baselines and result.task in ("inpaint", "denoise", "superres", "colorize"):
        _score_baselines(result, clean, out, chroma)
    return out


def _score_baselines(result: InversionResult, clean: Sequence[torch.Tensor | None], out: list[dict[str, Any]],
                     chroma: torch.Tensor | None) -> None:
    """Add the degraded input's and the classical baseline's scores, and worse_than, to `out` (in place)."""
    s = result.images.shape[-1]
    nc = result.images.shape[1]
    have = [i for i, t in enumerate(clean) if t is not None]
    if not have:
        return
    idx = torch.tensor(have)
    observed = result.observed[idx]
    clean_t = torch.stack([clean[i] for i in have])
    view = classical.degraded_view(result.task, observed, s, nc)
    missing = None
    if result.missing is not None:
        missing = result.missing if result.missing.shape[0] == 1 else result.missing[idx]
    sigma = result.settings.get("noise_sigma")
    restored = classical.restore(result.task, observed, missing=missing, size=s, chroma=chroma, target=clean_t,
                                 sigma=[sigma[i] for i in have] if sigma is not None else None,
                                 scale=result.settings.get("scale"))
    final = "layer_psnr" if result.layer_images is not None else "psnr"
    for j, i in enumerate(have):
        m = out[i]
        worse = []
        if view is not None:
            m.update(input_psnr=psnr(view[j], clean_t[j]), input_ssim=ssim(view[j], clean_t[j]))
            if m[final] < m["input_psnr"]:
                worse.append("input")
        if restored is not None:
            images, names = restored
            m.update(baseline=names[j], baseline_psnr=psnr(images[j], clean_t[j]),
                     baseline_ssim=ssim(images[j], clean_t[j]))
            if m[final] < m["baseline_psnr"]:
                worse.append("baseline")
        m["worse_than"] = worse


# What the degraded input is called in warnings, per task.
_INPUT_WORDS = {"denoise": "the noisy input itself", "inpaint": "the masked input itself",
                "colorize": "the gray input itself", "superres": "bicubic upsampling"}
_MAX_WARNINGS = 5  # per batch; then one line counts the rest


def warn_if_worse(result: InversionResult, progress: ProgressCallback | None) -> None:
    """One notice per scored result that is worse than its degraded input or its classical baseline
    (at most a few per call, then one line that counts the rest)."""
    bad = [i for i, m in enumerate(result.metrics) if m and m.get("worse_than")]
    for i in bad[:_MAX_WARNINGS]:
        notice(progress, "warning: " + _worse_text(result, i))
    if len(bad) > _MAX_WARNINGS:
        notice(progress, f"warning: {len(bad) - _MAX_WARNINGS} more of these {len(result)} results are worse than "
                         "the degraded input or the classical baseline (see worse_than in their records)")


def _worse_text(result: InversionResult, i: int) -> str:
    m = result.metrics[i]
    ours = m["layer_psnr"] if "layer_psnr" in m else m["psnr"]
    what = "layer-wise result" if "layer_psnr" in m else "result"
    beaten = []
    if "input" in m["worse_than"]:
        beaten.append(f"{_INPUT_WORDS.get(result.task, 'the input')} ({m['input_psnr']:.2f} dB)")
    if "baseline" in m["worse_than"] and not (result.task == "superres" and "input" in m["worse_than"]):
        beaten.append(f"the classical baseline {m['baseline']} ({m['baseline_psnr']:.2f} dB)")
    return (f"{result.names[i]}: the {what} (PSNR {ours:.2f} dB) is worse than {' and than '.join(beaten)}: "
            "the GAN prior does not restore this image")


def compare_strip(result: InversionResult, i: int, original: torch.Tensor | None = None, min_size: int = 128) -> torch.Tensor:
    """uint8 C x H x W strip: input | what the model saw | result (| layer-wise result).

    Small images are enlarged with nearest-neighbour to at least `min_size` pixels, so they can be seen.
    """
    s = result.images.shape[-1]
    nc = result.images.shape[1]
    side = max(s, min_size)

    def up(img: torch.Tensor) -> torch.Tensor:  # uint8 C x h x w -> C x side x side
        img = img.expand(nc, -1, -1) if img.shape[0] == 1 and nc == 3 else img
        if nc == 1 and img.shape[0] == 3:
            img = convert_channels(img, 1)
        h, w = img.shape[-2:]
        if h == w and side % h == 0:
            return img.repeat_interleave(side // h, 1).repeat_interleave(side // w, 2)
        if h == w and h < side:
            return F.interpolate(img[None].float(), size=(side, side), mode="nearest")[0].to(torch.uint8)
        return resize_center_crop(img, side)

    if original is None:
        original = result.originals[i] if result.originals is not None else None
    observed = to_uint8(result.observed[i])
    if result.missing is not None:
        # show the hole as a checkerboard: the model saw nothing there
        hole = result.missing[i if result.missing.shape[0] > 1 else 0, 0].bool()
        yy, xx = torch.meshgrid(torch.arange(s), torch.arange(s), indexing="ij")
        checker = torch.where(((yy // 2 + xx // 2) % 2) == 0, 96, 160).to(torch.uint8)
        observed = torch.where(hole, checker, observed)
    panels = [up(original if original is not None else observed), up(observed), up(to_uint8(result.images[i]))]
    if result.layer_images is not None:
        panels.append(up(to_uint8(result.layer_images[i])))
    return make_grid(torch.stack(panels), nrow=len(panels), padding=2)


def save_outputs(result: InversionResult, out_dir: str | os.PathLike) -> list[dict[str, str]]:
    """Write DIR/<stem>.png (final result at generator resolution), DIR/<stem>_compare.png and
    DIR/<stem>.latent.pt for every image; returns the paths per image."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = result.final_images
    paths = []
    for i, name in enumerate(result.names):
        p = {"output": str(save_image(final[i], out_dir / f"{name}.png")),
             "compare": str(save_image(compare_strip(result, i), out_dir / f"{name}_compare.png")),
             "latent": str(torch_save(result.latent(i), out_dir / f"{name}.latent.pt"))}
        paths.append(p)
    return paths
