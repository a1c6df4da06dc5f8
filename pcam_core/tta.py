"""Test-time augmentation views: the 8 dihedral transforms of NHWC patches, in numpy only.

Transform t flips left-right when t >= 4, then rotates by (t % 4) quarter turns: the same numbering
(dihedral_steps) as training's augmentation, so serving and offline TTA send the same views. Every
transform maps the center 32x32 region (PCam's label region) onto itself, so the label is unchanged.
"""

import numpy as np

from pcam_core.contract import TTA_VIEWS


def dihedral_steps(t: int) -> tuple[bool, int]:
    """Transform t (0..7, 0 the identity) as (flip along W first, then this many quarter turns over H, W).

    The one definition of the numbering: serving's views and training's augmentation (on torch
    tensors) both follow it.
    """
    if not 0 <= t < TTA_VIEWS:
        raise ValueError(f"dihedral transform {t} is not in 0..{TTA_VIEWS - 1}")
    return t >= 4, t % 4


def dihedral_view(images: np.ndarray, t: int) -> np.ndarray:
    """Transform t (0..7; 0 is the identity) of (N, H, W, C) square images."""
    flip, turns = dihedral_steps(t)
    return np.rot90(np.flip(images, axis=2) if flip else images, turns, axes=(1, 2))


def dihedral_views(images: np.ndarray) -> np.ndarray:
    """(8, N, H, W, C): every dihedral transform of (N, H, W, C) images, the identity first."""
    return np.stack([dihedral_view(images, t) for t in range(TTA_VIEWS)])
