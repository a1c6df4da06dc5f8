"""Macenko stain normalization: the project's only implementation (training imports it too).

Follows Macenko et al. 2009 and torchstain's numpy normalizer (DESIGN.md section 10). A patch
with too little tissue to estimate stain vectors is returned unchanged with a reason, never raised.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from services.common.release import StainReference

DEFAULT_REFERENCE = StainReference(
    stain_matrix=((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)),
    max_concentrations=(1.9705, 1.0308),
    io=240.0,
    alpha=1.0,
    beta=0.15,
)
MIN_TISSUE_PIXELS = 64
"""Fewer optical-density pixels than this cannot support a stable 2-D stain plane."""


class SkipReason(StrEnum):
    """Why a patch was returned without normalization."""

    INSUFFICIENT_TISSUE = "insufficient_tissue"
    DEGENERATE_STAINS = "degenerate_stains"


@dataclass(frozen=True)
class NormalizationResult:
    images: np.ndarray
    """uint8 (N, H, W, 3): normalized where applied, the input otherwise."""
    applied: np.ndarray
    """bool (N,)."""
    reasons: tuple[SkipReason | None, ...]
    tissue_fraction: np.ndarray
    """float (N,): share of pixels whose optical density exceeds beta in every channel."""


def _optical_density(pixels: np.ndarray, io: float) -> np.ndarray:
    return -np.log((pixels.astype(np.float64) + 1.0) / io)


def _tissue_mask(od: np.ndarray, beta: float) -> np.ndarray:
    return ~np.any(od < beta, axis=-1)


def _stain_vectors(tissue_od: np.ndarray, alpha: float) -> np.ndarray | None:
    """Estimate the (3, 2) H&E stain matrix from tissue OD pixels, or None when degenerate."""
    _, eigvecs = np.linalg.eigh(np.cov(tissue_od.T))
    plane = eigvecs[:, 1:3]
    projected = tissue_od @ plane
    phi = np.arctan2(projected[:, 1], projected[:, 0])
    min_phi, max_phi = np.percentile(phi, [alpha, 100 - alpha])
    v_min = plane @ np.array([np.cos(min_phi), np.sin(min_phi)])
    v_max = plane @ np.array([np.cos(max_phi), np.sin(max_phi)])
    # Hematoxylin is the vector with the larger red optical density.
    he = np.stack([v_min, v_max], axis=1) if v_min[0] > v_max[0] else np.stack([v_max, v_min], axis=1)
    if not np.all(np.isfinite(he)) or abs(np.linalg.det(he.T @ he)) < 1e-8:
        return None
    return he


def _concentrations(od: np.ndarray, stains: np.ndarray) -> np.ndarray:
    """Least-squares stain concentrations, (2, P), of OD pixels (P, 3)."""
    return np.linalg.lstsq(stains, od.T, rcond=None)[0]


class MacenkoNormalizer:
    """Normalizes batches of uint8 RGB patches to a stain reference."""

    def __init__(self, reference: StainReference | None = None) -> None:
        self.reference = reference or DEFAULT_REFERENCE

    def fit(self, patches: np.ndarray, max_pixels: int = 2_000_000, seed: int = 0) -> MacenkoNormalizer:
        """Fit the reference to uint8 (N, H, W, 3) tissue patches, pooling their tissue pixels."""
        ref = self.reference
        od = _optical_density(np.asarray(patches).reshape(-1, 3), ref.io)
        tissue = od[_tissue_mask(od, ref.beta)]
        if len(tissue) < MIN_TISSUE_PIXELS:
            raise ValueError(f"only {len(tissue)} tissue pixels in the fitting patches")
        if len(tissue) > max_pixels:
            tissue = tissue[np.random.default_rng(seed).choice(len(tissue), max_pixels, replace=False)]
        stains = _stain_vectors(tissue, ref.alpha)
        if stains is None:
            raise ValueError("the fitting patches give degenerate stain vectors")
        max_c = np.percentile(_concentrations(tissue, stains), 99, axis=1)
        self.reference = ref.model_copy(
            update={
                "stain_matrix": tuple(tuple(float(v) for v in row) for row in stains),
                "max_concentrations": tuple(float(v) for v in max_c),
            }
        )
        return self

    def normalize(self, batch: np.ndarray) -> NormalizationResult:
        """Normalize uint8 (N, H, W, 3); patches that cannot be normalized come back unchanged."""
        batch = np.asarray(batch)
        if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
            raise ValueError(f"expected uint8 (N, H, W, 3), got {batch.dtype} {batch.shape}")
        out = batch.copy()
        applied = np.zeros(len(batch), dtype=bool)
        fractions = np.zeros(len(batch), dtype=np.float64)
        reasons: list[SkipReason | None] = []
        for i, patch in enumerate(batch):
            normalized, fractions[i], reason = self._normalize_one(patch)
            reasons.append(reason)
            if normalized is not None:
                out[i], applied[i] = normalized, True
        return NormalizationResult(out, applied, tuple(reasons), fractions)

    def _normalize_one(self, patch: np.ndarray) -> tuple[np.ndarray | None, float, SkipReason | None]:
        ref = self.reference
        od = _optical_density(patch.reshape(-1, 3), ref.io)
        mask = _tissue_mask(od, ref.beta)
        fraction = float(mask.mean())
        if mask.sum() < MIN_TISSUE_PIXELS:
            return None, fraction, SkipReason.INSUFFICIENT_TISSUE
        with np.errstate(all="ignore"):
            stains = _stain_vectors(od[mask], ref.alpha)
            if stains is None:
                return None, fraction, SkipReason.DEGENERATE_STAINS
            conc = _concentrations(od, stains)
            max_c = np.percentile(conc, 99, axis=1) / np.asarray(ref.max_concentrations)
            if not np.all(np.isfinite(max_c)) or np.any(max_c <= 0):
                return None, fraction, SkipReason.DEGENERATE_STAINS
            restored = ref.io * np.exp(-np.asarray(ref.stain_matrix) @ (conc / max_c[:, None]))
        if not np.all(np.isfinite(restored)):
            return None, fraction, SkipReason.DEGENERATE_STAINS
        # Truncation, not rounding, as in the reference implementations.
        image = np.clip(restored, 0, 255).T.reshape(patch.shape).astype(np.uint8)
        return image, fraction, None
