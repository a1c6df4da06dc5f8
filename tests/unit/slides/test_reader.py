"""Reading a slide at PCam's resolution: the level, resampling, the edges and the microns per pixel."""

from pathlib import Path

import numpy as np
import pytest
import tifffile

from pcam_core.contract import PATCH_SIZE
from training.slides.reader import BACKGROUND, PCAM_MPP, Slide, SlideError, choose_level
from training.slides.synthetic import write_synthetic_slide


def canvas(slide_path: Path) -> np.ndarray:
    """The level stored at PCam's resolution (level 1 of a slide written with upscale 2)."""
    with tifffile.TiffFile(slide_path) as tif:
        return tif.series[0].levels[1].asarray()


def test_the_level_at_pcams_resolution_is_read_as_it_is(synthetic_slide) -> None:
    with Slide(synthetic_slide.path) as slide:
        assert slide.resolution.level == 1 and slide.resolution.level_factor == pytest.approx(1.0)
        assert slide.resolution.level0_mpp == pytest.approx(PCAM_MPP / 2)
        stored = canvas(synthetic_slide.path)
        assert slide.size == (stored.shape[1], stored.shape[0])
        np.testing.assert_array_equal(slide.read(100, 40, 96, 96), stored[40:136, 100:196])


def test_a_slide_without_a_level_at_that_resolution_is_read_finer_and_shrunk(tmp_path: Path) -> None:
    fine = write_synthetic_slide(tmp_path / "fine.tiff", size=(384, 384), seed=5, upscale=3)
    with Slide(fine.path) as slide:
        # Levels at 1/3, 2/3 and 4/3 of PCam's pixel size: the 2/3 one is read, 1.5 pixels per pixel.
        assert slide.resolution.level == 1 and slide.resolution.level_factor == pytest.approx(1.5)
        assert slide.size == (4 * PATCH_SIZE, 4 * PATCH_SIZE)
        patch = slide.read(96, 96, 96, 96)
    with tifffile.TiffFile(fine.path) as tif:
        level0 = tif.series[0].levels[0].asarray()
    # The level-0 pixels over the same area, averaged 3x3: what the reader's area resampling gives.
    expected = level0[288:576, 288:576].reshape(96, 3, 96, 3, 3).mean(axis=(1, 3))
    assert np.abs(patch.astype(float) - expected).mean() < 3.0


def test_reads_past_the_edges_are_white_glass(synthetic_slide) -> None:
    with Slide(synthetic_slide.path) as slide:
        width, height = slide.size
        corner = slide.read(-32, -32, 96, 96)
        assert (corner[:32] == BACKGROUND).all() and (corner[:, :32] == BACKGROUND).all()
        np.testing.assert_array_equal(corner[32:, 32:], slide.read(0, 0, 64, 64))
        assert (slide.read(width + 10, height + 10, 20, 20) == BACKGROUND).all()


def test_a_slide_without_microns_per_pixel_is_refused_unless_given(tmp_path: Path) -> None:
    path = tmp_path / "bare.tiff"
    tifffile.imwrite(path, np.full((512, 512, 3), 200, np.uint8), tile=(256, 256), photometric="rgb")
    with pytest.raises(SlideError, match="--mpp"):
        Slide(path)
    with Slide(path, mpp=0.243) as slide:  # a 40x scan: PCam's 10x is every fourth pixel
        assert slide.resolution.factor == pytest.approx(4.0) and slide.size == (128, 128)


def test_a_file_that_is_no_slide_is_refused_by_name(tmp_path: Path) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("not an image")
    with pytest.raises(SlideError, match="notes.svs"):
        Slide(path)


def test_the_coarsest_level_at_least_as_fine_as_the_target_is_chosen() -> None:
    assert choose_level((1.0, 4.0, 16.0), factor=4.0) == 1
    assert choose_level((1.0, 4.0, 16.0), factor=4.1) == 1
    assert choose_level((1.0, 4.0, 16.0), factor=3.9) == 1  # 4 is within the 5 % tolerance of 3.9
    assert choose_level((1.0, 4.0, 16.0), factor=3.0) == 0
    assert choose_level((1.0, 2.0), factor=0.5) == 0  # a target finer than the scan: level 0, upsampled
