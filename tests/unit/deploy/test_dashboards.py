"""Grafana dashboards: valid JSON, unique ids, and only metrics the platform exports (by name)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from services.common.metric_names import TRITON_SERIES, series_names

DASHBOARDS = sorted((Path(__file__).parents[3] / "deploy" / "grafana" / "dashboards").glob("*.json"))


def test_there_are_the_three_dashboards() -> None:
    assert [p.stem for p in DASHBOARDS] == ["pcam-model", "pcam-overview", "pcam-triton"]


@pytest.mark.parametrize("path", DASHBOARDS, ids=lambda p: p.stem)
def test_a_dashboard_uses_only_exported_metrics(path: Path) -> None:
    dashboard = json.loads(path.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert dashboard["uid"] == path.stem and len(set(ids)) == len(ids)
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:pcam_[a-z0-9_]+|nv_[a-z0-9_]+)\b", target["expr"])
    }
    assert used and used <= series_names() | TRITON_SERIES, used - (series_names() | TRITON_SERIES)
