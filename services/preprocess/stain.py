"""Macenko stain normalization: the project's only implementation (training imports it too).

Follows Macenko et al. 2009 and torchstain's numpy normalizer (docs/architecture.md#stain-normalization), batched: one
call normalizes a whole batch (kernels in `macenko_kernels.py`). A patch whose stains cannot be
estimated is returned unchanged with `applied = False` and a reason, never an exception.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from pcam_core.release import StainReference
from services.preprocess import macenko_kernels as kernels

DEFAULT_REFERENCE = StainReference(
    stain_matrix=((0.5626, 0.2159), (0.7201, 0.8012), (0.4062, 0.5581)),
    max_concentrations=(1.9705, 1.0308),
    io=240.0,
    alpha=1.0,
    beta=0.15,
)
_KERNEL_LOCK = threading.Lock()
"""numba's workqueue threading layer (its fallback where neither OpenMP nor TBB is installed) must
not be entered from two threads at once; each kernel call already uses every core, so serializing
calls costs no throughput."""
MIN_TISSUE_PIXELS = 64
"""Fewer optical-density pixels than this cannot support a stable 2-D stain plane."""
MIN_STAIN_COSINE = 0.5
"""H and E absorb light over overlapping bands: their OD vectors lie within about 40 degrees on
real slides (cosine 0.88-0.98 on the project's real patches, 0.77 for Ruifrok's reference vectors).
A wider angle means the 'stains' are not H&E (e.g. pure noise)."""


class SkipReason(StrEnum):
    """Why a patch was returned without normalization."""

    INSUFFICIENT_TISSUE = "insufficient_tissue"
    """Fewer than MIN_TISSUE_PIXELS pixels above the OD threshold (background, white, saturated)."""
    DEGENERATE_STAINS = "degenerate_stains"
    """The two stain vectors coincide or concentrations vanish (flat or single-color patches)."""
    IMPLAUSIBLE_STAINS = "implausible_stains"
    """The estimate is not H&E: a negative absorbance or stain vectors too far apart (noise)."""


@dataclass(frozen=True)
class NormalizationResult:
    images: np.ndarray
    """uint8 (N, H, W, 3): normalized where applied, the input otherwise."""
    applied: np.ndarray
    """bool (N,)."""
    reasons: tuple[SkipReason | None, ...]
    tissue_fraction: np.ndarray
    """float (N,): share of pixels whose optical density reaches beta in every channel."""
    stains: np.ndarray
    """float (N, 3, 2): each patch's own stain vectors (NaN where they could not be estimated)."""
    max_concentrations: np.ndarray
    """float (N, 2): each patch's own 99th-percentile concentrations (NaN likewise)."""


@dataclass(frozen=True)
class _Estimates:
    stains: np.ndarray  # (N, 3, 2)
    max_concentrations: np.ndarray  # (N, 2)
    tissue_pixels: np.ndarray  # (N,)
    reasons: tuple[SkipReason | None, ...]


class MacenkoNormalizer:
    """Normalizes batches of uint8 RGB patches to a stain reference."""

    def __init__(self, reference: StainReference | None = None) -> None:
        self._use(reference or DEFAULT_REFERENCE)

    def _use(self, reference: StainReference) -> None:
        self.reference = reference
        self.od_lut = -np.log((np.arange(256, dtype=np.float64) + 1.0) / reference.io)
        """Optical density of each uint8 channel value."""
        # The same comparison as the reference implementation (OD >= beta), tabulated per uint8 value.
        self.tissue_lut = self.od_lut >= reference.beta
        """Whether a channel value reaches the tissue threshold beta."""

    def fit(self, patches: np.ndarray) -> MacenkoNormalizer:
        """Fit the reference to uint8 (N, H, W, 3) tissue patches, pooled as one image; return self."""
        pooled = _as_pixels(patches).reshape(1, -1, 3)
        with _KERNEL_LOCK:
            estimates = self._estimate(pooled)
        if estimates.reasons[0] is not None:
            raise ValueError(
                f"cannot fit a stain reference: {estimates.reasons[0]} "
                f"({estimates.tissue_pixels[0]} tissue pixels in the fitting patches)"
            )
        self._use(
            self.reference.model_copy(
                update={
                    "stain_matrix": tuple(tuple(float(v) for v in row) for row in estimates.stains[0]),
                    "max_concentrations": tuple(float(v) for v in estimates.max_concentrations[0]),
                }
            )
        )
        return self

    def normalize(self, batch: np.ndarray) -> NormalizationResult:
        """Normalize uint8 (N, H, W, 3); patches that cannot be normalized come back unchanged."""
        pixels = _as_pixels(batch)
        with _KERNEL_LOCK:
            return self._normalize(batch.shape, pixels)

    def _normalize(self, shape: tuple[int, ...], pixels: np.ndarray) -> NormalizationResult:
        estimates = self._estimate(pixels)
        applied = np.array([reason is None for reason in estimates.reasons], dtype=bool)
        out = pixels.copy()
        ref = self.reference
        kernels.render(
            pixels,
            self.od_lut,
            applied,
            estimates.stains,
            estimates.max_concentrations,
            np.asarray(ref.stain_matrix, dtype=np.float64),
            np.asarray(ref.max_concentrations, dtype=np.float64),
            ref.io,
            out,
        )
        fraction = estimates.tissue_pixels / max(pixels.shape[1], 1)
        return NormalizationResult(
            out.reshape(shape),
            applied,
            estimates.reasons,
            fraction,
            estimates.stains,
            estimates.max_concentrations,
        )

    def _estimate(self, pixels: np.ndarray) -> _Estimates:
        n = len(pixels)
        counts = np.zeros(n, dtype=np.int64)
        cov = np.zeros((n, 3, 3))
        kernels.tissue_moments(pixels, self.tissue_lut, self.od_lut, counts, cov)
        # LAPACK's symmetric eigensolver, as the reference calls it (eigenvector signs included).
        eigvecs = np.ascontiguousarray(np.linalg.eigh(cov)[1])
        stains = np.full((n, 3, 2), np.nan)
        max_concentrations = np.full((n, 2), np.nan)
        kernels.stain_estimates(
            pixels,
            self.tissue_lut,
            self.od_lut,
            counts,
            eigvecs,
            self.reference.alpha,
            MIN_TISSUE_PIXELS,
            stains,
            max_concentrations,
        )
        return _Estimates(stains, max_concentrations, counts, _reasons(counts, stains, max_concentrations))


def _reasons(
    tissue_pixels: np.ndarray, stains: np.ndarray, max_concentrations: np.ndarray
) -> tuple[SkipReason | None, ...]:
    """Per patch, why its estimate cannot be used (the first check it fails, in this order), or None.

    Whole-batch array checks: a loop of small numpy calls per patch cost a fifth of normalizing one.
    """
    with np.errstate(invalid="ignore"):  # NaN estimates compare False; they are caught as degenerate
        finite = np.isfinite(stains).all(axis=(1, 2)) & np.isfinite(max_concentrations).all(axis=1)
        degenerate = ~finite | (max_concentrations <= 0).any(axis=1)
        cosine = np.einsum("nc,nc->n", stains[:, :, 0], stains[:, :, 1])
        implausible = (stains < 0).any(axis=(1, 2)) | (cosine < MIN_STAIN_COSINE)
    reasons = (SkipReason.INSUFFICIENT_TISSUE, SkipReason.DEGENERATE_STAINS, SkipReason.IMPLAUSIBLE_STAINS)
    failed = [tissue_pixels < MIN_TISSUE_PIXELS, degenerate, implausible]
    first = np.select(failed, list(range(len(reasons))), default=-1)  # np.select takes the first that holds
    return tuple(None if i < 0 else reasons[i] for i in first)


def _as_pixels(batch: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) as contiguous (N, H*W, 3); raise ValueError on anything else."""
    batch = np.asarray(batch)
    if batch.dtype != np.uint8 or batch.ndim != 4 or batch.shape[-1] != 3:
        raise ValueError(f"expected uint8 (N, H, W, 3), got {batch.dtype} {batch.shape}")
    return np.ascontiguousarray(batch.reshape(len(batch), batch.shape[1] * batch.shape[2], 3))
