"""The cell grid: at stride 32 each cell is exactly its patch's center 32x32 (PCam's label region)."""

import numpy as np
import pytest

from pcam_core.contract import CENTER_SIZE, PATCH_SIZE
from training.slides.grid import CellGrid, cut_patches, region_size
from training.slides.reader import Slide


def test_at_stride_32_a_cell_is_the_center_of_its_patch(synthetic_slide) -> None:
    with Slide(synthetic_slide.path) as slide:
        grid = CellGrid.over(slide.size)
        for row, column in [(0, 0), (3, 7), (grid.rows - 1, grid.columns - 1)]:
            x, y = grid.patch_origin(row, column)
            patch = slide.read(x, y, PATCH_SIZE, PATCH_SIZE)
            cell = slide.read(column * 32, row * 32, 32, 32)
            lo = (PATCH_SIZE - CENTER_SIZE) // 2
            np.testing.assert_array_equal(patch[lo : lo + CENTER_SIZE, lo : lo + CENTER_SIZE], cell)


def test_blocks_cover_every_cell_once_and_their_patches_are_the_cells_own(synthetic_slide) -> None:
    with Slide(synthetic_slide.path) as slide:
        grid = CellGrid.over(slide.size, stride=32)
        seen = np.zeros(grid.shape, int)
        for rows, columns in grid.blocks(5):
            seen[rows, columns] += 1
        assert (seen == 1).all()
        rows, columns = next(iter(grid.blocks(5)))
        region = slide.read(*grid.patch_origin(rows.start, columns.start), *region_size(rows, columns, 32))
        patches = cut_patches(region, np.array([[0, 0], [2, 3]]), 32)
        for patch, (row, column) in zip(patches, [(0, 0), (2, 3)], strict=True):
            np.testing.assert_array_equal(patch, slide.read(*grid.patch_origin(row, column), 96, 96))


def test_the_grid_covers_the_slide_and_refuses_strides_beyond_a_patch() -> None:
    assert CellGrid.over((100, 65), 32).shape == (3, 4)
    assert CellGrid.over((96, 96), 16).shape == (6, 6)
    with pytest.raises(ValueError, match="stride"):
        CellGrid.over((96, 96), 97)
