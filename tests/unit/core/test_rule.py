import numpy as np
import pytest

from pcam_core.rule import (
    combine,
    combine_release,
    combine_views,
    decide,
    ensemble_logit,
    sigmoid,
)


def test_temperatures_scale_each_member_before_averaging() -> None:
    logits = np.array([[2.0, -1.0], [0.0, 4.0]], dtype=np.float32)
    output = combine(logits, [2.0, 0.5], [1.0, 1.0])
    expected = np.stack([sigmoid(logits[:, 0] / 2.0), sigmoid(logits[:, 1] / 0.5)], axis=1)
    np.testing.assert_allclose(output.member_probabilities, expected)
    np.testing.assert_allclose(output.probability, expected.mean(axis=1))
    np.testing.assert_allclose(output.uncertainty, expected.std(axis=1))


def test_weights_are_normalized() -> None:
    logits = np.array([[10.0, -10.0]])
    output = combine(logits, [1.0, 1.0], [3.0, 1.0])
    assert (
        abs(output.probability[0] - (0.75 * sigmoid(np.array(10.0)) + 0.25 * sigmoid(np.array(-10.0))))
        < 1e-12
    )


def test_ensemble_temperature_rescales_the_logit_of_the_mean() -> None:
    logits = np.array([[2.0, -1.0], [0.5, 3.0], [40.0, 40.0]])
    mean = combine(logits, [1.5, 0.8], [1.0, 2.0]).probability
    output = combine(logits, [1.5, 0.8], [1.0, 2.0], ensemble_temperature=0.5)
    np.testing.assert_allclose(output.probability[:2], sigmoid(np.log(mean[:2] / (1 - mean[:2])) / 0.5))
    assert output.probability[2] == 1.0  # a mean of exactly 1 stays 1, without NaN
    np.testing.assert_array_equal(np.argsort(output.probability), np.argsort(mean))  # order kept
    np.testing.assert_allclose(
        output.member_probabilities, combine(logits, [1.5, 0.8], [1.0, 2.0]).member_probabilities
    )


def test_combine_release_applies_the_manifest_rule(tmp_path) -> None:
    from tests.unit.common.release_fixture import write_test_release

    release = write_test_release(tmp_path)
    release = release.model_copy(
        update={"ensemble": release.ensemble.model_copy(update={"temperature": 2.0})}
    )
    logits = np.array([[1.0], [-2.0]])
    np.testing.assert_allclose(combine_release(logits, release).probability, sigmoid(logits[:, 0] / 2.0))


def test_sigmoid_is_stable_at_extremes() -> None:
    values = sigmoid(np.array([-1e4, 0.0, 1e4]))
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0])


def test_decision_includes_the_threshold() -> None:
    np.testing.assert_array_equal(decide(np.array([0.29, 0.3, 0.31]), 0.3), [0, 1, 1])


def test_answer_applies_the_named_operating_point(tmp_path) -> None:
    from pcam_core.serving import answer
    from tests.unit.common.release_fixture import write_test_release

    release = write_test_release(tmp_path)
    response = answer(np.array([[-3.0], [0.0], [3.0]], dtype=np.float32), release, "screening")
    assert response.release == release.release_id and response.operating_point == "screening"
    assert [r.label for r in response.results] == [0, 1, 1]  # threshold 0.5, sigmoid(0) == 0.5
    assert response.results[2].members == {"m1": sigmoid(np.array(3.0)).item()}


def test_ensemble_logit_is_the_logit_of_the_mean_and_stays_finite_when_the_mean_saturates() -> None:
    logits = np.array([[2.0, -1.0], [0.5, 3.0], [80.0, 120.0], [-70.0, -180.0]])
    mean = combine(logits, [1.0, 2.0], [1.0, 3.0]).probability
    z = ensemble_logit(logits, [1.0, 2.0], [1.0, 3.0])
    unsaturated = [0, 1, 3]
    m = mean[unsaturated]
    np.testing.assert_allclose(z[unsaturated], np.log(m / (1 - m)), rtol=1e-9)
    assert mean[2] == 1.0  # float64 cannot tell this mean from certainty ...
    assert np.isfinite(z[2]) and z[2] > 60  # ... the log-space logit can


def test_tta_averages_the_views_and_spreads_over_views_and_members(tmp_path) -> None:
    from tests.unit.common.release_fixture import write_test_release

    release = write_test_release(tmp_path)
    view_logits = np.random.default_rng(0).normal(size=(8, 3, 1))
    out = combine_views(view_logits, release)
    per_view = [combine_release(v, release) for v in view_logits]
    np.testing.assert_allclose(out.probability, np.mean([v.probability for v in per_view], axis=0))
    np.testing.assert_allclose(out.uncertainty, sigmoid(view_logits[:, :, 0]).std(axis=0))


def test_a_subset_of_members_renormalizes_their_weights_and_keeps_the_ensemble_temperature(tmp_path) -> None:
    from tests.unit.ensemble.fakes import release_with

    release = release_with(tmp_path, ("a", 1.0, 1.0), ("b", 2.0, 3.0), ("c", 0.5, 2.0), temperature=1.7)
    logits = np.random.default_rng(0).normal(size=(5, 3))
    subset = combine_release(logits[:, [0, 2]], release, ["a", "c"])
    expected = combine(logits[:, [0, 2]], [1.0, 0.5], [1 / 3, 2 / 3], ensemble_temperature=1.7)
    np.testing.assert_allclose(subset.probability, expected.probability)
    np.testing.assert_allclose(
        combine_release(logits, release, ["a", "b", "c"]).probability,
        combine_release(logits, release).probability,
    )
    views = combine_views(logits[None, :, [1]], release, ["b"])
    np.testing.assert_allclose(views.probability, combine_release(logits[:, [1]], release, ["b"]).probability)
    with pytest.raises(ValueError, match="not members"):
        combine_release(logits[:, :1], release, ["z"])
    with pytest.raises(ValueError, match="2 logit columns for 3 members"):
        combine_release(logits[:, :2], release)
