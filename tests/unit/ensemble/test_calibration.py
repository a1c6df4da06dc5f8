import numpy as np

from services.ensemble.calibration import combine, decide, sigmoid


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


def test_sigmoid_is_stable_at_extremes() -> None:
    values = sigmoid(np.array([-1e4, 0.0, 1e4]))
    assert np.all(np.isfinite(values))
    np.testing.assert_allclose(values, [0.0, 0.5, 1.0])


def test_decision_includes_the_threshold() -> None:
    np.testing.assert_array_equal(decide(np.array([0.29, 0.3, 0.31]), 0.3), [0, 1, 1])


def test_answer_applies_the_named_operating_point(tmp_path) -> None:
    from services.ensemble.answer import answer
    from tests.unit.common.release_fixture import write_test_release

    release = write_test_release(tmp_path)
    response = answer(np.array([[-3.0], [0.0], [3.0]], dtype=np.float32), release, "screening")
    assert response.release == release.release_id and response.operating_point == "screening"
    assert [r.label for r in response.results] == [0, 1, 1]  # threshold 0.5, sigmoid(0) == 0.5
    assert response.results[2].members == {"m1": sigmoid(np.array(3.0)).item()}
