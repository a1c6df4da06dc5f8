"""A scored slide's files: the probability grid, a heatmap over the thumbnail, QuPath-importable
GeoJSON regions, a table of cells and a JSON summary."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import matplotlib
import numpy as np
from PIL import Image
from pydantic import BaseModel, Field
from skimage.measure import find_contours, label, regionprops

from training import RESEARCH_USE
from training.slides.grid import CellGrid
from training.slides.reader import Slide
from training.slides.scoring import Progress

HEATMAP_ALPHA = 0.55
THUMBNAIL_UPSCALE = 4
"""Heatmap pixels per cell side: the grid is small (one pixel per 32 target pixels)."""


class SlideSummary(BaseModel):
    """What a slide's heatmap says, at one operating point. Research use only."""

    slide: str
    release: str
    operating_point: str
    threshold: float
    stride: int = Field(description="Cell side in target pixels.")
    target_mpp: float = Field(description="Microns per pixel the patches were read at (PCam's: 0.972).")
    level0_mpp: float
    level: int = Field(description="The pyramid level read (then resampled to target_mpp where it differs).")
    tissue_cells: int
    tumor_cells: int = Field(description="Tissue cells whose probability reaches the threshold.")
    tumor_area_mm2: float
    largest_region_mm2: float
    regions: int
    max_probability: float | None
    flagged_fraction: float = Field(description="Share of tissue cells with a review flag.")
    run: str = Field(
        "",
        description="What the cells were scored for (slide file, grid, options): a rerun with the same skips it.",
    )
    research_use: str = RESEARCH_USE


def cell_area_mm2(grid: CellGrid, slide: Slide) -> float:
    side_mm = grid.stride * slide.resolution.target_mpp / 1000
    return side_mm * side_mm


def level0_per_cell(grid: CellGrid, slide: Slide) -> float:
    """Level-0 pixels per cell side: cell coordinates to the slide's own."""
    return grid.stride * slide.resolution.factor


def threshold_of(progress: Progress) -> float:
    return float(progress.threshold if progress.threshold is not None else np.nan)


def tumor_regions(tissue: np.ndarray, progress: Progress) -> tuple[np.ndarray, list]:
    """The tissue cells at or above the threshold, and their connected regions (8-connected)."""
    tumor = tissue & (np.nan_to_num(progress.probability, nan=0.0) >= threshold_of(progress))
    return tumor, regionprops(label(tumor, connectivity=2))


def summarize(
    slide: Slide,
    grid: CellGrid,
    tissue: np.ndarray,
    progress: Progress,
    operating_point: str,
    tumor: np.ndarray,
    regions: list,
) -> SlideSummary:
    area = cell_area_mm2(grid, slide)
    scored = progress.probability[tissue & progress.done]
    return SlideSummary(
        slide=str(slide.path),
        release=progress.release or "",
        operating_point=operating_point,
        threshold=threshold_of(progress),
        stride=grid.stride,
        target_mpp=slide.resolution.target_mpp,
        level0_mpp=slide.resolution.level0_mpp,
        level=slide.resolution.level,
        tissue_cells=int(tissue.sum()),
        tumor_cells=int(tumor.sum()),
        tumor_area_mm2=float(tumor.sum() * area),
        largest_region_mm2=float(max((r.area for r in regions), default=0) * area),
        regions=len(regions),
        max_probability=float(scored.max()) if len(scored) else None,
        flagged_fraction=float(progress.needs_review[tissue].mean()) if tissue.any() else 0.0,
        run=progress.key,
    )


def region_features(regions: list, grid: CellGrid, slide: Slide) -> list[dict]:
    """GeoJSON polygons (level-0 pixels) around each connected region of tumor cells, with its holes, as
    QuPath annotations classified Tumor."""
    to_level0 = level0_per_cell(grid, slide)
    features = []
    for region in regions:
        top, left = region.bbox[:2]
        # "high": diagonal neighbours stay one outline, as they are one region (8-connected).
        contours = find_contours(np.pad(region.image, 1).astype(float), 0.5, fully_connected="high")
        outlines = sorted(map(cell_outline, contours), key=enclosed_area, reverse=True)  # outer ring first
        # Outline points are cell corners: index i + 1 of the padded crop is cell top + i, which spans
        # [top + i, top + i + 1). Rings are closed (first point repeated), as GeoJSON wants.
        rings = [[[float((c - 0.5 + left) * to_level0), float((r - 0.5 + top) * to_level0)]
                  for r, c in [*outline, outline[0]]] for outline in outlines]  # fmt: skip
        features.append(
            {
                "type": "Feature",
                "geometry": {"type": "Polygon", "coordinates": rings},
                "properties": {
                    "objectType": "annotation",
                    "classification": {"name": "Tumor", "color": [200, 0, 0]},
                    "cells": int(region.area),
                },
            }
        )
    return features


def cell_outline(contour: np.ndarray) -> np.ndarray:
    """A closed marching-squares contour (through the midpoints of cell edges) as the cells' own boundary:
    through the cell corner between each two points, straight runs reduced to their ends."""
    corners = np.floor(np.minimum(contour[:-1], contour[1:])) + 0.5
    path = np.empty((2 * len(corners), 2))
    path[0::2], path[1::2] = contour[:-1], corners
    before, after = path - np.roll(path, 1, axis=0), np.roll(path, -1, axis=0) - path
    turns = before[:, 0] * after[:, 1] != before[:, 1] * after[:, 0]
    return path[turns]


def enclosed_area(ring: np.ndarray) -> float:
    """The area a closed (K, 2) ring encloses (shoelace formula)."""
    y, x = ring[:, 0], ring[:, 1]
    return abs(float(np.dot(x, np.roll(y, 1)) - np.dot(y, np.roll(x, 1)))) / 2


def heatmap_png(thumbnail: np.ndarray, probability: np.ndarray) -> Image.Image:
    """The thumbnail with the probabilities blended over every scored cell (magma colour map)."""
    colours = matplotlib.colormaps["magma"](np.nan_to_num(probability, nan=0.0))[..., :3] * 255
    alpha = np.where(np.isnan(probability), 0.0, HEATMAP_ALPHA)[..., None]
    blended = (1 - alpha) * thumbnail + alpha * colours
    image = Image.fromarray(np.rint(blended).clip(0, 255).astype(np.uint8), "RGB")
    return image.resize(
        (image.width * THUMBNAIL_UPSCALE, image.height * THUMBNAIL_UPSCALE), Image.Resampling.NEAREST
    )


def write_outputs(
    out: Path,
    slide: Slide,
    grid: CellGrid,
    thumbnail: np.ndarray,
    tissue: np.ndarray,
    progress: Progress,
    operating_point: str,
) -> SlideSummary:
    """Write <stem>.heatmap.npz, .heatmap.png, .regions.geojson, .cells.csv and .summary.json into out;
    `thumbnail` is the slide's one pixel per cell (`Slide.thumbnail`)."""
    out.mkdir(parents=True, exist_ok=True)
    stem = out / slide.path.stem
    to_level0 = level0_per_cell(grid, slide)
    tumor, regions = tumor_regions(tissue, progress)
    summary = summarize(slide, grid, tissue, progress, operating_point, tumor, regions)
    np.savez_compressed(
        f"{stem}.heatmap.npz",
        probability=progress.probability,
        needs_review=progress.needs_review,
        tissue=tissue,
        stride=grid.stride,
        level0_pixels_per_cell=to_level0,
        microns_per_cell=grid.stride * slide.resolution.target_mpp,
    )
    heatmap_png(thumbnail, progress.probability).save(f"{stem}.heatmap.png")
    geojson = {"type": "FeatureCollection", "features": region_features(regions, grid, slide)}
    Path(f"{stem}.regions.geojson").write_text(json.dumps(geojson) + "\n")
    with open(f"{stem}.cells.csv", "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["row", "column", "x", "y", "probability", "needs_review"])
        for r, c in np.argwhere(tissue & progress.done):
            writer.writerow([r, c, round(c * to_level0), round(r * to_level0), f"{progress.probability[r, c]:.6f}",
                             int(progress.needs_review[r, c])])  # fmt: skip
    Path(f"{stem}.summary.json").write_text(summary.model_dump_json(indent=2) + "\n")
    return summary
