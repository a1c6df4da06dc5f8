"""Fitting a review flag's threshold at a rate, and applying it (pcam_core.review)."""

import numpy as np
import pytest

from pcam_core.flags import FLAGS, ordered
from pcam_core.review import fires, fit_rule, flag_lists


def test_a_rule_fires_on_the_rate_it_was_fitted_at_in_either_direction() -> None:
    scores = np.random.default_rng(0).permutation(np.arange(200.0))
    high = fit_rule(scores, 0.05)
    assert high.above and high.threshold == 189.0  # the 10 highest fire, 189 itself does not
    assert high.validation_rate == 0.05 and fires(high, scores).sum() == 10
    low = fit_rule(scores, 0.05, above=False)
    assert not low.above and low.threshold == 10.0
    assert set(scores[fires(low, scores)]) == set(range(10))


def test_fewer_fire_than_the_rate_allows_on_ties_never_more() -> None:
    scores = np.array([1.0] * 95 + [5.0] * 5)
    rule = fit_rule(scores, 0.03)  # three allowed, five tied at the top: none of them can fire
    assert rule.validation_rate == 0.0 and rule.threshold == 5.0


def test_nan_never_fires_and_infinity_always_does() -> None:
    scores = np.array([np.nan] * 10 + list(np.arange(88.0)) + [np.inf, np.inf])
    rule = fit_rule(scores, 0.05)  # five allowed: the two infinite ones and the three highest
    assert fires(rule, scores).sum() == 5
    assert not fires(rule, np.array([np.nan]))[0] and fires(rule, np.array([np.inf]))[0]
    crowded = fit_rule(np.array([np.inf] * 3 + [1.0, 2.0]), 0.2)  # infinite ones alone exceed the rate
    assert crowded.threshold == 2.0 and crowded.validation_rate == 0.6


def test_fitting_needs_scores_and_a_rate_below_one() -> None:
    with pytest.raises(ValueError, match="target_rate"):
        fit_rule(np.arange(3.0), 1.0)
    with pytest.raises(ValueError, match="validation scores"):
        fit_rule(np.array([]), 0.1)


def test_flags_are_listed_per_patch_in_one_order() -> None:
    fired = {FLAGS[5]: np.array([True, False, True]), FLAGS[0]: np.array([False, False, True])}
    assert flag_lists(fired, 3) == [[FLAGS[5]], [], [FLAGS[0], FLAGS[5]]]
    assert ordered([FLAGS[3], FLAGS[1], FLAGS[3]]) == [FLAGS[1], FLAGS[3]]
