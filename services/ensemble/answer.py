"""The ensemble's answer for a batch: calibrated probabilities and decisions at an operating point."""

from collections.abc import Sequence

import numpy as np

from services.common.inference import EnsemblePrediction, Explanation, InferResponse
from services.common.release import ReleaseManifest
from services.ensemble.calibration import combine_release, combine_views, decide


def answer(
    logits: np.ndarray,
    release: ReleaseManifest,
    operating_point: str,
    *,
    members: Sequence[str] | None = None,
    explanations: Sequence[Explanation] | None = None,
) -> InferResponse:
    """The response for (N, K) member logits, or (V, N, K) logits of V TTA views per patch.

    `members` names the K columns when some members did not answer (default: all, in manifest order);
    the answer is then marked degraded and lists the missing members.
    """
    point = release.ensemble.operating_points[operating_point]
    names = [m.name for m in release.members] if members is None else list(members)
    if logits.ndim == 3:
        views, output = len(logits), combine_views(logits, release, names)
    else:
        views, output = 1, combine_release(logits, release, names)
    labels = decide(output.probability, point.threshold)
    explained = explanations or [None] * len(labels)
    results = [
        EnsemblePrediction(
            probability=float(probability),
            label=int(label),
            uncertainty=float(uncertainty),
            members=dict(zip(names, map(float, member_probabilities), strict=True)),
            tta_views=views,
            explanation=explanation,
        )
        for probability, label, uncertainty, member_probabilities, explanation in zip(
            output.probability,
            labels,
            output.uncertainty,
            output.member_probabilities,
            explained,
            strict=True,
        )
    ]
    missing = [m.name for m in release.members if m.name not in names]
    return InferResponse(
        release=release.release_id,
        operating_point=operating_point,
        threshold=point.threshold,
        degraded=bool(missing),
        missing_members=missing,
        results=results,
    )
