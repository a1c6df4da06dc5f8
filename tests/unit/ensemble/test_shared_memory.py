"""SharedMemorySlots and TritonMembers handing patches over in system shared memory, against a fake client
that reads the regions back as Triton would (the integration suite runs the real Triton)."""

from pathlib import Path

import numpy as np
import pytest
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

from pcam_core.contract import PATCH_BYTES
from pcam_core.release import Member
from services.ensemble.retry import RetryPolicy
from services.ensemble.shm import SharedMemorySlots
from services.ensemble.triton import TritonMembers, TritonUnavailable

MEMBERS = tuple(Member(name=n, architecture="x", sha256="0" * 64, temperature=1.0) for n in ("a", "b"))


class SharedMemoryTriton:
    """Registers regions by name and answers logit = mean pixel of each patch, read from the region;
    `restarted()` forgets every region, as a Triton that came back does."""

    def __init__(self) -> None:
        self.regions: dict[str, tuple[str, int]] = {}
        self.in_message = 0

    def restarted(self) -> None:
        self.regions.clear()

    async def register_system_shared_memory(self, name, key, byte_size):
        self.regions[name] = (key, byte_size)

    async def unregister_system_shared_memory(self, name):
        self.regions.pop(name, None)

    async def get_model_config(self, name, version, as_json, client_timeout):
        return {"config": {"max_batch_size": 8}}

    async def infer(self, name, inputs, model_version, outputs, client_timeout, headers=None):
        tensor = inputs[0]._get_tensor()
        shape = list(tensor.shape)
        if "shared_memory_region" not in tensor.parameters:
            self.in_message += 1
            images = np.frombuffer(inputs[0]._get_content(), np.uint8).reshape(shape)
        else:
            region = tensor.parameters["shared_memory_region"].string_param
            if region not in self.regions:
                raise InferenceServerException(f"Unable to find system shared memory region: '{region}'")
            size = tensor.parameters["shared_memory_byte_size"].int64_param
            key, _ = self.regions[region]
            handle = shm.create_shared_memory_region(f"{region}-reader", key, size, create_only=False)
            try:
                images = shm.get_contents_as_numpy(handle, np.uint8, shape).copy()
            finally:
                shm.destroy_shared_memory_region(handle)  # also unlinks: the test's slots re-create below
        return Result(images.reshape(len(images), -1).mean(axis=1, keepdims=True).astype(np.float32))


class Result:
    def __init__(self, logits: np.ndarray) -> None:
        self.logits = logits

    def as_numpy(self, name: str) -> np.ndarray:
        return self.logits


def patches(count: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (count, 96, 96, 3), dtype=np.uint8)


def means(images: np.ndarray) -> np.ndarray:
    return images.reshape(len(images), -1).mean(axis=1).astype(np.float32)


async def test_slots_hold_a_batch_under_names_of_their_own_and_are_removed_on_close() -> None:
    slots = SharedMemorySlots(2, 4 * PATCH_BYTES)
    try:
        assert len(set(slots.names)) == 2
        assert all(Path(f"/dev/shm/{name}").exists() for name in slots.names)
        assert slots.fits(patches(4)) and not slots.fits(patches(5))
        images = patches(3)
        async with slots.holding(images) as first, slots.holding(patches(1)) as second:
            assert first != second  # a held region is not handed out twice
            written = np.fromfile(f"/dev/shm/{first}", np.uint8, images.nbytes).reshape(images.shape)
            np.testing.assert_array_equal(written, images)
    finally:
        await slots.close(SharedMemoryTriton())
    assert not any(Path(f"/dev/shm/{name}").exists() for name in slots.names)


async def test_members_read_the_patches_from_shared_memory_and_larger_chunks_go_in_the_message() -> None:
    triton, slots = SharedMemoryTriton(), SharedMemorySlots(4, 8 * PATCH_BYTES)
    members = TritonMembers(triton, 5.0, shared_memory=slots)
    try:
        images = patches(6)
        logits = await members.logits(MEMBERS, images)
        np.testing.assert_allclose(logits, np.stack([means(images)] * 2, axis=1), rtol=1e-6)
        assert triton.in_message == 0 and set(triton.regions) == set(slots.names)
        small = TritonMembers(triton, 5.0, shared_memory=SharedMemorySlots(1, 2 * PATCH_BYTES))
        await small.logits(MEMBERS, images)  # chunks of 6 do not fit regions of 2 patches
        assert triton.in_message == 2
        await small.shared_memory.close(triton)
    finally:
        await slots.close(triton)


async def test_regions_a_restarted_triton_lost_are_registered_again_and_the_call_retried() -> None:
    triton, slots = SharedMemoryTriton(), SharedMemorySlots(2, 8 * PATCH_BYTES)
    members = TritonMembers(triton, 5.0, RetryPolicy(attempts=2, backoff_s=0.0), shared_memory=slots)
    try:
        await members.logits(MEMBERS, patches(2))
        triton.restarted()
        images = patches(3, seed=1)
        logits = await members.logits(MEMBERS, images)
        np.testing.assert_allclose(logits[:, 0], means(images), rtol=1e-6)
        assert set(triton.regions) == set(slots.names)
    finally:
        await slots.close(triton)


async def test_without_a_retry_a_lost_region_is_a_transient_failure_and_the_next_call_recovers() -> None:
    triton, slots = SharedMemoryTriton(), SharedMemorySlots(2, 8 * PATCH_BYTES)
    members = TritonMembers(triton, 5.0, RetryPolicy(attempts=1), shared_memory=slots)
    try:
        await members.logits(MEMBERS, patches(2))
        triton.restarted()
        with pytest.raises(TritonUnavailable):  # a 503 to retry, not a refused model
            await members.logits(MEMBERS, patches(2))
        assert (await members.logits(MEMBERS, patches(2))).shape == (2, 2)
    finally:
        await slots.close(triton)
