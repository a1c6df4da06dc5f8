"""Per-step learning-rate schedule: linear warmup, then cosine decay to zero (for LambdaLR)."""

from __future__ import annotations

import math
from collections.abc import Callable

from training.config import MemberConfig

DEFAULT_WARMUP_SHARE = 0.1
"""Warmup length when a member sets neither warmup_steps nor warmup_epochs: 10% of all steps (>= 1)."""


def warmup_steps(member: MemberConfig, steps_per_epoch: int) -> int:
    """The member's warmup in optimizer steps, never more than the whole run."""
    total = member.epochs * steps_per_epoch
    if member.warmup_steps is not None:
        steps = member.warmup_steps
    elif member.warmup_epochs is not None:
        steps = round(member.warmup_epochs * steps_per_epoch)
    else:
        steps = max(1, int(DEFAULT_WARMUP_SHARE * total))
    return min(steps, total)


def warmup_cosine(total_steps: int, warmup: int) -> Callable[[int], float]:
    """LR factor of step s: (s + 1) / warmup during warmup, then 0.5 (1 + cos(pi t)) with t from 0 to 1.

    The factor is 1 at the first step after warmup and 0 after the last step of the run.
    """

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total_steps - warmup))))

    return factor
