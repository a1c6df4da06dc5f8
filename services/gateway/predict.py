"""The gateway's orchestration: cache lookup, then preprocess and ensemble for the misses."""

import hashlib
from typing import Any

from services.common.inference import EnsemblePrediction, InferResponse
from services.common.problems import Problem
from services.gateway.cache import ResultCache, result_key
from services.gateway.downstream import Downstream

Outcome = dict[str, Any] | Problem
"""A result (without `cached`/`request_id`, which the route adds) or the problem of that upload."""


async def predict_uploads(
    uploads: list[bytes], operating_point: str, cache: ResultCache, downstream: Downstream
) -> tuple[list[Outcome], list[bool]]:
    """One outcome per upload, in order, and whether each came from the cache."""
    release = (await downstream.release()).release_id
    digests = [hashlib.sha256(data).hexdigest() for data in uploads]
    cached = await cache.get_many([result_key(release, operating_point, d) for d in digests])
    hits: dict[str, Outcome] = {d: hit for d, hit in zip(digests, cached, strict=True) if hit is not None}
    # Identical uploads in one request are computed once.
    missing = list(dict.fromkeys(d for d in digests if d not in hits))
    computed: dict[str, Outcome] = {}
    if missing:
        by_digest = dict(zip(digests, uploads, strict=True))
        computed = await _compute(
            missing, [by_digest[d] for d in missing], operating_point, cache, downstream
        )
        if any(isinstance(o, dict) and o["release"] != release for o in computed.values()):
            downstream.forget_release()  # a new release is serving: re-read it before the next lookup
    outcomes = {**computed, **hits}
    return [outcomes[d] for d in digests], [d in hits for d in digests]


async def _compute(
    digests: list[str], uploads: list[bytes], operating_point: str, cache: ResultCache, downstream: Downstream
) -> dict[str, Outcome]:
    batch = await downstream.preprocess(uploads)
    accepted = [item for item in batch.items if item["ok"]]
    answer = None
    if accepted:
        # The ensemble refuses a batch normalized under another release than the one it serves.
        answer = await downstream.infer(batch.images, operating_point, str(batch.meta.get("release", "")))
    predictions = iter(answer.results if answer else ())
    outcomes: dict[str, Outcome] = {}
    to_cache: dict[str, dict[str, Any]] = {}
    for item in batch.items:
        digest = digests[item["index"]]
        if not item["ok"]:
            outcomes[digest] = Problem.from_dict(item["error"])
            continue
        result = _result(next(predictions), answer, item, digest)
        outcomes[digest] = to_cache[result_key(result["release"], operating_point, digest)] = result
    await cache.set_many(to_cache)
    return outcomes


def _result(
    prediction: EnsemblePrediction, answer: InferResponse, item: dict[str, Any], digest: str
) -> dict[str, Any]:
    return {
        **prediction.model_dump(),
        "operating_point": answer.operating_point,
        "threshold": answer.threshold,
        "quality": {
            "tissue_fraction": item["tissue_fraction"],
            "stain_normalized": item["stain_normalized"],
            "stain_skip_reason": item["stain_skip_reason"],
        },
        "release": answer.release,
        "sha256": digest,
    }
