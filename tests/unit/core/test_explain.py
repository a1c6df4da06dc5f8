"""Occlusion sensitivity on arrays: copies, grid and the PNG overlay."""

import base64
import io

import numpy as np
import pytest
from PIL import Image

from pcam_core import explain


def test_grid_positions_cover_the_patch() -> None:
    np.testing.assert_array_equal(explain.positions(96, 16, 8), np.arange(0, 81, 8))
    assert explain.grid_shape(96, 16, 8) == (11, 11) and explain.grid_shape(96, 32, 32) == (3, 3)
    with pytest.raises(ValueError):
        explain.positions(96, 97, 8)


def test_each_copy_fills_one_window_with_the_patch_mean_colour() -> None:
    images = np.random.default_rng(0).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8)
    copies = explain.occluded_copies(images, 16, 8)
    assert copies.shape == (2, 121, 96, 96, 3)
    fill = explain.fill_colour(images)
    np.testing.assert_array_equal(fill, np.rint(images.mean(axis=(1, 2))).astype(np.uint8))
    k = 1 * 11 + 2  # row 1, column 2: pixels [8, 24) x [16, 32)
    changed = np.any(copies[1, k] != images[1], axis=-1)
    assert changed[8:24, 16:32].all() and changed.sum() == 256
    assert (copies[1, k, 8:24, 16:32] == fill[1]).all()


def test_sensitivity_is_baseline_minus_occluded() -> None:
    grid = explain.sensitivity(np.array([0.9]), np.array([[0.5, 0.9, 1.0, 0.8]]), (2, 2))
    np.testing.assert_allclose(grid, [[[0.4, 0.0], [-0.1, 0.1]]])


def test_upsampling_averages_the_covering_windows() -> None:
    grid = np.array([[1.0, 0.0], [0.0, 0.0]])
    heat = explain.upsample(grid, 4, 2, 2)
    np.testing.assert_array_equal(heat, [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]])
    assert explain.upsample(np.ones((3, 3)), 8, 4, 2)[7, 7] == 1.0


def test_overlay_is_a_96_pixel_png_and_a_flat_map_leaves_the_patch() -> None:
    image = np.full((96, 96, 3), 120, np.uint8)
    flat = Image.open(io.BytesIO(explain.overlay_png(image, np.zeros((96, 96)), explain.MIN_SCALE)))
    assert flat.size == (96, 96) and flat.mode == "RGB"
    np.testing.assert_array_equal(np.asarray(flat), image)
    grid = np.zeros((11, 11))
    grid[5, 5] = 0.5
    result = explain.occlusion_explanation(image, 0.9, grid, 16, 8)
    hot = np.asarray(Image.open(io.BytesIO(base64.b64decode(result.overlay_png))))
    assert hot[48, 48, 0] > 120 > hot[48, 48, 2] and (hot[0, 0] == 120).all()
    assert len(result.grid) == 11 and result.baseline == 0.9 and result.method == "occlusion"


def test_ensemble_map_is_the_weighted_mean_of_the_members_maps_over_their_temperatures() -> None:
    first, second = np.zeros((2, 96, 96)), np.zeros((2, 96, 96))
    first[:, 40, 40], second[:, 40, 40] = 3.0, 1.0
    maps = np.stack([first, second], axis=1)  # (N, M, H, W)
    heat = explain.ensemble_map(maps, temperatures=[1.5, 0.5], weights=[1.0, 3.0])
    assert heat.shape == (2, 96, 96)
    np.testing.assert_allclose(heat[:, 40, 40], 0.25 * 3.0 / 1.5 + 0.75 * 1.0 / 0.5)
    assert np.count_nonzero(heat) == 2


def test_a_cam_explanation_carries_the_96_pixel_map_its_members_and_an_overlay() -> None:
    image = np.full((96, 96, 3), 120, np.uint8)
    heat = np.zeros((96, 96))
    heat[32:64, 32:64] = 1.23456789
    result = explain.activation_explanation(image, 0.7, heat, {"cnn": "cam", "vit": "attention_rollout"})
    assert (
        result.method == "cam"
        and result.window is None
        and result.members
        == {
            "cnn": "cam",
            "vit": "attention_rollout",
        }
    )
    grid = np.asarray(result.grid)
    assert grid.shape == (96, 96) and grid[40, 40] == 1.2346 and grid[0, 0] == 0
    hot = np.asarray(Image.open(io.BytesIO(base64.b64decode(result.overlay_png))))
    assert hot[48, 48, 0] > 120 > hot[48, 48, 2] and (hot[0, 0] == 120).all()
