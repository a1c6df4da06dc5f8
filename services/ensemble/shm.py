"""Patches handed to Triton in system shared memory instead of inside each gRPC message.

A batch of 64 patches is 1.7 MB. Sent in the message it is copied into a protobuf, serialized and
written to the socket once per member, and parsed again by Triton: about two thirds of the ensemble's
CPU under tensor batches (docs/benchmarks.md). In shared memory it is copied once into a region per
member call and Triton reads it in place. Only for an ensemble on the same host as its Triton (a
sidecar in Triton's pod, the local stack): `PCAM_ENSEMBLE_TRITON_SHARED_MEMORY`.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

import numpy as np
import tritonclient.grpc.aio as grpcclient
import tritonclient.utils.shared_memory as shm
from tritonclient.utils import InferenceServerException

log = logging.getLogger(__name__)


class SharedMemorySlots:
    """`count` regions of `slot_bytes` each, registered with Triton under names unique to this process;
    a call holds one while Triton reads it."""

    def __init__(self, count: int, slot_bytes: int) -> None:
        self.slot_bytes = slot_bytes
        prefix = f"pcam-ensemble-{os.getpid()}-{secrets.token_hex(4)}"
        self.names = [f"{prefix}-{i}" for i in range(count)]
        self._handles = [shm.create_shared_memory_region(name, f"/{name}", slot_bytes) for name in self.names]
        self._free: asyncio.Queue[int] = asyncio.Queue()
        for index in range(count):
            self._free.put_nowait(index)
        self._registered = False
        self._registering = asyncio.Lock()

    def fits(self, images: np.ndarray) -> bool:
        return images.nbytes <= self.slot_bytes

    async def register(self, client: grpcclient.InferenceServerClient) -> None:
        """Register every region with Triton unless done since the last `forget` (idempotent)."""
        if self._registered:  # every member call asks: no lock once done
            return
        async with self._registering:
            if self._registered:
                return
            for name in self.names:
                with suppress(InferenceServerException):  # still registered (Triton kept it): replace it
                    await client.unregister_system_shared_memory(name)
                await client.register_system_shared_memory(name, f"/{name}", self.slot_bytes)
            self._registered = True

    def forget(self) -> None:
        """Triton no longer knows the regions (it restarted): register them again before the next call."""
        self._registered = False

    @asynccontextmanager
    async def holding(self, images: np.ndarray) -> AsyncIterator[str]:
        """A free region holding `images` (C-ordered) from its first byte; its name for the call's input."""
        index = await self._free.get()
        try:
            shm.set_shared_memory_region(self._handles[index], [np.ascontiguousarray(images)])
            yield self.names[index]
        finally:
            self._free.put_nowait(index)

    async def close(self, client: grpcclient.InferenceServerClient) -> None:
        """Unregister from Triton (best effort: it may be gone) and remove the regions."""
        for name in self.names:
            try:
                await client.unregister_system_shared_memory(name)
            except InferenceServerException as exc:
                log.debug("could not unregister %s: %s", name, exc)
        for handle in self._handles:
            shm.destroy_shared_memory_region(handle)


def lost_region(error: InferenceServerException) -> bool:
    """Whether Triton failed a call because it does not know the shared memory region (it restarted)."""
    return "shared memory region" in (error.message() or "")
