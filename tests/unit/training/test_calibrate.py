"""Temperature scaling, ensemble rule and operating points on simulated validation outputs."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.special import expit

from pcam_core.conformal import conformal_quantile
from pcam_core.release import OPERATING_POINTS, EnsembleRule
from training.calibrate import (
    bootstrap_rates,
    calibrate,
    ece,
    ensemble_probability,
    fit_temperature,
    nll,
    operating_points,
    rates,
)


def simulated(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Calibrated logits and labels drawn from them."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0.0, 2.5, n)
    return logits, (rng.uniform(size=n) < expit(logits)).astype(int)


@pytest.mark.parametrize("true_temperature", [0.5, 1.0, 2.5])
def test_temperature_fit_recovers_the_distortion(true_temperature: float):
    logits, labels = simulated(40_000, seed=1)
    fitted = fit_temperature(logits * true_temperature, labels)
    assert fitted == pytest.approx(true_temperature, rel=0.05)


def test_temperature_lowers_nll_and_ece_of_an_overconfident_model():
    logits, labels = simulated(20_000, seed=2)
    overconfident = 3.0 * logits
    t = fit_temperature(overconfident, labels)
    assert nll(overconfident, labels, t) < nll(overconfident, labels) - 0.05
    assert ece(expit(overconfident / t), labels) < ece(expit(overconfident), labels) / 2


def test_ece_of_calibrated_scores_is_small_and_of_constant_scores_is_the_gap():
    logits, labels = simulated(50_000, seed=3)
    assert ece(expit(logits), labels) < 0.02
    assert ece(np.full(1000, 0.9), np.r_[np.ones(500), np.zeros(500)]) == pytest.approx(0.4)


def test_ensemble_is_the_weighted_mean_of_calibrated_probabilities():
    a, b = np.array([0.0, 2.0]), np.array([4.0, -2.0])
    p = ensemble_probability({"a": a, "b": b}, {"a": 1.0, "b": 2.0}, {"a": 3.0, "b": 1.0})
    assert p == pytest.approx((3 * expit(a) + expit(b / 2)) / 4)


@pytest.fixture(scope="module")
def scores() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(4)
    labels = (rng.uniform(size=3000) < 0.45).astype(int)
    return labels, np.where(labels == 1, rng.beta(5, 2, 3000), rng.beta(2, 5, 3000))


def _all_rates(labels, scores):
    return [(t, *rates(labels, scores, t)) for t in np.unique(scores)]


def test_screening_keeps_sensitivity_and_is_the_most_specific_such(scores):
    labels, s = scores
    op = operating_points(labels, s, guarantee="point")["screening"]
    assert op.sensitivity >= 0.95
    best = max(spec for _, sens, spec in _all_rates(labels, s) if sens >= 0.95)
    assert op.specificity == pytest.approx(best)


def test_high_specificity_keeps_specificity_and_is_the_most_sensitive_such(scores):
    labels, s = scores
    op = operating_points(labels, s, guarantee="point")["high_specificity"]
    assert op.specificity >= 0.95
    best = max(sens for _, sens, spec in _all_rates(labels, s) if spec >= 0.95)
    assert op.sensitivity == pytest.approx(best)


def test_balanced_maximizes_youden(scores):
    labels, s = scores
    op = operating_points(labels, s)["balanced"]
    best = max(sens + spec - 1 for _, sens, spec in _all_rates(labels, s))
    assert op.sensitivity + op.specificity - 1 == pytest.approx(best)


def _lower_bound_by_hand(labels, s, groups, threshold, positive, rounds=200, seed=0):
    """The 2.5 % bound of sensitivity (positive) or specificity at `threshold`, one resample at a time."""
    units = np.unique(groups, return_inverse=True)[1]
    n = units.max() + 1
    rng = np.random.default_rng(seed)
    draws = [
        np.bincount(rng.integers(0, n, n), minlength=n) for _ in range(rounds)
    ]  # n units with replacement
    cls = labels == (1 if positive else 0)
    hit = (s >= threshold) if positive else (s < threshold)
    values = [(w[units] * (cls & hit)).sum() / (w[units] * cls).sum() for w in draws]
    return np.percentile(values, 2.5)


def test_lower_ci_thresholds_keep_the_floor_on_the_bound_and_are_the_tightest(scores):
    labels, s = scores
    slides = np.arange(len(labels)) // 20
    points = operating_points(labels, s, groups=slides, rounds=200)
    candidates = np.unique(s)
    screening = points["screening"].threshold
    assert _lower_bound_by_hand(labels, s, slides, screening, positive=True) >= 0.95
    higher = candidates[candidates > screening][0]
    assert _lower_bound_by_hand(labels, s, slides, higher, positive=True) < 0.95
    high_spec = points["high_specificity"].threshold
    assert _lower_bound_by_hand(labels, s, slides, high_spec, positive=False) >= 0.95
    lower = candidates[candidates < high_spec][-1]
    assert _lower_bound_by_hand(labels, s, slides, lower, positive=False) < 0.95
    point = operating_points(labels, s, guarantee="point")
    assert screening <= point["screening"].threshold
    assert high_spec >= point["high_specificity"].threshold


def test_a_strong_model_keeps_the_thresholds_ordered_and_the_floors():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, 4000)
    s = np.where(labels == 1, rng.beta(12, 2, 4000), rng.beta(2, 12, 4000))
    # Both floors hold over a range of thresholds here: the two rules taken literally would cross.
    for guarantee in ("point", "lower_ci"):
        points = operating_points(labels, s, groups=np.arange(4000) // 40, guarantee=guarantee)
        thresholds = [points[name].threshold for name in ("screening", "balanced", "high_specificity")]
        assert thresholds == sorted(thresholds)
        assert points["screening"].sensitivity >= 0.95 and points["high_specificity"].specificity >= 0.95


def test_operating_points_report_their_own_rates(scores):
    labels, s = scores
    points = operating_points(labels, s)
    assert set(points) == set(OPERATING_POINTS)
    for p in points.values():
        assert (p.sensitivity, p.specificity) == rates(labels, s, p.threshold)
        assert 0 <= p.threshold <= 1 and p.criterion


def test_operating_points_need_both_classes():
    with pytest.raises(ValueError):
        operating_points(np.ones(10), np.linspace(0, 1, 10))


def test_bootstrap_interval_brackets_the_estimate(scores):
    labels, s = scores
    sens, spec = rates(labels, s, 0.5)
    ci = bootstrap_rates(labels, s, 0.5, rounds=300)
    assert ci["sensitivity"][0] < sens < ci["sensitivity"][1]
    assert ci["specificity"][0] < spec < ci["specificity"][1]
    accuracy = float(((s >= 0.5) == (labels == 1)).mean())
    assert ci["accuracy"][0] < accuracy < ci["accuracy"][1]


def test_bootstrap_resamples_groups_not_patches(scores):
    labels, s = scores
    sens, _ = rates(labels, s, 0.5)
    # One slide holding every patch: every resample is that slide, so no spread at all.
    ci = bootstrap_rates(labels, s, 0.5, groups=np.zeros(len(labels)), rounds=50)
    assert ci["sensitivity"] == pytest.approx((sens, sens))


def test_calibrate_produces_the_manifest_ensemble_rule():
    logits, labels = simulated(4000, seed=5)
    result = calibrate({"a": 2 * logits, "b": logits + 0.3}, labels, {"a": 1.0, "b": 2.0})
    assert isinstance(result.ensemble, EnsembleRule)
    assert result.members["a"].temperature == pytest.approx(2.0, rel=0.1)
    assert result.members["b"].weight == 2.0
    for key in ("auc", "nll_before", "nll_after", "ece_before", "ece_after"):
        assert key in result.members["a"].metrics
    assert result.members["a"].metrics["nll_after"] <= result.members["a"].metrics["nll_before"]
    assert {"auc", "nll", "ece_before", "ece_after", "screening_sensitivity_ci_low"} <= set(
        result.ensemble.metrics
    )


def test_calibrate_fits_prediction_sets_on_the_final_probabilities_unless_told_not_to():
    logits, labels = simulated(4000, seed=8)
    members, weights = {"a": 2 * logits, "b": logits + 0.3}, {"a": 1.0, "b": 2.0}
    result = calibrate(members, labels, weights, coverage=0.9)
    rule = result.ensemble.conformal
    assert rule is not None and rule.coverage == 0.9 and rule.calibration_patches == 4000
    p = ensemble_probability(
        members, {n: m.temperature for n, m in result.members.items()}, weights, result.ensemble.temperature
    )
    assert rule.quantile == conformal_quantile(p, labels, 0.9)  # on what serving computes, not raw logits
    assert 0.9 <= rule.calibration_coverage < 0.92
    assert calibrate(members, labels, weights, coverage=None).ensemble.conformal is None


def test_the_mean_of_calibrated_members_is_recalibrated_by_an_ensemble_temperature():
    # Two members that are each calibrated but disagree (independent noise on the true logit):
    # their mean is pulled toward 0.5, so the ensemble needs sharpening (T < 1).
    rng = np.random.default_rng(6)
    truth = rng.normal(0.0, 3.0, 20_000)
    labels = (rng.uniform(size=truth.size) < expit(truth)).astype(int)
    members = {name: truth + rng.normal(0.0, 2.0, truth.size) for name in ("a", "b")}
    weights = {"a": 1.0, "b": 1.0}
    plain = calibrate(members, labels, weights, recalibrate_ensemble=False)
    result = calibrate(members, labels, weights)
    assert plain.ensemble.temperature == 1.0
    assert result.ensemble.temperature < 0.95
    temperatures = {n: m.temperature for n, m in result.members.items()}
    mean = ensemble_probability(members, temperatures, weights)
    recalibrated = ensemble_probability(members, temperatures, weights, result.ensemble.temperature)
    assert result.ensemble.metrics["ece_members_calibrated"] == pytest.approx(ece(mean, labels))
    assert result.ensemble.metrics["ece_after"] == pytest.approx(ece(recalibrated, labels))
    assert result.ensemble.metrics["ece_after"] < result.ensemble.metrics["ece_members_calibrated"]
    assert result.ensemble.metrics["nll"] < plain.ensemble.metrics["nll"]
    # A monotone transform: the same patches fall on each side of every operating point.
    for name, point in result.ensemble.operating_points.items():
        before = plain.ensemble.operating_points[name]
        assert (point.sensitivity, point.specificity) == pytest.approx(
            (before.sensitivity, before.specificity), abs=2e-3
        )


def test_confident_members_still_get_a_finite_ensemble_temperature():
    # Trained members emit logits in the tens to hundreds, where the weighted mean rounds to 0 or 1.
    rng = np.random.default_rng(7)
    truth = rng.normal(0.0, 4.0, 4000)
    labels = (rng.uniform(size=truth.size) < expit(truth)).astype(int)
    members = {"a": 15 * truth, "b": 12 * truth + rng.normal(0.0, 5.0, truth.size)}
    result = calibrate(members, labels, {"a": 1.0, "b": 1.0})
    assert np.isfinite(result.ensemble.temperature)
    assert 0.05 < result.ensemble.temperature < 20
    assert all(np.isfinite(v) for v in result.ensemble.metrics.values())


def test_temperature_fit_refuses_non_finite_logits():
    with pytest.raises(ValueError, match="finite"):
        fit_temperature(np.array([1.0, np.inf]), np.array([0, 1]))
