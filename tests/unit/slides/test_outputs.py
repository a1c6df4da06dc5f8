"""A scored slide's files: grid, heatmap, QuPath regions in level-0 pixels, cells and the summary."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.slides.grid import CellGrid
from training.slides.outputs import THUMBNAIL_UPSCALE, write_outputs
from training.slides.reader import Slide
from training.slides.scoring import Progress


def scored(grid: CellGrid, tissue: np.ndarray) -> Progress:
    """Every tissue cell scored 0.1, a 3x4 block of tumor cells at rows 2-4, columns 3-6 scored 0.9."""
    progress = Progress.empty(grid, "k")
    progress.probability[tissue] = 0.1
    progress.probability[2:5, 3:7] = 0.9
    progress.done[tissue] = True
    progress.needs_review[2, 3] = True
    progress.release, progress.threshold = "rel-9", 0.5
    return progress


def test_the_files_say_where_the_tumor_is_in_level0_pixels_and_how_much(
    synthetic_slide, tmp_path: Path
) -> None:
    with Slide(synthetic_slide.path) as slide:
        grid = CellGrid.over(slide.size)
        tissue = np.ones(grid.shape, bool)
        thumbnail = slide.thumbnail(grid.stride)
        summary = write_outputs(tmp_path, slide, grid, thumbnail, tissue, scored(grid, tissue), "balanced")
        factor = slide.resolution.factor
    stem = tmp_path / "synthetic"
    cell_mm2 = (32 * 0.972 / 1000) ** 2
    assert summary.tumor_cells == 12 and summary.regions == 1
    assert summary.tumor_area_mm2 == pytest.approx(12 * cell_mm2) == summary.largest_region_mm2
    assert summary.max_probability == pytest.approx(0.9) and summary.release == "rel-9"
    assert summary.flagged_fraction == pytest.approx(1 / tissue.size)
    assert json.loads(Path(f"{stem}.summary.json").read_text())["tumor_cells"] == 12
    (feature,) = json.loads(Path(f"{stem}.regions.geojson").read_text())["features"]
    assert feature["properties"]["classification"]["name"] == "Tumor"
    ring = np.array(feature["geometry"]["coordinates"][0])
    # Columns 3..6 and rows 2..4 of 32-px cells, in level-0 pixels (two per PCam pixel here).
    assert ring[:, 0].min() == pytest.approx(3 * 32 * factor) and ring[:, 0].max() == pytest.approx(
        7 * 32 * factor
    )
    assert ring[:, 1].min() == pytest.approx(2 * 32 * factor) and ring[:, 1].max() == pytest.approx(
        5 * 32 * factor
    )
    with np.load(f"{stem}.heatmap.npz") as saved:
        np.testing.assert_array_equal(saved["tissue"], tissue)
        assert saved["probability"][3, 4] == pytest.approx(0.9) and int(saved["stride"]) == 32
    with open(f"{stem}.cells.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == tissue.size
    hot = next(r for r in rows if (r["row"], r["column"]) == ("2", "3"))
    assert (int(hot["x"]), int(hot["y"])) == (round(3 * 32 * factor), round(2 * 32 * factor))
    assert hot["needs_review"] == "1" and float(hot["probability"]) == pytest.approx(0.9)
    png = Image.open(f"{stem}.heatmap.png")
    assert png.size == (grid.columns * THUMBNAIL_UPSCALE, grid.rows * THUMBNAIL_UPSCALE)
