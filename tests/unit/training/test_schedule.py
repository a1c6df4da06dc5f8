"""AdamW's learning rate per step: a linear warmup, then a cosine down to zero."""

from __future__ import annotations

import math

import pytest
import torch

from training.config import MemberConfig
from training.schedule import warmup_cosine, warmup_steps


def _trace(total: int, warmup: int, base_lr: float = 0.01) -> list[float]:
    """The LR each optimizer step runs with, plus the LR after the last step."""
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.AdamW([param], lr=base_lr)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total, warmup))
    lrs = []
    for _ in range(total):
        lrs.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return [*lrs, optimizer.param_groups[0]["lr"]]


def test_lr_rises_linearly_then_follows_the_cosine_to_zero():
    total, warmup, base = 100, 10, 0.01
    lrs = _trace(total, warmup, base)
    rise = lrs[:warmup]
    assert rise == pytest.approx([base * (i + 1) / warmup for i in range(warmup)])
    assert all(b - a == pytest.approx(base / warmup) for a, b in zip(rise, rise[1:], strict=False))
    decay = lrs[warmup:]
    expected = [
        base * 0.5 * (1 + math.cos(math.pi * i / (total - warmup))) for i in range(total - warmup + 1)
    ]
    assert decay == pytest.approx(expected, abs=1e-12)
    assert decay[0] == pytest.approx(base)  # the peak right after warmup
    assert all(b < a for a, b in zip(decay, decay[1:], strict=False))
    assert lrs[-2] < 1e-3 * base and lrs[-1] == pytest.approx(0, abs=1e-15)


def test_no_warmup_starts_at_the_peak():
    lrs = _trace(20, 0)
    assert lrs[0] == pytest.approx(0.01) and lrs[-1] == pytest.approx(0, abs=1e-15)


def _member(**changes) -> MemberConfig:
    return MemberConfig(name="m", architecture="test_resnet", epochs=4, lr=1e-3, **changes)


def test_warmup_length_from_the_config():
    assert warmup_steps(_member(), 50) == 20  # default: 10% of the 200 steps
    assert warmup_steps(_member(), 2) == 1  # at least one step
    assert warmup_steps(_member(warmup_steps=7), 50) == 7
    assert warmup_steps(_member(warmup_epochs=1.5), 50) == 75
    assert warmup_steps(_member(warmup_steps=0), 50) == 0
    assert warmup_steps(_member(warmup_epochs=10), 50) == 200  # never longer than the run
