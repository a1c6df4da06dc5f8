"""Numba kernels of the batched Macenko normalizer: one parallel loop over patches per stage.

Exactly the arithmetic of the reference implementation (torchstain's numpy normalizer), made fast:
optical density through a 256-entry lookup table, percentiles by exact histogram-assisted rank
selection instead of sorting, angle order by a monotone pseudo-angle (arctan2 only for the selected
pixels), and the output as a product of per-patch lookup tables, since exp(-A @ od) factorizes over
the three input channels. Plain numpy in, plain numpy out; `stain.py` is the interface.
"""

import numpy as np
from numba import njit, prange

HISTOGRAM_BINS = 1024


@njit(cache=True, inline="always")
def _lerp(a: float, b: float, t: float) -> float:
    # numpy's "linear" percentile interpolation, same formula for bit-compatible results
    diff = b - a
    return a + diff * t if t < 0.5 else b - diff * (1.0 - t)


@njit(cache=True, inline="always")
def _pseudo_angle(y: float, x: float) -> float:
    """A value in (-2, 2] that orders directions exactly as arctan2(y, x) in (-pi, pi] does."""
    total = abs(x) + abs(y)
    if total == 0.0:
        return 0.0
    p = y / total
    if x < 0.0:
        p = 2.0 - p if y >= 0.0 else -2.0 - p
    return p


@njit(cache=True)
def _histogram(values: np.ndarray, n: int, lowest: float, highest: float, hist: np.ndarray) -> float:
    """Fill `hist` with the counts of values[:n] in equal bins over [lowest, highest]; return the scale."""
    bins = hist.size
    hist[:] = 0
    scale = (bins - 1) / (highest - lowest) if highest > lowest else 0.0
    for j in range(n):
        hist[int((values[j] - lowest) * scale)] += 1
    return scale


@njit(cache=True)
def _ranked(
    values: np.ndarray, n: int, lowest: float, scale: float, hist: np.ndarray, rank_lo: int, rank_hi: int
) -> np.ndarray:
    """Positions in values[:n] of the elements of ranks rank_lo..rank_hi (ascending, stable), from the
    histogram `_histogram` made of them: only the values in the bins holding those ranks are sorted."""
    bins = hist.size
    seen, bin_lo, bin_hi, before = 0, -1, bins - 1, 0
    for b in range(bins):
        if bin_lo < 0 and seen + hist[b] > rank_lo:
            bin_lo, before = b, seen
        if seen + hist[b] > rank_hi:
            bin_hi = b
            break
        seen += hist[b]
    size = 0
    for b in range(bin_lo, bin_hi + 1):
        size += hist[b]
    candidates = np.empty(size)
    positions = np.empty(size, np.int64)
    k = 0
    for j in range(n):
        b = int((values[j] - lowest) * scale)
        if bin_lo <= b <= bin_hi:
            candidates[k] = values[j]
            positions[k] = j
            k += 1
    order = np.argsort(candidates, kind="mergesort")
    return positions[order[rank_lo - before : rank_hi - before + 1]]


@njit(cache=True, inline="always")
def _percentile_ranks(n: int, q: float) -> tuple[int, int, float]:
    position = q / 100.0 * (n - 1)
    lo = int(np.floor(position))
    return lo, min(lo + 1, n - 1), position - lo


@njit(cache=True)
def _percentile(
    values: np.ndarray, n: int, q: float, lowest: float, highest: float, hist: np.ndarray
) -> float:
    """numpy's linear percentile q of values[:n], whose bounds are known."""
    lo, hi, t = _percentile_ranks(n, q)
    scale = _histogram(values, n, lowest, highest, hist)
    ranked = _ranked(values, n, lowest, scale, hist, lo, hi)
    return _lerp(values[ranked[0]], values[ranked[-1]], t)


@njit(parallel=True, cache=True)
def tissue_moments(
    images: np.ndarray, tissue_lut: np.ndarray, od_lut: np.ndarray, counts: np.ndarray, cov: np.ndarray
) -> None:
    """Per patch of uint8 (N, P, 3): count of tissue pixels and covariance (ddof=1) of their OD."""
    for i in prange(images.shape[0]):
        s0 = s1 = s2 = 0.0
        m00 = m01 = m02 = m11 = m12 = m22 = 0.0
        c = 0
        for j in range(images.shape[1]):
            r, g, b = images[i, j, 0], images[i, j, 1], images[i, j, 2]
            if tissue_lut[r] and tissue_lut[g] and tissue_lut[b]:
                x0, x1, x2 = od_lut[r], od_lut[g], od_lut[b]
                c += 1
                s0 += x0
                s1 += x1
                s2 += x2
                m00 += x0 * x0
                m01 += x0 * x1
                m02 += x0 * x2
                m11 += x1 * x1
                m12 += x1 * x2
                m22 += x2 * x2
        counts[i] = c
        if c > 1:
            d = c - 1.0
            cov[i, 0, 0] = (m00 - s0 * s0 / c) / d
            cov[i, 1, 1] = (m11 - s1 * s1 / c) / d
            cov[i, 2, 2] = (m22 - s2 * s2 / c) / d
            cov[i, 0, 1] = cov[i, 1, 0] = (m01 - s0 * s1 / c) / d
            cov[i, 0, 2] = cov[i, 2, 0] = (m02 - s0 * s2 / c) / d
            cov[i, 1, 2] = cov[i, 2, 1] = (m12 - s1 * s2 / c) / d


@njit(cache=True, inline="always")
def _pinv(he: np.ndarray) -> np.ndarray:
    """(2, 3) least-squares inverse of a (3, 2) stain matrix; NaN when the columns are parallel."""
    g00 = he[0, 0] * he[0, 0] + he[1, 0] * he[1, 0] + he[2, 0] * he[2, 0]
    g01 = he[0, 0] * he[0, 1] + he[1, 0] * he[1, 1] + he[2, 0] * he[2, 1]
    g11 = he[0, 1] * he[0, 1] + he[1, 1] * he[1, 1] + he[2, 1] * he[2, 1]
    det = g00 * g11 - g01 * g01
    out = np.empty((2, 3))
    if not abs(det) > 1e-12:
        out[:] = np.nan
        return out
    for ch in range(3):
        out[0, ch] = (g11 * he[ch, 0] - g01 * he[ch, 1]) / det
        out[1, ch] = (g00 * he[ch, 1] - g01 * he[ch, 0]) / det
    return out


@njit(parallel=True, cache=True)
def stain_estimates(
    images: np.ndarray,
    tissue_lut: np.ndarray,
    od_lut: np.ndarray,
    counts: np.ndarray,
    eigvecs: np.ndarray,
    alpha: float,
    min_count: int,
    stains: np.ndarray,
    max_concentrations: np.ndarray,
) -> None:
    """Per patch with >= min_count tissue pixels: the (3, 2) H&E matrix and 99th-pct concentrations.

    Left NaN where the estimate is undefined (parallel stain vectors).
    """
    n, p = images.shape[0], images.shape[1]
    for i in prange(n):
        c = counts[i]
        if c < min_count:
            continue
        hist = np.empty(HISTOGRAM_BINS, np.int64)
        e10, e11, e12 = eigvecs[i, 0, 1], eigvecs[i, 1, 1], eigvecs[i, 2, 1]
        e20, e21, e22 = eigvecs[i, 0, 2], eigvecs[i, 1, 2], eigvecs[i, 2, 2]
        angles = np.empty(c)
        t0s = np.empty(c)
        t1s = np.empty(c)
        k = 0
        lowest, highest = np.inf, -np.inf
        for j in range(p):
            r, g, b = images[i, j, 0], images[i, j, 1], images[i, j, 2]
            if tissue_lut[r] and tissue_lut[g] and tissue_lut[b]:
                x0, x1, x2 = od_lut[r], od_lut[g], od_lut[b]
                t0 = x0 * e10 + x1 * e11 + x2 * e12
                t1 = x0 * e20 + x1 * e21 + x2 * e22
                t0s[k], t1s[k] = t0, t1
                angle = _pseudo_angle(t1, t0)
                angles[k] = angle
                lowest, highest = min(lowest, angle), max(highest, angle)
                k += 1
        # Both percentiles from one histogram of the angles.
        scale = _histogram(angles, c, lowest, highest, hist)
        phi = np.empty(2)
        for side in range(2):
            lo, hi, t = _percentile_ranks(c, alpha if side == 0 else 100.0 - alpha)
            ranked = _ranked(angles, c, lowest, scale, hist, lo, hi)
            a, z = ranked[0], ranked[-1]
            phi[side] = _lerp(np.arctan2(t1s[a], t0s[a]), np.arctan2(t1s[z], t0s[z]), t)
        v_min = np.empty(3)
        v_max = np.empty(3)
        for ch in range(3):
            v_min[ch] = eigvecs[i, ch, 1] * np.cos(phi[0]) + eigvecs[i, ch, 2] * np.sin(phi[0])
            v_max[ch] = eigvecs[i, ch, 1] * np.cos(phi[1]) + eigvecs[i, ch, 2] * np.sin(phi[1])
        # Hematoxylin first: the vector with the larger red optical density.
        h_first = v_min[0] > v_max[0]
        for ch in range(3):
            stains[i, ch, 0] = v_min[ch] if h_first else v_max[ch]
            stains[i, ch, 1] = v_max[ch] if h_first else v_min[ch]
        pinv = _pinv(stains[i])
        if np.isnan(pinv[0, 0]):
            stains[i, :, :] = np.nan
            continue
        conc_h = np.empty(p)
        conc_e = np.empty(p)
        h_low, h_high, e_low, e_high = np.inf, -np.inf, np.inf, -np.inf
        for j in range(p):
            x0, x1, x2 = od_lut[images[i, j, 0]], od_lut[images[i, j, 1]], od_lut[images[i, j, 2]]
            h = pinv[0, 0] * x0 + pinv[0, 1] * x1 + pinv[0, 2] * x2
            e = pinv[1, 0] * x0 + pinv[1, 1] * x1 + pinv[1, 2] * x2
            conc_h[j], conc_e[j] = h, e
            h_low, h_high, e_low, e_high = min(h_low, h), max(h_high, h), min(e_low, e), max(e_high, e)
        max_concentrations[i, 0] = _percentile(conc_h, p, 99.0, h_low, h_high, hist)
        max_concentrations[i, 1] = _percentile(conc_e, p, 99.0, e_low, e_high, hist)


@njit(parallel=True, cache=True)
def render(
    images: np.ndarray,
    od_lut: np.ndarray,
    apply: np.ndarray,
    stains: np.ndarray,
    max_concentrations: np.ndarray,
    reference_stains: np.ndarray,
    reference_max: np.ndarray,
    io: float,
    out: np.ndarray,
) -> None:
    """Re-render the patches marked in `apply` with the reference stains, into `out`.

    I = io * exp(-S_ref @ diag(ref_max / max_c) @ pinv(S) @ od) is a product over input channels
    of per-patch 256-entry tables; values above 255 clip and the rest truncate, as the reference does.
    """
    for i in prange(images.shape[0]):
        if not apply[i]:
            continue
        pinv = _pinv(stains[i])
        scale_h = reference_max[0] / max_concentrations[i, 0]
        scale_e = reference_max[1] / max_concentrations[i, 1]
        table = np.empty((3, 3, 256))
        for ch in range(3):
            for k in range(3):
                coef = (
                    reference_stains[ch, 0] * scale_h * pinv[0, k]
                    + reference_stains[ch, 1] * scale_e * pinv[1, k]
                )
                gain = io if k == 0 else 1.0
                for v in range(256):
                    table[ch, k, v] = gain * np.exp(-coef * od_lut[v])
        for j in range(images.shape[1]):
            r, g, b = images[i, j, 0], images[i, j, 1], images[i, j, 2]
            for ch in range(3):
                value = table[ch, 0, r] * table[ch, 1, g] * table[ch, 2, b]
                out[i, j, ch] = 255 if value > 255.0 else np.uint8(value)
