"""reports.labelled_grid: the one way to draw a grid of images with row and column labels (#22)."""

from __future__ import annotations

import pytest
import torch

from gantools.reports import labelled_grid
from gantools.utils import GantoolsError


def _white(t: torch.Tensor) -> bool:
    return bool((t == 255).all())


def test_images_keep_their_pixels_and_labels_get_their_own_space():
    torch.manual_seed(0)
    scenes = torch.randint(0, 255, (3, 3, 16, 16), dtype=torch.uint8)
    digits = torch.randint(0, 255, (2, 1, 8, 8), dtype=torch.uint8)  # shorter row, gray, smaller
    grid = labelled_grid([scenes, digits], ["scenes", "digits\nx4"], ["input", "seen", "result"], cell=32, gap=2)
    assert grid.dtype == torch.uint8 and grid.shape[0] == 3
    height, width = grid.shape[1:]
    left, top = width - (3 * 32 + 2 * 2), height - (2 * 32 + 2)
    assert left > 0 and top > 0  # a label column and a label row
    assert not _white(grid[:, :, :left]) and not _white(grid[:, :top, left:])  # labels drawn there...
    assert _white(grid[:, top:, left - 2:left])  # ...and not running into the images
    # row 0, column 1: a 16 px scene doubled (nearest), centred in its 32 px cell
    x = left + 1 * (32 + 2)
    assert torch.equal(grid[:, top:top + 32, x:x + 32], scenes[1].repeat_interleave(2, 1).repeat_interleave(2, 2))
    # row 1, column 0: an 8 px digit scaled by 4, gray spread to RGB
    y = top + 32 + 2
    assert torch.equal(grid[:, y:y + 32, left:left + 32],
                       digits[0].expand(3, -1, -1).repeat_interleave(4, 1).repeat_interleave(4, 2))
    assert _white(grid[:, y:, left + 2 * 34:])  # the missing third image of the short row stays empty


def test_without_labels_the_grid_has_no_margins_and_float_images_are_accepted():
    images = torch.zeros(2, 4, 3, 16, 16)  # R x N x C x H x W, float in [-1, 1]: mid grey
    grid = labelled_grid(images, cell=16, gap=0)
    assert tuple(grid.shape) == (3, 32, 64)
    assert torch.equal(grid, torch.full_like(grid, 128))


def test_a_title_sits_above_the_column_labels():
    images = torch.zeros(1, 2, 3, 8, 8, dtype=torch.uint8)
    plain = labelled_grid(images, column_labels=["a", "b"], cell=8)
    titled = labelled_grid(images, column_labels=["a", "b"], cell=8, title="A title")
    assert titled.shape[1] > plain.shape[1] and titled.shape[2] >= plain.shape[2]


def test_label_counts_must_match():
    images = torch.zeros(2, 3, 3, 8, 8, dtype=torch.uint8)
    with pytest.raises(GantoolsError, match="row_labels has 1 labels for 2 rows"):
        labelled_grid(images, ["only one"])
    with pytest.raises(GantoolsError, match="column_labels has 2 labels for 3 columns"):
        labelled_grid(images, column_labels=["a", "b"])
    with pytest.raises(GantoolsError, match="at least one image"):
        labelled_grid([])
