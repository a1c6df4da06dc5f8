"""Preprocess-specific metrics."""

from prometheus_client import Counter, Histogram

NORMALIZATIONS = Counter(
    "pcam_preprocess_normalizations_total",
    "Patches by stain-normalization outcome.",
    ["outcome", "reason"],
)
REJECTED_IMAGES = Counter("pcam_preprocess_rejected_images_total", "Uploads rejected.", ["kind"])
BATCH_LATENCY = Histogram(
    "pcam_preprocess_batch_seconds",
    "Decode + normalize time per request batch.",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
