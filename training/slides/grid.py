"""The cell grid: cells of `stride` target pixels, each scored by the 96x96 patch centred on it."""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from pcam_core.contract import CENTER_SIZE, PATCH_SIZE

PCAM_STRIDE = CENTER_SIZE
"""At this stride a cell is exactly its patch's center 32x32: the heatmap follows PCam's label rule."""


@dataclass(frozen=True)
class CellGrid:
    """rows x columns cells of `stride` target pixels over a slide of `size` (width, height)."""

    stride: int
    rows: int
    columns: int

    @classmethod
    def over(cls, size: tuple[int, int], stride: int = PCAM_STRIDE) -> CellGrid:
        if not 0 < stride <= PATCH_SIZE:
            raise ValueError(f"stride {stride} px: choose 1..{PATCH_SIZE}")
        width, height = size
        return cls(stride, math.ceil(height / stride), math.ceil(width / stride))

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows, self.columns

    def patch_origin(self, row: int, column: int) -> tuple[int, int]:
        """Target pixel (x, y) of the top-left corner of the patch centred on a cell."""
        offset = self.stride // 2 - PATCH_SIZE // 2
        return column * self.stride + offset, row * self.stride + offset

    def blocks(self, cells: int) -> Iterator[tuple[slice, slice]]:
        """(rows, columns) slices of square blocks of at most `cells` x `cells` cells, row-major."""
        for top in range(0, self.rows, cells):
            for left in range(0, self.columns, cells):
                yield slice(top, min(top + cells, self.rows)), slice(left, min(left + cells, self.columns))


def cut_patches(region: np.ndarray, offsets: np.ndarray, stride: int) -> np.ndarray:
    """uint8 (K, 96, 96, 3) patches from a block's region (read from the patch origin of the block's
    first cell) for the cells K (row, column) `offsets` from that first cell."""
    return np.stack(
        [
            region[r * stride : r * stride + PATCH_SIZE, c * stride : c * stride + PATCH_SIZE]
            for r, c in offsets
        ]
    )


def region_size(rows: slice, columns: slice, stride: int) -> tuple[int, int]:
    """(width, height) in target pixels of the region holding every patch of a block of cells."""
    return (
        (columns.stop - columns.start - 1) * stride + PATCH_SIZE,
        (rows.stop - rows.start - 1) * stride + PATCH_SIZE,
    )
