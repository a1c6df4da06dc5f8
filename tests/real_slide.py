"""A slide composed from the real H&E tiles in tests/data/he/patches: the torchstain source and target
images put back together from their 4x6 tiles, laid on glass (white), written as a pyramidal TIFF at
PCam's resolution. Real tissue, no tumor labels: for reading, tissue detection and scoring, never for
accuracy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.slides.reader import PCAM_MPP
from training.slides.synthetic import write_pyramid

PATCHES = Path(__file__).parent / "data" / "he" / "patches"
SIZE = (768, 1280)
"""(height, width) of the slide in PCam pixels."""
PLACES = {"src": (61, 83), "tgt": (349, 633)}
"""Top-left corner (row, column) of each image's mosaic: 4 x 6 tiles of 96 px each, 384 x 576. Off the
32-px grid, so no cell's patch is one of the tiles themselves, which other tests send to the gateway
(a cached answer would not reach Triton)."""


def mosaic(prefix: str) -> np.ndarray:
    rows = [np.hstack([np.asarray(Image.open(PATCHES / f"{prefix}_r{r}c{c}.png").convert("RGB"))
                       for c in range(6)]) for r in range(4)]  # fmt: skip
    return np.vstack(rows)


@dataclass(frozen=True)
class RealSlide:
    path: Path
    canvas: np.ndarray
    """uint8 (H, W, 3): level 0, at PCam's resolution."""
    tissue: np.ndarray
    """bool (H, W): the mosaics' pixels; the rest is glass."""


def write_real_slide(path: Path) -> RealSlide:
    canvas = np.full((*SIZE, 3), 255, np.uint8)
    tissue = np.zeros(SIZE, bool)
    for prefix, (top, left) in PLACES.items():
        image = mosaic(prefix)
        canvas[top : top + image.shape[0], left : left + image.shape[1]] = image
        tissue[top : top + image.shape[0], left : left + image.shape[1]] = True
    write_pyramid(path, canvas, PCAM_MPP)
    return RealSlide(path, canvas, tissue)
