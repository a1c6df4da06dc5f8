"""From uploaded bytes to a normalized batch with one metadata entry per upload."""

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np

from services.common.contract import INPUT_SHAPE
from services.common.release import ReleaseManifest
from services.common.wire import Batch
from services.preprocess.decode import ImageRejected, decode_patch
from services.preprocess.stain import MacenkoNormalizer


def preprocess_uploads(uploads: list[bytes], normalizer: MacenkoNormalizer, release_id: str) -> Batch:
    """Decode every upload, normalize the valid ones in one call; rejected ones become error items."""
    items: list[dict[str, Any]] = []
    patches: list[np.ndarray] = []
    for index, data in enumerate(uploads):
        try:
            patches.append(decode_patch(data))
            items.append({"index": index, "ok": True})
        except ImageRejected as rejected:
            items.append({"index": index, "ok": False, "error": rejected.to_dict()})
    images = np.stack(patches) if patches else np.empty((0, *INPUT_SHAPE), dtype=np.uint8)
    result = normalizer.normalize(images)
    accepted = (item for item in items if item["ok"])
    for item, applied, reason, fraction in zip(
        accepted, result.applied, result.reasons, result.tissue_fraction, strict=True
    ):
        item["stain_normalized"] = bool(applied)
        item["stain_skip_reason"] = None if reason is None else str(reason)
        item["tissue_fraction"] = round(float(fraction), 4)
    return Batch(images=result.images, items=items, meta={"release": release_id})


@dataclass(frozen=True)
class Serving:
    """The release being served and its normalizer, swapped together as one object."""

    release_id: str
    normalizer: MacenkoNormalizer


async def prepare(release: ReleaseManifest) -> Serving:
    """A normalizer for the release's stain reference, warmed up before it serves a request."""
    normalizer = MacenkoNormalizer(release.stain_reference)
    # Compile (or load from numba's cache) the kernels now, not on the first request.
    await asyncio.to_thread(normalizer.normalize, np.zeros((1, *INPUT_SHAPE), np.uint8))
    return Serving(release.release_id, normalizer)
