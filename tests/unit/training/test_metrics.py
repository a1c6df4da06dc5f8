"""training.metrics against scikit-learn, edge cases included, and the bootstrap by slide and by patch."""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
from sklearn import metrics as sk

from training import metrics
from training.calibrate import bootstrap_rates


def random_case(
    n: int, seed: int, prevalence: float = 0.4, decimals: int = 2
) -> tuple[np.ndarray, np.ndarray]:
    """Labels and probability-like scores, rounded so that ties occur."""
    rng = np.random.default_rng(seed)
    labels = (rng.uniform(size=n) < prevalence).astype(int)
    scores = np.clip(0.35 * labels + rng.uniform(0.0, 0.65, n), 0.0, 1.0)
    return labels, np.round(scores, decimals)


CASES = [(n, seed) for n in (7, 60, 3000) for seed in (0, 1, 2)]


def sklearn_metrics(labels: np.ndarray, predicted: np.ndarray) -> dict[str, float]:
    """scikit-learn's answer for every binary metric; NaN where it calls one undefined."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # its undefined-metric warnings are the cases under test
        return {
            "sensitivity": sk.recall_score(labels, predicted, zero_division=np.nan),
            "specificity": sk.recall_score(labels, predicted, pos_label=0, zero_division=np.nan),
            "ppv": sk.precision_score(labels, predicted, zero_division=np.nan),
            "npv": sk.precision_score(labels, predicted, pos_label=0, zero_division=np.nan),
            "accuracy": sk.accuracy_score(labels, predicted),
            "kappa": sk.cohen_kappa_score(labels, predicted),
        }


def assert_same(ours: float | None, theirs: float) -> None:
    if np.isnan(theirs):
        assert ours is None
    else:
        assert ours == pytest.approx(theirs, abs=1e-12)


@pytest.mark.parametrize(("n", "seed"), CASES)
@pytest.mark.parametrize("threshold", [0.0, 0.3, 0.5, 0.77, 1.0, 1.01])
def test_binary_metrics_match_sklearn(n: int, seed: int, threshold: float):
    labels, scores = random_case(n, seed)
    predicted = (scores >= threshold).astype(int)
    c = metrics.confusion(labels, scores, threshold)
    tn, fp, fn, tp = sk.confusion_matrix(labels, predicted, labels=[0, 1]).ravel()
    assert (c.tp, c.fp, c.tn, c.fn) == (tp, fp, tn, fn)
    ours = metrics.binary_metrics(labels, scores, threshold)
    assert set(ours) == set(metrics.BINARY_METRICS)
    for name, theirs in sklearn_metrics(labels, predicted).items():
        assert_same(ours[name], theirs)


@pytest.mark.parametrize(
    ("labels", "scores", "threshold", "undefined"),
    [
        ([1, 1, 1, 1], [0.2, 0.4, 0.6, 0.8], 0.5, {"specificity"}),  # no negatives
        ([0, 0, 0], [0.1, 0.2, 0.3], 0.5, {"sensitivity", "ppv", "kappa"}),  # all negative, none called
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.9, {"ppv"}),  # nothing called positive
        ([0, 1, 0, 1], [0.1, 0.2, 0.3, 0.4], 0.0, {"npv"}),  # everything called positive
        ([1, 1], [0.9, 0.8], 0.5, {"specificity", "npv", "kappa"}),  # one class, all agree
    ],
)
def test_undefined_metrics_are_none_as_sklearn_says(labels, scores, threshold, undefined):
    labels, scores = np.array(labels), np.array(scores)
    ours = metrics.binary_metrics(labels, scores, threshold)
    assert {k for k, v in ours.items() if v is None} == undefined
    for name, theirs in sklearn_metrics(labels, (scores >= threshold).astype(int)).items():
        assert_same(ours[name], theirs)
    json.dumps(ours, allow_nan=False)  # None, never NaN, reaches JSON


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_auc_brier_ece_match_sklearn(n: int, seed: int):
    labels, scores = random_case(n, seed)
    if len(np.unique(labels)) == 2:
        assert metrics.auc(labels, scores) == pytest.approx(sk.roc_auc_score(labels, scores), abs=1e-12)
    assert metrics.brier(scores, labels) == pytest.approx(sk.brier_score_loss(labels, scores), abs=1e-12)
    # ECE by its definition, bin by bin (scikit-learn has none; its calibration_curve gives the bins).
    index = np.minimum((scores * 15).astype(int), 14)
    expected = sum(
        abs(scores[index == b].mean() - labels[index == b].mean()) * (index == b).mean()
        for b in np.unique(index)
    )
    assert metrics.ece(scores, labels) == pytest.approx(expected, abs=1e-12)


def test_reliability_bins_match_sklearn_calibration_curve():
    from sklearn.calibration import calibration_curve

    labels, scores = random_case(3000, 4, decimals=6)
    count, summed, positives = metrics.reliability(scores, labels, bins=10)
    filled = count > 0
    rate, confidence = calibration_curve(labels, scores, n_bins=10, strategy="uniform")
    assert (summed / np.where(filled, count, 1))[filled] == pytest.approx(confidence, abs=1e-12)
    assert (positives / np.where(filled, count, 1))[filled] == pytest.approx(rate, abs=1e-12)


def test_auc_is_none_with_one_class_and_handles_ties():
    assert metrics.auc(np.ones(5), np.linspace(0, 1, 5)) is None
    assert metrics.auc(np.array([0, 1, 0, 1]), np.full(4, 0.5)) == pytest.approx(0.5)
    with pytest.raises(ValueError):
        metrics.confusion(np.array([0, 2]), np.array([0.1, 0.2]), 0.5)


def test_auc_interval_is_sklearn_auc_of_each_resample():
    labels, scores = random_case(300, 5)
    slides = np.arange(300) // 15
    bootstrap = metrics.Bootstrap(300, slides, rounds=40, seed=3)
    weights = np.concatenate(list(bootstrap.patch_weights()))
    per_resample = [
        sk.roc_auc_score(labels, scores, sample_weight=w)
        for w in weights
        if 0 < w[labels == 1].sum() < w.sum()
    ]
    assert metrics.auc_interval(labels, scores, bootstrap) == pytest.approx(
        metrics.interval(np.array(per_resample))
    )


@pytest.mark.parametrize(("n", "seed"), CASES)
def test_weighted_aucs_are_sklearns_per_row_ties_and_one_class_rows_included(n: int, seed: int):
    labels, scores = random_case(n, seed, decimals=1)  # one decimal: many ties
    rng = np.random.default_rng(seed)
    weights = rng.integers(0, 3, size=(25, n)).astype(float)
    weights[0] = labels  # positives only: undefined
    got = metrics.weighted_aucs(labels, scores, weights)
    for w, value in zip(weights, got, strict=True):
        if 0 < w[labels == 1].sum() < w.sum():
            assert value == pytest.approx(sk.roc_auc_score(labels, scores, sample_weight=w), abs=1e-12)
        else:
            assert np.isnan(value)


@pytest.mark.parametrize(("n", "seed"), CASES)
@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.01])
def test_resample_rates_from_counts_are_sklearns_metrics(n: int, seed: int, threshold: float):
    labels, scores = random_case(n, seed)
    c = metrics.confusion(labels, scores, threshold)
    vectorized = metrics.rates_from_counts(c.tp, c.fp, c.tn, c.fn)
    for name, theirs in sklearn_metrics(labels, (scores >= threshold).astype(int)).items():
        assert_same(metrics._float(vectorized[name]), theirs)


def test_bootstrap_sums_are_those_of_the_resampled_data():
    labels, scores = random_case(200, 6)
    slides = np.arange(200) // 10
    boot = metrics.Bootstrap(200, slides, rounds=5, seed=3)
    counts = np.concatenate(list(boot.draws()))
    assert counts.shape == (5, 20) and (counts.sum(axis=1) == 20).all()
    sums = boot.sums(np.stack([labels, scores], axis=1))
    for r in range(5):
        weights = counts[r][slides]
        assert sums[r] == pytest.approx([(weights * labels).sum(), (weights * scores).sum()])
    # The same draws however they are chunked, and on every call.
    assert np.array_equal(np.concatenate(list(boot.draws(chunk=2))), counts)


def test_bootstrap_intervals_bracket_estimates_and_are_json_safe():
    labels, scores = random_case(3000, 7)
    boot = metrics.Bootstrap(3000, np.arange(3000) // 25, rounds=300, seed=0)
    point = metrics.binary_metrics(labels, scores, 0.5)
    for name, ci in metrics.binary_intervals(labels, scores, 0.5, boot).items():
        assert ci[0] <= point[name] <= ci[1], name
    for value, ci in [
        (metrics.auc(labels, scores), metrics.auc_interval(labels, scores, boot)),
        (metrics.brier(scores, labels), metrics.brier_interval(scores, labels, boot)),
        (metrics.ece(scores, labels), metrics.ece_interval(scores, labels, boot)),
    ]:
        assert ci[0] <= value <= ci[1]
    # Nothing scores >= 2: PPV is undefined in every resample, so its interval is None.
    assert metrics.binary_intervals(labels, scores, 2.0, boot)["ppv"] is None


def test_bootstrap_by_slide_differs_from_by_patch():
    # Slides with their own tumor share: patches of a slide are correlated, so resampling slides
    # must give wider intervals than resampling patches as if they were independent.
    rng = np.random.default_rng(8)
    slides = np.repeat(np.arange(40), 50)
    share = rng.uniform(0.05, 0.95, 40)[slides]
    labels = (rng.uniform(size=len(slides)) < share).astype(int)
    scores = np.clip(share + rng.normal(0, 0.1, len(slides)), 0, 1)
    by_patch = metrics.Bootstrap(len(labels), None, rounds=400, seed=0)
    by_slide = metrics.Bootstrap(len(labels), slides, rounds=400, seed=0)
    assert (by_patch.unit, by_patch.n_units) == ("patch", 2000)
    assert (by_slide.unit, by_slide.n_units) == ("slide", 40)
    width = {}
    for unit, boot in (("patch", by_patch), ("slide", by_slide)):
        ci = metrics.binary_intervals(labels, scores, 0.5, boot)
        auc = metrics.auc_interval(labels, scores, boot)
        width[unit] = (ci["sensitivity"][1] - ci["sensitivity"][0], auc[1] - auc[0])
    assert width["slide"][0] > 1.5 * width["patch"][0]
    assert width["slide"][1] > 1.5 * width["patch"][1]


def test_calibrate_bootstrap_rates_is_the_shared_resampler():
    labels, scores = random_case(1000, 9)
    slides = np.arange(1000) // 20
    rates = bootstrap_rates(labels, scores, 0.5, slides, rounds=200, seed=4)
    shared = metrics.binary_intervals(labels, scores, 0.5, metrics.Bootstrap(1000, slides, 200, 4))
    assert rates == {k: shared[k] for k in ("sensitivity", "specificity", "accuracy")}


def test_interval_ignores_undefined_resamples():
    assert metrics.interval(np.array([np.nan, np.nan])) is None
    assert metrics.interval(np.r_[np.nan, np.linspace(0, 1, 101)]) == pytest.approx((0.025, 0.975))
