"""Where the tissue is: Otsu's threshold on the saturation of a thumbnail with one pixel per cell."""

from __future__ import annotations

import numpy as np
from skimage.color import rgb2hsv
from skimage.filters import threshold_otsu

MIN_SATURATION = 0.07
"""Saturation below which nothing counts as tissue, whatever Otsu says: glass, and a slide with no
tissue at all (Otsu would split its noise in two)."""


def tissue_cells(thumbnail: np.ndarray) -> np.ndarray:
    """bool (rows, columns): cells of a (rows, columns, 3) uint8 cell thumbnail that hold tissue."""
    saturation = rgb2hsv(thumbnail)[..., 1]
    if np.ptp(saturation) == 0:
        return saturation > MIN_SATURATION
    return saturation > max(float(threshold_otsu(saturation)), MIN_SATURATION)
