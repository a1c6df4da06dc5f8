"""Gateway-specific Prometheus metrics (HTTP metrics are shared: services.common.metrics).

Names, types and labels are declared in services.common.metric_names.
"""

from collections.abc import Iterable

from pcam_core.schemas import PatchResult
from services.common.metric_names import counter, gauge, histogram

CACHE_LOOKUPS = counter("pcam_gateway_cache_lookups_total")
"""result: hit, miss, bypass or error (see CacheRead)."""
LOCAL_HITS = counter("pcam_gateway_cache_local_hits_total")
REDIS_SKIPPED = counter("pcam_gateway_redis_skipped_total")
"""use: cache_read, cache_write, rate_limit; reason: breaker_open or error."""
BREAKER_OPEN = gauge("pcam_gateway_breaker_open")
SINGLEFLIGHT_JOINS = counter("pcam_gateway_singleflight_joins_total")
BATCH_SIZE = histogram("pcam_gateway_batch_size", (1, 2, 4, 8, 16, 32, 64, 128, 256))
BATCH_WAIT = histogram(
    "pcam_gateway_batch_wait_seconds", (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
)
AUTH_FAILURES = counter("pcam_gateway_auth_failures_total")
RATE_LIMITED = counter("pcam_gateway_rate_limited_total")
REVIEWS = counter("pcam_gateway_reviews_total")
FLAGS_RAISED = counter("pcam_gateway_flags_total")
EXPECTED_FLAGGED = gauge("pcam_gateway_release_validation_flagged_ratio")


def redis_skipped(use: str, breaker_open: bool) -> None:
    """One Redis call the request went on without: not attempted (breaker open) or failed."""
    REDIS_SKIPPED.labels(use, "breaker_open" if breaker_open else "error").inc()


def cache_lookups(result: str, images: int = 1) -> None:
    """`images` distinct images looked up in the cache with that result (hit, miss, bypass, error)."""
    if images:
        CACHE_LOOKUPS.labels(result).inc(images)


def record_reviews(results: Iterable[PatchResult]) -> None:
    """Each computed result's review outcome and the flags it raised."""
    for result in results:
        review = "none" if not result.flags else "abstained" if result.label is None else "flagged"
        REVIEWS.labels(review).inc()
        for flag in result.flags:
            FLAGS_RAISED.labels(flag).inc()
