"""The one table from domain errors to problems, and no status code chosen anywhere else."""

import ast
import inspect
from pathlib import Path

import pytest

from pcam_core import errors
from pcam_core.problems import (
    PROBLEM_TYPE_BASE,
    PROBLEM_TYPES,
    domain_error,
    item_error,
    problem_body,
    status_of,
)

ROOT = Path(__file__).parents[3]
STATUSES = frozenset(spec.status for spec in PROBLEM_TYPES.values())
SCANNED = ("pcam_core", "services", "training", "pcam_client")
ALLOWED = {
    "pcam_core/problems.py",  # the table
    "services/gateway/routes.py",  # route declarations: documented problems, readiness answers
    "services/gateway/routes_v2.py",
    "services/preprocess/routes.py",
    "services/ensemble/routes.py",
}


def _domain_errors() -> list[type[errors.PCamError]]:
    return [
        cls
        for _, cls in inspect.getmembers(errors, inspect.isclass)
        if issubclass(cls, errors.PCamError) and cls is not errors.PCamError
    ]


@pytest.mark.parametrize("error", _domain_errors(), ids=lambda cls: cls.__name__)
def test_every_kind_of_every_error_is_in_the_table(error: type[errors.PCamError]) -> None:
    assert error.KINDS, f"{error.__name__} names no kind"
    for kind in error.KINDS:
        spec = PROBLEM_TYPES[kind]
        assert spec.error is not None and issubclass(error, spec.error)
        assert 400 <= spec.status < 600 and spec.title


def test_a_body_carries_the_tables_status_type_and_title_and_comes_back() -> None:
    error = errors.ImageRejected("Received 10x10.", kind="wrong-size", position=3)
    body = problem_body(error)
    assert body == {
        "type": PROBLEM_TYPE_BASE + "wrong-size",
        "title": "Wrong image size",
        "status": 422,
        "detail": "Received 10x10.",
        "position": 3,
    }
    again = domain_error(body)
    assert type(again) is errors.ImageRejected and again.kind == "wrong-size" and status_of(again) == 422
    assert item_error(error).kind == "wrong-size"


def test_an_unknown_problem_from_a_dependency_is_a_bad_gateway() -> None:
    body = {"type": PROBLEM_TYPE_BASE + "teapot", "title": "t", "status": 418, "detail": "d"}
    assert isinstance(domain_error(body), errors.BadGateway)


def test_a_kind_outside_the_class_is_refused() -> None:
    with pytest.raises(ValueError, match="no kind"):
        errors.ImageRejected("x", kind="rate-limited")


def _status_literals(path: Path) -> list[int]:
    """Line numbers of int literals equal to a status of the table, outside docstrings and comments."""
    tree = ast.parse(path.read_text())
    return [
        node.lineno
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and type(node.value) is int and node.value in STATUSES
    ]


def test_no_status_code_outside_the_table_and_route_declarations() -> None:
    found = {
        f"{path.relative_to(ROOT)}:{line}"
        for package in SCANNED
        for path in (ROOT / package).rglob("*.py")
        if str(path.relative_to(ROOT)) not in ALLOWED
        for line in _status_literals(path)
    }
    assert not found, f"HTTP status literals outside pcam_core/problems.py and routes: {sorted(found)}"


def test_the_scan_finds_a_status_literal(tmp_path: Path) -> None:
    sample = tmp_path / "sample.py"
    sample.write_text("def f(response):\n    return response.status_code == 503\n")
    assert _status_literals(sample) == [2]
