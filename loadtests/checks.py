"""Validation of the gateway's answers: None when an answer is right, else why it is not."""

from __future__ import annotations

import json
from typing import Any


def parse(status: int | None, body: bytes | str | None, error: object = None) -> tuple[Any, str | None]:
    """The JSON of a 200 answer, or the reason the request failed (status, problem title and detail)."""
    if status != 200:
        if not status:
            return None, f"no answer: {error or 'connection failed'}"
        detail = ""
        try:
            problem = json.loads(body or b"")
            detail = f": {problem.get('title', '')} ({problem.get('detail', '')})"
        except (ValueError, AttributeError):
            pass
        return None, f"HTTP {status}{detail}"
    try:
        return json.loads(body or b""), None
    except ValueError:
        return None, "answer is not JSON"


def check_prediction(result: Any, expect_cached: bool | None) -> str | None:
    """A `Prediction`: `probability` in [0, 1], `label` 0/1, and `cached` as expected (None: either)."""
    if not isinstance(result, dict):
        return f"not a prediction: {str(result)[:200]}"
    probability = result.get("probability")
    if isinstance(probability, bool) or not isinstance(probability, int | float):
        return f"no probability in {str(result)[:200]}"
    if not 0.0 <= probability <= 1.0:
        return f"probability {probability} outside [0, 1]"
    if result.get("label") not in (0, 1):
        return f"label {result.get('label')!r} is not 0 or 1"
    cached = result.get("cached")
    if not isinstance(cached, bool):
        return "no cached flag"
    if expect_cached is not None and cached is not expect_cached:
        return "expected a cache hit, got a computed answer" if expect_cached else "unexpected cache hit"
    return None


def check_batch(payload: Any, count: int, expect_cached: bool | None) -> str | None:
    """A batch answer: exactly `count` results, each a valid prediction (an error entry fails it)."""
    results = payload.get("results") if isinstance(payload, dict) else None
    if not isinstance(results, list):
        return "no results list"
    if len(results) != count:
        return f"{len(results)} results for {count} files"
    for i, result in enumerate(results):
        if isinstance(result, dict) and "probability" not in result and "status" in result:
            return f"result {i}: problem {result.get('status')} {result.get('title', '')}"
        if reason := check_prediction(result, expect_cached):
            return f"result {i}: {reason}"
    return None
