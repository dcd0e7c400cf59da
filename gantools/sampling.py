"""Drawing from a generator: sample grids, latent interpolation strips, and latent vector arithmetic.

Latents are N(0, I) vectors; `Generator.sample_z(n, seed)` makes them reproducible on any device.
Interpolation defaults to spherical (slerp): in high dimension a Gaussian latent lies near the sphere
of radius sqrt(nz), and the straight line between two latents passes through lower-norm points the
generator rarely saw in training; slerp stays at typical norms. `method="lerp"` gives the straight line.

Latent arithmetic follows the DCGAN paper: the mean z of group A minus the mean z of group B plus the
mean z of group C, decoded, plus a few variations with small uniform noise (±0.25 in the paper) added
to the result vector. Groups are given as latent vectors or as indices into the sample grid of a
seed, so you can pick them from `gantools sample --n 64 --seed S` (index = row * nrow + column).

The pictures people read (the interpolation strip, the arithmetic figure) are drawn with row and
column labels by `gantools.reports.labelled_grid`; the functions return the raw images as tensors.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence, Union

import torch

from .images import save_image
from .models import GAN, Generator, load_model
from .reports import labelled_grid
from .types import DeviceSpec, ModelSpec
from .utils import GantoolsError, module_device, resolve_device

ModelLike = ModelSpec  # the old name of the spec alias, kept for scripts that import it
Group = Union[torch.Tensor, Sequence[int]]
METHODS = ("slerp", "lerp")
FIGURE_CELL = 96  # pixels: small images are enlarged by a whole factor towards this in the figures


def figure_cell(images: torch.Tensor) -> int:
    """The cell side of a figure of these images (N x C x H x W): the image side times the largest
    whole factor that keeps it within FIGURE_CELL (64 px stays 64, 16 px becomes 96)."""
    side = max(images.shape[-2:])
    return side * max(1, FIGURE_CELL // side)


def _generator(model: ModelSpec, device: DeviceSpec = None) -> Generator:
    # The device rule: an explicit device wins (the model is moved there), else a loaded model stays
    # where it lives, else a spec is loaded on 'auto'.
    dev = resolve_device(device, model)
    if isinstance(model, GAN):
        return model.generator.to(dev)
    if isinstance(model, Generator):
        return model.to(dev)
    return load_model(model, device=dev).generator


@torch.no_grad()
def generate(model: ModelSpec, z: torch.Tensor, batch_size: int = 256,
             device: DeviceSpec = None) -> torch.Tensor:
    """Images (N x C x H x W in [-1, 1], on the CPU) for latents z (N x nz), in eval mode, batched.

    Args:
        model: a GAN, a Generator, or a model spec (file, run directory, pretrained name).
        z: latent vectors.
        batch_size: latents per forward pass.
        device: where to run (default: where a loaded model lives; 'auto' for a spec, which is loaded).
    """
    g = _generator(model, device)
    was_training = g.training
    g.eval()
    dev = module_device(g) or torch.device("cpu")
    try:
        out = [g(z[i:i + batch_size].to(dev)).float().cpu() for i in range(0, z.shape[0], batch_size)]
    finally:
        g.train(was_training)
    return torch.cat(out) if out else torch.empty(0, g.config.nc, g.config.image_size, g.config.image_size)


def sample(model: ModelSpec, n: int = 64, seed: int = 0, batch_size: int = 256,
           device: DeviceSpec = None) -> torch.Tensor:
    """n images (N x C x H x W in [-1, 1], CPU) from the latents `sample_z(n, seed)`.

    Args:
        model: a GAN, a Generator, or a model spec.
        n: number of images.
        seed: latent seed; image i of seed s is the same for any n > i.
        batch_size, device: as in `generate`.
    """
    if n < 1:
        raise GantoolsError(f"n must be at least 1, got {n}")
    g = _generator(model, device)
    return generate(g, g.sample_z(n, seed, device="cpu"), batch_size=batch_size)


def slerp(z0: torch.Tensor, z1: torch.Tensor, t: torch.Tensor | float) -> torch.Tensor:
    """Spherical interpolation between latents (along the last dimension); falls back to lerp when parallel."""
    t = torch.as_tensor(t, dtype=z0.dtype, device=z0.device)
    n0, n1 = z0 / z0.norm(dim=-1, keepdim=True), z1 / z1.norm(dim=-1, keepdim=True)
    omega = torch.arccos((n0 * n1).sum(-1, keepdim=True).clamp(-1, 1))
    so = torch.sin(omega)
    lerped = (1 - t) * z0 + t * z1
    safe = so.abs() > 1e-6
    so = torch.where(safe, so, torch.ones_like(so))
    slerped = torch.sin((1 - t) * omega) / so * z0 + torch.sin(t * omega) / so * z1
    return torch.where(safe, slerped, lerped)


def interpolate_latents(z0: torch.Tensor, z1: torch.Tensor, frames: int = 10, method: str = "slerp") -> torch.Tensor:
    """`frames` latents from z0 to z1 inclusive (frames x nz).

    Args:
        z0, z1: latent vectors (nz).
        frames: points on the path, both ends included (at least 2).
        method: "slerp" (spherical, default) or "lerp" (straight line).
    """
    _check_interpolation(frames, method)
    t = torch.linspace(0, 1, frames, dtype=z0.dtype).unsqueeze(1)
    z0, z1 = z0.reshape(1, -1), z1.reshape(1, -1)
    return slerp(z0, z1, t) if method == "slerp" else (1 - t) * z0 + t * z1


def _check_interpolation(frames: int, method: str) -> None:
    if frames < 2:
        raise GantoolsError(f"an interpolation needs at least 2 frames, got {frames}")
    if method not in METHODS:
        raise GantoolsError(f"unknown interpolation {method!r}: use {' or '.join(METHODS)}")


def interpolate(model: ModelSpec, seed: int = 0, seed2: int | None = None, frames: int = 10, method: str = "slerp",
                device: DeviceSpec = None) -> torch.Tensor:
    """Images along the latent path from the latent of `seed` to that of `seed2` (frames x C x H x W).

    The ends are image 0 of `sample(model, seed=seed)` and of `sample(model, seed=seed2)`.

    Args:
        model: a GAN, a Generator, or a model spec.
        seed, seed2: the two ends (seed2 defaults to seed + 1).
        frames: images in the strip, both ends included.
        method: "slerp" (default) or "lerp".
        device: as in `generate`.
    """
    _check_interpolation(frames, method)  # before a model is loaded
    seed2 = seed + 1 if seed2 is None else seed2
    g = _generator(model, device)
    z0, z1 = g.sample_z(1, seed, device="cpu")[0], g.sample_z(1, seed2, device="cpu")[0]
    return generate(g, interpolate_latents(z0, z1, frames, method))


def interpolation_figure(images: torch.Tensor, seed: int = 0, seed2: int | None = None, method: str = "slerp",
                         cell: int | None = None) -> torch.Tensor:
    """The interpolation strip as a labelled picture (3 x H x W uint8): the images of `interpolate`
    in one row, labelled with the seeds and method on the left and each frame's t above.

    Args:
        images: the strip, frames x C x H x W (what `interpolate` returned).
        seed, seed2, method: what `interpolate` was given (seed2 defaults to seed + 1), for the label.
        cell: the side of each cell in pixels (default: `figure_cell(images)`).
    """
    frames = images.shape[0]
    if frames < 2:
        raise GantoolsError(f"an interpolation strip has at least 2 frames, got {frames}")
    seed2 = seed + 1 if seed2 is None else seed2
    columns = [f"t = {j / (frames - 1):.2f}" for j in range(frames)]
    return labelled_grid([images], [f"seed {seed} -> {seed2}\n{method}"], columns,
                         cell=cell or figure_cell(images))


def save_interpolation(images: torch.Tensor, path: str | os.PathLike, seed: int = 0, seed2: int | None = None,
                       method: str = "slerp", cell: int | None = None) -> Path:
    """Write the labelled interpolation strip (see `interpolation_figure`) as one PNG; returns the path."""
    return save_image(interpolation_figure(images, seed, seed2, method, cell), path)


@dataclass
class ArithmeticResult:
    """Latent vector arithmetic: mean(A) - mean(B) + mean(C).

    Args:
        groups: the latents of groups A, B and C (k x nz each).
        means: the three group means (3 x nz).
        z: the result vector (nz).
        variations: the result plus small uniform noise (n x nz); row 0 is the result itself.
        group_images: per group, its images (k x C x H x W).
        mean_images: the images of the three group means (3 x C x H x W).
        images: the images of `variations` (n x C x H x W).
        indices: per group, the sample indices it was given as (None for latents given directly).
        seed: the seed the indices refer to.
    """

    groups: list[torch.Tensor]
    means: torch.Tensor
    z: torch.Tensor
    variations: torch.Tensor
    group_images: list[torch.Tensor]
    mean_images: torch.Tensor
    images: torch.Tensor
    indices: list[list[int] | None] | None = None
    seed: int | None = None

    def rows(self) -> list[torch.Tensor]:
        """The figure's rows of images: per group its mean's image, then its images; then the result
        and its variations. Column 0 holds the means and, below them, the result."""
        return [torch.cat([mean[None], images]) for mean, images in zip(self.mean_images, self.group_images)] + \
            [self.images]

    @property
    def nrow(self) -> int:
        """Columns of the figure (the longest row)."""
        return max(max(len(g) for g in self.group_images) + 1, len(self.images))

    def row_labels(self) -> list[str]:
        """A label per row of the figure: the group and what it holds, then the result."""
        labels = []
        for k, (name, latents) in enumerate(zip("ABC", self.groups)):
            given = self.indices[k] if self.indices is not None else None
            held = f"samples {', '.join(map(str, given))}" if given is not None else f"{len(latents)} latents"
            labels.append(f"{name}: {held}")
        variations = len(self.images) - 1
        return labels + ["A - B + C" + (f",\nthen {variations} variations" if variations else "")]

    def grid(self, cell: int | None = None) -> torch.Tensor:
        """The figure, labelled (3 x H x W uint8): a row per group (its mean's image, then its images),
        then the result and its variations (see `rows`), with a label left of each row and above each
        column.

        Args:
            cell: the side of each cell in pixels (default: `figure_cell` of the images).
        """
        columns = ["mean / result"] + [str(j) for j in range(1, self.nrow)]
        title = f"latent arithmetic, seed {self.seed}" if self.seed is not None else "latent arithmetic"
        return labelled_grid(self.rows(), self.row_labels(), columns, title=title,
                             cell=cell or figure_cell(self.images))

    def save(self, path: str | os.PathLike, cell: int | None = None) -> Path:
        """Save the labelled figure (see `grid`) as one PNG; returns the path written."""
        return save_image(self.grid(cell), path)


def _group_latents(g: Generator, group: Group, seed: int, name: str) -> torch.Tensor:
    if isinstance(group, torch.Tensor):
        z = group.detach().float().cpu()
        z = z.reshape(1, -1) if z.dim() == 1 else z.reshape(z.shape[0], -1)
    else:
        indices = [int(i) for i in group]
        if indices and min(indices) < 0:
            raise GantoolsError(f"group {name}: sample indices must be 0 or more, got {min(indices)}")
        z = g.sample_z(max(indices) + 1, seed, device="cpu")[indices] if indices else torch.empty(0)
    if z.numel() == 0:
        raise GantoolsError(f"group {name} is empty: give at least one latent or sample index")
    if z.shape[-1] != g.config.nz:
        raise GantoolsError(f"group {name}: latents have {z.shape[-1]} dimensions, the model's nz is {g.config.nz}")
    return z


def latent_arithmetic(model: ModelSpec, a: Group, b: Group, c: Group, seed: int = 0, n: int = 8,
                      noise: float = 0.25, device: DeviceSpec = None) -> ArithmeticResult:
    """mean z of A - mean z of B + mean z of C, decoded, with n - 1 noisy variations (DCGAN paper, fig. 7).

    Args:
        model: a GAN, a Generator, or a model spec.
        a, b, c: each a tensor of latents (k x nz) or a list of indices into `sample(model, seed=seed)`.
        seed: the latent seed that indices refer to; also seeds the variations' noise.
        n: result images: the result vector itself, then n - 1 variations.
        noise: half-width of the uniform noise added to the result for the variations.
        device: as in `generate`.
    """
    if n < 1:
        raise GantoolsError(f"n must be at least 1, got {n}")
    g = _generator(model, device)
    groups = [_group_latents(g, grp, seed, name) for grp, name in zip((a, b, c), "ABC")]
    means = torch.stack([grp.mean(0) for grp in groups])
    z = means[0] - means[1] + means[2]
    gen = torch.Generator().manual_seed(seed + 1)
    jitter = (torch.rand(n - 1, z.shape[0], generator=gen) * 2 - 1) * noise
    variations = torch.cat([z.unsqueeze(0), z.unsqueeze(0) + jitter])
    indices = [None if isinstance(grp, torch.Tensor) else [int(i) for i in grp] for grp in (a, b, c)]
    return ArithmeticResult(groups=groups, means=means, z=z, variations=variations,
                            group_images=[generate(g, grp) for grp in groups],
                            mean_images=generate(g, means), images=generate(g, variations),
                            indices=indices, seed=seed)


def parse_arithmetic(expr: str) -> tuple[list[int], list[int], list[int]]:
    """Parse "A-B+C" where each group is comma-separated sample indices, e.g. "3,17,22-5,8+10,11,12"."""
    text = expr.replace(" ", "")
    try:
        a, rest = text.split("-", 1)
        b, c = rest.split("+", 1)
        groups = tuple([int(v) for v in part.split(",") if v != ""] for part in (a, b, c))
    except ValueError as e:
        raise GantoolsError(f"arithmetic {expr!r} must read A-B+C with comma-separated sample indices, "
                            f"e.g. 3,17,22-5,8,9+10,11,12") from e
    for name, grp in zip("ABC", groups):
        if not grp:
            raise GantoolsError(f"arithmetic {expr!r}: group {name} is empty")
    return groups  # type: ignore[return-value]


def save_arithmetic(result: ArithmeticResult, path: str | os.PathLike, cell: int | None = None) -> Path:
    """Save the labelled arithmetic figure (see ArithmeticResult.grid) as one PNG (same as `result.save(path)`)."""
    return result.save(path, cell)
