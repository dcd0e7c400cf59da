"""GAN inversion: degradation operators against explicit formulas, planted inversions, restarts,
layer-wise refinement, outputs and errors. Tiny seeded models (16 px, 8 channels)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from gantools.models import GAN, Discriminator, Generator, ModelConfig, save_model
from gantools.utils import GantoolsError, Progress


def calibrated_gan(config: ModelConfig, seed: int = 1) -> GAN:
    """A random DCGAN whose images actually vary with z (an untrained one draws near-constant gray):
    BatchNorm statistics from a batch of its own activations, output pre-activations scaled to unit std."""
    torch.manual_seed(seed)
    g, d = Generator(config), Discriminator(config)
    for m in g.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None  # cumulative average: the running stats become the batch's
            m.reset_running_stats()
    g.train()
    with torch.no_grad():
        g(torch.randn(256, config.nz))
    g.eval()
    with torch.no_grad():
        h = torch.randn(128, config.nz)
        x = h.view(128, -1, 1, 1)
        for name in g.layer_names:
            x = getattr(g, name)(x)
        g.output[0].weight.div_(g.output[0](x).std())
    return GAN(g, d.eval(), config)


@pytest.fixture(scope="module")
def gan() -> GAN:
    return calibrated_gan(ModelConfig(image_size=16, nc=3, nz=8, ngf=8, ndf=8))


@pytest.fixture(scope="module")
def gray_gan() -> GAN:
    return calibrated_gan(ModelConfig(image_size=16, nc=1, nz=8, ngf=8, ndf=8), seed=2)


def planted(gan: GAN, n: int = 3, seed: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    z = torch.randn(n, gan.config.nz, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return z, gan.generator(z)


# ---------------------------------------------------------------------------------------------
# Operators against explicit formulas


def test_luminance_is_bt601_like_pil():
    from PIL import Image

    from gantools.utils import luminance

    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float()
    y = luminance(x)[0, 0]
    explicit = 0.299 * x[0, 0] + 0.587 * x[0, 1] + 0.114 * x[0, 2]
    assert torch.allclose(y, explicit)
    pil = torch.from_numpy(np.array(Image.fromarray(rgb, "RGB").convert("L"))).float()
    assert (y - pil).abs().max() <= 1.0  # PIL rounds; the same formula
    # affine invariance: the formula is the same on [0,1] and [-1,1]
    u = x / 255
    assert torch.allclose(luminance(u * 2 - 1), luminance(u) * 2 - 1, atol=1e-6)


def test_inpaint_operator_and_masked_nll():
    from gantools.restoration.inversion import DEFAULT_PIXEL_SIGMA, Inpaint

    missing = torch.zeros(4, 4)
    missing[1:3, 0:2] = 1
    deg = Inpaint(4, 1, missing)
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    obs = torch.full((1, 1, 4, 4), 0.25)
    assert torch.equal(deg.observe(x)[0, 0, 1:3, 0:2], torch.zeros(2, 2))
    assert torch.equal(deg.observe(x)[0, 0, 0], x[0, 0, 0])
    known = missing == 0
    s = DEFAULT_PIXEL_SIGMA
    r = (x[0, 0] - obs[0, 0])[known]
    explicit = (0.5 * (r / s) ** 2 + math.log(s) + 0.5 * math.log(2 * math.pi)).mean()
    assert deg.pixel_loss(deg.observe(x), deg.observe(obs)).item() == pytest.approx(explicit.item(), rel=1e-5)
    assert deg.mse(deg.observe(x), deg.observe(obs)).item() == pytest.approx(((r / 2) ** 2).mean().item(), rel=1e-5)
    # what the encoder sees: the hole filled with the mean of the known pixels
    view = deg.view(deg.observe(x))
    assert torch.allclose(view[0, 0][~known], x[0, 0][known].mean().expand(4))


def test_area_downsampling_is_block_mean():
    from gantools.restoration.inversion import SuperResolution

    x = torch.randn(2, 3, 16, 16)
    deg = SuperResolution(16, 3, scale=4)
    low = deg.observe(x)
    assert low.shape == (2, 3, 4, 4)
    for i, j in [(0, 0), (1, 3), (3, 2)]:
        assert torch.allclose(low[:, :, i, j], x[:, :, 4 * i:4 * i + 4, 4 * j:4 * j + 4].mean((-1, -2)), atol=1e-6)
    assert deg.obs_size == 4
    with pytest.raises(GantoolsError, match="use one of"):
        SuperResolution(16, 3, scale=3)


def test_denoise_nll_uses_sigma_on_model_scale():
    from gantools.restoration.inversion import Denoise

    deg = Denoise(8, 1, sigma=[0.05, 0.2])
    assert torch.allclose(deg.sigma_model(), torch.tensor([0.1, 0.4]))
    pred, obs = torch.randn(2, 1, 8, 8) * 0.3, torch.randn(2, 1, 8, 8) * 0.3
    got = deg.pixel_loss(pred, obs)
    for i, s in enumerate((0.1, 0.4)):
        expect = -torch.distributions.Normal(obs[i], s).log_prob(pred[i]).mean()
        assert got[i].item() == pytest.approx(expect.item(), rel=1e-5)
    # per-image sigma follows the images when the batch is re-indexed (restarts)
    assert torch.allclose(deg.select(torch.tensor([1, 1, 0])).sigma_model(), torch.tensor([0.4, 0.4, 0.1]))
    with pytest.raises(GantoolsError, match="positive"):
        Denoise(8, 1, sigma=0.0)


def test_transfer_luminance_keeps_luminance_and_hue():
    from gantools.utils import luminance, transfer_luminance

    color = torch.rand(4, 3, 8, 8) * 2 - 1
    y = torch.rand(4, 1, 8, 8) * 2 - 1
    out = transfer_luminance(color, y)
    assert out.min() >= -1 - 1e-6 and out.max() <= 1 + 1e-6
    assert torch.allclose(luminance(out), y, atol=1e-5)
    # chroma keeps its direction (scaled down only where it would leave the range)
    c_in, c_out = color - luminance(color), out - luminance(out)
    cos = F.cosine_similarity(c_in.flatten(2), c_out.flatten(2), dim=1)
    assert (cos[c_out.flatten(2).norm(dim=1) > 1e-3] > 0.999).all()
    # mid-gray luminance and small chroma: exact YCbCr recombination, no scaling
    small = torch.tensor([0.1, -0.05, 0.02]).view(1, 3, 1, 1)
    res = transfer_luminance(small, torch.zeros(1, 1, 1, 1))
    assert torch.allclose(res, small - luminance(small), atol=1e-7)


def test_noise_sigma_estimate():
    from gantools.restoration.inversion import estimate_noise_sigma

    g = torch.Generator().manual_seed(0)
    clean = torch.linspace(-0.5, 0.5, 64).view(1, 1, 1, 64).expand(2, 3, 64, 64)
    noisy = clean + 2 * torch.tensor([0.05, 0.15]).view(2, 1, 1, 1) * torch.randn(2, 3, 64, 64, generator=g)
    est = estimate_noise_sigma(noisy)
    assert est[0].item() == pytest.approx(0.05, rel=0.15)
    assert est[1].item() == pytest.approx(0.15, rel=0.15)


# ---------------------------------------------------------------------------------------------
# Inversion


def test_planted_reconstruction(gan):
    from gantools.restoration.inversion import invert

    _, target = planted(gan)
    res = invert(gan, target, "reconstruct", steps=120, restarts=2, encoder=None, target=target, seed=0)
    init_mse = ((gan.generator(_z_at_init(gan, target)) - target) / 2).pow(2).flatten(1).mean(1)
    assert (res.losses["mse"] < 0.2 * init_mse).all(), (res.losses["mse"], init_mse)
    assert (res.losses["total"] < res.init_loss).all()
    assert min(m["psnr"] for m in res.metrics) > 28
    assert res.images.shape == target.shape and res.z.shape == (3, 8)
    assert res.history.shape == (121, 3)
    assert torch.allclose(res.history[-1], res.losses["total"], atol=1e-5)


def _z_at_init(gan, target):
    """The starting latent of the winning restart, recomputed with steps=1 and lr=0."""
    from gantools.restoration.inversion import invert

    return invert(gan, target, "reconstruct", steps=1, restarts=2, encoder=None, lr=0.0, seed=0).z


def test_restarts_pick_lowest_and_batching_changes_nothing(gan):
    from gantools.restoration.inversion import invert

    _, target = planted(gan, n=3, seed=11)
    kw = dict(steps=25, encoder=None, seed=3)
    four = invert(gan, target, restarts=4, batch_size=2, **kw)
    assert torch.equal(four.best_restart, four.restart_losses.argmin(1))
    assert torch.allclose(four.losses["total"], four.restart_losses.min(1).values)
    assert (four.restart_losses.max(1).values > four.losses["total"]).all()  # the restarts did differ
    one = invert(gan, target, restarts=1, batch_size=3, **kw)  # restart 0 of the same starts
    assert (four.losses["total"] <= one.losses["total"] + 1e-5).all()
    assert torch.allclose(one.losses["total"], four.restart_losses[:, 0], atol=1e-4)
    single = invert(gan, target[1:2], restarts=4, **kw, names=["x"])
    # image 1 alone gets other per-image seeds (index 0), so compare a batch of 1 vs 3 with the same index
    split = invert(gan, target, restarts=4, batch_size=1, **kw)
    assert torch.allclose(split.z, four.z, atol=1e-4)
    assert single.z.shape == (1, 8)


def test_on_batch_hands_over_each_finished_batch(gan, tmp_path):
    from gantools.restoration.inversion import invert, save_outputs

    _, target = planted(gan, n=5, seed=12)
    parts = []
    res = invert(gan, target, "reconstruct", steps=3, restarts=2, batch_size=2, encoder=None, layerwise=2,
                 layer_steps=2, target=target, on_batch=parts.append)
    assert [p.names for p in parts] == [res.names[0:2], res.names[2:4], res.names[4:5]]
    for field in ("z", "images", "layer_images", "features", "restart_losses"):
        assert torch.equal(torch.cat([getattr(p, field) for p in parts]), getattr(res, field)), field
    assert torch.equal(torch.cat([p.history for p in parts], 1), res.history)
    assert [m for p in parts for m in p.metrics] == res.metrics
    assert [p.record(0) for p in parts] == [res.record(i) for i in (0, 2, 4)]
    # what a CLI run writes batch by batch is what it would write at the end
    for p in parts:
        save_outputs(p, tmp_path / "parts")
    save_outputs(res, tmp_path / "whole")
    for name in res.names:
        assert (tmp_path / "parts" / f"{name}.png").read_bytes() == (tmp_path / "whole" / f"{name}.png").read_bytes()


def test_inpaint_composite_keeps_known_pixels(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=2, seed=5)
    missing = torch.zeros(16, 16)
    missing[4:12, 5:11] = 1
    degraded = clean * (1 - missing)
    res = invert(gan, degraded, "inpaint", mask=missing, steps=60, restarts=2, encoder=None, target=clean)
    known = missing == 0
    obs = res.observed
    assert torch.equal(obs, degraded)  # float inputs keep their precision
    assert torch.equal(res.images[:, :, known], obs[:, :, known])
    assert not torch.equal(res.images[:, :, ~known], obs[:, :, ~known])
    assert torch.equal(res.images[:, :, ~known], res.raw[:, :, ~known].clamp(-1, 1))
    raw = invert(gan, degraded, "inpaint", mask=missing, steps=60, restarts=2, encoder=None, composite=False)
    assert torch.equal(raw.images, raw.raw.clamp(-1, 1))
    # the hole is restored well beyond a mean fill
    hole_err = (res.images - clean)[:, :, ~known].pow(2).mean()
    fill_err = (res.seen - clean)[:, :, ~known].pow(2).mean()
    assert hole_err < 0.5 * fill_err


def test_colorize_keeps_input_luminance(gan, gray_gan):
    from gantools.restoration.inversion import invert
    from gantools.utils import luminance

    _, clean = planted(gan, n=2, seed=9)
    gray = luminance(clean)
    res = invert(gan, gray, "colorize", steps=40, restarts=2, encoder=None, target=clean)
    assert res.observed.shape == (2, 1, 16, 16) and res.images.shape == (2, 3, 16, 16)
    assert torch.allclose(luminance(res.images), res.observed, atol=1e-5)
    assert (res.images.std(1) > 1e-3).any()  # colour came from G
    # colour input is converted to grayscale by the same formula
    res_rgb = invert(gan, clean, "colorize", steps=2, restarts=1, encoder=None)
    assert torch.allclose(res_rgb.observed, luminance(clean), atol=1e-6)
    with pytest.raises(GantoolsError, match="RGB model"):
        invert(gray_gan, gray, "colorize", steps=1)


def test_superres_size_must_match(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=2, seed=4)
    low = F.avg_pool2d(clean, 4)
    res = invert(gan, low, "superres", scale=4, steps=40, restarts=2, encoder=None, target=clean)
    assert res.images.shape == (2, 3, 16, 16)
    bicubic = F.interpolate(res.observed, scale_factor=4, mode="bicubic", align_corners=False)
    ours = (res.images - clean).pow(2).mean()
    assert ours < (bicubic - clean).pow(2).mean()
    with pytest.raises(GantoolsError, match=r"exactly 4x4 .* got 8x8"):
        invert(gan, F.avg_pool2d(clean, 2), "superres", scale=4, steps=1)
    with pytest.raises(GantoolsError, match="scale 3"):
        invert(gan, low, "superres", scale=3, steps=1)


def test_superres_result_downsamples_to_the_input(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=2, seed=4)
    low = F.avg_pool2d(clean, 4)
    res = invert(gan, low, "superres", scale=4, steps=3, restarts=1, encoder=None)
    raw_err = (F.avg_pool2d(res.raw, 4) - low).abs().max()
    assert raw_err > 1e-2  # a short search leaves G(z) inconsistent with the input
    # every block that the final clamp to [-1, 1] leaves alone downsamples exactly to the input
    unclamped = F.max_pool2d((res.images.abs() < 1).float().neg(), 4).neg() > 0
    assert unclamped.float().mean() > 0.3  # the planted images saturate often
    assert torch.allclose(F.avg_pool2d(res.images, 4)[unclamped], low[unclamped], atol=1e-5)
    # the projection moves the result towards any image that downsamples to the input
    assert (res.images - clean).pow(2).mean() < (res.raw.clamp(-1, 1) - clean).pow(2).mean()
    # within a block, only the mean changes
    block_mean = F.interpolate(F.avg_pool2d(res.raw, 4), scale_factor=4, mode="nearest")
    shift = F.interpolate(low - F.avg_pool2d(res.raw, 4), scale_factor=4, mode="nearest")
    assert torch.allclose(res.images, (block_mean + (res.raw - block_mean) + shift).clamp(-1, 1), atol=1e-5)
    off = invert(gan, low, "superres", scale=4, steps=3, restarts=1, encoder=None, composite=False)
    assert torch.equal(off.images, off.raw.clamp(-1, 1))


def test_denoise_estimates_sigma(gan):
    from gantools.restoration.inversion import estimate_noise_sigma, invert

    _, clean = planted(gan, n=2, seed=3)
    noisy = clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))
    notes: list[str] = []
    res = invert(gan, noisy, "denoise", steps=40, restarts=2, encoder=None, target=clean,
                 progress=lambda p: notes.append(p.message) if p.message else None)
    assert any("estimated noise sigma" in m for m in notes)
    assert res.settings["noise_sigma"] == pytest.approx(estimate_noise_sigma(res.observed).tolist())
    given = invert(gan, noisy, "denoise", noise_sigma=0.1, steps=40, restarts=2, encoder=None, target=clean)
    assert given.settings["noise_sigma"] == pytest.approx([0.1, 0.1])
    from gantools.metrics import psnr

    assert all(m["psnr"] > psnr(noisy[i].clamp(-1, 1), clean[i]) for i, m in enumerate(given.metrics))


def _numpy01(x):
    return ((x.double() + 1) / 2).clamp(0, 1).permute(1, 2, 0).numpy()


def _tensor(a):
    a = a if a.ndim == 3 else a[:, :, None]
    return torch.from_numpy(np.clip(a, 0, 1)).permute(2, 0, 1).float() * 2 - 1


def _consistent_verdict(m):
    final = m.get("layer_psnr", m["psnr"])
    expected = [k for k in ("input", "baseline") if f"{k}_psnr" in m and final < m[f"{k}_psnr"]]
    assert m["worse_than"] == expected, m


def test_target_scores_the_degraded_input_and_a_classical_baseline(gan):
    """With a target, every result is scored beside the input itself and scikit-image's classical method."""
    from skimage.restoration import denoise_tv_chambolle, inpaint_biharmonic
    from skimage.transform import resize

    from gantools.restoration.inversion import invert
    from gantools.utils import luminance
    from gantools.metrics import psnr

    _, clean = planted(gan, n=2, seed=3)
    kw = dict(steps=15, restarts=1, encoder=None, target=clean)
    # denoise: the noisy input as it is, and the best classical denoiser for each image
    noisy = (clean + 0.2 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    den = invert(gan, noisy, "denoise", noise_sigma=0.1, **kw)
    for i, m in enumerate(den.metrics):
        assert m["input_psnr"] == pytest.approx(psnr(noisy[i], clean[i]))
        tv = _tensor(denoise_tv_chambolle(_numpy01(noisy[i]), weight=0.1, channel_axis=-1))
        assert m["baseline_psnr"] >= psnr(tv, clean[i]) - 1e-9  # the best setting, so at least TV's
        assert m["baseline"].split("(")[0] in ("tv_chambolle", "nl_means", "wavelet")
        # (on these 16 px textures the classics barely beat the noisy input: all the more reason to show both)
        _consistent_verdict(m)
        rec = den.record(i)
        assert rec["input_psnr"] == m["input_psnr"] and rec["baseline"] == m["baseline"]
    # inpaint: the masked input, and biharmonic inpainting
    missing = torch.zeros(16, 16)
    missing[4:12, 5:11] = 1
    holed = clean * (1 - missing)
    inp = invert(gan, holed, "inpaint", mask=missing, **kw)
    for i, m in enumerate(inp.metrics):
        bih = _tensor(inpaint_biharmonic(_numpy01(holed[i]), missing.numpy().astype(bool), channel_axis=-1))
        assert m["baseline"] == "inpaint_biharmonic"
        assert m["baseline_psnr"] == pytest.approx(psnr(bih, clean[i]), abs=1e-6)
        assert m["input_psnr"] == pytest.approx(psnr(holed[i], clean[i]))
        _consistent_verdict(m)
    # superres: the input has another size, so the bicubic upsampling stands for it
    low = F.avg_pool2d(clean, 4)
    sr = invert(gan, low, "superres", scale=4, **kw)
    for i, m in enumerate(sr.metrics):
        bic = _tensor(resize(_numpy01(low[i]), (16, 16), order=3, anti_aliasing=False))
        assert m["baseline"] == "bicubic x4"
        assert m["input_psnr"] == m["baseline_psnr"] == pytest.approx(psnr(bic, clean[i]), abs=1e-6)
    # colorize: the gray input as RGB, and its luminance with the model samples' mean chroma
    gray = luminance(clean)
    col = invert(gan, gray, "colorize", **kw)
    z = gan.generator.sample_z(256, 0, device="cpu")
    with torch.no_grad():
        samples = gan.generator(z).clamp(-1, 1)
    chroma = (samples - luminance(samples)).mean(0, keepdim=True)
    for i, m in enumerate(col.metrics):
        assert m["input_psnr"] == pytest.approx(psnr(gray[i].expand(3, -1, -1), clean[i]))
        assert m["baseline"] == "mean chroma"
        from gantools.utils import transfer_luminance

        expected = transfer_luminance(chroma, gray[i:i + 1])[0]
        assert m["baseline_psnr"] == pytest.approx(psnr(expected, clean[i]), abs=1e-4)
        assert m["baseline_psnr"] > m["input_psnr"]  # the samples' colours beat no colour at all
    # reconstruct has neither
    rec = invert(gan, clean, **kw)
    assert all(set(m) == {"psnr", "ssim"} for m in rec.metrics)


def test_a_result_worse_than_its_input_is_warned_about(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=2, seed=3)
    # nearly clean input, and an inversion that cannot move (lr 0): the input itself is far better
    noisy = (clean + 0.02 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(0))).clamp(-1, 1)
    notes: list[str] = []
    res = invert(gan, noisy, "denoise", noise_sigma=0.01, steps=1, restarts=1, encoder=None, lr=0.0,
                 target=clean, progress=lambda p: notes.append(p.message) if p.message else None)
    for i, m in enumerate(res.metrics):
        assert m["psnr"] < m["input_psnr"] - 3 and "input" in m["worse_than"], m
        _consistent_verdict(m)
        line = next(n for n in notes if n.startswith(f"warning: {res.names[i]}:"))
        assert f"PSNR {m['psnr']:.2f} dB" in line and f"noisy input itself ({m['input_psnr']:.2f} dB)" in line
    # batch by batch (on_batch, as the CLI runs it), the same verdicts and warnings
    notes2: list[str] = []
    parts = []
    res2 = invert(gan, noisy, "denoise", noise_sigma=0.01, steps=1, restarts=1, encoder=None, lr=0.0,
                  target=clean, batch_size=1, on_batch=parts.append,
                  progress=lambda p: notes2.append(p.message) if p.message else None)
    assert res2.metrics == res.metrics and [p.metrics[0] for p in parts] == res.metrics
    assert [n for n in notes2 if n.startswith("warning")] == [n for n in notes if n.startswith("warning")]


def test_target_is_the_keyword_and_targets_still_works(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=1, seed=3)
    new = invert(gan, clean, steps=2, restarts=1, encoder=None, target=clean)
    with pytest.warns(DeprecationWarning, match="target="):
        old = invert(gan, clean, steps=2, restarts=1, encoder=None, targets=clean)
    assert old.metrics == new.metrics and new.metrics[0]["psnr"] > 0
    with pytest.raises(GantoolsError, match="not both"):
        invert(gan, clean, steps=1, target=clean, targets=clean)


def test_errors_name_parameters_not_flags(gan, gray_gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=1, seed=3)
    for kwargs, message in [(dict(steps=0), "steps must be at least 1"), (dict(restarts=0), "restarts must be"),
                            (dict(batch_size=0), "batch_size must be at least 1"),
                            (dict(layerwise="output"), "layerwise needs a hidden layer")]:
        with pytest.raises(GantoolsError, match=message) as err:
            invert(gan, clean, encoder=None, **kwargs)
        assert "--" not in str(err.value)
    for model, task, kwargs in [(gan, "superres", dict(scale=4)), (gray_gan, "colorize", {}),
                                (gan, "inpaint", {})]:
        with pytest.raises(GantoolsError) as err:
            invert(model, F.avg_pool2d(clean, 2) if task == "superres" else clean[:, :model.config.nc], task,
                   steps=1, encoder=None, **kwargs)
        assert "--" not in str(err.value), str(err.value)


def test_convert_channels_is_public_and_matches_pil():
    from PIL import Image

    from gantools.restoration import convert_channels

    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (5, 6, 3), dtype=np.uint8)
    img = torch.from_numpy(rgb).permute(2, 0, 1)
    gray = convert_channels(img, 1)
    pil = torch.from_numpy(np.array(Image.fromarray(rgb, "RGB").convert("L")))[None]
    assert gray.dtype == torch.uint8 and gray.shape == (1, 5, 6)
    assert (gray.int() - pil.int()).abs().max() <= 1
    assert torch.equal(convert_channels(gray, 3), gray.expand(3, -1, -1))
    assert convert_channels(img, 3) is img
    assert convert_channels(img.float() / 127.5 - 1, 1).dtype == torch.float32


def test_result_save_returns_the_directory(gan, tmp_path):
    from gantools.restoration import invert

    _, clean = planted(gan, n=2, seed=3)
    res = invert(gan, clean, steps=1, restarts=1, encoder=None)
    out = res.save(tmp_path / "out")
    assert out == tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["img0000.latent.pt", "img0000.png", "img0000_compare.png",
                                                     "img0001.latent.pt", "img0001.png", "img0001_compare.png"]


def test_per_image_settings_follow_each_batch(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=3, seed=3)
    noisy = clean + 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(2))
    parts = []
    res = invert(gan, noisy, "denoise", noise_sigma=[0.05, 0.1, 0.2], steps=1, restarts=1, encoder=None,
                 batch_size=2, on_batch=parts.append)
    assert [p.settings["noise_sigma"] for p in parts] == [pytest.approx([0.05, 0.1]), pytest.approx([0.2])]
    assert [p.record(0)["noise_sigma"] for p in parts] == [res.record(0)["noise_sigma"], res.record(2)["noise_sigma"]]


def test_layerwise_beats_z_only_outside_the_range(gan):
    from gantools.hooks import generate_from
    from gantools.restoration.inversion import invert

    # a smooth pattern the generator never drew
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 16), torch.linspace(-1, 1, 16), indexing="ij")
    target = torch.stack([torch.sin(3 * xx), torch.cos(4 * yy), xx * yy]).unsqueeze(0) * 0.8
    res = invert(gan, target, steps=60, restarts=2, layerwise=2, layer_steps=60, encoder=None, target=target)
    assert res.layer == "layer2"
    assert res.layer_losses["mse"][0] < 0.7 * res.losses["mse"][0]
    assert (res.layer_losses["total"] <= res.losses["total"] + 1e-5).all()  # starts from the z-only winner
    assert res.metrics[0]["layer_psnr"] > res.metrics[0]["psnr"] + 1
    with torch.no_grad():
        again = generate_from(gan.generator, res.layer, res.features)
    assert torch.allclose(again, res.layer_raw, atol=1e-5)
    rec = res.record(0)
    assert rec["layerwise"]["layer"] == "layer2" and rec["layerwise"]["psnr"] == res.metrics[0]["layer_psnr"]
    with pytest.raises(GantoolsError, match="unknown layer"):
        invert(gan, target, steps=1, layerwise=9)


def test_inputs_any_size_with_notice_and_errors(gan, gray_gan, tmp_path):
    from PIL import Image

    from gantools.restoration.inversion import invert

    rng = np.random.default_rng(0)
    big = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 256, (24, 30, 4), dtype=np.uint8), "RGBA").save(big)
    pal = tmp_path / "pal.png"
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8), "L").convert("P").save(pal)
    wide = tmp_path / "wide16.png"
    Image.fromarray((rng.integers(0, 65535, (16, 16))).astype(np.uint16)).save(wide)
    notes: list[Progress] = []
    res = invert(gan, [big, pal, wide], steps=2, restarts=1, encoder=None, progress=notes.append)
    assert res.names == ["big", "pal", "wide16"] and res.settings["resized"] == [True, False, False]
    resize_notes = [p.message for p in notes if p.message and "resized" in p.message]
    assert len(resize_notes) == 1 and "30x24" in resize_notes[0] and "16x16" in resize_notes[0]
    res1 = invert(gray_gan, [big], steps=1, restarts=1, encoder=None)
    assert res1.images.shape == (1, 1, 16, 16)

    bad = tmp_path / "bad.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(GantoolsError, match="cannot read image"):
        invert(gan, [bad], steps=1)
    mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(mask)
    with pytest.raises(GantoolsError, match="mask .* is 16x16 but the image is 30x24"):
        invert(gan, [big], "inpaint", mask=mask, steps=1)
    with pytest.raises(GantoolsError, match="needs a mask"):
        invert(gan, [pal], "inpaint", steps=1)
    Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
    with pytest.raises(GantoolsError, match="whole image"):
        invert(gan, [pal], "inpaint", mask=mask, steps=1)
    with pytest.raises(GantoolsError, match="unknown task 'deblur'"):
        invert(gan, [pal], "deblur", steps=1)
    for nothing in ([], torch.zeros(0, 3, 16, 16)):
        with pytest.raises(GantoolsError, match="no images to invert"):
            invert(gan, nothing, steps=1)
    # A folder stands for its images (sorted), and each result remembers its file.
    folder = tmp_path / "folder"
    folder.mkdir()
    for name in ("b", "a"):
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8), "RGB").save(folder / f"{name}.png")
    res2 = invert(gan, [folder, pal], steps=1, restarts=1, encoder=None)
    assert res2.names == ["a", "b", "pal"] and res2.record(0)["input"] == str(folder / "a.png")
    (tmp_path / "void").mkdir()
    with pytest.raises(GantoolsError, match="no images in"):
        invert(gan, [tmp_path / "void"], steps=1)
    # A missing clean target fails before any optimisation step.
    steps_seen: list[Progress] = []
    with pytest.raises(GantoolsError, match="image not found"):
        invert(gan, [pal], steps=5, encoder=None, target=tmp_path / "nothere.png", progress=steps_seen.append)
    assert not any(p.task == "invert" for p in steps_seen)
    # transparent mask pixels are known pixels, not holes
    rgba_mask = np.zeros((16, 16, 4), np.uint8)
    rgba_mask[4:8, 4:8] = 255
    Image.fromarray(rgba_mask, "RGBA").save(mask)
    res3 = invert(gan, [pal], "inpaint", mask=mask, steps=1, restarts=1, encoder=None)
    assert int(res3.missing.sum()) == 16


def test_mask_resized_with_image_stays_conservative(gan, tmp_path):
    from PIL import Image

    from gantools.restoration.inversion import invert

    img = tmp_path / "a.png"
    Image.fromarray(np.full((32, 32, 3), 200, np.uint8)).save(img)
    m = np.zeros((32, 32), np.uint8)
    m[8:16, 8:16] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    res = invert(gan, [img], "inpaint", mask=tmp_path / "m.png", steps=2, restarts=1, encoder=None)
    missing = res.settings["degradation"]["missing_fraction"]
    assert 0.0625 <= missing < 0.15  # 1/16 of the image, grown by at most a pixel of antialiasing


# ---------------------------------------------------------------------------------------------
# Files and the command line


def run_cli(*args):
    from typer.testing import CliRunner

    from gantools.cli import app

    return CliRunner().invoke(app, [str(a) for a in args])


@pytest.fixture(scope="module")
def model_file(gan, tmp_path_factory) -> Path:
    return save_model(tmp_path_factory.mktemp("inv") / "model.safetensors", gan.generator, gan.discriminator)


def test_cli_invert_outputs_and_json(gan, model_file, tmp_path):
    from PIL import Image

    from gantools.data import save_image

    _, clean = planted(gan, n=2, seed=21)
    (tmp_path / "in").mkdir()
    (tmp_path / "clean").mkdir()
    paths = []
    for i in range(2):
        save_image(clean[i], tmp_path / "clean" / f"digit{i}.png")
        degraded = clean[i].clone()
        degraded[:, 4:10, 4:10] = 1.0  # white hole, as a user's damaged photo
        paths.append(save_image(degraded, tmp_path / "in" / f"digit{i}.png"))
    m = np.zeros((16, 16), np.uint8)
    m[4:10, 4:10] = 1
    Image.fromarray(m).save(tmp_path / "mask.png")
    out = tmp_path / "out"
    res = run_cli("invert", *paths, "--model", model_file, "--task", "inpaint", "--mask", tmp_path / "mask.png",
                  "--steps", "20", "--restarts", "2", "--layerwise", "2", "--layer-steps", "10",
                  "--target", tmp_path / "clean", "--out", out, "--json", "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    lines = [json.loads(line) for line in res.stdout.strip().splitlines()]
    assert [r["name"] for r in lines] == ["digit0", "digit1"]
    for r in lines:
        assert r["task"] == "inpaint" and r["psnr"] > 10 and 0 < r["ssim"] <= 1
        assert r["layerwise"]["layer"] == "layer2" and "psnr" in r["layerwise"]
        assert r["output"] == str(out / f"{r['name']}.png")
        # what it had to beat: the white-holed input as given, and biharmonic inpainting
        assert r["baseline"] == "inpaint_biharmonic" and r["input_psnr"] < r["baseline_psnr"]
        assert r["worse_than"] == [k for k in ("input", "baseline") if r["layerwise"]["psnr"] < r[f"{k}_psnr"]]
    for stem in ("digit0", "digit1"):
        assert (out / f"{stem}.png").is_file() and (out / f"{stem}_compare.png").is_file()
        with Image.open(out / f"{stem}.png") as im:
            assert im.size == (16, 16)
        with Image.open(out / f"{stem}_compare.png") as im:
            assert im.size[1] >= 128 and im.size[0] >= 4 * 128  # 4 panels: input | seen | z-only | layer-wise
        latent = torch.load(out / f"{stem}.latent.pt", weights_only=True)
        assert latent["z"].shape == (8,) and latent["layer"] == "layer2" and latent["features"].dim() == 3
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"digit{i}{s}" for i in range(2) for s in (".png", "_compare.png", ".latent.pt"))
    table = run_cli("invert", *paths, "--model", model_file, "--task", "inpaint", "--mask", tmp_path / "mask.png",
                    "--steps", "2", "--restarts", "1", "--target", tmp_path / "clean", "--out", tmp_path / "o2",
                    "--device", "cpu", "--quiet")
    assert table.exit_code == 0, table.output
    rows = [line for line in table.stdout.splitlines() if "input as given" in line or "baseline:" in line]
    assert len(rows) == 4 and sum("inpaint_biharmonic" in line for line in rows) == 2
    assert f"{lines[0]['baseline_psnr']:.2f}" in rows[1]

    # table output, superres from the command line
    low = tmp_path / "low.png"
    save_image(F.avg_pool2d(clean[:1], 4)[0], low)
    res = run_cli("invert", low, "--model", model_file, "--task", "superres", "--scale", "4", "--steps", "5",
                  "--restarts", "1", "--out", out, "--device", "cpu", "--quiet")
    assert res.exit_code == 0, res.output
    assert "low" in res.stdout and (out / "low.png").is_file()


@pytest.mark.parametrize("args, message", [
    (["--task", "superres"], "exactly 4x4"),
    (["--task", "inpaint", "--mask", "{wrong_mask}"], "must have the image's size"),
    (["--task", "inpaint"], "needs --mask"),
    (["--task", "denoise", "--scale", "2"], "--scale is for --task superres"),
    (["--task", "colorize", "--model", "{gray_model}"], "RGB model"),
    (["--layerwise", "7"], "unknown layer '7'"),
    (["--layer-steps", "5"], "--layer-steps is for --layerwise"),
])
def test_cli_errors(args, message, model_file, gray_gan, tmp_path):
    from PIL import Image

    img = tmp_path / "x.png"
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(img)
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "wrong.png")
    gray_model = save_model(tmp_path / "g" / "model.safetensors", gray_gan.generator, gray_gan.discriminator)
    args = [a.format(wrong_mask=tmp_path / "wrong.png", gray_model=gray_model) for a in args]
    if "--model" not in args:
        args += ["--model", str(model_file)]
    res = run_cli("invert", img, *args, "--steps", "1", "--out", tmp_path / "o", "--device", "cpu", "--quiet")
    assert res.exit_code != 0
    assert message in " ".join(res.output.split()), res.output
    assert "Traceback" not in res.output


def test_cli_unreadable_file(model_file, tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8 truncated")
    res = run_cli("invert", bad, "--model", model_file, "--steps", "1", "--out", tmp_path / "o", "--device", "cpu")
    assert res.exit_code == 1 and "cannot read image" in res.output and "Traceback" not in res.output


def test_layerwise_denoising_stops_at_the_noise_level(gan):
    from gantools.restoration.inversion import invert

    _, clean = planted(gan, n=2, seed=13)
    noisy = clean + 2 * 0.1 * torch.randn(clean.shape, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=20, restarts=1, layerwise=2, layer_steps=150, encoder=None, target=clean)
    free = invert(gan, noisy, "reconstruct", **kw)  # no noise model: fits the noise too
    den = invert(gan, noisy, "denoise", noise_sigma=0.1, **kw)
    assert (free.layer_losses["mse"] < 0.7 * 0.01).all(), free.layer_losses["mse"]
    assert (den.layer_losses["mse"] <= 0.01 + 1e-6).all() and (den.layer_losses["mse"] > 0.8 * 0.01).all(), \
        den.layer_losses["mse"]
    assert np.mean([m["layer_psnr"] for m in den.metrics]) > np.mean([m["layer_psnr"] for m in free.metrics])
