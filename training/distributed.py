"""Data-parallel training under `torchrun`: the process group, who writes files, and agreement checks.

`torchrun --nproc_per_node N -m training train ...` starts N processes with RANK/WORLD_SIZE/LOCAL_RANK
set; without torchrun everything here is the single-process no-op (rank 0 of 1).
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Distributed:
    """This process's place in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that validates, logs progress and writes files."""
        return self.rank == 0

    def device(self) -> torch.device:
        """This rank's GPU when there are GPUs, else the CPU."""
        if torch.cuda.is_available():
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def broadcast(self, value: Any) -> Any:
        """Rank 0's value on every rank (a picklable object)."""
        if not self.enabled:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def gather(self, value: Any) -> list[Any]:
        """Every rank's value, in rank order, on every rank."""
        if not self.enabled:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()


SINGLE = Distributed()


def from_env() -> Distributed:
    """The job as torchrun describes it in the environment; a single process otherwise."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return SINGLE
    return Distributed(
        rank=int(os.environ["RANK"]), world_size=world_size, local_rank=int(os.environ.get("LOCAL_RANK", "0"))
    )


@contextmanager
def process_group() -> Iterator[Distributed]:
    """Join torchrun's process group for the block (NCCL on GPUs, gloo on the CPU) and leave it after."""
    job = from_env()
    if not job.enabled or dist.is_initialized():
        yield job
        return
    backend = "nccl" if torch.cuda.is_available() else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(job.local_rank)
    dist.init_process_group(backend=backend)
    log.info("rank %d of %d joined the %s process group", job.rank, job.world_size, backend)
    try:
        yield job
    finally:
        dist.destroy_process_group()


class ReplicaMismatch(RuntimeError):
    """Data-parallel replicas ended with different weights: gradients were not synchronized."""


def check_replicas_agree(job: Distributed, model: torch.nn.Module) -> None:
    """Raise on every rank unless all ranks hold bit-identical parameters."""
    if not job.enabled:
        return
    digests = job.gather(parameters_digest(model))
    if len(set(digests)) != 1:
        raise ReplicaMismatch(f"replicas disagree after training: {digests}")


def parameters_digest(model: torch.nn.Module) -> str:
    """Digest of the trainable parameters only: DDP keeps those in sync, not each rank's BN statistics."""
    digest = hashlib.sha256()
    for name, parameter in model.named_parameters():
        digest.update(name.encode())
        digest.update(parameter.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()
