"""metrics.md lists every metric of the one table, histograms with the buckets the services use."""

from prometheus_client import CollectorRegistry, Histogram

from docgen.metrics import histogram_buckets, metric_row
from services.common.metric_names import METRICS, TRITON_SERIES, MetricSpec
from tests.unit.docgen.pages import first_column, page


def test_every_declared_metric_is_listed() -> None:
    listed = first_column(page("metrics.md"))
    assert {f"`{spec.name}`" for spec in METRICS} <= listed


def test_every_listed_metric_is_declared() -> None:
    listed = first_column(page("metrics.md")) - {"Name", "|---|---|---|---|---|"}
    assert listed == {f"`{spec.name}`" for spec in METRICS}


def test_triton_series_are_listed() -> None:
    assert all(f"`{name}`" in page("metrics.md") for name in TRITON_SERIES)


def test_every_histogram_has_its_buckets() -> None:
    buckets = histogram_buckets()
    for spec in METRICS:
        if spec.kind == "histogram":
            assert buckets[spec.name], spec.name
            assert "buckets " in metric_row(spec, buckets)[1]


def test_buckets_are_read_from_the_histogram_objects() -> None:
    registry = CollectorRegistry()  # not the default one, whose pcam_ metrics must all be declared
    Histogram("pcam_docgen_test_seconds", "A test histogram.", buckets=(0.5, 2), registry=registry)
    assert histogram_buckets(registry) == {"pcam_docgen_test_seconds": [0.5, 2.0]}
    spec = MetricSpec("pcam_docgen_test_seconds", "histogram", ("a",), "Help | with a pipe.", ("gateway",))
    row = metric_row(spec, histogram_buckets(registry))
    assert row == [
        "`pcam_docgen_test_seconds`",
        "histogram<br>buckets 0.5, 2",
        "`a`",
        "gateway",
        "Help \\| with a pipe.",
    ]
