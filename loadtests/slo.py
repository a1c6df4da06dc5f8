"""The SLO gate as plain functions: measured figures and thresholds in, violations out.

The defaults follow the service's SLOs (docs/observability.md): 99 % of predictions under 1 s, at
most 0.5 % of requests failing. A load test counts every failed request (any non-200 answer or an
answer that does not validate), which is stricter than the 5xx ratio the alerts use.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, replace
from typing import Any

DEFAULT_P95_MS = 500.0
DEFAULT_P99_MS = 1000.0
DEFAULT_ERROR_RATIO = 0.005
AGGREGATED = "Aggregated"
"""The name Locust gives the totals over every request name."""


@dataclass(frozen=True)
class Thresholds:
    """Upper bounds, each inclusive: a measured value equal to its bound passes."""

    p95_ms: float = DEFAULT_P95_MS
    p99_ms: float = DEFAULT_P99_MS
    error_ratio: float = DEFAULT_ERROR_RATIO

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not (math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, not {value}")


@dataclass(frozen=True)
class Measured:
    """What one request name (or the aggregate) measured."""

    name: str
    requests: int
    failures: int
    p95_ms: float
    p99_ms: float

    @property
    def error_ratio(self) -> float:
        return self.failures / self.requests if self.requests else 0.0


@dataclass(frozen=True)
class Violation:
    name: str
    """The request name, or `Aggregated`."""
    slo: str
    """`p95_ms`, `p99_ms`, `error_ratio`, `requests` (nothing was measured) or `exceptions`."""
    threshold: float
    measured: float

    def __str__(self) -> str:
        if self.slo == "requests":
            return f"{self.name}: no requests were made, so no SLO could be checked"
        if self.slo == "exceptions":
            return f"{self.name}: {self.measured:g} exceptions in the load test's code"
        return f"{self.name}: {self.slo} {self.measured:g} > {self.threshold:g}"


def evaluate(measured: Measured, thresholds: Thresholds) -> list[Violation]:
    """The SLOs `measured` breaks; empty when it meets every one. No requests at all is a violation."""
    if measured.requests <= 0:
        return [Violation(measured.name, "requests", 1, measured.requests)]
    values = {"p95_ms": measured.p95_ms, "p99_ms": measured.p99_ms, "error_ratio": measured.error_ratio}
    return [
        Violation(measured.name, slo, getattr(thresholds, slo), value)
        for slo, value in values.items()
        if value > getattr(thresholds, slo)
    ]


def parse_name_slo(text: str, defaults: Thresholds) -> tuple[str, Thresholds]:
    """`NAME:p95=50,p99=100,errors=0.01` (any subset of the keys) -> (NAME, thresholds).

    Keys left out take their value from `defaults`.
    """
    name, sep, spec = text.rpartition(":")
    if not sep or not name:
        raise ValueError(f"expected NAME:key=value[,key=value], got {text!r}")
    keys = {"p95": "p95_ms", "p99": "p99_ms", "errors": "error_ratio"}
    changes: dict[str, float] = {}
    for item in filter(None, (s.strip() for s in spec.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in keys:
            raise ValueError(f"unknown SLO {item!r} in {text!r}: use p95=, p99= or errors=")
        changes[keys[key.strip()]] = float(value)
    if not changes:
        raise ValueError(f"no SLO given for {name!r}")
    return name, replace(defaults, **changes)


def gate(
    total: Measured,
    thresholds: Thresholds,
    per_name: Sequence[Measured] = (),
    name_thresholds: dict[str, Thresholds] | None = None,
    exceptions: int = 0,
) -> list[Violation]:
    """Every violation: of the aggregate, of each request name that has thresholds of its own, and
    `exceptions` raised in the load test's own code (its figures cannot be trusted then).

    A name with thresholds that made no request is a violation (a misspelled name must not pass).
    """
    violations = evaluate(total, thresholds)
    if exceptions > 0:
        violations.append(Violation("locustfile", "exceptions", 0, exceptions))
    by_name = {m.name: m for m in per_name}
    for name, limits in (name_thresholds or {}).items():
        violations += evaluate(by_name.get(name, Measured(name, 0, 0, 0.0, 0.0)), limits)
    return violations


def report(
    total: Measured,
    thresholds: Thresholds,
    violations: Iterable[Violation],
    per_name: Sequence[Measured] = (),
    name_thresholds: dict[str, Thresholds] | None = None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A JSON-ready summary: thresholds, measured values, violations and the verdict."""

    def figures(m: Measured) -> dict[str, Any]:
        return {**asdict(m), "error_ratio": m.error_ratio}

    violations = list(violations)
    return {
        "passed": not violations,
        "thresholds": asdict(thresholds),
        "name_thresholds": {n: asdict(t) for n, t in (name_thresholds or {}).items()},
        "measured": figures(total),
        "per_name": [figures(m) for m in per_name],
        "violations": [{**asdict(v), "message": str(v)} for v in violations],
        **(extra or {}),
    }
