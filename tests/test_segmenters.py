"""Segmenters: the protocol, the colour segmenter, ground truth, evaluation, and a tiny learned one."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from gantools.segmenters import (
    COLOR_PROTOTYPES,
    ColorSegmenter,
    GroundTruthSegmenter,
    LearnedSegmenter,
    Segmenter,
    SegmenterConfig,
    load_encoder_weights,
    evaluate_segmenter,
    load_segmenter,
    save_segmenter,
    train_segmenter,
)
from gantools.utils import GantoolsError, from_uint8

TINY = dict(encoder_depth=2, decoder_channels=(16, 8))


class Rects:
    """A tiny labelled dataset: noisy dark ground with a red and a blue rectangle (ids 0, 1, 2)."""

    concepts = ["ground", "red", "blue"]

    def __init__(self, n: int = 48, size: int = 16, seed: int = 0, nc: int = 3) -> None:
        self.image_size, self.nc = size, nc
        g = torch.Generator().manual_seed(seed)
        self.items = []
        for _ in range(n):
            label = torch.zeros(size, size, dtype=torch.long)
            image = (50 + torch.randint(0, 40, (3, size, size), generator=g)).to(torch.uint8)
            for c, rgb in ((1, (220, 30, 30)), (2, (30, 40, 220))):
                x0, y0 = torch.randint(0, size - size // 4, (2,), generator=g).tolist()
                w, h = torch.randint(size // 4, size // 2, (2,), generator=g).tolist()
                label[y0:y0 + h, x0:x0 + w] = c
                image[:, y0:y0 + h, x0:x0 + w] = torch.tensor(rgb, dtype=torch.uint8).view(3, 1, 1)
            if nc == 1:
                image = image.float().mean(0, keepdim=True).round().to(torch.uint8)
            self.items.append((image, label))

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        return self.items[i]


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> tuple[LearnedSegmenter, Path, float]:
    """A tiny Unet trained for a few seconds on Rects, saved in half precision."""
    out = tmp_path_factory.mktemp("seg") / "seg.safetensors"
    result = train_segmenter(Rects(96, 16, seed=0), out, image_size=None, steps=80, batch_size=16, lr=1e-2,
                             val_fraction=0.25, device="cpu", **TINY)
    return result.segmenter, out, result.validation.miou


# ---------------------------------------------------------------------------------------------
# Colour segmenter


def test_color_segmenter_names_prototypes_and_nearby_colours():
    seg = ColorSegmenter()
    assert seg.concepts == ["black", "white", "gray", "red", "orange", "yellow", "green", "blue", "purple",
                            "pink", "brown"]
    protos = torch.tensor([COLOR_PROTOTYPES[c] for c in seg.concepts], dtype=torch.uint8)  # 11 x 3
    image = protos.T.reshape(1, 3, 1, 11)
    assert seg(from_uint8(image)).flatten().tolist() == list(range(11))
    # Colours people would name the same way, away from the prototypes.
    named = {"red": (255, 0, 0), "green": (0, 200, 0), "blue": (0, 0, 255), "yellow": (255, 255, 0),
             "white": (250, 250, 245), "black": (10, 10, 12), "gray": (150, 150, 150), "brown": (140, 90, 50),
             "pink": (255, 180, 200), "orange": (255, 150, 0), "purple": (140, 40, 180)}
    image = torch.tensor(list(named.values()), dtype=torch.uint8).T.reshape(1, 3, 1, -1)
    labels = seg(from_uint8(image)).flatten().tolist()
    assert [seg.concepts[i] for i in labels] == list(named)


def test_color_segmenter_grayscale_and_shapes():
    seg = ColorSegmenter()
    ramp = torch.linspace(-1, 1, 64).view(1, 1, 8, 8).repeat(2, 1, 1, 1)
    labels = seg(ramp)
    assert labels.shape == (2, 8, 8) and labels.dtype == torch.int64
    used = {seg.concepts[i] for i in labels.unique().tolist()}
    assert used == {"black", "gray", "white"}
    assert labels[0, 0, 0] == seg.concepts.index("black") and labels[0, -1, -1] == seg.concepts.index("white")
    rgb = seg(ramp.repeat(1, 3, 1, 1))
    assert torch.equal(rgb, labels)  # grayscale is the same as neutral RGB
    with pytest.raises(GantoolsError, match="1 or 3-channel"):
        seg(torch.zeros(1, 2, 4, 4))
    with pytest.raises(GantoolsError, match="N x C x H x W"):
        seg(torch.zeros(3, 4, 4))


# ---------------------------------------------------------------------------------------------
# Protocol, ground truth, evaluation


def test_function_with_concepts_is_a_segmenter_and_is_evaluated_exactly():
    data = Rects(6, 16, seed=3)

    def all_ground(images: torch.Tensor) -> torch.Tensor:
        return torch.zeros(images.shape[0], *images.shape[2:], dtype=torch.long, device=images.device)

    all_ground.concepts = ["ground", "red", "blue"]
    assert isinstance(all_ground, Segmenter)
    result = evaluate_segmenter(all_ground, data)
    labels = torch.stack([data[i][1] for i in range(len(data))])
    frac = float((labels == 0).float().mean())
    assert result.iou[0] == pytest.approx(frac)  # intersection = ground pixels, union = all pixels
    assert result.iou[1] == 0.0 and result.iou[2] == 0.0
    assert result.miou == pytest.approx(frac / 3)
    assert result.pixel_accuracy == pytest.approx(frac)
    assert result.support == [int((labels == k).sum()) for k in range(3)]

    def bad(images):
        return torch.full((images.shape[0], *images.shape[2:]), 7, dtype=torch.long)

    bad.concepts = ["ground", "red", "blue"]
    with pytest.raises(GantoolsError, match="unknown concept id 7"):
        evaluate_segmenter(bad, data)


def test_evaluation_maps_concepts_by_name():
    data = Rects(4, 16, seed=4)
    truth = GroundTruthSegmenter(data)

    def reordered(images):
        return torch.tensor([1, 2, 0])[truth(images)]  # ground -> 1, red -> 2, blue -> 0

    reordered.concepts = ["blue", "ground", "red"]
    assert evaluate_segmenter(reordered, data).miou == pytest.approx(1.0)


def test_ground_truth_segmenter_returns_exact_labels_and_rejects_unknown_images():
    data = Rects(10, 16, seed=1)
    truth = GroundTruthSegmenter(data)
    images = torch.stack([data[i][0] for i in (3, 7)])
    assert torch.equal(truth(from_uint8(images)), torch.stack([data[3][1], data[7][1]]))
    assert torch.equal(truth(images), torch.stack([data[3][1], data[7][1]]))  # uint8 works as well
    result = evaluate_segmenter(truth, data)
    assert result.miou == 1.0 and result.pixel_accuracy == 1.0
    changed = from_uint8(images).clone()
    changed[0, :, 0, 0] = 1.0 - changed[0, :, 0, 0]
    with pytest.raises(GantoolsError, match="does not know image 0"):
        truth(changed)
    # The colour segmenter names these rectangles right, and its concepts are mapped by name.
    color = evaluate_segmenter(ColorSegmenter(), data)
    assert color.iou[1] == 1.0 and color.iou[2] == 1.0 and color.iou[0] == 0.0


def test_ground_truth_on_scenes():
    from gantools.scenes import CONCEPTS, Scenes

    data = Scenes(6, 32, seed=5)
    result = evaluate_segmenter(GroundTruthSegmenter(data), data)
    assert result.concepts == CONCEPTS and result.miou == 1.0


def test_unlabelled_dataset_is_refused(image_folder):
    from gantools.data import ImageFolder

    with pytest.raises(GantoolsError, match="no labels"):
        evaluate_segmenter(ColorSegmenter(), ImageFolder(image_folder, 16))


# ---------------------------------------------------------------------------------------------
# Learned segmenter


def test_learned_segmenter_learns_and_round_trips(trained, tmp_path):
    seg, path, val_miou = trained
    test = Rects(32, 16, seed=9)
    score = evaluate_segmenter(seg, test)
    assert val_miou > 0.8 and score.miou > 0.8, (val_miou, score.iou)
    assert path.stat().st_size < 200_000
    loaded = load_segmenter(path)
    assert isinstance(loaded, LearnedSegmenter) and not loaded.training
    assert loaded.concepts == Rects.concepts
    assert loaded.config.encoder_depth == 2 and loaded.config.decoder_channels == [16, 8]
    assert loaded.metadata["training"]["steps"] == 80
    x = from_uint8(torch.stack([test[i][0] for i in range(8)]))
    agree = (loaded(x) == seg(x)).float().mean()
    assert agree > 0.99  # float16 storage changes almost nothing
    assert evaluate_segmenter(loaded, test).miou == pytest.approx(score.miou, abs=0.01)


def test_learned_segmenter_resizes_and_keeps_device(trained):
    seg, _, _ = trained
    image, label = Rects(1, 16, seed=11)[0]
    x = from_uint8(image[None])
    wide = torch.nn.functional.interpolate(x, size=(32, 48), mode="nearest")
    labels = seg(wide)
    assert labels.shape == (1, 32, 48) and labels.dtype == torch.int64 and labels.device == wide.device
    # A 2x nearest-neighbour enlargement is labelled like the original, enlarged (up to the edges).
    big = torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest")
    up = seg(x).repeat_interleave(2, 1).repeat_interleave(2, 2)
    assert (seg(big) == up).float().mean() > 0.9
    feats = seg.features(from_uint8(image[None]))
    assert feats.shape == (1, seg.model.encoder.out_channels[-1])
    with pytest.raises(GantoolsError, match="3-channel images, got 1"):
        seg(torch.zeros(1, 1, 16, 16))


def test_load_segmenter_specs(tiny_model_file, trained, tmp_path):
    from gantools.models import load_model

    assert isinstance(load_segmenter("color"), ColorSegmenter)
    gan = load_model(tiny_model_file)
    assert isinstance(load_segmenter(None, gan), ColorSegmenter)  # no companion: colours
    seg, _, _ = trained
    save_segmenter(seg, tiny_model_file.parent / "segmenter.safetensors")
    assert isinstance(load_segmenter(None, gan), LearnedSegmenter)  # the companion beside the model
    assert isinstance(load_segmenter(tiny_model_file.parent), LearnedSegmenter)
    with pytest.raises(GantoolsError, match="not a segmenter file"):
        load_segmenter(tiny_model_file)
    with pytest.raises(GantoolsError, match="no segmenter 'nope'"):
        load_segmenter("nope")


def test_unknown_architecture_and_encoder_list_choices():
    with pytest.raises(GantoolsError, match="unknown segmenter architecture 'unt'.*unet, unetplusplus"):
        LearnedSegmenter(SegmenterConfig(["a", "b"], arch="unt", image_size=16))
    with pytest.raises(GantoolsError, match="unknown encoder 'resnet7'.*resnet18"):
        LearnedSegmenter(SegmenterConfig(["a", "b"], encoder="resnet7", image_size=16))
    with pytest.raises(GantoolsError, match="not a timm model"):
        LearnedSegmenter(SegmenterConfig(["a", "b"], encoder="tu-nonexistent_net", image_size=16))
    with pytest.raises(GantoolsError, match="divisible"):
        SegmenterConfig(["a"], image_size=20, encoder_depth=4)


def test_local_encoder_weights_load_with_timm_or_smp_keys(tmp_path):
    from safetensors.torch import save_file

    config = SegmenterConfig(["a", "b"], image_size=16, **{"encoder_depth": 2, "decoder_channels": [16, 8]})
    torch.manual_seed(1)
    source = LearnedSegmenter(config)
    torch.manual_seed(2)
    target = LearnedSegmenter(config)
    state = source.model.encoder.state_dict()
    key = next(k for k, v in state.items() if v.is_floating_point() and v.ndim == 4)
    assert not torch.equal(target.model.encoder.state_dict()[key], state[key])
    timm_style = {k.removeprefix("model."): v for k, v in state.items()}  # as timm saves them
    torch.save(timm_style, tmp_path / "enc.pt")
    assert load_encoder_weights(target, tmp_path / "enc.pt") == len(state)
    assert torch.equal(target.model.encoder.state_dict()[key], state[key])
    save_file({f"encoder.{k}": v.contiguous() for k, v in state.items()}, str(tmp_path / "enc.safetensors"))
    torch.manual_seed(3)
    other = LearnedSegmenter(config)
    load_encoder_weights(other, tmp_path / "enc.safetensors")
    assert torch.equal(other.model.encoder.state_dict()[key], state[key])
    torch.save({"unrelated.weight": torch.zeros(3)}, tmp_path / "bad.pt")
    with pytest.raises(GantoolsError, match="no tensor"):
        load_encoder_weights(other, tmp_path / "bad.pt")


# ---------------------------------------------------------------------------------------------
# Labelled folders and the CLI


def _write_labelled(root: Path, data: Rects, concepts: list[str]) -> Path:
    from gantools.data import save_image, save_label

    for i in range(len(data)):
        image, label = data[i]
        save_image(image, root / "images" / f"{i:03d}.png")
        save_label(label, root / "labels" / f"{i:03d}.png", len(concepts))
    (root / "concepts.json").write_text(json.dumps({"concepts": concepts}))
    return root


def test_cli_train_and_eval_on_a_labelled_folder(tmp_path):
    from typer.testing import CliRunner

    from gantools.cli import app

    root = _write_labelled(tmp_path / "rects", Rects(20, 16, seed=2), Rects.concepts)
    runner = CliRunner()
    out = tmp_path / "seg.safetensors"
    r = runner.invoke(app, ["segmenter", "train", "--data", str(root), "--out", str(out), "--steps", "3",
                            "--batch-size", "4", "--encoder-depth", "2", "--decoder-channels", "16,8",
                            "--device", "cpu", "--quiet", "--json"])
    assert r.exit_code == 0, r.output
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["steps"] == 3 and summary["val_images"] == 2 and summary["train_images"] == 18
    assert out.is_file() and summary["file_bytes"] == out.stat().st_size
    r = runner.invoke(app, ["segmenter", "eval", "--segmenter", str(out), "--data", str(root), "--json",
                            "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    result = json.loads(r.stdout.strip().splitlines()[-1])
    assert result["n"] == 20 and set(result["iou"]) == set(Rects.concepts) and 0 <= result["miou"] <= 1
    r = runner.invoke(app, ["segmenter", "eval", "--segmenter", "color", "--data", str(root), "--quiet"])
    assert r.exit_code == 0 and "mIoU" in r.stdout and "blue" in r.stdout
    r = runner.invoke(app, ["segmenter", "eval", "--segmenter", "color", "--data", "scenes", "--n", "4"])
    assert r.exit_code == 1 and "share no name" in r.output  # colour names are not scene concepts

    # Errors: one red line, exit 1.
    r = runner.invoke(app, ["segmenter", "train", "--data", str(root), "--out", str(out), "--encoder", "resnet7"])
    assert r.exit_code == 1 and "unknown encoder 'resnet7'" in r.output
    r = runner.invoke(app, ["segmenter", "train", "--data", str(root), "--out", str(out), "--nc", "1",
                            "--steps", "1", "--encoder-depth", "2", "--decoder-channels", "16,8", "--quiet"])
    assert r.exit_code == 0, r.output  # a grayscale segmenter from RGB files (decoded as luminance)
    r = runner.invoke(app, ["segmenter", "eval", "--segmenter", str(out), "--data", str(root), "--nc", "3"])
    assert r.exit_code == 1 and "1-channel images, got 3" in r.output
    (root / "labels" / "004.png").unlink()
    r = runner.invoke(app, ["segmenter", "eval", "--segmenter", "color", "--data", str(root)])
    assert r.exit_code == 1 and "no label" in r.output


def test_folder_label_with_unknown_concept_id(tmp_path):
    root = _write_labelled(tmp_path / "rects", Rects(4, 16, seed=2), Rects.concepts)
    (root / "concepts.json").write_text(json.dumps({"concepts": ["ground", "red"]}))  # blue (id 2) is unknown
    with pytest.raises(GantoolsError, match="concept id 2"):
        train_segmenter(root, None, steps=1, **TINY)


def test_load_segmenter_passes_segmenter_objects_through():
    def bright(images):
        return (images.mean(dim=1) > 0).long()

    bright.concepts = ["dark", "bright"]
    assert load_segmenter(bright) is bright
    with pytest.raises(GantoolsError, match="non-empty `concepts` list"):
        load_segmenter(lambda images: images)


def test_interventions_on_a_report_use_its_segmenter(tiny_model_file, trained, tmp_path):
    # A report made with a segmenter file records it; ablate on that report, with no --segmenter,
    # uses that file rather than the model's default (colours here: the model has no companion).
    from gantools.dissection import dissect, load_report
    from gantools.interventions import ablate

    seg, _, _ = trained
    seg_file = save_segmenter(seg, tmp_path / "elsewhere" / "seg.safetensors")
    report = dissect(str(tiny_model_file), layers=2, segmenter=str(seg_file), n=8, seed=0, batch_size=8)
    report.save(tmp_path / "rep", html=False)
    assert load_report(tmp_path / "rep").settings["segmenter_source"] == str(seg_file.resolve())
    notes = []
    result = ablate(str(tiny_model_file), 2, units=[0], dissection=tmp_path / "rep", n=4, progress=notes.append)
    assert result.concepts == list(seg.concepts)
    assert any(m.message and "the dissection report's" in m.message for m in notes)
    assert ablate(str(tiny_model_file), 2, units=[0], n=4).concepts == list(ColorSegmenter().concepts)
