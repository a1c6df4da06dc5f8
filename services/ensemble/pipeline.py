"""One inference request: the batch each member is sent, and how the answers become the response.

Everything a request needs from a member goes in one batch (split only at the model's max batch
size): the patches, or their 8 dihedral views with TTA, followed by the occluded copies with explain.
"""

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from services.common.inference import TTA_VIEWS, Explanation, InferResponse
from services.common.release import ReleaseManifest
from services.common.request_id import current_request_id
from services.ensemble import explain as occlusion
from services.ensemble.answer import answer
from services.ensemble.calibration import combine_release
from services.ensemble.metrics import record_answer
from services.ensemble.triton import MemberFailure, TritonMembers, TritonUnavailable
from services.ensemble.tta import dihedral_views

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Occlusion:
    """The occluding window of explanations, in pixels."""

    window: int = 16
    stride: int = 8


class NotEnoughMembers(RuntimeError):
    """Fewer members answered than the answer requires."""

    def __init__(self, failures: dict[str, MemberFailure], members: int, required: int) -> None:
        reasons = "; ".join(map(str, failures.values()))
        super().__init__(f"{required} of {members} members required, {len(failures)} failed: {reasons}")
        self.failures = failures

    @property
    def unavailable(self) -> bool:
        """True unless every failure was a malformed answer (which a retry would not fix)."""
        return not self.failures or any(isinstance(f, TritonUnavailable) for f in self.failures.values())


async def infer(
    members: TritonMembers,
    release: ReleaseManifest,
    images: np.ndarray,
    operating_point: str,
    *,
    tta: bool = False,
    explain: Occlusion | None = None,
    min_members: int | None = None,
) -> InferResponse:
    """The ensemble's response for uint8 (N, 96, 96, 3) patches.

    min_members: None requires every member; k allows a degraded answer from any k that answered.
    Raises NotEnoughMembers otherwise.
    """
    n, views = len(images), TTA_VIEWS if tta else 1
    parts = [dihedral_views(images).reshape(-1, *images.shape[1:]) if tta else images]
    if explain is not None:
        copies = await asyncio.to_thread(occlusion.occluded_copies, images, explain.window, explain.stride)
        parts.append(copies.reshape(-1, *images.shape[1:]))
    batch = np.concatenate(parts) if len(parts) > 1 else parts[0]

    everyone = len(release.members)
    required = everyone if min_members is None else min(min_members, everyone)
    answers = await members.try_logits(release.members, batch, required)
    if len(answers.logits) < required:
        raise NotEnoughMembers(answers.failures, everyone, required)
    names = list(answers.logits)
    logits = np.stack(list(answers.logits.values()), axis=1)
    if answers.failures:
        logger.warning(
            "degraded answer (request %s): %d of %d members; missing %s",
            current_request_id(),
            len(names),
            everyone,
            "; ".join(map(str, answers.failures.values())),
        )

    base = logits[: views * n].reshape(views, n, -1)
    explanations = None
    if explain is not None:
        explanations = await asyncio.to_thread(
            _explanations, images, base[0], logits[views * n :], release, names, explain
        )
    response = answer(
        base if tta else base[0], release, operating_point, members=names, explanations=explanations
    )
    record_answer(response)  # here, where the ensemble decides: cached answers are never counted
    return response


def _explanations(
    images: np.ndarray,
    logits: np.ndarray,
    occluded_logits: np.ndarray,
    release: ReleaseManifest,
    members: Sequence[str],
    spec: Occlusion,
) -> list[Explanation]:
    """Per patch: baseline and occluded probabilities through the serving rule, grid and overlay.

    The baseline is the unaugmented patch's probability even with TTA: the occluded copies are not
    augmented (8x the work), and the grid must compare like with like.
    """
    baseline = combine_release(logits, release, members).probability
    occluded = combine_release(occluded_logits, release, members).probability.reshape(len(images), -1)
    shape = occlusion.grid_shape(images.shape[1], spec.window, spec.stride)
    grids = occlusion.sensitivity(baseline, occluded, shape)
    return [
        occlusion.explanation(image, float(p), grid, spec.window, spec.stride)
        for image, p, grid in zip(images, baseline, grids, strict=True)
    ]
