"""The two ways to score a slide's patches: a gateway's tensor input, or a release in this process."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

from pcam_client import PCamClient
from pcam_client.tensor import PixelPredictions
from services.preprocess.pipeline import preprocess_patches
from training.predict import LocalPredictor, gateway_errors
from training.slides.scoring import Scorer


def gateway_scorer(client: PCamClient, operating_point: str, tta: bool = False, cache: bool = True) -> Scorer:
    """Patches through the gateway's tensor input (the client retries 429/503 after Retry-After)."""
    return lambda patches: client.predict_pixels(
        patches, operating_point=operating_point, tta=tta, cache=cache
    )


@contextmanager
def remote_scorer(
    url: str, api_key: str | None, operating_point: str, tta: bool = False, batch: int = 256
) -> Iterator[Scorer]:
    """A gateway scorer whose failures, after the client's retries, end the run with one line."""
    with PCamClient(url, api_key, max_batch=batch) as client:
        score = gateway_scorer(client, operating_point, tta)

        def scored(patches: np.ndarray) -> PixelPredictions:
            with gateway_errors(url):
                return score(patches)

        yield scored


class LocalScorer:
    """Patches through a built release in this process: preprocess's Macenko and input flags, then the
    ensemble's own path with the members' ONNX graphs, as `pcam predict --repository` scores files."""

    def __init__(self, repository: Path, operating_point: str, tta: bool = False, threads: int = 1) -> None:
        self.predictor = LocalPredictor(repository, threads)
        self.operating_point, self.tta = operating_point, tta

    def __call__(self, patches: np.ndarray) -> PixelPredictions:
        manifest = self.predictor.manifest
        batch = preprocess_patches(patches, self.predictor.preprocessing)
        answer = self.predictor.score(batch.images, self.operating_point, self.tta)
        flagged = [
            bool(item.flags or result.flags) for item, result in zip(batch.items, answer.results, strict=True)
        ]
        return PixelPredictions(
            probability=np.array([r.probability for r in answer.results], np.float32),
            label=np.array([-1 if r.label is None else r.label for r in answer.results], np.int32),
            uncertainty=np.array([r.uncertainty for r in answer.results], np.float32),
            needs_review=np.array(flagged, bool),
            operating_point=answer.operating_point,
            threshold=answer.threshold,
            release=manifest.release_id,
            releases=(manifest.release_id,),
            degraded=answer.degraded,
            cached=0,
        )
