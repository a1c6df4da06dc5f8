"""Binary classification metrics (scikit-learn's) and their slide-clustered bootstrap intervals.

The one implementation behind `pcam evaluate`, `pcam validate` and calibration: point estimates are
scikit-learn's; the bootstrap (which neither scikit-learn nor scipy offers clustered by slide) draws
resamples of slides or patches once and measures every statistic on the same draws. Undefined values
(a rate over an empty denominator) are NaN inside arrays and None in results, never NaN in JSON.
Research use only.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from sklearn import metrics as sk
from sklearn.exceptions import UndefinedMetricWarning

BOOTSTRAP_ROUNDS = 1000
ECE_BINS = 15
CONFIDENCE = 0.95
BINARY_METRICS = ("sensitivity", "specificity", "ppv", "npv", "accuracy", "kappa")
Interval = tuple[float, float]
_CELLS_PER_CHUNK = 1 << 21
"""Resample weights held at once (rounds x units): about 16 MB of float64, whatever the split size."""


def _labels(labels: np.ndarray) -> np.ndarray:
    """Labels as a boolean positive mask; anything but 0/1 is refused."""
    y = np.asarray(labels).reshape(-1)
    if not np.isin(y, (0, 1)).all():
        raise ValueError("labels must be 0 or 1")
    return y == 1


def _scores(scores: np.ndarray) -> np.ndarray:
    return np.asarray(scores, np.float64).reshape(-1)


def _float(value: float | np.floating) -> float | None:
    """A metric for a result: None where undefined (NaN), so JSON never carries NaN."""
    return None if not np.isfinite(value) else float(value)


@dataclass(frozen=True)
class Confusion:
    """Patch counts of the rule score >= threshold against the labels."""

    tp: int
    fp: int
    tn: int
    fn: int


def confusion(labels: np.ndarray, scores: np.ndarray, threshold: float) -> Confusion:
    """Confusion counts of the rule score >= threshold (the serving rule)."""
    y, predicted = _labels(labels), _scores(scores) >= threshold
    tn, fp, fn, tp = sk.confusion_matrix(y, predicted, labels=[False, True]).ravel()
    return Confusion(tp=int(tp), fp=int(fp), tn=int(tn), fn=int(fn))


def rates_from_counts(
    tp: np.ndarray | float, fp: np.ndarray | float, tn: np.ndarray | float, fn: np.ndarray | float
) -> dict[str, np.ndarray]:
    """Sensitivity, specificity, PPV, NPV, accuracy and Cohen's kappa of each resample's confusion counts.

    Vectorized over the bootstrap's resamples (arrays of counts); undefined entries are NaN. The point
    estimates are scikit-learn's (`binary_metrics`); a test holds these formulas to them.
    """
    tp, fp, tn, fn = (np.asarray(c, np.float64) for c in (tp, fp, tn, fn))
    n = tp + fp + tn + fn
    with np.errstate(invalid="ignore", divide="ignore"):
        observed = (tp + tn) / n
        # Chance agreement of two raters with these marginals; kappa is undefined when it is 1
        # (labels and predictions all of one class), as in scikit-learn.
        chance = ((tp + fp) * (tp + fn) + (tn + fn) * (tn + fp)) / n**2
        kappa = np.where(chance < 1.0, (observed - chance) / (1.0 - chance), np.nan)
        return {
            "sensitivity": tp / (tp + fn),
            "specificity": tn / (tn + fp),
            "ppv": tp / (tp + fp),
            "npv": tn / (tn + fn),
            "accuracy": observed,
            "kappa": kappa,
        }


def binary_metrics(labels: np.ndarray, scores: np.ndarray, threshold: float) -> dict[str, float | None]:
    """BINARY_METRICS of the rule score >= threshold; None where undefined (e.g. PPV, nothing called)."""
    y, predicted = _labels(labels), _scores(scores) >= threshold
    with warnings.catch_warnings():
        # Undefined metrics are answered as None below; scikit-learn's warnings about them are noise.
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        warnings.simplefilter("ignore", RuntimeWarning)  # kappa of one class: 0/0
        values = {
            "sensitivity": sk.recall_score(y, predicted, zero_division=np.nan),
            "specificity": sk.recall_score(y, predicted, pos_label=False, zero_division=np.nan),
            "ppv": sk.precision_score(y, predicted, zero_division=np.nan),
            "npv": sk.precision_score(y, predicted, pos_label=False, zero_division=np.nan),
            "accuracy": sk.accuracy_score(y, predicted),
            "kappa": sk.cohen_kappa_score(y, predicted),
        }
    return {k: _float(v) for k, v in values.items()}


def brier(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Brier score: mean squared difference between probability and label."""
    return float(sk.brier_score_loss(_labels(labels), _scores(probabilities)))


def _bin_index(probabilities: np.ndarray, bins: int) -> np.ndarray:
    return np.minimum((probabilities * bins).astype(int), bins - 1)


def reliability(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per equal-width probability bin: patches, summed probability, positives (ECE and the diagram)."""
    p, y = _scores(probabilities), _labels(labels).astype(np.float64)
    index = _bin_index(p, bins)
    return (
        np.bincount(index, minlength=bins).astype(np.float64),
        np.bincount(index, weights=p, minlength=bins),
        np.bincount(index, weights=y, minlength=bins),
    )


def ece_from_sums(count: np.ndarray, summed_probability: np.ndarray, positives: np.ndarray) -> np.ndarray:
    """ECE from per-bin sums (last axis: bins; leading axes: resamples)."""
    gap = np.abs(summed_probability - positives).sum(axis=-1)
    return gap / np.maximum(count.sum(axis=-1), 1)


def ece(probabilities: np.ndarray, labels: np.ndarray, bins: int = ECE_BINS) -> float:
    """Expected calibration error of the positive class: bin-weighted |mean p - share of positives|
    over equal-width probability bins (not the top-label form)."""
    return float(ece_from_sums(*reliability(probabilities, labels, bins)))


def auc(labels: np.ndarray, scores: np.ndarray) -> float | None:
    """Area under the ROC curve; None unless both classes are present."""
    y, s = _labels(labels), _scores(scores)
    return float(sk.roc_auc_score(y, s)) if 0 < y.sum() < len(y) else None


class Bootstrap:
    """Resamples with replacement of units: slides when groups are given, else patches.

    Patches of one slide are not independent, so slides are what is resampled where known. A
    resample is a count per unit (multinomial); the same seed gives the same resamples, so every
    statistic measured with one Bootstrap sees the same draws (paired intervals).
    """

    def __init__(
        self, n: int, groups: np.ndarray | None = None, rounds: int = BOOTSTRAP_ROUNDS, seed: int = 0
    ):
        if groups is None:
            self.units = np.arange(n)
        else:
            groups = np.asarray(groups).reshape(-1)
            if len(groups) != n:
                raise ValueError(f"{len(groups)} group ids for {n} patches")
            self.units = np.unique(groups, return_inverse=True)[1].reshape(-1)
        self.unit = "patch" if groups is None else "slide"
        self.n_units = int(self.units.max()) + 1 if n else 0
        self.rounds, self.seed = rounds, seed
        self._cached: np.ndarray | None = None

    def _counts(self) -> np.ndarray:
        """(rounds, units) draw counts, drawn once and kept for every statistic."""
        if self._cached is None:
            # A count never exceeds the number of units, so a small unsigned type holds it exactly
            # (PCam's 32,768 patches x 1000 rounds: 33 MB as uint8 against 262 MB as int64).
            dtype = np.min_scalar_type(self.n_units)
            chunk = max(1, _CELLS_PER_CHUNK // max(self.n_units, 1))
            rng = np.random.default_rng(self.seed)
            # Successive calls continue one stream: chunking never changes the draws.
            self._cached = np.concatenate(
                [
                    self._drawn(rng, min(chunk, self.rounds - start)).astype(dtype)
                    for start in range(0, self.rounds, chunk)
                ]
            )
        return self._cached

    def _drawn(self, rng: np.random.Generator, rounds: int) -> np.ndarray:
        """(rounds, units) counts of `units` draws with replacement: the multinomial with equal shares,
        counted from uniform draws (numpy's multinomial draws one binomial per unit: 20x slower)."""
        picks = rng.integers(0, self.n_units, size=(rounds, self.n_units))
        picks += np.arange(rounds)[:, None] * self.n_units  # row r counts in its own n_units bins
        return np.bincount(picks.ravel(), minlength=rounds * self.n_units).reshape(rounds, self.n_units)

    def draws(self, chunk: int | None = None) -> Iterator[np.ndarray]:
        """(rounds_in_chunk, units) float64 counts: how often each unit is drawn, chunk by chunk."""
        counts = self._counts()
        chunk = chunk or max(1, _CELLS_PER_CHUNK // max(self.n_units, 1))
        for start in range(0, self.rounds, chunk):
            yield counts[start : start + chunk].astype(np.float64)

    def sums(self, values: np.ndarray) -> np.ndarray:
        """(rounds, k) totals of per-patch values (n, k) over each resample."""
        values = np.asarray(values, np.float64).reshape(len(self.units), -1)
        per_unit = np.stack(
            [np.bincount(self.units, weights=v, minlength=self.n_units) for v in values.T], axis=1
        )
        return np.concatenate([d @ per_unit for d in self.draws()])

    def patch_weights(self) -> Iterator[np.ndarray]:
        """(rounds_in_chunk, patches) weights: each patch counts as often as its unit was drawn."""
        for d in self.draws(max(1, _CELLS_PER_CHUNK // max(len(self.units), 1))):
            yield d[:, self.units]


def interval(values: np.ndarray, confidence: float = CONFIDENCE) -> Interval | None:
    """Percentile interval of bootstrap values, over the resamples where the metric is defined."""
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    tail = 100 * (1 - confidence) / 2
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


def binary_intervals(
    labels: np.ndarray, scores: np.ndarray, threshold: float, bootstrap: Bootstrap
) -> dict[str, Interval | None]:
    """95 % intervals of BINARY_METRICS at a fixed threshold."""
    y, predicted = _labels(labels), _scores(scores) >= threshold
    cells = np.stack([predicted & y, predicted & ~y, ~predicted & ~y, ~predicted & y], axis=1)
    totals = bootstrap.sums(cells)
    return {k: interval(v) for k, v in rates_from_counts(*totals.T).items()}


def brier_interval(probabilities: np.ndarray, labels: np.ndarray, bootstrap: Bootstrap) -> Interval | None:
    """95 % interval of the Brier score."""
    p, y = _scores(probabilities), _labels(labels)
    totals = bootstrap.sums(np.stack([(p - y) ** 2, np.ones_like(p)], axis=1))
    with np.errstate(invalid="ignore", divide="ignore"):
        return interval(totals[:, 0] / totals[:, 1])


def ece_interval(
    probabilities: np.ndarray, labels: np.ndarray, bootstrap: Bootstrap, bins: int = ECE_BINS
) -> Interval | None:
    """95 % interval of the ECE (the bins stay fixed; each resample refills them)."""
    p, y = _scores(probabilities), _labels(labels).astype(np.float64)
    one_hot = np.eye(bins)[_bin_index(p, bins)]
    totals = bootstrap.sums(np.concatenate([one_hot, one_hot * p[:, None], one_hot * y[:, None]], axis=1))
    return interval(ece_from_sums(*np.split(totals, 3, axis=1)))


def auc_interval(labels: np.ndarray, scores: np.ndarray, bootstrap: Bootstrap) -> Interval | None:
    """95 % interval of the AUC; resamples lacking a class are left out (their AUC is undefined)."""
    y, s = _labels(labels), _scores(scores)
    if not 0 < y.sum() < len(y):
        return None
    return interval(np.concatenate([weighted_aucs(y, s, w) for w in bootstrap.patch_weights()]))


def weighted_aucs(labels: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """sklearn's `roc_auc_score(labels, scores, sample_weight=w)` for each row w of `weights`, at once.

    The weighted Mann-Whitney statistic (ties count half), which is what the area under the weighted
    ROC curve equals: one sort for every resample instead of a thousand sklearn calls (4 ms each, the
    bulk of an evaluation). NaN where a row weighs no positive or no negative.
    """
    y, s = _labels(labels), _scores(scores)
    order = np.argsort(s, kind="stable")
    tie_groups = np.flatnonzero(np.r_[True, np.diff(s[order]) != 0])
    w = np.asarray(weights, np.float64)[:, order]
    positive = np.add.reduceat(w * y[order], tie_groups, axis=1)
    negative = np.add.reduceat(w * ~y[order], tie_groups, axis=1)
    negative_below = np.cumsum(negative, axis=1) - negative
    pairs = positive.sum(axis=1) * negative.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        aucs = (positive * (negative_below + 0.5 * negative)).sum(axis=1) / pairs
    return np.where(pairs > 0, aucs, np.nan)
