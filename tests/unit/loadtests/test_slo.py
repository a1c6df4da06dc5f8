"""The SLO gate's plain functions: violations at and around the thresholds, per-name SLOs, the report."""

import json

import pytest

from loadtests.slo import Measured, Thresholds, Violation, evaluate, gate, parse_name_slo, report

LIMITS = Thresholds(p95_ms=100.0, p99_ms=200.0, error_ratio=0.01)


def measured(p95: float = 50.0, p99: float = 150.0, requests: int = 1000, failures: int = 0) -> Measured:
    return Measured("Aggregated", requests, failures, p95, p99)


def test_within_and_exactly_at_every_threshold_passes() -> None:
    assert evaluate(measured(), LIMITS) == []
    assert evaluate(measured(p95=100.0, p99=200.0, failures=10), LIMITS) == []


@pytest.mark.parametrize(
    ("figures", "slo"),
    [
        ({"p95": 100.1}, "p95_ms"),
        ({"p99": 200.5}, "p99_ms"),
        ({"failures": 11}, "error_ratio"),
    ],
)
def test_just_over_a_threshold_is_that_violation(figures: dict, slo: str) -> None:
    violations = evaluate(measured(**figures), LIMITS)
    assert [v.slo for v in violations] == [slo]
    assert violations[0].measured > violations[0].threshold == getattr(LIMITS, slo)
    assert slo in str(violations[0])


def test_every_violation_is_reported() -> None:
    violations = evaluate(measured(p95=101, p99=201, failures=500), LIMITS)
    assert {v.slo for v in violations} == {"p95_ms", "p99_ms", "error_ratio"}


def test_no_requests_is_a_violation_not_a_pass() -> None:
    assert [v.slo for v in evaluate(measured(requests=0, p95=0, p99=0), LIMITS)] == ["requests"]


def test_zero_thresholds_fail_any_measured_latency() -> None:
    strict = Thresholds(p95_ms=0.0, p99_ms=0.0, error_ratio=0.0)
    assert {v.slo for v in evaluate(measured(p95=1, p99=1), strict)} == {"p95_ms", "p99_ms"}


@pytest.mark.parametrize("bad", [{"p95_ms": -1.0}, {"error_ratio": float("nan")}, {"p99_ms": float("inf")}])
def test_thresholds_must_be_finite_and_non_negative(bad: dict) -> None:
    with pytest.raises(ValueError):
        Thresholds(**bad)


def test_parse_name_slo_overrides_only_the_given_keys() -> None:
    assert parse_name_slo("hot:p95=20,errors=0", LIMITS) == (
        "hot",
        Thresholds(p95_ms=20.0, p99_ms=200.0, error_ratio=0.0),
    )
    assert parse_name_slo("a:b:p99=5", LIMITS)[0] == "a:b"


@pytest.mark.parametrize("text", ["hot", ":p95=1", "hot:", "hot:p90=1", "hot:p95", "hot:p95=x"])
def test_parse_name_slo_rejects_malformed(text: str) -> None:
    with pytest.raises(ValueError):
        parse_name_slo(text, LIMITS)


def test_gate_checks_named_slos_and_exceptions() -> None:
    hot = Measured("hot", 500, 0, 30.0, 40.0)
    names = {"hot": Thresholds(p95_ms=20.0, p99_ms=50.0, error_ratio=0.0), "colt": LIMITS}
    violations = gate(measured(), LIMITS, [hot], names, exceptions=2)
    assert {(v.name, v.slo) for v in violations} == {
        ("hot", "p95_ms"),
        ("colt", "requests"),  # a misspelled name never passes silently
        ("locustfile", "exceptions"),
    }
    assert gate(measured(), LIMITS, [hot], {"hot": LIMITS}) == []


def test_report_is_json_with_thresholds_figures_and_verdict() -> None:
    total = measured(p95=120)
    violations = evaluate(total, LIMITS)
    document = json.loads(json.dumps(report(total, LIMITS, violations, extra={"rps": 12.5})))
    assert document["passed"] is False
    assert document["thresholds"] == {"p95_ms": 100.0, "p99_ms": 200.0, "error_ratio": 0.01}
    assert document["measured"]["p95_ms"] == 120 and document["measured"]["error_ratio"] == 0.0
    assert [v["slo"] for v in document["violations"]] == ["p95_ms"]
    assert document["violations"][0]["message"] == str(Violation("Aggregated", "p95_ms", 100.0, 120.0))
    assert document["rps"] == 12.5
    assert report(measured(), LIMITS, [])["passed"] is True
