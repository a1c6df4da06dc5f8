"""A whole-slide image read at PCam's resolution, through tiffslide (pyramidal TIFF, SVS, NDPI, ...)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tiffslide
from PIL import Image

PCAM_MPP = 0.972
"""Microns per pixel of PCam's patches: Camelyon16's 0.243 um/px scans read at level 2 (10x)."""
LEVEL_TOLERANCE = 0.05
"""A pyramid level at most this much coarser than the target still counts as the target's resolution."""
BACKGROUND = 255
"""What a read beyond the slide's edge holds: white, as glass without tissue looks."""


class SlideError(ValueError):
    """A slide that cannot be read at PCam's resolution (no microns per pixel, not a slide)."""


@dataclass(frozen=True)
class Resolution:
    """How target pixels map onto the slide: level-0 pixels per target pixel, and the level read."""

    level0_mpp: float
    target_mpp: float
    level: int
    level_downsample: float

    @property
    def factor(self) -> float:
        """Level-0 pixels per target pixel."""
        return self.target_mpp / self.level0_mpp

    @property
    def level_factor(self) -> float:
        """Pixels of the level read per target pixel (1: read as is; above 1: read finer and shrink)."""
        return self.factor / self.level_downsample


def choose_level(downsamples: tuple[float, ...], factor: float) -> int:
    """The coarsest level still at least as fine as the target (within LEVEL_TOLERANCE)."""
    usable = [i for i, d in enumerate(downsamples) if d <= factor * (1 + LEVEL_TOLERANCE)]
    return max(usable, key=lambda i: downsamples[i]) if usable else 0


class Slide:
    """One slide opened for reading at `target_mpp`; `mpp` overrides (or supplies) the file's own."""

    def __init__(self, path: Path, mpp: float | None = None, target_mpp: float = PCAM_MPP) -> None:
        self.path = Path(path)
        try:
            self.slide = tiffslide.TiffSlide(self.path)
        except Exception as exc:  # tiffslide raises several types for files it cannot read
            raise SlideError(f"{self.path}: not a slide tiffslide can read ({exc})") from exc
        level0_mpp = mpp or self.slide.properties.get("tiffslide.mpp-x")
        if not level0_mpp:
            raise SlideError(
                f"{self.path}: the file states no microns per pixel, so PCam's resolution "
                f"({target_mpp} um/px) cannot be found in it; give the scan's with --mpp"
            )
        factor = target_mpp / float(level0_mpp)
        level = choose_level(tuple(self.slide.level_downsamples), factor)
        self.resolution = Resolution(
            float(level0_mpp), target_mpp, level, self.slide.level_downsamples[level]
        )
        width, height = self.slide.dimensions
        self.size = (math.ceil(width / factor), math.ceil(height / factor))
        """(width, height) in target pixels."""

    def close(self) -> None:
        self.slide.close()

    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, x: int, y: int, width: int, height: int) -> np.ndarray:
        """uint8 (height, width, 3) RGB at the target resolution from target pixel (x, y); white
        beyond the slide's edges."""
        res = self.resolution
        out = np.full((height, width, 3), BACKGROUND, np.uint8)
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, self.size[0]), min(y + height, self.size[1])
        if x1 <= x0 or y1 <= y0:
            return out
        level_size = (
            max(1, round((x1 - x0) * res.level_factor)),
            max(1, round((y1 - y0) * res.level_factor)),
        )
        region = self.slide.read_region(
            (round(x0 * res.factor), round(y0 * res.factor)), res.level, level_size, as_array=True
        )[..., :3]
        if level_size != (x1 - x0, y1 - y0):  # area averaging: no aliasing when shrinking
            region = np.asarray(Image.fromarray(region).resize((x1 - x0, y1 - y0), Image.Resampling.BOX))
        out[y0 - y : y1 - y, x0 - x : x1 - x] = region
        return out

    def thumbnail(self, cell: int) -> np.ndarray:
        """uint8 (rows, columns, 3): one pixel per cell of `cell` target pixels (the mean colour over it,
        white past the edges), from the slide's coarsest level."""
        level = self.slide.level_count - 1
        image = self.slide.read_region((0, 0), level, self.slide.level_dimensions[level], as_array=True)[
            ..., :3
        ]
        columns, rows = (math.ceil(side / cell) for side in self.size)
        per_cell = cell * self.resolution.factor / self.slide.level_downsamples[level]  # level px per cell
        padded = np.full((math.ceil(rows * per_cell), math.ceil(columns * per_cell), 3), BACKGROUND, np.uint8)
        padded[: image.shape[0], : image.shape[1]] = image[: padded.shape[0], : padded.shape[1]]
        return np.asarray(Image.fromarray(padded).resize((columns, rows), Image.Resampling.BOX))
