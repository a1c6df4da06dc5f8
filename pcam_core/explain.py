"""Explanations as plain functions on arrays: occlusion sensitivity, and the members' activation maps.

Occlusion (Zeiler & Fergus 2014): Triton runs the copies. A window x window square slides over the patch with the given stride; each position gives one copy of
the patch with that square filled with the patch's own mean colour (a fill from the patch itself adds
no colour the model never saw, unlike black or white, so the drop measures the lost content rather
than a reaction to an artificial square). The grid is baseline - probability of each copy: positive
where covering the pixels lowers the tumor probability, i.e. where the evidence for tumor is.

Activation maps (cam): every member's graph returns its 96x96 map with its logit (training/maps.py);
the ensemble's map is their mean in calibrated-logit units (each divided by the member's
temperature) with the members' weights, the linear part of the serving rule.
"""

import base64
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from pcam_core.release import ActivationMapKind
from pcam_core.schemas import Explanation

OVERLAY_ALPHA = 0.6
"""Opacity of the colour over the patch where |value| is at the map's scale."""
MIN_SCALE = 0.05
"""Sensitivities are scaled by max(|grid|.max(), MIN_SCALE): a flat map of tiny noise stays faint."""
CAM_MIN_SCALE = 0.1
"""The same floor for activation maps, in calibrated-logit units."""
CAM_DECIMALS = 4
"""Activation map values are rounded to this many decimals in the answer (9,216 numbers per patch)."""


def positions(size: int, window: int, stride: int) -> np.ndarray:
    """Top-left offsets of the windows along one axis: 0, stride, ... while the window fits."""
    if not 0 < window <= size or stride < 1:
        raise ValueError(f"occlusion window {window} / stride {stride} do not fit a {size}-pixel patch")
    return np.arange(0, size - window + 1, stride)


def grid_shape(size: int, window: int, stride: int) -> tuple[int, int]:
    """(rows, columns) of the sensitivity grid of a square patch."""
    n = len(positions(size, window, stride))
    return n, n


def fill_colour(images: np.ndarray) -> np.ndarray:
    """uint8 (N, C): each patch's mean colour, the value the occluding square is filled with."""
    return np.rint(images.reshape(len(images), -1, images.shape[-1]).mean(axis=1)).astype(np.uint8)


def occluded_copies(images: np.ndarray, window: int, stride: int) -> np.ndarray:
    """(N, R*C, H, W, C) copies of (N, H, W, C) square patches, one per window, row-major over the grid."""
    size = images.shape[1]
    offsets = positions(size, window, stride)
    copies = np.repeat(images[:, None], len(offsets) ** 2, axis=1)
    fill = fill_colour(images)[:, None, None, :]
    for k, (row, col) in enumerate((r, c) for r in offsets for c in offsets):
        copies[:, k, row : row + window, col : col + window] = fill
    return copies


def sensitivity(baseline: np.ndarray, occluded: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """(N, R, C) baseline - probability of each occluded copy, from (N,) and (N, R*C) probabilities."""
    return (baseline[:, None] - occluded).reshape(len(baseline), *shape)


def upsample(grid: np.ndarray, size: int, window: int, stride: int) -> np.ndarray:
    """(size, size) map: each pixel's mean over the windows that cover it (0 where none does)."""
    offsets = positions(size, window, stride)
    total = np.zeros((size, size))
    count = np.zeros((size, size))
    for i, row in enumerate(offsets):
        for j, col in enumerate(offsets):
            total[row : row + window, col : col + window] += grid[i, j]
            count[row : row + window, col : col + window] += 1
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def overlay_png(image: np.ndarray, heat: np.ndarray, min_scale: float) -> bytes:
    """PNG of the (H, W, 3) uint8 patch with the (H, W) map blended over it: red for evidence, blue
    against, at full opacity where |value| reaches max(|heat|.max(), min_scale)."""
    scaled = heat / max(float(np.abs(heat).max()), min_scale)
    alpha = (OVERLAY_ALPHA * np.abs(scaled))[..., None]
    colour = np.where(scaled[..., None] >= 0, [255.0, 0.0, 0.0], [0.0, 0.0, 255.0])
    blended = (1 - alpha) * image.astype(np.float64) + alpha * colour
    buffer = io.BytesIO()
    Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def occlusion_explanation(
    image: np.ndarray, baseline: float, grid: np.ndarray, window: int, stride: int
) -> Explanation:
    """The occlusion Explanation of one patch: its baseline probability, grid and base64 PNG overlay."""
    png = overlay_png(image, upsample(grid, image.shape[0], window, stride), MIN_SCALE)
    return Explanation(
        method="occlusion",
        window=window,
        stride=stride,
        baseline=baseline,
        grid=grid.tolist(),
        overlay_png=base64.b64encode(png).decode("ascii"),
    )


def ensemble_map(maps: np.ndarray, temperatures: Sequence[float], weights: Sequence[float]) -> np.ndarray:
    """(N, H, W) ensemble map from (N, M, H, W) member maps: each over its temperature, weighted mean."""
    scale = np.asarray(weights, np.float64) / np.sum(weights) / np.asarray(temperatures, np.float64)
    return np.tensordot(maps.astype(np.float64), scale, axes=([1], [0]))


def activation_explanation(
    image: np.ndarray, baseline: float, heat: np.ndarray, members: dict[str, ActivationMapKind]
) -> Explanation:
    """The cam Explanation of one patch: its baseline probability, 96x96 map and base64 PNG overlay."""
    png = overlay_png(image, heat, CAM_MIN_SCALE)
    return Explanation(
        method="cam",
        baseline=baseline,
        grid=np.round(heat, CAM_DECIMALS).tolist(),
        members=members,
        overlay_png=base64.b64encode(png).decode("ascii"),
    )
