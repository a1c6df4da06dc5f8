"""Synthetic whole-slide images for tests and demos: a tissue section drawn by the synthetic generator
in one piece (`training.data.synthetic.render_section`), written as a pyramidal tiled TIFF (tifffile)
with its microns per pixel, and with every tumor nucleus known."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

from pcam_core.contract import CENTER_SIZE
from training.data.synthetic import SlideStains, render_section
from training.slides.reader import PCAM_MPP

TILE = 256
"""TIFF tile side."""


@dataclass(frozen=True)
class SyntheticSlide:
    path: Path
    tumor_mask: np.ndarray
    """bool (H, W) at PCam's resolution: pixels inside a tumor nucleus."""
    tumor_disks: np.ndarray
    """(K, 3) the tumor regions as (x, y, radius) in level-0 pixels."""
    level0_mpp: float

    def cell_labels(self, stride: int = CENTER_SIZE) -> np.ndarray:
        """bool (rows, columns): PCam's rule per cell of `stride` pixels: any tumor pixel in it."""
        height, width = self.tumor_mask.shape
        rows, columns = -(-height // stride), -(-width // stride)
        padded = np.pad(self.tumor_mask, ((0, rows * stride - height), (0, columns * stride - width)))
        return padded.reshape(rows, stride, columns, stride).any(axis=(1, 3))

    def tumor_outlines(self, sides: int = 64) -> list[np.ndarray]:
        """The tumor regions as `sides`-gons around their disks, (sides, 2) x, y in level-0 pixels."""
        angles = np.linspace(0, 2 * np.pi, sides, endpoint=False)
        unit = np.column_stack([np.cos(angles), np.sin(angles)])
        return [np.array([x, y]) + radius / np.cos(np.pi / sides) * unit for x, y, radius in self.tumor_disks]

    def annotations(self) -> dict:
        """The tumor outlines as a GeoJSON FeatureCollection classified Tumor (what `pcam slide evaluate`
        reads)."""
        features = [
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": [[*ring.tolist(), ring[0].tolist()]]},
                "properties": {"objectType": "annotation", "classification": {"name": "Tumor"}},
            }
            for ring in self.tumor_outlines()
        ]
        return {"type": "FeatureCollection", "features": features}


def section_layout(
    shape: tuple[int, int], rng: np.random.Generator, tumors: int
) -> tuple[np.ndarray, np.ndarray]:
    """An elliptic tissue section over most of the slide and `tumors` round tumor regions inside it:
    bool (H, W) masks, and the regions' (row, column, radius) in pixels."""
    height, width = shape
    yy, xx = np.mgrid[0:height, 0:width]
    section = ((yy - height / 2) / (height * 0.42)) ** 2 + ((xx - width / 2) / (width * 0.42)) ** 2 <= 1
    disks = np.column_stack(
        [
            rng.uniform(0.3, 0.7, tumors) * height,
            rng.uniform(0.3, 0.7, tumors) * width,
            rng.uniform(0.06, 0.12, tumors) * min(shape),
        ]
    )
    tumor = np.zeros(shape, bool)
    for row, column, radius in disks:
        tumor |= (yy - row) ** 2 + (xx - column) ** 2 <= radius**2
    return section, tumor & section, disks


def write_synthetic_slide(
    path: Path, size: tuple[int, int] = (1536, 1920), seed: int = 0, tumors: int = 2, upscale: int = 2
) -> SyntheticSlide:
    """Write a (height, width) section at PCam's resolution as a pyramidal TIFF: level 0 at PCam's
    pixel size / upscale, then halvings (PCam's own among them when upscale is a power of two)."""
    rng = np.random.default_rng(seed)
    section, tumor, disks = section_layout(size, rng, tumors)
    image, mask = render_section(rng, section, tumor, SlideStains.sample(rng, 1))
    height, width = size
    level0 = Image.fromarray(image).resize((width * upscale, height * upscale), Image.Resampling.BICUBIC)
    write_pyramid(path, np.asarray(level0), PCAM_MPP / upscale)
    level0_disks = disks[:, [1, 0, 2]] * upscale  # (x, y, radius) in level-0 pixels
    return SyntheticSlide(path, mask, level0_disks, PCAM_MPP / upscale)


def write_pyramid(path: Path, level0: np.ndarray, level0_mpp: float) -> None:
    """uint8 (H, W, 3) RGB as a pyramidal tiled TIFF (zlib) stating its microns per pixel: level 0, then
    halvings down to about two tiles."""
    levels = [level0]
    while min(levels[-1].shape[:2]) > 2 * TILE:
        levels.append(np.asarray(Image.fromarray(levels[-1]).reduce(2)))
    path.parent.mkdir(parents=True, exist_ok=True)
    with tifffile.TiffWriter(path) as tif:
        for i, level in enumerate(levels):
            per_cm = 1e4 / (level0_mpp * 2**i)
            tif.write(
                level,
                subifds=len(levels) - 1 if i == 0 else None,
                subfiletype=0 if i == 0 else 1,
                tile=(TILE, TILE),
                photometric="rgb",
                compression="zlib",
                resolution=(per_cm, per_cm),
                resolutionunit="CENTIMETER",
            )
