"""TritonMembers against a fake gRPC client: batching and error mapping of this one module."""

import numpy as np
import pytest
from tritonclient.utils import InferenceServerException

from services.common.release import Member
from services.ensemble.triton import TritonMembers, TritonUnavailable


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

    async def infer(self, name, inputs, model_version, outputs, client_timeout):
        if name in self.fail:
            raise InferenceServerException("unavailable")
        images = inputs[0]._np_data if hasattr(inputs[0], "_np_data") else None
        shape = inputs[0].shape()
        self.batches.append((name, shape[0]))
        assert images is None or images.dtype == np.uint8
        offset = 100.0 if name == "b" else 0.0
        return FakeResult(np.full((shape[0], 1), offset, dtype=np.float32) + np.arange(shape[0])[:, None])

    async def is_model_ready(self, name, version, client_timeout):
        if name in self.fail:
            raise InferenceServerException("down")
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
