"""Prometheus rules: valid, every alert unit-tested with promtool, only metrics the services export."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from services.common.metric_names import TRITON_SERIES, series_names

DEPLOY = Path(__file__).parents[3] / "deploy" / "prometheus"
RULES = DEPLOY / "pcam-rules.yml"
RULE_TESTS = [
    DEPLOY / "pcam-rules.test.yml",
    DEPLOY / "pcam-rules.weekly.test.yml",
]  # 1-minute, 10-minute steps


@pytest.fixture(scope="module")
def promtool() -> str:
    tool = shutil.which("promtool")
    assert tool, "promtool is needed: `make system-deps` (Debian package prometheus)"
    return tool


def _rules() -> list[dict]:
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_accepts_the_rules(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_passes_its_promtool_unit_tests(promtool: str) -> None:
    done = subprocess.run(
        [promtool, "test", "rules", *map(str, RULE_TESTS)],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    alerts = {rule["alert"] for rule in _rules() if "alert" in rule}
    cases = [
        case
        for path in RULE_TESTS
        for test in yaml.safe_load(path.read_text())["tests"]
        for case in test["alert_rule_test"]
    ]
    firing = {case["alertname"] for case in cases if case["exp_alerts"]}
    quiet = {case["alertname"] for case in cases if not case["exp_alerts"]}
    assert alerts == firing, f"alerts without a firing test: {alerts - firing}"
    assert alerts <= quiet, f"alerts without a quiet test: {alerts - quiet}"


def test_rules_only_use_metrics_the_platform_exports() -> None:
    recorded = {rule["record"] for rule in _rules() if "record" in rule}
    known = series_names() | TRITON_SERIES | recorded
    used = set()
    for rule in _rules():
        used |= set(re.findall(r"\b(?:pcam_[a-z0-9_]+|nv_[a-z0-9_]+|pcam:[a-z0-9_:]+)\b", rule["expr"]))
    assert used and used <= known, f"unknown metrics in rules: {used - known}"
