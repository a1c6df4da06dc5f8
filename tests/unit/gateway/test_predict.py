"""predict_uploads with fake dependencies (the integration suite runs the real ones)."""

import numpy as np
import pytest

from services.common import wire
from services.common.inference import EnsemblePrediction, InferResponse
from services.common.problems import Problem
from services.gateway.predict import predict_uploads


class MemoryCache:
    def __init__(self) -> None:
        self.store: dict[str, dict] = {}

    async def get_many(self, keys):
        return [self.store.get(k) for k in keys]

    async def set_many(self, entries):
        self.store.update(entries)


class Release:
    def __init__(self, release_id: str) -> None:
        self.release_id = release_id


class FakeDownstream:
    """Accepts uploads starting with b'ok', rejects others with a 422 item."""

    def __init__(self, release: str = "r1", preprocess_release: str | None = None) -> None:
        self.release_id, self.preprocess_release = release, preprocess_release or release
        self.preprocessed: list[int] = []
        self.inferred: list[int] = []
        self.forgotten = 0

    async def release(self):
        return Release(self.release_id)

    async def preprocess(self, uploads):
        self.preprocessed.append(len(uploads))
        items, images = [], []
        for i, data in enumerate(uploads):
            if data.startswith(b"ok"):
                items.append(
                    {
                        "index": i,
                        "ok": True,
                        "tissue_fraction": 0.5,
                        "stain_normalized": True,
                        "stain_skip_reason": None,
                    }
                )
                images.append(np.full((96, 96, 3), len(data), np.uint8))
            else:
                error = Problem(422, "wrong-size", "Wrong image size", "Received 1x1.").to_dict()
                items.append({"index": i, "ok": False, "error": error})
        stacked = np.stack(images) if images else np.empty((0, 96, 96, 3), np.uint8)
        return wire.Batch(stacked, items, {"release": self.preprocess_release})

    def forget_release(self):
        self.forgotten += 1

    async def infer(self, images, operating_point, release_id):
        assert release_id == self.preprocess_release
        self.inferred.append(len(images))
        results = [
            EnsemblePrediction(
                probability=float(img[0, 0, 0]) / 255, label=1, uncertainty=0.0, members={"m": 0.5}
            )
            for img in images
        ]
        return InferResponse(
            release=self.release_id, operating_point=operating_point, threshold=0.01, results=results
        )


async def test_misses_go_downstream_once_and_hits_do_not() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    outcomes, hits = await predict_uploads([b"ok-1", b"ok-22"], "balanced", cache, downstream)
    assert hits == [False, False]
    assert [o["probability"] for o in outcomes] == pytest.approx([4 / 255, 5 / 255])
    assert outcomes[0]["release"] == "r1" and outcomes[0]["operating_point"] == "balanced"
    again, hits = await predict_uploads([b"ok-22", b"ok-1"], "balanced", cache, downstream)
    assert hits == [True, True] and downstream.preprocessed == [2]
    assert [o["probability"] for o in again] == pytest.approx([5 / 255, 4 / 255])


async def test_identical_uploads_in_one_request_are_computed_once() -> None:
    downstream = FakeDownstream()
    outcomes, _ = await predict_uploads([b"ok-a", b"ok-a", b"ok-a"], "balanced", MemoryCache(), downstream)
    assert downstream.preprocessed == [1] and len(outcomes) == 3
    assert outcomes[0] == outcomes[2]


async def test_errors_are_per_item_and_never_cached() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    outcomes, _ = await predict_uploads([b"bad", b"ok-1"], "balanced", cache, downstream)
    assert isinstance(outcomes[0], Problem) and outcomes[0].status == 422
    assert isinstance(outcomes[1], dict)
    assert len(cache.store) == 1
    await predict_uploads([b"bad"], "balanced", cache, downstream)
    assert downstream.preprocessed == [2, 1]


async def test_all_rejected_never_calls_the_ensemble() -> None:
    downstream = FakeDownstream()
    await predict_uploads([b"bad"], "balanced", MemoryCache(), downstream)
    assert downstream.inferred == []


async def test_operating_point_is_part_of_the_key() -> None:
    cache, downstream = MemoryCache(), FakeDownstream()
    await predict_uploads([b"ok-1"], "balanced", cache, downstream)
    _, hits = await predict_uploads([b"ok-1"], "screening", cache, downstream)
    assert hits == [False]


async def test_an_answer_from_a_new_release_is_cached_under_it_and_triggers_a_refresh() -> None:
    cache, downstream = MemoryCache(), FakeDownstream("r1")
    downstream.release_id = "r2"  # the ensemble swapped releases after the lookup

    async def stale_release():
        return Release("r1")

    downstream.release = stale_release
    outcomes, _ = await predict_uploads([b"ok-1"], "balanced", cache, downstream)
    assert outcomes[0]["release"] == "r2"
    assert all(":r2:" in key for key in cache.store)
    assert downstream.forgotten == 1
