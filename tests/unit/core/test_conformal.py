"""Split-conformal prediction sets: the quantile's definition, sets never empty, coverage on a fresh
split drawn apart from the calibration split, and where served answers carry them."""

import math

import numpy as np
import pytest

from pcam_core.conformal import as_lists, conformal_quantile, prediction_sets
from pcam_core.release import ConformalRule, ReleaseManifest
from pcam_core.rule import combine_release
from pcam_core.serving import answer
from tests.unit.ensemble.fakes import release_with
from training.calibrate import fit_conformal
from training.metrics import Bootstrap, interval


def calibrated_split(n: int, separation: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels and calibrated probabilities of a model whose logit is separation * (2y - 1) + N(0, 1):
    p = P(y = 1 | logit) exactly, so the probabilities are calibrated by construction."""
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    logit = separation * (2 * labels - 1) + rng.normal(size=n)
    prior = np.log(0.4 / 0.6)
    probability = 1 / (1 + np.exp(-(2 * separation * logit + prior)))
    return labels, probability


def test_the_quantile_is_the_conformal_rank_of_the_true_labels_scores() -> None:
    labels, p = calibrated_split(999, 1.0, seed=1)
    scores = np.sort(np.where(labels == 1, 1 - p, p))
    rank = math.ceil((999 + 1) * 0.9)  # the 900th smallest
    assert conformal_quantile(p, labels, 0.9) == scores[rank - 1]


def test_too_small_a_split_for_the_coverage_gives_both_labels_everywhere() -> None:
    labels, p = calibrated_split(10, 1.0, seed=2)
    assert conformal_quantile(p, labels, 0.95) == 1.0  # ceil(11 * 0.95) = 11 > 10
    assert prediction_sets(p, 1.0).all()


def test_sets_hold_the_labels_within_the_quantile_and_are_never_empty() -> None:
    p = np.array([0.02, 0.3, 0.5, 0.7, 0.98])
    assert as_lists(prediction_sets(p, 0.75)) == [[0], [0, 1], [0, 1], [0, 1], [1]]
    # q < 0.5: near 0.5 no label qualifies, so the more probable one stands alone.
    assert as_lists(prediction_sets(p, 0.2)) == [[0], [0], [1], [1], [1]]


@pytest.mark.parametrize("coverage", [0.0, 1.0, 1.5])
def test_a_coverage_outside_0_1_is_refused(coverage: float) -> None:
    with pytest.raises(ValueError, match="coverage"):
        conformal_quantile(np.array([0.5]), np.array([1]), coverage)


@pytest.mark.parametrize("coverage", [0.8, 0.9, 0.95])
def test_coverage_on_a_fresh_split_matches_the_target(coverage: float) -> None:
    # A model whose accuracy is below the coverage: sets of both labels do the covering, the rule is
    # exact, and coverage on new patches is the target (within its sampling interval).
    labels, p = calibrated_split(4000, 0.6, seed=3)
    rule = fit_conformal(labels, p, coverage)
    assert rule.quantile > 0.5 and rule.calibration_coverage >= coverage
    fresh_labels, fresh_p = calibrated_split(40000, 0.6, seed=4)
    held = prediction_sets(fresh_p, rule.quantile)[np.arange(len(fresh_labels)), fresh_labels]
    totals = Bootstrap(len(held), rounds=400, seed=5).sums(np.stack([held, np.ones_like(held)], axis=1))
    low, high = interval(totals[:, 0] / totals[:, 1])
    # The guarantee is on the expectation over calibration splits: coverage <= E < coverage + 1/(n+1);
    # one calibration split moves it by about sqrt(c(1-c)/n), hence the margin.
    margin = 3 * math.sqrt(coverage * (1 - coverage) / 4000)
    assert low - margin <= coverage <= high + margin, (coverage, low, high)
    assert held.mean() < 1.0  # not the trivial rule: some sets exclude a label
    assert 0 < rule.both_labels_share < 1


def test_an_accurate_model_still_covers_with_single_labels_and_no_empty_sets() -> None:
    labels, p = calibrated_split(4000, 2.0, seed=6)
    rule = fit_conformal(labels, p, 0.9)
    assert rule.quantile < 0.5  # more accurate than the coverage asks: some patches would get no label
    fresh_labels, fresh_p = calibrated_split(40000, 2.0, seed=7)
    sets = prediction_sets(fresh_p, rule.quantile)
    assert sets.any(axis=1).all() and not sets.all(axis=1).any()
    assert sets[np.arange(len(fresh_labels)), fresh_labels].mean() >= 0.9


def with_rule(release: ReleaseManifest, quantile: float) -> ReleaseManifest:
    rule = ConformalRule(
        coverage=0.9,
        quantile=quantile,
        calibration_patches=100,
        calibration_coverage=0.9,
        both_labels_share=0.2,
    )
    return release.model_copy(update={"ensemble": release.ensemble.model_copy(update={"conformal": rule})})


def test_answers_carry_sets_where_the_rule_was_fitted_and_none_elsewhere(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0), ("b", 1.0, 1.0))
    ruled = with_rule(release, 0.8)
    logits = np.array([[-3.0, -2.0], [0.0, 0.5], [3.0, 2.5]])
    sets = [r.prediction_set for r in answer(logits, ruled, "balanced").results]
    assert sets == [[0], [0, 1], [1]]
    assert sets == as_lists(prediction_sets(combine_release(logits, ruled).probability, 0.8))
    # Fitted on the whole ensemble at one view: no set for TTA views or a degraded answer.
    tta = answer(np.stack([logits] * 8), ruled, "balanced")
    degraded = answer(logits[:, :1], ruled, "balanced", members=["a"])
    unruled = answer(logits, release, "balanced")
    for response in (tta, degraded, unruled):
        assert [r.prediction_set for r in response.results] == [None] * 3
