"""The gateway's orchestration: cache lookup, single-flight, then preprocess and ensemble for the misses."""

import hashlib
from typing import NamedTuple

import numpy as np

from pcam_core.contract import INPUT_SHAPE
from pcam_core.errors import ReleaseMismatch
from pcam_core.flags import ordered
from pcam_core.schemas import (
    EnsemblePrediction,
    ExplainMethod,
    InferOptions,
    InferResponse,
    ItemError,
    PatchResult,
)
from pcam_core.wire import AcceptedItem
from services.common.admission import Admission
from services.gateway.batching import DEFAULT_MAX_PENDING_PATCHES, Batching, MicroBatcher
from services.gateway.cache import ResultCache, result_key
from services.gateway.downstream import Downstream
from services.gateway.metrics import BATCH_SIZE, BATCH_WAIT, cache_lookups, record_reviews
from services.gateway.singleflight import SingleFlight

Outcome = PatchResult | ItemError
"""An upload's result (the route adds `cached` and `request_id`) or the problem of that upload."""


class Group(NamedTuple):
    """What makes results differ besides the pixels: patches of different groups never share a batch."""

    operating_point: str
    tta: bool
    explain: ExplainMethod | None
    abstain: bool
    release: str
    pixels: bool
    """The uploads are raw uint8 patches (the tensor input), not encoded images."""

    def options(self) -> InferOptions:
        return InferOptions(
            operating_point=self.operating_point, tta=self.tta, explain=self.explain, abstain=self.abstain
        )


class Work(NamedTuple):
    """One distinct upload to compute: its bytes and their sha256."""

    digest: str
    data: bytes


class Predictor:
    """Answers uploads: from the cache, from an identical computation in flight, or downstream in
    batches formed with the uncached patches of concurrent requests."""

    def __init__(
        self,
        cache: ResultCache[PatchResult],
        downstream: Downstream,
        batching: Batching | None = None,
        pending: Admission | None = None,
    ) -> None:
        """`pending` bounds the uncached patches queued for or inside downstream batches (held until their
        batch comes back, even when the caller's deadline passed first)."""
        self.cache, self.downstream = cache, downstream
        self.pending = pending or Admission(
            "gateway", "patches", DEFAULT_MAX_PENDING_PATCHES, retry_after_s=1
        )
        self.flights: SingleFlight[str, Outcome] = SingleFlight()
        policy = batching or Batching()
        self.batches: MicroBatcher[Group, Work, Outcome] = MicroBatcher(
            self._compute,
            max_batch=policy.max_size,
            max_in_flight=policy.max_in_flight,
            max_wait_s=policy.max_wait_s,
            # The batcher caps every batch at max_batch too: occlusion batches get the lower of the two
            # (cam maps come with the one model call, so they batch like any other request).
            batch_limit=lambda group: policy.max_explain if group.explain == "occlusion" else policy.max_size,
            sizes=BATCH_SIZE,
            waits=BATCH_WAIT,
            admission=self.pending,
        )

    async def drain(self) -> None:
        """Cancel the computations in flight and queued (app shutdown, before the clients close)."""
        await self.flights.drain()
        await self.batches.drain()

    async def predict(
        self, uploads: list[bytes], options: InferOptions, read_cache: bool = True, pixels: bool = False
    ) -> tuple[list[Outcome], list[bool]]:
        """One outcome per upload, in order, and whether each came from the cache.

        `options.operating_point` must be canonical. With `read_cache` false the cache is not read,
        but fresh answers are still stored. An answer shared from another request's computation
        counts as not cached: it was computed during this request, not read from Redis.
        """
        release = (await self.downstream.release()).release_id
        digests = [hashlib.sha256(data).hexdigest() for data in uploads]
        keys = [result_key(release, options, d) for d in digests]
        # Identical uploads in one request are looked up and computed once.
        unique = {key: Work(digest, data) for key, digest, data in zip(keys, digests, uploads, strict=True)}
        hits: dict[str, Outcome] = {}
        if read_cache:
            found = await self.cache.read(list(unique))
            hits = {
                key: result for key, result in zip(unique, found.values, strict=True) if result is not None
            }
            for result, count in found.lookups().items():
                cache_lookups(result, count)
        else:
            cache_lookups("bypass", len(unique))
        missing = [k for k in unique if k not in hits]
        computed: dict[str, Outcome] = {}
        if missing:
            group = Group(
                options.operating_point, options.tta, options.explain, options.abstain, release, pixels
            )

            async def compute(todo: list[str]) -> dict[str, Outcome]:
                # Only patches no other request is computing count (the batcher's admission).
                outcomes = await self.batches.submit(group, [unique[k] for k in todo])
                return dict(zip(todo, outcomes, strict=True))

            computed = await self.flights.run(missing, compute)
            if any(isinstance(o, PatchResult) and o.release != release for o in computed.values()):
                self.downstream.forget_release()  # a new release serves: re-read it before the next lookup
        outcomes = {**computed, **hits}
        return [outcomes[k] for k in keys], [k in hits for k in keys]

    async def predict_from_one_release(
        self, uploads: list[bytes], options: InferOptions, read_cache: bool = True, pixels: bool = False
    ) -> tuple[list[Outcome], list[bool]]:
        """As `predict`, every result from one release (for answers that name a single release).

        During a rollover a request may get cache hits of the old release beside patches the new one
        computed; it is then answered again, from the new release (what it computed is cached under it).
        """
        outcomes, hits = await self.predict(uploads, options, read_cache, pixels)
        if len(_releases(outcomes)) > 1:
            outcomes, hits = await self.predict(uploads, options, read_cache, pixels)
            if len(_releases(outcomes)) > 1:
                raise ReleaseMismatch("The serving release changed twice during this request; retry it.")
        return outcomes, hits

    async def _compute(self, group: Group, work: list[Work]) -> list[Outcome]:
        """One formed batch: preprocess, then the ensemble for the accepted patches; fresh results cached."""
        # Normalized for the release the ensemble serves, while preprocess still holds it: during a
        # rolling release preprocess may have taken up the next one before the ensemble's models load.
        if group.pixels:
            patches = np.frombuffer(b"".join(upload.data for upload in work), np.uint8)
            batch = await self.downstream.preprocess_pixels(patches.reshape(-1, *INPUT_SHAPE), group.release)
        else:
            batch = await self.downstream.preprocess([upload.data for upload in work], group.release)
        options = group.options()
        answer = None
        if batch.accepted():
            # The ensemble refuses a batch normalized under another release than the one it serves.
            answer = await self.downstream.infer(batch.images, options, batch.release or "")
        predictions = iter(answer.results if answer else ())
        outcomes: list[Outcome] = []
        to_cache: dict[str, PatchResult] = {}
        for item, upload in zip(batch.items, work, strict=True):  # items come in upload order
            if not isinstance(item, AcceptedItem):
                outcomes.append(item.error)  # errors are never cached
                continue
            assert answer is not None
            result = _result(next(predictions), answer, item, upload.digest, options.abstain)
            outcomes.append(result)
            if not answer.degraded:  # a partial ensemble's answer must not outlive the outage
                to_cache[result_key(result.release, options, upload.digest)] = result
        record_reviews(o for o in outcomes if isinstance(o, PatchResult))
        await self.cache.set_many(to_cache)
        return outcomes


def _releases(outcomes: list[Outcome]) -> set[str]:
    return {outcome.release for outcome in outcomes if isinstance(outcome, PatchResult)}


def _result(
    prediction: EnsemblePrediction, answer: InferResponse, item: AcceptedItem, digest: str, abstain: bool
) -> PatchResult:
    """One patch's result: the ensemble's answer with preprocess's quality, their flags joined."""
    flags = ordered([*item.flags, *prediction.flags])
    # Built from parts already validated (the ensemble's answer, preprocess's frame): not again.
    return PatchResult.model_construct(
        probability=prediction.probability,
        label=None if abstain and flags else prediction.label,
        operating_point=answer.operating_point,
        threshold=answer.threshold,
        uncertainty=prediction.uncertainty,
        members=prediction.members,
        tta=prediction.tta_views > 1,
        degraded=answer.degraded,
        missing_members=answer.missing_members,
        explanation=prediction.explanation,
        prediction_set=prediction.prediction_set,
        flags=flags,
        needs_review=bool(flags),
        quality=item.quality(),
        release=answer.release,
        sha256=digest,
    )
