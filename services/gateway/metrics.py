"""Gateway-specific Prometheus metrics (HTTP metrics are shared: services.common.metrics)."""

from prometheus_client import Counter, Gauge

CACHE_LOOKUPS = Counter(
    "pcam_gateway_cache_lookups_total",
    "Result cache lookups per image: hit, miss, or skipped (cache=false or Redis bypassed).",
    ["result"],
)
REDIS_BYPASSED = Counter(
    "pcam_gateway_redis_bypassed_total",
    "Redis calls skipped or failed; the request went on without them (cache miss, rate limit open).",
    ["use"],
)
BREAKER_OPEN = Gauge(
    "pcam_gateway_breaker_open", "1 while the circuit breaker skips the dependency.", ["dependency"]
)
SINGLEFLIGHT_SHARED = Counter(
    "pcam_gateway_singleflight_shared_total",
    "Images answered by joining an identical computation already in flight in this process.",
)
AUTH_FAILURES = Counter("pcam_gateway_auth_failures_total", "Requests refused by API key checks.", ["reason"])
RATE_LIMITED = Counter("pcam_gateway_rate_limited_total", "Requests refused with 429.")
