"""The metric table is the one source of truth: what the services register is exactly what it declares."""

import json
import subprocess
import sys

import pytest
from prometheus_client import REGISTRY
from prometheus_client.metrics import MetricWrapperBase

import services.ensemble.app
import services.gateway.app
import services.preprocess.app  # noqa: F401 - importing the apps registers every metric they use
from services.common.metric_names import ALL_SERVICES, BY_NAME, METRICS, series_names


def registered() -> dict[str, tuple[str, tuple[str, ...]]]:
    """name (as PromQL sees it) -> (type, label names) of every pcam_ metric in the default registry."""
    found = {}
    for collector in list(REGISTRY._collector_to_names):  # noqa: SLF001 - the registry has no public listing
        if isinstance(collector, MetricWrapperBase) and collector._name.startswith("pcam_"):  # noqa: SLF001
            name = collector._name + ("_total" if collector._type == "counter" else "")  # noqa: SLF001
            found[name] = (collector._type, tuple(collector._labelnames))  # noqa: SLF001
    return found


def test_every_registered_metric_is_declared_and_every_declared_one_registered() -> None:
    assert set(registered()) == set(BY_NAME)


def test_registered_types_and_labels_are_the_declared_ones() -> None:
    for name, (kind, labels) in registered().items():
        assert (kind, labels) == (BY_NAME[name].kind, BY_NAME[name].labels), name


def test_names_follow_prometheus_conventions() -> None:
    assert len(BY_NAME) == len(METRICS)
    for spec in METRICS:
        assert spec.name.startswith("pcam_")
        assert spec.name.endswith("_total") == (spec.kind == "counter"), spec.name
        assert spec.help and set(spec.services) <= set(ALL_SERVICES) and spec.services
        assert "le" not in spec.labels and len(set(spec.labels)) == len(spec.labels)


def test_series_names_cover_histogram_series() -> None:
    names = series_names()
    assert "pcam_http_request_duration_seconds_bucket" in names
    assert "pcam_http_request_duration_seconds" not in names
    assert "pcam_http_requests_total" in names


@pytest.mark.parametrize("service", ALL_SERVICES)
def test_each_service_exports_the_metrics_declared_for_it(service: str) -> None:
    """A fresh interpreter per service, as in production: only that service's modules are imported.

    A shared module may register a family another service never records (pcam_release_info in the
    gateway): it is exported without any series, so it is not declared for that service.
    """
    code = (
        f"import json, services.{service}.app\n"
        "from prometheus_client import REGISTRY\n"
        "print(json.dumps({m.name: len(m.samples) for m in REGISTRY.collect() if m.name.startswith('pcam_')}))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    families = json.loads(out.splitlines()[-1])
    # collect() names counters without their _total suffix
    expected = {
        s.name.removesuffix("_total") if s.kind == "counter" else s.name
        for s in METRICS
        if service in s.services
    }
    assert expected <= set(families)
    assert {name: n for name, n in families.items() if name not in expected and n} == {}
