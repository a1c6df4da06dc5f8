"""docs/reference/metrics.md: every Prometheus metric the services export, from their one table."""

import importlib

from prometheus_client import REGISTRY, CollectorRegistry, Histogram

from docgen.markdown import banner, cell, code, table
from services.common.metric_names import ALL_SERVICES, METRICS, TRITON_SERIES, MetricSpec

SOURCE = "services/common/metric_names.py and the histograms the services register"
# The modules that create the services' metrics: the shared HTTP metrics and each service's own.
METRIC_MODULES = ("services.common.metrics", *(f"services.{service}.metrics" for service in ALL_SERVICES))


def histogram_buckets(registry: CollectorRegistry = REGISTRY) -> dict[str, list[float]]:
    """Upper bounds (without +Inf) of every registered pcam_ histogram, read from the objects themselves."""
    for module in METRIC_MODULES:
        importlib.import_module(module)  # creating the metrics registers them
    return {
        collector._name: [bound for bound in collector._upper_bounds if bound != float("inf")]  # noqa: SLF001
        for collector in list(registry._collector_to_names)  # noqa: SLF001 - no public listing
        if isinstance(collector, Histogram) and collector._name.startswith("pcam_")  # noqa: SLF001
    }


def _number(value: float) -> str:
    return f"{value:g}"


def metric_row(spec: MetricSpec, buckets: dict[str, list[float]]) -> list[str]:
    """One row: name, type (with a histogram's buckets), labels, exporters, help."""
    kind = spec.kind
    if spec.kind == "histogram":
        if spec.name not in buckets:
            raise LookupError(f"{spec.name} is not created by any of {METRIC_MODULES}")
        kind += "<br>buckets " + ", ".join(_number(bound) for bound in buckets[spec.name])
    exporters = "every service" if spec.services == ALL_SERVICES else ", ".join(spec.services)
    labels = ", ".join(code(label) for label in spec.labels) or "none"
    return [code(spec.name), kind, labels, exporters, cell(spec.help)]


def metrics_markdown() -> str:
    """The whole metrics page."""
    buckets = histogram_buckets()
    rows = [metric_row(spec, buckets) for spec in METRICS]
    triton = ", ".join(code(name) for name in sorted(TRITON_SERIES))
    return (
        banner(SOURCE) + "\n# Metrics\n\n"
        "What each service's `/metrics` exports. A counter's name ends in `_total`; a histogram's series "
        "are `<name>_bucket`, `<name>_sum` and `<name>_count`. Error rates are "
        '`pcam_http_requests_total{status=~"5.."}` over all requests.\n\n'
        + table(["Name", "Type", "Labels", "Exported by", "Help"], rows)
        + "\n## Triton\n\n"
        "Triton's own metrics (its `/metrics`, port 8002) that the alert rules and dashboards may use: "
        f"{triton}.\n"
    )
