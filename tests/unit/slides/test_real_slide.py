"""A slide of real H&E tissue on glass: the tissue is found, glass never read or sent, and each
cell's patch is exactly the slide's 96x96 pixels centred on it (PCam's center rule)."""

import numpy as np
import pytest

from tests.real_slide import RealSlide, write_real_slide
from tests.unit.slides.counting import CountingScorer
from training.slides.grid import CellGrid
from training.slides.reader import Slide
from training.slides.scoring import Progress, score_cells
from training.slides.tissue import tissue_cells


@pytest.fixture(scope="module")
def real(tmp_path_factory: pytest.TempPathFactory) -> RealSlide:
    return write_real_slide(tmp_path_factory.mktemp("real") / "real.tiff")


def test_the_tissue_is_found_and_the_glass_is_not(real: RealSlide) -> None:
    with Slide(real.path) as slide:
        grid = CellGrid.over(slide.size)
        tissue = tissue_cells(slide.thumbnail(grid.stride))
    cells = real.tissue.reshape(grid.rows, 32, grid.columns, 32)
    inside, glass = cells.all(axis=(1, 3)), ~cells.any(axis=(1, 3))
    assert not (tissue & glass).any(), "glass taken for tissue"
    assert (tissue & inside).sum() >= 0.9 * inside.sum(), "real tissue missed"  # fat and lumen may be white


def test_each_cell_is_scored_on_the_slides_own_pixels_around_it(real: RealSlide) -> None:
    with Slide(real.path) as slide:
        grid = CellGrid.over(slide.size)
        tissue = tissue_cells(slide.thumbnail(grid.stride))
        scorer = CountingScorer()
        progress = score_cells(slide, grid, tissue, scorer, Progress.empty(grid, "k"), batch=50, show=False)
    assert scorer.patches == tissue.sum() == progress.done.sum()
    sent = np.concatenate(scorer.calls)
    padded = np.pad(real.canvas, ((32, 96), (32, 96), (0, 0)), constant_values=255)  # white beyond the edges
    cells = np.argwhere(tissue)  # row-major within blocks: the order of the calls, block by block
    order = np.lexsort((cells[:, 1] % 16, cells[:, 0] % 16, cells[:, 1] // 16, cells[:, 0] // 16))
    for (row, column), patch in zip(cells[order], sent, strict=True):
        x, y = grid.patch_origin(row, column)
        np.testing.assert_array_equal(patch, padded[y + 32 : y + 128, x + 32 : x + 128])
