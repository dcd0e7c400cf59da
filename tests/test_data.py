"""Image loading and image folders: formats, modes, sizes, in-memory vs streaming, bad folders."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import write_images
from gantools import data
from gantools.data import (ImageFolder, batch_images, load_image, make_grid, open_dataset, read_image, read_mask,
                           save_grid, save_image)
from gantools.utils import GantoolsError, Progress, from_uint8


def _collect():
    seen: list[Progress] = []
    return seen, seen.append


def test_folder_recursive_in_memory(image_folder: Path) -> None:
    ds = ImageFolder(image_folder, image_size=16, nc=3)
    assert len(ds) == 12 and ds.skipped == []
    assert ds.images is not None and ds.images.shape == (12, 3, 16, 16) and ds.images.dtype == torch.uint8
    # sorted order, class folders included
    assert ds.files == sorted(ds.files) and {p.parent.name for p in ds.files} == {"0", "1", "2"}
    # the stored image is the loader's output for that file
    assert torch.equal(ds[4], load_image(ds.files[4], 3, 16))
    x = from_uint8(batch_images(ds, [0, 5, 5]))
    assert x.shape == (3, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    assert torch.equal(x[1], x[2])


def test_streaming_matches_in_memory(image_folder: Path, monkeypatch) -> None:
    in_mem = ImageFolder(image_folder, image_size=16, nc=1)
    monkeypatch.setattr(data, "IN_MEMORY_LIMIT", 0)
    streamed = ImageFolder(image_folder, image_size=16, nc=1)
    assert streamed.images is None
    idx = [3, 0, 11]
    assert torch.equal(batch_images(streamed, idx), batch_images(in_mem, idx))
    assert batch_images(streamed, idx).shape == (3, 1, 16, 16)


def test_formats_and_modes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (24, 40, 3), dtype=np.uint8)
    for ext in ("png", "jpg", "bmp", "webp", "tiff"):
        Image.fromarray(rgb).save(tmp_path / f"a.{ext}")
    Image.fromarray(rgb[:, :, 0], "L").save(tmp_path / "gray.png")
    rgba = np.dstack([rgb, np.zeros((24, 40), np.uint8)])  # fully transparent: composited on white
    Image.fromarray(rgba, "RGBA").save(tmp_path / "alpha.png")
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(tmp_path / "deep.png")  # 16-bit PNG
    (tmp_path / "notes.txt").write_text("not an image")
    ds = ImageFolder(tmp_path, image_size=16, nc=3)
    assert len(ds) == 8 and ds.images.shape == (8, 3, 16, 16)
    assert torch.equal(read_image(tmp_path / "a.png"), torch.from_numpy(rgb).permute(2, 0, 1))
    assert (read_image(tmp_path / "alpha.png") == 255).all()
    gray3 = read_image(tmp_path / "gray.png", nc=3)
    assert torch.equal(gray3[0], gray3[2]) and torch.equal(gray3[0], torch.from_numpy(rgb[:, :, 0]))
    deep = read_image(tmp_path / "deep.png", nc=1)  # 16-bit rescaled by its range, not clipped
    assert torch.equal(deep[0], torch.from_numpy(rgb[:, :, 0]))
    # resize the short side and center-crop a 24x40 image to 16x16
    assert load_image(tmp_path / "a.png", nc=1, size=16).shape == (1, 16, 16)


def test_center_crop_keeps_the_middle(tmp_path: Path) -> None:
    arr = np.zeros((20, 60), np.uint8)
    arr[:, 20:40] = 255  # white middle third, black sides
    Image.fromarray(arr, "L").save(tmp_path / "wide.png")
    img = load_image(tmp_path / "wide.png", nc=1, size=16)
    assert img.float().mean() > 240


def test_empty_and_missing_folders(tmp_path: Path) -> None:
    (tmp_path / "empty" / "sub").mkdir(parents=True)
    with pytest.raises(GantoolsError, match="no images in"):
        ImageFolder(tmp_path / "empty")
    with pytest.raises(GantoolsError, match="not found"):
        ImageFolder(tmp_path / "missing")
    with pytest.raises(GantoolsError, match="give a folder of images or a built-in name"):
        open_dataset(tmp_path / "missing")


def test_corrupt_files_skipped_with_one_notice(tmp_path: Path) -> None:
    write_images(tmp_path, 5, size=16)
    for i in range(3):
        (tmp_path / f"broken{i}.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "truncated.jpg").write_bytes(b"\xff\xd8\xff\xe0")
    seen, cb = _collect()
    ds = ImageFolder(tmp_path, image_size=16, nc=3, progress=cb)
    assert len(ds) == 5 and len(ds.skipped) == 4
    notices = [p.message for p in seen if p.message]
    assert len(notices) == 1 and "skipped 4 unreadable" in notices[0] and "broken0.png" in notices[0]


def test_only_corrupt_files(tmp_path: Path) -> None:
    (tmp_path / "a.png").write_bytes(b"nope")
    (tmp_path / "b.jpg").write_bytes(b"")
    with pytest.raises(GantoolsError, match=r"no readable images .*2 unreadable"):
        ImageFolder(tmp_path)


def test_open_dataset_folder(image_folder: Path) -> None:
    ds = open_dataset(image_folder, image_size=16, nc=1)
    assert len(ds) == 12 and ds[0].shape == (1, 16, 16)


def test_save_image_and_grid_roundtrip(tmp_path: Path) -> None:
    x = torch.rand(3, 8, 8) * 2 - 1
    save_image(x, tmp_path / "x.png")
    back = from_uint8(read_image(tmp_path / "x.png"))
    assert (back - x).abs().max() <= 1 / 127.5 + 1e-6
    imgs = torch.rand(5, 1, 8, 8) * 2 - 1
    grid = make_grid(imgs, nrow=3, padding=2)
    assert grid.shape == (1, 2 + 2 * 10, 2 + 3 * 10) and grid.dtype == torch.uint8
    save_grid(imgs, tmp_path / "g.png", nrow=3)
    assert Image.open(tmp_path / "g.png").size == (32, 22)


def test_split_holdout_keeps_every_class(tmp_path: Path) -> None:
    from gantools.data import find_images, split_dataset, split_holdout

    # class folders numbered class by class, as in mnist4k: "the last n overall" would drop class 2
    root = tmp_path / "classes"
    write_images(root, 30, classes=3)
    files = find_images(root)
    train_files, held = split_holdout(files, 6)
    assert len(train_files) == 24 and len(held) == 6
    assert sorted(p.parent.name for p in held) == ["0", "0", "1", "1", "2", "2"]
    # within each class, the held-out images are the last by sorted file name
    for c in "012":
        in_class = sorted(p for p in files if p.parent.name == c)
        assert [p for p in held if p.parent.name == c] == in_class[-2:]
    assert not set(train_files) & set(held)
    # dataset split keeps the in-memory images aligned with the files
    folder = ImageFolder(root, image_size=8, nc=3)
    tr, ho = split_dataset(folder, 6)
    assert len(tr) == 24 and len(ho) == 6 and ho.files == sorted(held)
    i = folder.files.index(ho.files[0])
    assert torch.equal(ho.images[0], folder.images[i])
    with pytest.raises(GantoolsError, match="leaves none"):
        split_holdout(files, 30)


def test_read_mask_treats_transparent_pixels_as_unselected(tmp_path):
    # A white opaque square on a transparent background: a mask selects only the square, while a
    # picture (read_image) still composites transparency on white.
    rgba = np.zeros((8, 8, 4), dtype=np.uint8)
    rgba[2:5, 3:6] = 255
    path = tmp_path / "mask.png"
    Image.fromarray(rgba, "RGBA").save(path)
    m = read_mask(path)
    assert m.shape == (8, 8) and m.dtype == torch.uint8
    expected = torch.zeros(8, 8, dtype=torch.bool)
    expected[2:5, 3:6] = True
    assert torch.equal(m > 127, expected)
    assert int(read_image(path, nc=1).min()) == 255


def test_save_image_format_follows_the_suffix(tmp_path):
    img = torch.randint(0, 256, (3, 8, 8), dtype=torch.uint8)
    for name, fmt in (("a.png", "PNG"), ("a.jpg", "JPEG"), ("a.webp", "WEBP"), ("a.out", "PNG")):
        with Image.open(save_image(img, tmp_path / name)) as f:
            assert f.format == fmt


def test_open_split_parts_match_the_training_split(tmp_path: Path) -> None:
    from gantools.data import find_images, open_split, split_dataset, split_folder, split_holdout

    root = tmp_path / "classes"
    write_images(root, 30, classes=3)
    train_files, held = split_folder(root, 6)
    assert (train_files, held) == split_holdout(find_images(root), 6)
    train = open_split(root, image_size=8, holdout=6)
    held_out = open_split(root, image_size=8, holdout=6, part="holdout")
    everything = open_split(root, image_size=8, holdout=6, part="all")
    assert isinstance(train, ImageFolder) and train.files == train_files  # only that part is decoded
    assert held_out.files == held and len(everything) == 30
    # the same images that training keeps and holds out (split_dataset of the whole folder)
    tr, ho = split_dataset(ImageFolder(root, image_size=8), 6)
    assert torch.equal(batch_images(held_out, range(6)), ho.images)
    assert torch.equal(batch_images(train, range(24)), tr.images)
    with pytest.raises(GantoolsError, match="part must be"):
        open_split(root, holdout=6, part="test")
    with pytest.raises(GantoolsError, match="holdout must be at least 0"):
        open_split(root, holdout=-1)
    with pytest.raises(GantoolsError, match="needs holdout"):
        open_split(root, part="holdout")


def test_open_split_of_generated_and_labelled_data(tmp_path: Path) -> None:
    from gantools.data import image_files, open_split, split_folder
    from gantools.scenes import write_scenes

    held = open_split("scenes", image_size=16, holdout=3, part="holdout", n=10, seed=1)
    train = open_split("scenes", image_size=16, holdout=3, n=10, seed=1)
    assert len(held) == 3 and len(train) == 7
    scenes = open_dataset("scenes", image_size=16, n=10, seed=1)
    assert torch.equal(batch_images(held, [0]), batch_images(scenes, [7]))  # the last indices are held out
    root = write_scenes(tmp_path / "lab", n=5, image_size=16, preview=1).out
    # a labelled folder's pictures are its images/, not its label maps
    assert image_files(root) == sorted((root / "images").glob("*.png"))
    part = open_split(root, holdout=2, part="holdout")
    assert part.files == split_folder(root, 2)[1] and part[0][1].dtype == torch.int64  # (image, label) pairs


def test_unreadable_files_count_in_the_split(tmp_path: Path) -> None:
    # a folder with an unreadable file splits the same way whether or not its files are decoded
    from gantools.data import split_dataset, split_folder

    write_images(tmp_path, 6, size=8)
    (tmp_path / "img_zz_broken.png").write_bytes(b"not a png")
    _, held = split_folder(tmp_path, 3)
    folder = ImageFolder(tmp_path, image_size=8)
    assert len(folder.skipped) == 1
    _, ho = split_dataset(folder, 3)
    assert ho.files == [f for f in held if f not in folder.skipped]
