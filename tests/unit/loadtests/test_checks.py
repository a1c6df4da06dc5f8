"""Validation of the gateway's answers in the load tests."""

from loadtests.checks import check_batch, check_prediction, parse

RESULT = {"probability": 0.3, "label": 0, "cached": False}


def test_checks_accept_valid_answers_and_name_what_is_wrong() -> None:
    assert parse(200, b'{"probability": 0.3}') == ({"probability": 0.3}, None)
    assert parse(503, b'{"title": "Unavailable", "detail": "ensemble down"}')[1] == (
        "HTTP 503: Unavailable (ensemble down)"
    )
    assert parse(0, None, OSError("refused"))[1] == "no answer: refused"
    assert parse(200, b"<html>")[1] == "answer is not JSON"
    assert check_prediction(RESULT, expect_cached=False) is None
    assert check_prediction(RESULT, expect_cached=None) is None
    assert check_prediction(RESULT, expect_cached=True) == "expected a cache hit, got a computed answer"
    assert "outside" in check_prediction({**RESULT, "probability": 1.5}, None)
    assert "no probability" in check_prediction({**RESULT, "probability": True}, None)
    assert check_batch({"results": [RESULT, RESULT]}, 2, expect_cached=False) is None
    assert check_batch({"results": [RESULT]}, 2, False) == "1 results for 2 files"
    problem = {"type": "t", "title": "Unsupported", "status": 415, "detail": "d"}
    assert check_batch({"results": [RESULT, problem]}, 2, False) == "result 1: problem 415 Unsupported"
