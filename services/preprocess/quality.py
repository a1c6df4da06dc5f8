"""What the preprocess service measures on each submitted patch for the input review flags.

Four measures of the raw pixels (before normalization), each compared with its release-fitted rule
(`pcam_core.flags`): the tissue fraction; the Mahalanobis distance of the patch's own Macenko estimate
from the training patches' (`StainDistribution`); off-stain colour, how far the most foreign 5 % of the
tissue pixels lie from any non-negative mix of the release's two stains (in optical density, relative
to the pixel's); and sharpness, the mean absolute Laplacian of the grey image.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
from numba import njit, prange

from pcam_core.flags import BLURRED, LOW_TISSUE, OFF_STAIN_COLOUR, STAIN_OUTLIER
from pcam_core.release import ReviewRules, StainDistribution, StainReference
from pcam_core.review import fires, flag_lists
from services.preprocess.stain import MacenkoNormalizer, NormalizationResult, SkipReason

OFF_STAIN_PERCENTILE = 95.0
"""The off_stain_colour score is this percentile of the tissue pixels' off-stain distances: high when a
few percent of the tissue has a foreign colour, not when a handful of pixels do."""
MIN_OD_LENGTH = 0.3
"""Optical densities shorter than this (pale pixels) are compared as if this long, so sensor noise on
near-white pixels is not taken for a foreign colour."""
# off_stain_colour looks at a quarter of the pixels: those whose row and column each lie an even
# number of pixels from the nearer edge. A pen stroke or a dye covers areas, not single pixels, and
# the pattern maps onto itself under every rotation and flip, so a turned upload measures the same.
MIN_TISSUE_FOR_COLOUR = 16
"""Fewer tissue pixels (of those looked at) than this give an off_stain_colour of 0: no colour to judge."""
DISTANCE_BINS = 4096
"""Histogram bins of the squared relative distance over [0, 1] for the percentile (a resolution of
0.001 at a distance of 0.1, finer above)."""
RIDGE = 1e-6
"""Added to the stain features' covariance before inverting it: a direction with no training variance
must not give infinite distances."""


@dataclass(frozen=True)
class InputMeasures:
    """Per patch (N,): what the input flags compare with their rules."""

    tissue_fraction: np.ndarray
    stain_distance: np.ndarray
    """NaN without a stain estimate for lack of tissue; +inf where the estimate failed otherwise."""
    off_stain_colour: np.ndarray
    sharpness: np.ndarray


def stain_features(stains: np.ndarray, max_concentrations: np.ndarray) -> np.ndarray:
    """(N, 8): the stain vectors (H then E, over R G B) and the log of the two max concentrations."""
    with np.errstate(divide="ignore", invalid="ignore"):
        logs = np.log(max_concentrations)
    return np.concatenate([stains.transpose(0, 2, 1).reshape(len(stains), 6), logs], axis=1)


def fit_stain_distribution(stains: np.ndarray, max_concentrations: np.ndarray) -> StainDistribution:
    """The mean and precision of the stain features of (training) patches with a finite estimate."""
    features = stain_features(stains, max_concentrations)
    features = features[np.isfinite(features).all(axis=1)]
    if len(features) < 2 * features.shape[1]:
        raise ValueError(f"a stain distribution needs at least 16 estimated patches, got {len(features)}")
    covariance = np.cov(features, rowvar=False) + RIDGE * np.eye(features.shape[1])
    return StainDistribution(
        mean=tuple(map(float, features.mean(axis=0))),
        precision=tuple(tuple(map(float, row)) for row in np.linalg.inv(covariance)),
        patches=len(features),
    )


def stain_distances(result: NormalizationResult, distribution: StainDistribution) -> np.ndarray:
    """Mahalanobis distance of each patch's stain features (NaN: too little tissue; inf: no H&E estimate)."""
    delta = stain_features(result.stains, result.max_concentrations) - np.asarray(distribution.mean)
    delta = np.nan_to_num(delta, nan=0.0, posinf=0.0, neginf=0.0)
    distance = np.sqrt(np.einsum("ni,ij,nj->n", delta, np.asarray(distribution.precision), delta).clip(0))
    distance[~result.applied] = np.inf
    distance[[reason is SkipReason.INSUFFICIENT_TISSUE for reason in result.reasons]] = np.nan
    return distance


@njit(cache=True, inline="always")
def _off_stain_squared(o0: float, o1: float, o2: float, stains: np.ndarray, unmix: np.ndarray) -> float:
    """Squared distance of an optical density from the cone of non-negative mixes of two unit stain
    vectors, relative to its squared length (0: an H&E mix; at most 1). Squared: no root per pixel."""
    length2 = o0 * o0 + o1 * o1 + o2 * o2
    a = unmix[0, 0] * o0 + unmix[0, 1] * o1 + unmix[0, 2] * o2
    b = unmix[1, 0] * o0 + unmix[1, 1] * o1 + unmix[1, 2] * o2
    if a >= 0.0 and b >= 0.0:
        r0 = o0 - a * stains[0, 0] - b * stains[0, 1]
        r1 = o1 - a * stains[1, 0] - b * stains[1, 1]
        r2 = o2 - a * stains[2, 0] - b * stains[2, 1]
        residual2 = r0 * r0 + r1 * r1 + r2 * r2
    else:  # nearest point on one of the two rays: |od|^2 - (od . s)^2 for the closer unit stain s
        along_h = max(0.0, o0 * stains[0, 0] + o1 * stains[1, 0] + o2 * stains[2, 0])
        along_e = max(0.0, o0 * stains[0, 1] + o1 * stains[1, 1] + o2 * stains[2, 1])
        residual2 = length2 - max(along_h, along_e) ** 2
    return min(max(residual2, 0.0) / max(length2, MIN_OD_LENGTH * MIN_OD_LENGTH), 1.0)


@njit(cache=True, parallel=True)
def _pixel_measures(
    pixels: np.ndarray,
    od_lut: np.ndarray,
    tissue_lut: np.ndarray,
    stains: np.ndarray,
    unmix: np.ndarray,
    side: int,
    off_stain: np.ndarray,
    sharpness: np.ndarray,
) -> None:
    for i in prange(pixels.shape[0]):
        hist = np.zeros(DISTANCE_BINS, np.int64)
        grey = np.empty(pixels.shape[1], np.float32)  # channel sums: the Laplacian reads each 5 times
        for j in range(pixels.shape[1]):
            grey[j] = np.float32(pixels[i, j, 0]) + np.float32(pixels[i, j, 1]) + np.float32(pixels[i, j, 2])
        tissue = 0
        for y in range(side):
            if min(y, side - 1 - y) % 2:
                continue
            for x in range(side):
                if min(x, side - 1 - x) % 2:
                    continue
                r, g, b = pixels[i, y * side + x, 0], pixels[i, y * side + x, 1], pixels[i, y * side + x, 2]
                if tissue_lut[r] and tissue_lut[g] and tissue_lut[b]:
                    tissue += 1
                    d2 = _off_stain_squared(od_lut[r], od_lut[g], od_lut[b], stains, unmix)
                    hist[min(int(d2 * DISTANCE_BINS), DISTANCE_BINS - 1)] += 1
        off_stain[i] = 0.0
        if tissue >= MIN_TISSUE_FOR_COLOUR:
            rank, seen = OFF_STAIN_PERCENTILE / 100.0 * tissue, 0
            for k in range(DISTANCE_BINS):
                seen += hist[k]
                if seen >= rank:
                    off_stain[i] = np.sqrt((k + 1) / DISTANCE_BINS)
                    break
        total = 0.0
        for y in range(1, side - 1):
            row = y * side
            for x in range(1, side - 1):
                at = row + x
                total += abs(4.0 * grey[at] - grey[at - side] - grey[at + side] - grey[at - 1] - grey[at + 1])
        sharpness[i] = total / (3.0 * (side - 2) * (side - 2))


@cache  # one reference per release: not a pseudo-inverse per request
def stain_cone(reference: StainReference) -> tuple[np.ndarray, np.ndarray]:
    """The reference's unit stain vectors (3, 2) and their pseudo-inverse (2, 3), which unmixes an
    optical density into the two stains' amounts."""
    stains = np.asarray(reference.stain_matrix, np.float64)
    stains = stains / np.linalg.norm(stains, axis=0)
    return np.ascontiguousarray(stains), np.ascontiguousarray(np.linalg.pinv(stains))


def measure(
    batch: np.ndarray,
    result: NormalizationResult,
    normalizer: MacenkoNormalizer,
    distribution: StainDistribution | None,
) -> InputMeasures:
    """The input measures of raw uint8 (N, S, S, 3) patches, given `normalizer`'s `result` for them."""
    n, side = len(batch), batch.shape[1]
    off_share, sharpness = np.zeros(n), np.zeros(n)
    if n:
        pixels = np.ascontiguousarray(batch.reshape(n, side * side, 3))
        stains, unmix = stain_cone(normalizer.reference)
        _pixel_measures(
            pixels, normalizer.od_lut, normalizer.tissue_lut, stains, unmix, side, off_share, sharpness
        )
    distance = stain_distances(result, distribution) if distribution is not None else np.full(n, np.nan)
    return InputMeasures(np.asarray(result.tissue_fraction, np.float64), distance, off_share, sharpness)


def input_scores(measures: InputMeasures) -> dict[str, np.ndarray]:
    """The score each input flag is fitted on and compared with, by flag name."""
    return {
        LOW_TISSUE: measures.tissue_fraction,
        STAIN_OUTLIER: measures.stain_distance,
        OFF_STAIN_COLOUR: measures.off_stain_colour,
        BLURRED: measures.sharpness,
    }


INPUT_FLAG_ABOVE: dict[str, bool] = {
    LOW_TISSUE: False,
    STAIN_OUTLIER: True,
    OFF_STAIN_COLOUR: True,
    BLURRED: False,
}
"""Which way each input score goes wrong: above its threshold (True) or below it."""


def input_flags(measures: InputMeasures, rules: ReviewRules | None) -> list[list[str]]:
    """Per patch, the input flags whose rules fire (none without rules)."""
    n = len(measures.tissue_fraction)
    if rules is None:
        return [[] for _ in range(n)]
    fired = {
        name: fires(rules.flags[name], score)
        for name, score in input_scores(measures).items()
        if name in rules.flags
    }
    return flag_lists(fired, n)
