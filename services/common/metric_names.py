"""The one list of every Prometheus metric the services export: name, type, labels, help, exporters.

Each service's metrics.py builds its metrics from this table (`counter`, `gauge`, `histogram`), so a
metric cannot exist with a name, type or label set the table does not declare; a unit test checks the
registry against the table both ways. Dashboards and alert rules are checked against `series_names()`.

Names are the ones PromQL sees: a counter's name ends in `_total`; a histogram's series are
`<name>_bucket`, `<name>_sum` and `<name>_count`.

Error rates are not separate counters: `pcam_http_requests_total{status=~"5.."}` over all requests
(`status=~"4.."` for client faults).

Prediction probabilities and decisions are recorded by the ensemble, where the decision is made, so
they count computed answers once each: answers the gateway serves from its cache (or shares with an
identical in-flight computation) are not counted again. The gateway's share of those is
`pcam_gateway_cache_lookups_total{result="hit"}` and `pcam_gateway_singleflight_joins_total`.

Label values are bounded: routes are templates (`unmatched` for none), methods a fixed set,
members and operating points come from the release manifest, gRPC codes are `grpc.StatusCode` names.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from prometheus_client import Counter, Gauge, Histogram

Kind = Literal["counter", "gauge", "histogram"]
ALL_SERVICES = ("gateway", "preprocess", "ensemble")


@dataclass(frozen=True)
class MetricSpec:
    name: str
    kind: Kind
    labels: tuple[str, ...]
    help: str
    services: tuple[str, ...]
    """The services whose /metrics export it."""


METRICS: tuple[MetricSpec, ...] = (
    # Every service (services.common.metrics).
    MetricSpec(
        "pcam_http_requests_total",
        "counter",
        ("service", "route", "method", "status"),
        "HTTP requests handled, by route template and response status (errors: status 4xx/5xx). "
        "/metrics is not counted.",
        ALL_SERVICES,
    ),
    MetricSpec(
        "pcam_http_request_duration_seconds",
        "histogram",
        ("service", "route", "method", "status"),
        "HTTP request latency, from first byte in to last byte out. /metrics is not timed.",
        ALL_SERVICES,
    ),
    MetricSpec(
        "pcam_admission_in_flight",
        "gauge",
        ("service", "scope"),
        "Work this process holds now, by scope: requests (POSTs being handled), patches (the gateway's "
        "uncached patches queued for or inside a downstream batch).",
        ALL_SERVICES,
    ),
    MetricSpec(
        "pcam_admission_limit",
        "gauge",
        ("service", "scope"),
        "The bound on pcam_admission_in_flight (a setting); saturation is in flight over limit.",
        ALL_SERVICES,
    ),
    MetricSpec(
        "pcam_admission_refused_total",
        "counter",
        ("service", "scope"),
        "Requests refused at once with 503 overloaded (Retry-After) because the scope was at its limit.",
        ALL_SERVICES,
    ),
    MetricSpec(
        "pcam_release_rejected_total",
        "counter",
        ("service", "reason"),
        "Looks at a new release.json that did not change the serving release, by reason: unreadable (not "
        "a valid manifest) or not_taken_up (its models did not become ready, e.g. a corrupt model file; "
        "tried again every 10 s). The previous release keeps serving.",
        ("preprocess", "ensemble"),
    ),
    MetricSpec(
        "pcam_release_info",
        "gauge",
        ("service", "release"),
        "1 for the release this process serves (the series of a replaced release is removed).",
        ("preprocess", "ensemble"),
    ),
    # Gateway (services.gateway.metrics).
    MetricSpec(
        "pcam_gateway_cache_lookups_total",
        "counter",
        ("result",),
        "Result cache lookups per distinct image: hit; miss (absent or unreadable); bypass (not "
        "looked up: cache=false, or the Redis breaker is open); error (the Redis read failed).",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_cache_local_hits_total",
        "counter",
        (),
        "Of the cache hits, those answered from the gateway process's own memory without asking Redis.",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_redis_skipped_total",
        "counter",
        ("use", "reason"),
        "Redis calls the request went on without, by use (cache_read, cache_write, rate_limit) and "
        "reason (breaker_open: not attempted; error: failed or timed out).",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_breaker_open",
        "gauge",
        ("dependency",),
        "1 while the circuit breaker skips the dependency.",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_singleflight_joins_total",
        "counter",
        (),
        "Images answered by joining an identical computation already in flight in this process.",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_batch_size",
        "histogram",
        (),
        "Patches per batch the gateway formed for preprocess and the ensemble (micro-batching: the "
        "uncached patches of concurrent requests with the same options go together).",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_batch_wait_seconds",
        "histogram",
        (),
        "Time each uncached patch waited in the gateway for its batch to leave (0 while the "
        "downstream has room: a lone request waits for nothing).",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_auth_failures_total",
        "counter",
        ("reason",),
        "Requests refused by API key checks.",
        ("gateway",),
    ),
    MetricSpec("pcam_gateway_rate_limited_total", "counter", (), "Requests refused with 429.", ("gateway",)),
    MetricSpec(
        "pcam_gateway_reviews_total",
        "counter",
        ("review",),
        "Patch results computed (not cache hits), by review: none (no flag), flagged (flags, label "
        "given) or abstained (flags, label withheld at the request's abstain=true). The flagged "
        'fraction is review!="none" over all.',
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_flags_total",
        "counter",
        ("flag",),
        "Review flags raised on computed patch results, by flag (pcam_core.flags.FLAGS); a patch may "
        "raise several.",
        ("gateway",),
    ),
    MetricSpec(
        "pcam_gateway_release_validation_flagged_ratio",
        "gauge",
        (),
        "Share of the serving release's validation patches with a flag (without tta), from its "
        "release.json: the flagged fraction expected of in-distribution traffic (0: no review rules).",
        ("gateway",),
    ),
    # Preprocess (services.preprocess.metrics).
    MetricSpec(
        "pcam_preprocess_normalizations_total",
        "counter",
        ("outcome", "reason"),
        "Accepted patches by stain-normalization outcome (applied, or skipped with its reason).",
        ("preprocess",),
    ),
    MetricSpec(
        "pcam_preprocess_rejected_images_total",
        "counter",
        ("kind",),
        "Uploads rejected, by problem type.",
        ("preprocess",),
    ),
    MetricSpec(
        "pcam_preprocess_batch_seconds",
        "histogram",
        (),
        "Decode + normalize time per request batch.",
        ("preprocess",),
    ),
    MetricSpec(
        "pcam_preprocess_tissue_fraction",
        "histogram",
        (),
        "Tissue fraction (0..1) of each accepted patch.",
        ("preprocess",),
    ),
    # Ensemble (services.ensemble.metrics).
    MetricSpec(
        "pcam_ensemble_triton_call_duration_seconds",
        "histogram",
        ("member", "call"),
        "Latency of each Triton call attempt (retries are separate attempts), by member and call "
        "(infer, config), failed attempts included.",
        ("ensemble",),
    ),
    MetricSpec(
        "pcam_ensemble_triton_errors_total",
        "counter",
        ("member", "call", "code"),
        "Failed Triton call attempts by member, call and gRPC status code (UNKNOWN: no or "
        "unrecognized status, e.g. a local client error).",
        ("ensemble",),
    ),
    MetricSpec(
        "pcam_ensemble_prediction_probability",
        "histogram",
        (),
        "Calibrated ensemble probability of each patch answered (computed answers only; gateway cache "
        "hits are not counted).",
        ("ensemble",),
    ),
    MetricSpec(
        "pcam_ensemble_prediction_uncertainty",
        "histogram",
        ("tta",),
        "Uncertainty of each patch answered: the spread (std) of the member probabilities, across the "
        "8 views too with TTA (tta=true|false; computed answers only).",
        ("ensemble",),
    ),
    MetricSpec(
        "pcam_ensemble_decisions_total",
        "counter",
        ("operating_point", "label"),
        "Decisions by canonical operating point and label (0, 1, or abstained: flagged by the members "
        'with abstain=true); positive rate per operating point: label="1" over label=~"0|1".',
        ("ensemble",),
    ),
)

BY_NAME: dict[str, MetricSpec] = {spec.name: spec for spec in METRICS}

TRITON_SERIES = frozenset(
    {
        "nv_inference_request_success",
        "nv_inference_request_failure",
        "nv_inference_count",
        "nv_inference_exec_count",
        "nv_inference_request_duration_us",
        "nv_inference_queue_duration_us",
        "nv_inference_compute_input_duration_us",
        "nv_inference_compute_infer_duration_us",
        "nv_inference_compute_output_duration_us",
        "nv_gpu_utilization",
        "nv_gpu_memory_used_bytes",
        "nv_gpu_memory_total_bytes",
    }
)
"""Triton's own metrics (its /metrics, port 8002) that rules and dashboards may use."""


def series_names() -> frozenset[str]:
    """Every series name PromQL can select (histograms: _bucket, _sum, _count)."""
    names: set[str] = set()
    for spec in METRICS:
        if spec.kind == "histogram":
            names.update(f"{spec.name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
        else:
            names.add(spec.name)
    return frozenset(names)


def _spec(name: str, kind: Kind) -> MetricSpec:
    spec = BY_NAME[name]
    if spec.kind != kind:
        raise TypeError(f"{name} is declared a {spec.kind}, not a {kind}")
    return spec


def counter(name: str) -> Counter:
    spec = _spec(name, "counter")
    return Counter(spec.name, spec.help, spec.labels)


def gauge(name: str) -> Gauge:
    spec = _spec(name, "gauge")
    return Gauge(spec.name, spec.help, spec.labels)


def histogram(name: str, buckets: Sequence[float]) -> Histogram:
    spec = _spec(name, "histogram")
    return Histogram(spec.name, spec.help, spec.labels, buckets=buckets)
