"""The ensemble's answer for a batch: calibrated probabilities and decisions at an operating point."""

import numpy as np

from services.common.inference import EnsemblePrediction, InferResponse
from services.common.release import ReleaseManifest
from services.ensemble.calibration import combine_release, decide


def answer(logits: np.ndarray, release: ReleaseManifest, operating_point: str) -> InferResponse:
    """Calibrated probabilities, decisions and uncertainty for (N, M) member logits."""
    point = release.ensemble.operating_points[operating_point]
    output = combine_release(logits, release)
    labels = decide(output.probability, point.threshold)
    names = [m.name for m in release.members]
    results = [
        EnsemblePrediction(
            probability=float(probability),
            label=int(label),
            uncertainty=float(uncertainty),
            members=dict(zip(names, map(float, member_probabilities), strict=True)),
        )
        for probability, label, uncertainty, member_probabilities in zip(
            output.probability, labels, output.uncertainty, output.member_probabilities, strict=True
        )
    ]
    return InferResponse(
        release=release.release_id,
        operating_point=operating_point,
        threshold=point.threshold,
        results=results,
    )
