"""Where a training epoch's time goes: each member's GPU step alone against its augmentation per batch.

    python -m benchmarks.training [--config pcam-gpu] [--steps 30]

For every member of the config, at its batch size and precision as `pcam train` runs it (AMP on
CUDA, channels-last, AdamW): the seconds of one training step with the batch already on the device,
and the seconds of augmenting one batch (`training.augment.augment` with the member's augmentation)
on the device, as `pcam train` does, and on one CPU core, plus the peak device memory. The step rate
is what the accelerator could take; the data path must keep up with it. Meant for a CUDA
machine (docs/benchmarks.md#training-on-a-gpu-python--m-benchmarkstraining); on a CPU it runs too,
slowly, with `--batch` to keep it short.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

from benchmarks.report import write
from training.augment import augment
from training.config import MemberConfig, load_config, resolve_config
from training.models import build_member_model

WARMUP_STEPS = 5
AUGMENT_ROUNDS = 5
"""Batches augmented to time one (after one more as a warm-up)."""


@dataclass(frozen=True)
class MemberTiming:
    """One member's figures: per-batch seconds of the device step and of the augmentation, on the
    device and on one CPU core."""

    name: str
    batch: int
    step_s: float
    device_augment_s: float
    cpu_augment_s: float
    peak_memory_gib: float

    def row(self) -> list[object]:
        return [self.name, self.batch, self.step_s * 1e3, self.batch / self.step_s,
                self.device_augment_s * 1e3, self.batch / self.device_augment_s,
                self.cpu_augment_s * 1e3, self.batch / self.cpu_augment_s, self.peak_memory_gib]  # fmt: skip


def _mean_seconds(run: Callable[[], object], times: int, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    for _ in range(times):
        run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / times


def time_member(
    member: MemberConfig, device: torch.device, steps: int, batch: int | None = None
) -> MemberTiming:
    """The member's training step and its augmentation on `device`, and the augmentation on the CPU."""
    size = batch or member.batch_size
    model = build_member_model(member).to(device, memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=member.lr, weight_decay=member.weight_decay)
    amp = member.amp and device.type == "cuda"
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    generator = torch.Generator().manual_seed(0)
    cpu_batch = torch.randint(0, 256, (size, 96, 96, 3), dtype=torch.uint8, generator=generator)
    images = cpu_batch.to(device)
    labels = torch.randint(0, 2, (size,), generator=generator).float().to(device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            logits = model(images).squeeze(1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()

    model.train()
    for _ in range(WARMUP_STEPS):
        step()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    step_s = _mean_seconds(step, steps, device)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else 0.0

    def augment_seconds(batch: torch.Tensor) -> float:
        augment(batch, generator, member.augment)  # warm-up: a device's kernels load once
        return _mean_seconds(lambda: augment(batch, generator, member.augment), AUGMENT_ROUNDS, batch.device)

    return MemberTiming(member.name, size, step_s, augment_seconds(images), augment_seconds(cpu_batch), peak)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="pcam-gpu", help="A YAML path or a bundled config name.")
    parser.add_argument("--steps", type=int, default=30, help="Timed steps per member (after 5 warm-ups).")
    parser.add_argument("--batch", type=int, help="Another batch size than each member's (a CPU run).")
    args = parser.parse_args(argv)
    config = load_config(resolve_config(args.config))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    timings = [time_member(member, device, args.steps, args.batch) for member in config.trained_members]
    write(
        "training",
        f"Training step and augmentation on {torch.cuda.get_device_name(device) if device.type == 'cuda' else 'CPU'}",
        [
            "member",
            "batch",
            "step ms",
            "step patches/s",
            "augment ms",
            "augment patches/s",
            "CPU augment ms",
            "CPU augment patches/s",
            "peak GiB",
        ],  # fmt: skip
        [timing.row() for timing in timings],
        {"config": args.config, "device": str(device), "torch": torch.__version__, "steps": args.steps},
    )


if __name__ == "__main__":
    main()
