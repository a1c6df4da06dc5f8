"""A scored slide against its reference annotations: cell-level AUC at the grid's resolution and
Camelyon16's lesion-level FROC, with Camelyon16's rules (lesions merged within 75 µm, isolated tumor
cells neither found nor missed) applied on the cell grid."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, Field
from scipy import ndimage
from skimage.feature import peak_local_max
from skimage.measure import label, regionprops
from sklearn.metrics import roc_auc_score

from training import RESEARCH_USE
from training.slides.annotations import SUFFIXES, read_annotations, tumor_cells

MERGE_DISTANCE_UM = 75.0
"""Camelyon16: annotations are grown by half of this, so lesions closer than it count as one."""
ITC_DIAMETER_UM = 275.0
"""Camelyon16: a grown lesion whose major axis is shorter than this is isolated tumor cells (ITC)."""
FROC_FP_RATES = (0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
"""Average false positives per slide at which Camelyon16 reads the sensitivity; the score is their mean."""
DETECTION_SPACING_UM = 100.0
"""Detections are the heatmap's local maxima at least this far apart."""
DETECTION_FLOOR = 0.05
"""Local maxima below this probability are not reported as detections."""


@dataclass(frozen=True)
class ScoredSlide:
    """What `pcam slide predict` wrote for a slide (`<stem>.heatmap.npz`)."""

    name: str
    probability: np.ndarray
    tissue: np.ndarray
    level0_per_cell: float
    microns_per_cell: float

    @classmethod
    def load(cls, path: Path) -> ScoredSlide:
        with np.load(path) as grid:
            missing = {"probability", "tissue", "level0_pixels_per_cell", "microns_per_cell"} - set(
                grid.files
            )
            if missing:
                raise ValueError(
                    f"{path}: no {', '.join(sorted(missing))}; score the slide again with pcam slide predict"
                )
            return cls(
                path.name.removesuffix(".heatmap.npz"),
                grid["probability"],
                grid["tissue"],
                float(grid["level0_pixels_per_cell"]),
                float(grid["microns_per_cell"]),
            )


@dataclass(frozen=True)
class Lesions:
    """Camelyon16's evaluation mask on the grid: labelled lesions, and which labels are ITCs."""

    labels: np.ndarray
    itc: frozenset[int]

    @classmethod
    def of(cls, tumor: np.ndarray, microns_per_cell: float) -> Lesions:
        # Distances are measured from cell centres: a cell is within reach when its centre is.
        distance = ndimage.distance_transform_edt(~tumor) * microns_per_cell
        grown = ndimage.binary_fill_holes(distance < MERGE_DISTANCE_UM / 2)
        labels = label(grown, connectivity=2)
        itc = {
            r.label for r in regionprops(labels) if r.axis_major_length * microns_per_cell < ITC_DIAMETER_UM
        }
        return cls(labels, frozenset(itc))

    @property
    def count(self) -> int:
        """Lesions to be found: every lesion but the ITCs."""
        return int(self.labels.max()) - len(self.itc)


def detections(slide: ScoredSlide) -> tuple[np.ndarray, np.ndarray]:
    """The heatmap's local maxima over tissue: (N,) probabilities and (N, 2) cells (row, column)."""
    probability = np.where(slide.tissue, np.nan_to_num(slide.probability, nan=0.0), 0.0)
    spacing = max(1, round(DETECTION_SPACING_UM / slide.microns_per_cell))
    cells = peak_local_max(
        probability, min_distance=spacing, threshold_abs=DETECTION_FLOOR, exclude_border=False
    )
    return probability[tuple(cells.T)], cells


@dataclass(frozen=True)
class LesionHits:
    """One slide's detections judged as Camelyon16 does."""

    false_positives: np.ndarray
    """Probabilities of the detections outside every lesion."""
    lesion_scores: np.ndarray
    """Per lesion to be found (ITCs left out): its highest detection probability, 0 if none hit it."""


def judge(slide: ScoredSlide, lesions: Lesions) -> LesionHits:
    """A detection inside a lesion finds it (the lesion keeps its best one); inside an ITC it counts for
    nothing; elsewhere it is a false positive."""
    probabilities, cells = detections(slide)
    hit = lesions.labels[tuple(cells.T)] if len(cells) else np.zeros(0, int)
    best = np.zeros(int(lesions.labels.max()) + 1)
    np.maximum.at(best, hit, probabilities)
    wanted = [n for n in range(1, len(best)) if n not in lesions.itc]
    return LesionHits(probabilities[hit == 0], best[wanted])


def froc(hits: list[LesionHits]) -> tuple[np.ndarray, np.ndarray]:
    """The FROC curve over slides: (average false positives per slide, sensitivity), from the strictest
    threshold to the loosest, with the empty point (0, 0) first."""
    false_positives = np.concatenate([h.false_positives for h in hits])
    scores = np.concatenate([h.lesion_scores for h in hits])
    thresholds = np.unique(np.concatenate([false_positives, scores[scores > 0]]))[::-1]
    rate = np.array([0.0] + [(false_positives >= t).sum() / len(hits) for t in thresholds])
    sensitivity = np.array([0.0] + [(scores >= t).sum() / max(len(scores), 1) for t in thresholds])
    return rate, sensitivity


def froc_score(rate: np.ndarray, sensitivity: np.ndarray) -> tuple[float, list[float]]:
    """Camelyon16's score: the mean sensitivity at FROC_FP_RATES (interpolated), and those sensitivities."""
    at = np.interp(FROC_FP_RATES, rate, sensitivity)
    return float(at.mean()), [float(s) for s in at]


class SlideEvaluation(BaseModel):
    slide: str
    annotations: str | None = Field(description="The annotation file; none: a slide without tumor.")
    scored_cells: int
    tumor_cells: int = Field(description="Scored cells with a tumor pixel by the annotations (PCam's rule).")
    cell_auc: float | None = Field(
        description="ROC AUC over the scored cells; none when one class is absent."
    )
    lesions: int = Field(description="Lesions to find (75 µm merged, ITCs left out).")
    isolated_tumor_cells: int
    lesions_found: int = Field(description="Lesions with a detection at or above DETECTION_FLOOR.")
    false_positives: int = Field(description="Detections outside every lesion.")
    microns_per_cell: float


class SlidesEvaluation(BaseModel):
    """`pcam slide evaluate`'s report. Research use only."""

    slides: list[SlideEvaluation]
    cell_auc: float | None = Field(description="ROC AUC over every slide's scored cells pooled.")
    froc_score: float | None = Field(description="Camelyon16: mean sensitivity at 1/4..8 FPs per slide.")
    froc_sensitivities: dict[str, float]
    detection_spacing_um: float = DETECTION_SPACING_UM
    research_use: str = RESEARCH_USE


def annotation_file(directory: Path, name: str) -> Path | None:
    """`<name>.geojson`, `.json` or `.xml` in directory; none for a slide without tumor."""
    return next((directory / f"{name}{s}" for s in SUFFIXES if (directory / f"{name}{s}").is_file()), None)


def auc(truth: np.ndarray, score: np.ndarray) -> float | None:
    return float(roc_auc_score(truth, score)) if 0 < truth.sum() < len(truth) else None


def evaluate_slides(results: list[Path], annotations: Path) -> SlidesEvaluation:
    """Each `<name>.heatmap.npz` of `results` against `<name>.{geojson,json,xml}` in `annotations`."""
    rows, hits, truths, scores = [], [], [], []
    for path in results:
        slide = ScoredSlide.load(path)
        source = annotation_file(annotations, slide.name)
        polygons = read_annotations(source) if source else []
        truth = tumor_cells(polygons, slide.probability.shape, slide.level0_per_cell)
        scored = slide.tissue & ~np.isnan(slide.probability)
        lesions = Lesions.of(truth, slide.microns_per_cell)
        judged = judge(slide, lesions)
        hits.append(judged)
        truths.append(truth[scored])
        scores.append(slide.probability[scored])
        labels, probabilities = truths[-1], scores[-1]
        rows.append(
            SlideEvaluation(
                slide=slide.name,
                annotations=str(source) if source else None,
                scored_cells=int(scored.sum()),
                tumor_cells=int(labels.sum()),
                cell_auc=auc(labels, probabilities),
                lesions=lesions.count,
                isolated_tumor_cells=len(lesions.itc),
                lesions_found=int((judged.lesion_scores > 0).sum()),
                false_positives=len(judged.false_positives),
                microns_per_cell=slide.microns_per_cell,
            )
        )
    lesion_count = sum(r.lesions for r in rows)
    score, sensitivities = froc_score(*froc(hits)) if lesion_count else (None, [])
    return SlidesEvaluation(
        slides=rows,
        cell_auc=auc(np.concatenate(truths), np.concatenate(scores)) if rows else None,
        froc_score=score,
        froc_sensitivities={f"{rate:g}": s for rate, s in zip(FROC_FP_RATES, sensitivities, strict=False)},
    )
