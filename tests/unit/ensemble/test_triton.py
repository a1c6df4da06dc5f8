"""TritonMembers against a fake gRPC client: batching and error mapping of this one module."""

import asyncio

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from pcam_core.release import Member
from services.ensemble.retry import UNAVAILABLE
from services.ensemble.triton import TritonMembers, TritonUnavailable
from tests.unit.ensemble.fakes import FakeTriton, mean_pixel


class FakeResult:
    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def as_numpy(self, name: str) -> np.ndarray:
        return self.logits


class FakeClient:
    """Answers logit = mean pixel value + member offset; records every request's batch size."""

    def __init__(self, max_batch_size: int, fail: set[str] = frozenset()) -> None:
        self.max_batch_size, self.fail = max_batch_size, fail
        self.batches: list[tuple[str, int]] = []

    async def get_model_config(self, name, version, as_json, client_timeout):
        return {"config": {"max_batch_size": self.max_batch_size}}

    async def infer(self, name, inputs, model_version, outputs, client_timeout, headers=None):
        if name in self.fail:
            raise InferenceServerException("unavailable", status=UNAVAILABLE)
        images = inputs[0]._np_data if hasattr(inputs[0], "_np_data") else None
        shape = inputs[0].shape()
        self.batches.append((name, shape[0]))
        assert images is None or images.dtype == np.uint8
        offset = 100.0 if name == "b" else 0.0
        return FakeResult(np.full((shape[0], 1), offset, dtype=np.float32) + np.arange(shape[0])[:, None])

    async def is_model_ready(self, name, version, client_timeout):
        if name in self.fail:
            raise InferenceServerException("down", status=UNAVAILABLE)
        return True


MEMBERS = tuple(Member(name=n, architecture="x", sha256="0" * 64, temperature=1.0) for n in ("a", "b"))


async def test_batches_are_split_at_the_model_max_and_reassembled_in_order() -> None:
    client = FakeClient(max_batch_size=4)
    images = np.zeros((10, 96, 96, 3), np.uint8)
    logits = await TritonMembers(client, 1.0).logits(MEMBERS, images)
    assert logits.shape == (10, 2)
    assert sorted(size for name, size in client.batches if name == "a") == [2, 4, 4]
    np.testing.assert_array_equal(logits[:, 0], [0, 1, 2, 3, 0, 1, 2, 3, 0, 1])
    np.testing.assert_array_equal(logits[:, 1] - logits[:, 0], 100)


async def test_a_failing_member_raises_unavailable() -> None:
    client = FakeClient(max_batch_size=8, fail={"b"})
    with pytest.raises(TritonUnavailable, match="b"):
        await TritonMembers(client, 1.0).logits(MEMBERS, np.zeros((1, 96, 96, 3), np.uint8))


async def test_readiness_is_per_member() -> None:
    states = await TritonMembers(FakeClient(8, fail={"a"}), 1.0).ready(MEMBERS)
    assert states == {"a": False, "b": True}


class SlowMember(FakeTriton):
    """Member 'slow' takes `delay_s` per call; tracks how many of its calls are in flight at once."""

    def __init__(self, delay_s: float, **kwargs) -> None:
        super().__init__({"a": mean_pixel, "b": mean_pixel, "slow": mean_pixel}, **kwargs)
        self.delay_s, self.in_flight, self.peak, self.cancelled = delay_s, 0, 0, 0

    async def infer(self, name, inputs, model_version, outputs, client_timeout, headers=None):
        if name == "slow":
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            try:
                await asyncio.sleep(self.delay_s)
            except asyncio.CancelledError:
                self.cancelled += 1
                raise
            finally:
                self.in_flight -= 1
        return await super().infer(name, inputs, model_version, outputs, client_timeout)


def named(*names: str) -> tuple[Member, ...]:
    return tuple(Member(name=n, architecture="x", sha256="0" * 64, temperature=1.0) for n in names)


async def test_try_logits_reports_answers_and_failures_per_member() -> None:
    client = FakeTriton({"a": mean_pixel, "b": mean_pixel}, failures={"a": (UNAVAILABLE, -1)})
    answers = await TritonMembers(client, 1.0).try_logits(MEMBERS, np.zeros((3, 96, 96, 3), np.uint8), 1)
    assert list(answers.logits) == ["b"] and answers.logits["b"].shape == (3,)
    assert list(answers.failures) == ["a"] and isinstance(answers.failures["a"], TritonUnavailable)


async def test_once_the_answer_is_impossible_the_other_members_are_cancelled() -> None:
    client = SlowMember(delay_s=30.0, failures={"b": (None, -1)})
    images = np.zeros((1, 96, 96, 3), np.uint8)
    answers = await asyncio.wait_for(TritonMembers(client, 60.0).try_logits(named("slow", "b"), images), 5)
    assert list(answers.failures) == ["b"] and answers.logits == {} and client.cancelled == 1


async def test_chunks_in_flight_per_member_are_limited() -> None:
    client = SlowMember(delay_s=0.01, max_batch_size=1)
    members = TritonMembers(client, 1.0, max_concurrent_chunks=2)
    logits = await members.logits(named("slow"), np.zeros((6, 96, 96, 3), np.uint8))
    assert logits.shape == (6, 1) and client.peak == 2 and client.requests("slow") == [1] * 6
