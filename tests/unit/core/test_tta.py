"""The 8 TTA views are the dihedral group of the square and keep the label's center region."""

import numpy as np

from pcam_core.contract import CENTER_SIZE, PATCH_SIZE
from pcam_core.tta import dihedral_view, dihedral_views


def generic(n: int = 2, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, PATCH_SIZE, PATCH_SIZE, 3), dtype=np.uint8)


def test_the_views_are_eight_distinct_transforms_with_the_identity_first() -> None:
    images = generic()
    views = dihedral_views(images)
    assert views.shape == (8, *images.shape) and views.dtype == np.uint8
    np.testing.assert_array_equal(views[0], images)
    assert len({v.tobytes() for v in views}) == 8


def test_the_views_form_a_group() -> None:
    images = generic(1)
    views = {v.tobytes() for v in dihedral_views(images)}
    for t in range(8):
        # Closed under composition: the views of any view are the same 8 images.
        assert {v.tobytes() for v in dihedral_views(dihedral_view(images, t))} == views


def test_every_view_maps_the_center_region_onto_itself() -> None:
    lo, hi = (PATCH_SIZE - CENTER_SIZE) // 2, (PATCH_SIZE + CENTER_SIZE) // 2
    center = np.zeros((1, PATCH_SIZE, PATCH_SIZE, 1), np.uint8)
    center[:, lo:hi, lo:hi] = 1
    for view in dihedral_views(center):
        np.testing.assert_array_equal(view, center)


def test_the_numbering_matches_training() -> None:
    # training.augment.dihedral_transform: flip W when t >= 4, then t % 4 quarter turns over (H, W).
    images = generic(1)
    np.testing.assert_array_equal(dihedral_view(images, 1), np.rot90(images, 1, axes=(1, 2)))
    np.testing.assert_array_equal(dihedral_view(images, 6), np.rot90(images[:, :, ::-1], 2, axes=(1, 2)))
