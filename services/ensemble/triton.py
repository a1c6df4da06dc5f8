"""Calling the ensemble members on Triton over gRPC (KServe v2), concurrently."""

import asyncio
from collections.abc import Sequence

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from services.common.contract import INPUT_NAME, INPUT_TRITON_DTYPE, OUTPUT_NAME, OUTPUT_SHAPE
from services.common.release import Member


class TritonUnavailable(RuntimeError):
    """Triton could not answer for a member (down, timing out, or model not ready)."""


class ModelOutputError(RuntimeError):
    """A member answered, but not with the contract's output."""


class TritonMembers:
    """Infers ensemble members on one Triton server, splitting batches at each model's max size."""

    def __init__(self, client: grpcclient.InferenceServerClient, timeout_s: float) -> None:
        self.client, self.timeout_s = client, timeout_s
        self._max_batch: dict[str, int] = {}

    async def logits(self, members: Sequence[Member], images: np.ndarray) -> np.ndarray:
        """(N, M) logits of every member for uint8 (N, 96, 96, 3), members called concurrently."""
        per_member = await asyncio.gather(*(self._member_logits(m, images) for m in members))
        return np.stack(per_member, axis=1)

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

    async def _member_logits(self, member: Member, images: np.ndarray) -> np.ndarray:
        step = await self._max_batch_size(member)
        chunks = [images[i : i + step] for i in range(0, len(images), step)]
        outputs = await asyncio.gather(*(self._infer(member, chunk) for chunk in chunks))
        return np.concatenate(outputs).reshape(-1)

    async def _max_batch_size(self, member: Member) -> int:
        if member.name not in self._max_batch:
            try:
                config = await self.client.get_model_config(
                    member.name, str(member.version), as_json=True, client_timeout=self.timeout_s
                )
            except InferenceServerException as exc:
                raise TritonUnavailable(f"{member.name}: {exc.message()}") from exc
            self._max_batch[member.name] = max(1, int(config["config"].get("max_batch_size", 0)))
        return self._max_batch[member.name]

    async def _infer(self, member: Member, images: np.ndarray) -> np.ndarray:
        request = grpcclient.InferInput(INPUT_NAME, list(images.shape), INPUT_TRITON_DTYPE)
        request.set_data_from_numpy(np.ascontiguousarray(images))
        try:
            result = await self.client.infer(
                member.name,
                [request],
                model_version=str(member.version),
                outputs=[grpcclient.InferRequestedOutput(OUTPUT_NAME)],
                client_timeout=self.timeout_s,
            )
        except InferenceServerException as exc:
            raise TritonUnavailable(f"{member.name}: {exc.message()}") from exc
        logits = result.as_numpy(OUTPUT_NAME)
        if logits is None or logits.shape != (len(images), *OUTPUT_SHAPE):
            shape = None if logits is None else logits.shape
            raise ModelOutputError(f"{member.name}: expected logits of shape ({len(images)}, 1), got {shape}")
        return logits.astype(np.float32)
