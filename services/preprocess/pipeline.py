"""From uploaded bytes to a normalized batch with one metadata entry per upload."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import numpy as np

from pcam_core.contract import INPUT_SHAPE
from pcam_core.errors import ImageRejected
from pcam_core.problems import item_error
from pcam_core.release import ReleaseManifest, ReviewRules
from pcam_core.wire import AcceptedItem, Batch, FrameItem, RejectedItem
from services.preprocess.decode import decode_patch
from services.preprocess.quality import input_flags, measure
from services.preprocess.stain import MacenkoNormalizer


def preprocess_uploads(uploads: list[bytes], serving: Serving) -> Batch:
    """Decode every upload, normalize the valid ones in one call; rejected ones become error items."""
    rejected: dict[int, RejectedItem] = {}
    patches: list[np.ndarray] = []
    for index, data in enumerate(uploads):
        try:
            patches.append(decode_patch(data))
        except ImageRejected as error:
            rejected[index] = RejectedItem(index=index, error=item_error(error))
    images = np.stack(patches) if patches else np.empty((0, *INPUT_SHAPE), dtype=np.uint8)
    return _normalized(images, rejected, len(uploads), serving)


def preprocess_patches(images: np.ndarray, serving: Serving) -> Batch:
    """Normalize patches that arrive as pixels (uint8 N x 96 x 96 x 3): nothing to decode, none rejected."""
    return _normalized(images, {}, len(images), serving)


def _finite(value: float, digits: int = 4) -> float | None:
    return round(float(value), digits) if np.isfinite(value) else None


def _normalized(
    images: np.ndarray, rejected: dict[int, RejectedItem], submitted: int, serving: Serving
) -> Batch:
    """The accepted patches normalized and measured in one call each, one item per submitted one, in order."""
    normalizer = serving.normalizer
    result = normalizer.normalize(images)
    review = serving.review
    measures = measure(images, result, normalizer, review.stain if review is not None else None)
    accepted = iter(
        zip(
            result.applied,
            result.reasons,
            measures.tissue_fraction,
            measures.stain_distance,
            measures.off_stain_colour,
            measures.sharpness,
            input_flags(measures, review),
            strict=True,
        )
    )
    items: list[FrameItem] = []
    for index in range(submitted):
        if index in rejected:
            items.append(rejected[index])
            continue
        applied, reason, fraction, distance, off_colour, sharpness, flags = next(accepted)
        items.append(
            AcceptedItem(
                index=index,
                stain_normalized=bool(applied),
                stain_skip_reason=None if reason is None else str(reason),
                tissue_fraction=round(float(fraction), 4),
                stain_distance=_finite(distance),
                off_stain_colour=round(float(off_colour), 4),
                sharpness=round(float(sharpness), 3),
                flags=flags,
            )
        )
    return Batch(images=result.images, items=items, release=serving.release_id)


@dataclass(frozen=True)
class Serving:
    """The release being served, its normalizer and its review rules, swapped together as one object."""

    release_id: str
    normalizer: MacenkoNormalizer
    review: ReviewRules | None = None

    @classmethod
    def of(cls, release: ReleaseManifest) -> Serving:
        """What preprocessing needs of a release: its id, stain reference and review rules."""
        return cls(release.release_id, MacenkoNormalizer(release.stain_reference), release.review)


async def prepare(release: ReleaseManifest) -> Serving:
    """A normalizer for the release's stain reference, warmed up before it serves a request."""
    serving = Serving.of(release)
    # Compile (or load from numba's cache) the kernels now, not on the first request.
    await asyncio.to_thread(preprocess_patches, np.zeros((1, *INPUT_SHAPE), np.uint8), serving)
    return serving
