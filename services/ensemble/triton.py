"""Calling the ensemble members on Triton over gRPC (KServe v2), concurrently, with bounded retries."""

import asyncio
from collections.abc import Awaitable, Callable, Collection, Sequence
from typing import Any, TypeVar

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.grpc import MAX_GRPC_MESSAGE_SIZE, KeepAliveOptions
from tritonclient.utils import InferenceServerException

from pcam_core.contract import INPUT_NAME, INPUT_TRITON_DTYPE, OUTPUT_NAME, OUTPUT_SHAPES
from pcam_core.release import Member
from pcam_core.serving import MemberFailure, MemberLogits, member_logits, per_patch, requested_outputs
from services.common.tracing import grpc_trace_headers
from services.ensemble.metrics import timed_attempts
from services.ensemble.retry import UNAVAILABLE, CallFailed, RetryPolicy, call_with_retry
from services.ensemble.shm import SharedMemorySlots, lost_region

T = TypeVar("T")


class TritonUnavailable(MemberFailure):
    """Triton could not answer for a member (down, timing out, model not ready), retries included."""

    transient = True


class TritonOverloaded(MemberFailure):
    """Triton's queue policy refused a member's call (queue full, or queued past its timeout)."""

    transient = True
    overloaded = True


class TritonRefused(MemberFailure):
    """Triton answered a member's call with an error a retry would not change (e.g. INVALID_ARGUMENT)."""


def member_failure(member: str, failed: CallFailed) -> MemberFailure:
    """The member failure a failed call stands for: overloaded or unavailable (retry later), or refused."""
    if failed.overloaded:
        return TritonOverloaded(member, str(failed))
    return (TritonUnavailable if failed.transient else TritonRefused)(member, str(failed))


class ModelOutputError(MemberFailure):
    """A member answered, but not with the contract's output."""


def connect(url: str, retry: RetryPolicy) -> grpcclient.InferenceServerClient:
    """The process's one gRPC client, reconnecting on the retry policy's time scale.

    gRPC's default reconnect backoff (1 s, growing to 120 s) keeps a channel failing fast with the cached
    error long after Triton is back, so retries within that window could never succeed.
    """
    keepalive = KeepAliveOptions()
    reconnect_ms = max(50, int(retry.backoff_s * 1000))
    return grpcclient.InferenceServerClient(
        url,
        channel_args=[
            # tritonclient's defaults, which passing channel_args would otherwise drop.
            ("grpc.max_send_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.max_receive_message_length", MAX_GRPC_MESSAGE_SIZE),
            ("grpc.keepalive_time_ms", keepalive.keepalive_time_ms),
            ("grpc.keepalive_timeout_ms", keepalive.keepalive_timeout_ms),
            ("grpc.keepalive_permit_without_calls", keepalive.keepalive_permit_without_calls),
            ("grpc.http2.max_pings_without_data", keepalive.http2_max_pings_without_data),
            ("grpc.initial_reconnect_backoff_ms", reconnect_ms),
            ("grpc.min_reconnect_backoff_ms", reconnect_ms),
            ("grpc.max_reconnect_backoff_ms", max(reconnect_ms, int(retry.max_backoff_s * 1000))),
        ],
    )


class TritonMembers:
    """The ensemble's MemberRunner: members on one Triton server, batches split at each model's max size."""

    def __init__(
        self,
        client: grpcclient.InferenceServerClient,
        timeout_s: float,
        retry: RetryPolicy | None = None,
        max_concurrent_chunks: int = 4,
        shared_memory: SharedMemorySlots | None = None,
    ) -> None:
        self.client, self.timeout_s = client, timeout_s
        self.shared_memory = shared_memory
        self.retry = retry or RetryPolicy()
        # Chunks beyond this wait here rather than in Triton's queue, where they would spend their deadline.
        self.max_concurrent_chunks = max_concurrent_chunks
        self._max_batch: dict[str, int] = {}

    async def logits(self, members: Sequence[Member], images: np.ndarray) -> np.ndarray:
        """(N, M) logits of every member for uint8 (N, 96, 96, 3); the first failure is raised."""
        answers = await self.try_logits(members, images)
        if answers.failures:
            raise next(iter(answers.failures.values()))
        return np.stack(list(answers.logits.values()), axis=1)

    async def try_logits(
        self,
        members: Sequence[Member],
        images: np.ndarray,
        required: int | None = None,
        features: bool = False,
        maps: bool = False,
    ) -> MemberLogits:
        """Each member's logits (with features, and feature distances; with maps, and activation maps)
        for uint8 (B, 96, 96, 3), members called concurrently.

        Stops waiting (cancelling the rest) once fewer than `required` members (default: all) can answer.
        """
        required = len(members) if required is None else required
        names = requested_outputs(features, maps)
        tasks = {asyncio.ensure_future(self._member_outputs(m, images, names)): m.name for m in members}
        outputs: dict[str, tuple[np.ndarray, ...]] = {}
        failures: dict[str, MemberFailure] = {}
        pending = set(tasks)
        try:
            while pending and len(failures) <= len(members) - required:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    try:
                        outputs[tasks[task]] = task.result()
                    except MemberFailure as exc:
                        failures[tasks[task]] = exc
        finally:
            await _cancel(pending)
        return member_logits(
            [m.name for m in members],
            {member: dict(zip(names, values, strict=True)) for member, values in outputs.items()},
            {m.name: failures[m.name] for m in members if m.name in failures},
        )

    async def ready(self, members: Sequence[Member], timeout_s: float = 2.0) -> dict[str, bool]:
        """Per-member readiness as Triton reports it; a member that does not answer in time is not ready."""
        states = await asyncio.gather(*(self._is_ready(m, timeout_s) for m in members))
        return {m.name: state for m, state in zip(members, states, strict=True)}

    async def _is_ready(self, member: Member, timeout_s: float) -> bool:
        try:
            return bool(
                await self.client.is_model_ready(member.name, str(member.version), client_timeout=timeout_s)
            )
        except InferenceServerException:
            return False

    async def _member_outputs(
        self, member: Member, images: np.ndarray, names: Sequence[str]
    ) -> tuple[np.ndarray, ...]:
        """The named outputs of one member, in order ((B,), or (B, *shape) for the activation map), the
        batch split at its max batch size."""
        step = await self._max_batch_size(member)
        limit = asyncio.Semaphore(self.max_concurrent_chunks)

        async def chunk(start: int) -> tuple[np.ndarray, ...]:
            async with limit:
                return await self._infer(member, images[start : start + step], names)

        chunks = await _all_or_cancel([chunk(i) for i in range(0, len(images), step)])
        return tuple(per_patch(name, np.concatenate([c[k] for c in chunks])) for k, name in enumerate(names))

    async def _call(self, member: Member, call: str, attempt: Callable[[float], Awaitable[T]]) -> T:
        """One Triton call for a member: each attempt timed and counted, retried per policy, and a
        final failure turned into the member failure it stands for."""
        try:
            return await call_with_retry(
                timed_attempts(member.name, call, attempt),
                self.retry,
                self.timeout_s,
                what=f"{member.name} {call}",
            )
        except CallFailed as exc:
            raise member_failure(member.name, exc) from exc

    async def _max_batch_size(self, member: Member) -> int:
        if member.name not in self._max_batch:

            async def attempt(timeout_s: float) -> dict:
                return await self.client.get_model_config(
                    member.name, str(member.version), as_json=True, client_timeout=timeout_s
                )

            config = await self._call(member, "config", attempt)
            self._max_batch[member.name] = max(1, int(config["config"].get("max_batch_size", 0)))
        return self._max_batch[member.name]

    async def _infer(
        self, member: Member, images: np.ndarray, names: Sequence[str] = (OUTPUT_NAME,)
    ) -> tuple[np.ndarray, ...]:
        request = grpcclient.InferInput(INPUT_NAME, list(images.shape), INPUT_TRITON_DTYPE)
        slots = self.shared_memory if self.shared_memory and self.shared_memory.fits(images) else None
        if slots is None:
            request.set_data_from_numpy(np.ascontiguousarray(images))

        async def send(timeout_s: float) -> grpcclient.InferResult:
            return await self.client.infer(
                member.name,
                [request],
                model_version=str(member.version),
                outputs=[grpcclient.InferRequestedOutput(name) for name in names],
                client_timeout=timeout_s,
                headers=grpc_trace_headers(),  # W3C traceparent into Triton's gRPC metadata
            )

        async def attempt(timeout_s: float) -> grpcclient.InferResult:
            if slots is None:
                return await send(timeout_s)
            await slots.register(self.client)
            async with slots.holding(images) as region:
                request.set_shared_memory(region, images.nbytes)
                try:
                    return await send(timeout_s)
                except InferenceServerException as exc:
                    if not lost_region(exc):
                        raise
                    slots.forget()  # Triton restarted without our regions: register them, then retry
                    raise InferenceServerException(exc.message(), status=UNAVAILABLE) from exc

        result = await self._call(member, "infer", attempt)
        values = []
        for name in names:
            value = result.as_numpy(name)
            expected = (len(images), *OUTPUT_SHAPES[name])
            if value is None or value.shape != expected:
                shape = None if value is None else value.shape
                raise ModelOutputError(member.name, f"expected {name} of shape {expected}, got {shape}")
            values.append(value.astype(np.float32))
        return tuple(values)


async def _all_or_cancel(calls: Sequence[Awaitable[T]]) -> list[T]:
    """Every result in order; on the first error the other calls are cancelled (their work is moot)."""
    tasks = [asyncio.ensure_future(c) for c in calls]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        await _cancel(tasks)
        raise


async def _cancel(tasks: Collection[asyncio.Future[Any]]) -> None:
    """Cancel unfinished tasks and wait for them, so none is left running or with an unread error."""
    for task in tasks:
        task.cancel()
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)
