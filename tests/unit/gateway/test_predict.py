"""Predictor with fake dependencies (the integration suite runs the real ones)."""

import asyncio

import numpy as np
import pytest
from prometheus_client import REGISTRY
from pydantic import ValidationError

from pcam_core import wire
from pcam_core.errors import DependencyUnavailable, ImageRejected, Overloaded, PCamError, ReleaseMismatch
from pcam_core.flags import FEATURE_OUTLIER, OFF_STAIN_COLOUR
from pcam_core.problems import ItemError, item_error, status_of
from pcam_core.schemas import EnsemblePrediction, Explanation, InferOptions, InferResponse, PatchResult
from services.common.admission import Admission
from services.gateway.batching import Batching
from services.gateway.cache import CacheRead
from services.gateway.predict import Predictor
from tests.unit.gateway.tasks import settle

BALANCED = InferOptions(operating_point="balanced")


class MemoryCache:
    """As ResultCache reads Redis: entries held as JSON, an unreadable one read as a miss."""

    def __init__(self) -> None:
        self.store: dict[str, dict] = {}
        self.reads = 0

    async def read(self, keys):
        self.reads += 1
        values = []
        for key in keys:
            try:
                values.append(PatchResult.model_validate(self.store[key]))
            except (KeyError, ValidationError):
                values.append(None)
        return CacheRead(values, "read")

    async def set_many(self, entries):
        self.store.update({key: value.model_dump(mode="json") for key, value in entries.items()})


class Release:
    def __init__(self, release_id: str) -> None:
        self.release_id = release_id


class FakeDownstream:
    """Accepts uploads starting with b'ok', rejects others with a 422 item."""

    def __init__(self, release: str = "r1", preprocess_release: str | None = None) -> None:
        self.release_id, self.preprocess_release = release, preprocess_release or release
        self.preprocessed: list[int] = []
        self.inferred: list[int] = []
        self.options: list[InferOptions] = []
        self.forgotten = 0
        self.degraded = False
        self.delay_s = 0.0
        self.gate: asyncio.Event | None = None  # when set up, preprocess calls wait for it
        self.fail: Exception | None = None

    async def release(self):
        return Release(self.release_id)

    async def preprocess(self, uploads, release_id=None):
        self.preprocessed.append(len(uploads))
        self.asked_release = release_id
        await asyncio.sleep(self.delay_s)
        if self.gate is not None:
            await self.gate.wait()
        if self.fail is not None:
            raise self.fail
        items, images = [], []
        for i, data in enumerate(uploads):
            if data.startswith(b"ok"):
                items.append(
                    wire.AcceptedItem(
                        index=i,
                        tissue_fraction=0.5,
                        stain_normalized=True,
                        stain_skip_reason=None,
                        flags=[OFF_STAIN_COLOUR] if data.startswith(b"ok-ink") else [],
                    )
                )
                images.append(np.full((96, 96, 3), len(data), np.uint8))
            else:
                error = item_error(ImageRejected("Received 1x1.", kind="wrong-size"))
                items.append(wire.RejectedItem(index=i, error=error))
        stacked = np.stack(images) if images else np.empty((0, 96, 96, 3), np.uint8)
        return wire.Batch(stacked, items, self.preprocess_release)

    def forget_release(self):
        self.forgotten += 1

    async def infer(self, images, options, release_id):
        assert release_id == self.preprocess_release
        self.inferred.append(len(images))
        self.options.append(options)
        explanation = (
            Explanation(window=16, stride=16, baseline=0.5, grid=[[0.1]], overlay_png="iVBOR")
            if options.explain
            else None
        )
        results = [
            EnsemblePrediction(
                probability=float(img[0, 0, 0]) / 255,
                label=1,
                uncertainty=0.0,
                members={"m": 0.5},
                tta_views=8 if options.tta else 1,
                explanation=explanation,
                flags=[FEATURE_OUTLIER] if img[0, 0, 0] % 2 else [],  # odd upload lengths: the members object
            )
            for img in images
        ]
        return InferResponse(
            release=self.release_id,
            operating_point=options.operating_point,
            threshold=0.01,
            degraded=self.degraded,
            missing_members=["m2"] if self.degraded else [],
            results=results,
        )


async def test_misses_go_downstream_once_and_hits_do_not() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    predictor = Predictor(cache, downstream)
    outcomes, hits = await predictor.predict([b"ok-1", b"ok-22"], BALANCED)
    assert hits == [False, False]
    assert [o.probability for o in outcomes] == pytest.approx([4 / 255, 5 / 255])
    assert outcomes[0].release == "r1" and outcomes[0].operating_point == "balanced"
    assert outcomes[0].tta is False and outcomes[0].degraded is False
    assert outcomes[0].explanation is None and outcomes[0].missing_members == []
    again, hits = await predictor.predict([b"ok-22", b"ok-1"], BALANCED)
    assert hits == [True, True] and downstream.preprocessed == [2]
    assert [o.probability for o in again] == pytest.approx([5 / 255, 4 / 255])


async def test_identical_uploads_in_one_request_are_computed_once() -> None:
    downstream = FakeDownstream()
    outcomes, _ = await Predictor(MemoryCache(), downstream).predict([b"ok-a", b"ok-a", b"ok-a"], BALANCED)
    assert downstream.preprocessed == [1] and len(outcomes) == 3
    assert outcomes[0] == outcomes[2]


async def test_errors_are_per_item_and_never_cached() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    predictor = Predictor(cache, downstream)
    outcomes, _ = await predictor.predict([b"bad", b"ok-1"], BALANCED)
    assert isinstance(outcomes[0], ItemError) and outcomes[0].status == 422
    assert isinstance(outcomes[1], PatchResult)
    assert len(cache.store) == 1
    await predictor.predict([b"bad"], BALANCED)
    assert downstream.preprocessed == [2, 1]


async def test_all_rejected_never_calls_the_ensemble() -> None:
    downstream = FakeDownstream()
    await Predictor(MemoryCache(), downstream).predict([b"bad"], BALANCED)
    assert downstream.inferred == []


@pytest.mark.parametrize(
    "other",
    [
        InferOptions(operating_point="screening"),
        InferOptions(operating_point="balanced", tta=True),
        InferOptions(operating_point="balanced", explain=True),
        InferOptions(operating_point="balanced", explain="cam"),
    ],
    ids=["operating_point", "tta", "explain", "explain-cam"],
)
async def test_every_option_is_part_of_the_key(other: InferOptions) -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    predictor = Predictor(cache, downstream)
    await predictor.predict([b"ok-1"], BALANCED)
    outcomes, hits = await predictor.predict([b"ok-1"], other)
    assert hits == [False] and len(cache.store) == 2
    assert downstream.options[-1] == other  # forwarded to the ensemble as given
    assert outcomes[0].tta is other.tta
    assert (outcomes[0].explanation is not None) is (other.explain is not None)


async def test_cache_false_skips_the_read_but_stores_the_fresh_answer() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    predictor = Predictor(cache, downstream)
    await predictor.predict([b"ok-1"], BALANCED)
    cache.store = {k: {**v, "probability": 0.99} for k, v in cache.store.items()}  # a stale entry
    outcomes, hits = await predictor.predict([b"ok-1"], BALANCED, read_cache=False)
    assert hits == [False] and cache.reads == 1 and downstream.preprocessed == [1, 1]
    assert outcomes[0].probability == pytest.approx(4 / 255)
    again, hits = await predictor.predict([b"ok-1"], BALANCED)
    assert hits == [True] and again[0].probability == pytest.approx(4 / 255)


async def test_degraded_answers_are_returned_but_never_cached() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    downstream.degraded = True
    outcomes, _ = await Predictor(cache, downstream).predict([b"ok-1"], BALANCED)
    assert outcomes[0].degraded is True and outcomes[0].missing_members == ["m2"]
    assert cache.store == {}


async def test_concurrent_identical_requests_compute_once() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    downstream.delay_s = 0.05
    predictor = Predictor(cache, downstream)
    answers = await asyncio.gather(
        *(predictor.predict([b"ok-1"], BALANCED, read_cache=False) for _ in range(8))
    )
    assert downstream.preprocessed == [1] and downstream.inferred == [1]
    assert all(outcomes == answers[0][0] and hits == [False] for outcomes, hits in answers)


async def test_a_shared_failure_reaches_every_waiter_and_is_not_remembered() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    downstream.delay_s, downstream.fail = 0.05, DependencyUnavailable("down", retry_after_s=3)
    predictor = Predictor(cache, downstream)
    answers = await asyncio.gather(
        *(predictor.predict([b"ok-1"], BALANCED) for _ in range(4)), return_exceptions=True
    )
    assert all(isinstance(a, PCamError) and status_of(a) == 503 for a in answers)
    assert downstream.preprocessed == [1]
    downstream.fail = None
    outcomes, _ = await predictor.predict([b"ok-1"], BALANCED)
    assert isinstance(outcomes[0], PatchResult) and downstream.preprocessed == [1, 1]


async def test_an_answer_from_a_new_release_is_cached_under_it_and_triggers_a_refresh() -> None:
    cache, downstream = MemoryCache(), FakeDownstream("r1")
    downstream.release_id = "r2"  # the ensemble swapped releases after the lookup

    async def stale_release():
        return Release("r1")

    downstream.release = stale_release
    outcomes, _ = await Predictor(cache, downstream).predict([b"ok-1"], BALANCED)
    assert outcomes[0].release == "r2"
    assert all(":r2:" in key for key in cache.store)
    assert downstream.forgotten == 1
    assert downstream.asked_release == "r1"  # preprocess was asked for the release the gateway knew


async def test_an_unreadable_cache_entry_is_a_miss_and_is_replaced() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    first, _ = await Predictor(cache, downstream).predict([b"ok-1"], BALANCED)
    (key,) = cache.store
    cache.store[key] = {"probability": 0.5}  # written by an older gateway, or damaged
    outcomes, hits = await Predictor(cache, downstream).predict([b"ok-1"], BALANCED)
    assert hits == [False] and outcomes[0] == first[0]
    assert downstream.preprocessed == [1, 1] and cache.store[key] == first[0].model_dump(mode="json")


async def test_concurrent_requests_share_a_batch_and_each_gets_its_own_outcomes() -> None:
    downstream = FakeDownstream()
    downstream.gate = asyncio.Event()
    predictor = Predictor(MemoryCache(), downstream, Batching(max_in_flight=1))
    first = asyncio.create_task(predictor.predict([b"ok-1"], BALANCED))
    await settle()  # the first batch is downstream: the next requests queue behind it
    second = asyncio.create_task(predictor.predict([b"ok-22", b"bad"], BALANCED))
    third = asyncio.create_task(predictor.predict([b"ok-333"], BALANCED))
    await settle()
    downstream.gate.set()
    (one,), _ = await first
    (two, rejected), _ = await second
    (three,), _ = await third
    assert downstream.preprocessed == [1, 3] and downstream.inferred == [1, 2]
    assert [one.probability, two.probability, three.probability] == pytest.approx([4 / 255, 5 / 255, 6 / 255])
    assert isinstance(rejected, ItemError) and rejected.status == 422


async def test_uncached_patches_beyond_the_pending_limit_are_refused_at_once_and_cache_hits_are_not() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    await Predictor(cache, downstream).predict([b"ok-cached"], BALANCED)
    downstream.gate = asyncio.Event()
    predictor = Predictor(cache, downstream, pending=Admission("gateway-test", "patches", 3, retry_after_s=1))
    first = asyncio.create_task(predictor.predict([b"ok-1", b"ok-22"], BALANCED))
    await settle()  # two patches pending downstream
    joined = asyncio.create_task(predictor.predict([b"ok-1"], BALANCED))  # the same patch: adds no work
    with pytest.raises(Overloaded):
        await predictor.predict([b"ok-333", b"ok-4444"], BALANCED)
    (hit,), cached = await predictor.predict([b"ok-cached"], BALANCED)
    assert cached == [True] and hit.probability == pytest.approx(9 / 255)
    fits = asyncio.create_task(predictor.predict([b"ok-333"], BALANCED))
    await settle()
    assert predictor.pending.held == 3
    downstream.gate.set()
    await asyncio.gather(first, joined, fits)
    assert predictor.pending.held == 0 and downstream.preprocessed == [1, 2, 1]


async def test_requests_with_different_options_never_share_a_batch() -> None:
    downstream = FakeDownstream()
    downstream.gate = asyncio.Event()
    predictor = Predictor(MemoryCache(), downstream, Batching(max_in_flight=1))
    screening = InferOptions(operating_point="screening")
    first = asyncio.create_task(predictor.predict([b"ok-1"], BALANCED))
    await settle()
    queued = [
        asyncio.create_task(predictor.predict([b"ok-22"], screening)),
        asyncio.create_task(predictor.predict([b"ok-333"], BALANCED)),
    ]
    await settle()
    downstream.gate.set()
    await asyncio.gather(first, *queued)
    assert downstream.preprocessed == [1, 1, 1]
    assert [o.operating_point for o in downstream.options] == ["balanced", "screening", "balanced"]


async def test_a_large_request_goes_in_batches_of_the_batch_size_and_explain_in_smaller_ones() -> None:
    downstream = FakeDownstream()
    predictor = Predictor(MemoryCache(), downstream, Batching(max_size=2, max_in_flight=2, max_explain=1))
    outcomes, _ = await predictor.predict([b"ok-%d" % n for n in range(5)], BALANCED)
    assert downstream.preprocessed == [2, 2, 1] and len(outcomes) == 5
    assert [o.probability for o in outcomes] == pytest.approx([4 / 255] * 5)
    explained = InferOptions(operating_point="balanced", explain=True)
    await predictor.predict([b"ok-x%d" % n for n in range(2)], explained)
    assert downstream.preprocessed[3:] == [1, 1]


async def test_an_answer_straddling_a_rollover_is_asked_again_from_the_new_release() -> None:
    cache, downstream = MemoryCache(), FakeDownstream("r1")
    predictor = Predictor(cache, downstream)
    await predictor.predict([b"ok-old"], BALANCED)  # cached under r1
    downstream.release_id = downstream.preprocess_release = "r2"

    async def release_until_forgotten():
        return Release("r1" if downstream.forgotten == 0 else "r2")

    downstream.release = release_until_forgotten
    mixed, _ = await predictor.predict([b"ok-old", b"ok-new"], BALANCED)
    assert {o.release for o in mixed} == {"r1", "r2"}  # what a single-release answer must not show
    downstream.forgotten = 0
    outcomes, hits = await predictor.predict_from_one_release([b"ok-old", b"ok-new"], BALANCED)
    assert [o.release for o in outcomes] == ["r2", "r2"]
    assert hits == [False, True]  # ok-new was computed by r2 in the first pass and cached under it


async def test_a_request_that_never_sees_one_release_is_refused_as_unavailable() -> None:
    cache, downstream = MemoryCache(), FakeDownstream("r1")
    predictor = Predictor(cache, downstream)
    await predictor.predict([b"ok-old"], BALANCED)
    downstream.release_id = downstream.preprocess_release = "r2"

    async def stale_release():
        return Release("r1")  # the gateway never learns of r2

    downstream.release = stale_release
    with pytest.raises(ReleaseMismatch, match="changed twice"):
        await predictor.predict_from_one_release([b"ok-old", b"ok-new"], BALANCED)


async def test_input_and_model_flags_join_and_abstain_withholds_flagged_labels() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    predictor = Predictor(cache, downstream)
    uploads = [b"ok-ink-1", b"ok-ink-22", b"ok-333", b"ok-44"]  # lengths 8, 9, 6, 5
    before = {review: reviews(review) for review in ("none", "flagged", "abstained")}
    outcomes, _ = await predictor.predict(uploads, BALANCED)
    assert [o.flags for o in outcomes] == [
        [OFF_STAIN_COLOUR],
        [OFF_STAIN_COLOUR, FEATURE_OUTLIER],
        [],
        [FEATURE_OUTLIER],
    ]
    assert [o.needs_review for o in outcomes] == [True, True, False, True]
    assert all(o.label == 1 for o in outcomes)
    abstaining = BALANCED.model_copy(update={"abstain": True})
    withheld, hits = await predictor.predict(uploads, abstaining)
    assert hits == [False] * 4  # abstain is part of the key: nothing computed without it is reused
    assert downstream.options[-1].abstain is True
    assert [o.label for o in withheld] == [None, None, 1, None]
    assert [o.probability for o in withheld] == [o.probability for o in outcomes]
    counted = {review: reviews(review) - before[review] for review in before}
    assert counted == {"none": 2, "flagged": 3, "abstained": 3}


def reviews(review: str) -> float:
    return REGISTRY.get_sample_value("pcam_gateway_reviews_total", {"review": review}) or 0.0
