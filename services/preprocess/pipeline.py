"""From uploaded bytes to a normalized batch with one metadata entry per upload."""

import asyncio
from dataclasses import dataclass

import numpy as np

from pcam_core.contract import INPUT_SHAPE
from pcam_core.errors import ImageRejected
from pcam_core.problems import item_error
from pcam_core.release import ReleaseManifest
from pcam_core.wire import AcceptedItem, Batch, FrameItem, RejectedItem
from services.preprocess.decode import decode_patch
from services.preprocess.stain import MacenkoNormalizer


def preprocess_uploads(uploads: list[bytes], normalizer: MacenkoNormalizer, release_id: str) -> Batch:
    """Decode every upload, normalize the valid ones in one call; rejected ones become error items."""
    rejected: dict[int, RejectedItem] = {}
    patches: list[np.ndarray] = []
    for index, data in enumerate(uploads):
        try:
            patches.append(decode_patch(data))
        except ImageRejected as error:
            rejected[index] = RejectedItem(index=index, error=item_error(error))
    images = np.stack(patches) if patches else np.empty((0, *INPUT_SHAPE), dtype=np.uint8)
    return _normalized(images, rejected, len(uploads), normalizer, release_id)


def preprocess_patches(images: np.ndarray, normalizer: MacenkoNormalizer, release_id: str) -> Batch:
    """Normalize patches that arrive as pixels (uint8 N x 96 x 96 x 3): nothing to decode, none rejected."""
    return _normalized(images, {}, len(images), normalizer, release_id)


def _normalized(
    images: np.ndarray,
    rejected: dict[int, RejectedItem],
    submitted: int,
    normalizer: MacenkoNormalizer,
    release_id: str,
) -> Batch:
    """The accepted patches normalized in one call, with one item per submitted one, in order."""
    result = normalizer.normalize(images)
    accepted = iter(zip(result.applied, result.reasons, result.tissue_fraction, strict=True))
    items: list[FrameItem] = []
    for index in range(submitted):
        if index in rejected:
            items.append(rejected[index])
            continue
        applied, reason, fraction = next(accepted)
        items.append(
            AcceptedItem(
                index=index,
                stain_normalized=bool(applied),
                stain_skip_reason=None if reason is None else str(reason),
                tissue_fraction=round(float(fraction), 4),
            )
        )
    return Batch(images=result.images, items=items, release=release_id)


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
