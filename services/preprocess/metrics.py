"""Preprocess-specific metrics (HTTP metrics are shared: services.common.metrics).

Names, types and labels are declared in services.common.metric_names.
"""

from pcam_core import wire
from services.common.metric_names import counter, histogram
from services.common.metrics import ReleaseInfo

NORMALIZATIONS = counter("pcam_preprocess_normalizations_total")
REJECTED_IMAGES = counter("pcam_preprocess_rejected_images_total")
BATCH_LATENCY = histogram(
    "pcam_preprocess_batch_seconds",
    buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
)
TISSUE_FRACTION = histogram(
    "pcam_preprocess_tissue_fraction",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
RELEASE = ReleaseInfo("preprocess")


def record_batch(batch: wire.Batch) -> None:
    """Per item: rejected by problem kind, or normalized/skipped (with the reason) and its tissue fraction."""
    for item in batch.items:
        if isinstance(item, wire.RejectedItem):
            REJECTED_IMAGES.labels(item.error.kind).inc()
            continue
        if item.stain_normalized:
            NORMALIZATIONS.labels("applied", "").inc()
        else:
            NORMALIZATIONS.labels("skipped", item.stain_skip_reason).inc()
        TISSUE_FRACTION.observe(item.tissue_fraction)
