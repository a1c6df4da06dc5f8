"""The review flags' arithmetic: fitting a rule's threshold and applying it (pcam_core.flags has the names).

numpy only: training fits with the code that serves.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from pcam_core.flags import FLAGS, FlagRule


def fires(rule: FlagRule, scores: np.ndarray) -> np.ndarray:
    """bool (N,): where the rule fires (infinite scores fire in their direction, NaN never)."""
    scores = np.asarray(scores, np.float64)
    with np.errstate(invalid="ignore"):
        return scores > rule.threshold if rule.above else scores < rule.threshold


def fit_rule(scores: np.ndarray, target_rate: float, above: bool = True) -> FlagRule:
    """The threshold flagging at most `target_rate` of these (validation) scores, as few as possible past it.

    The threshold is the score of a validation patch (no interpolation), so exactly the patches past it
    fire; NaN scores (not applicable) count as not flagged. Infinite scores (a measure that failed in
    the flag's direction) always fire: when they alone exceed the rate, the threshold sits at the
    largest finite score.
    """
    if not 0.0 <= target_rate < 1.0:
        raise ValueError(f"target_rate must lie in [0, 1), got {target_rate}")
    scores = np.asarray(scores, np.float64).reshape(-1)
    if not len(scores):
        raise ValueError("fitting a flag needs validation scores")
    oriented = scores if above else -scores
    finite = np.sort(oriented[np.isfinite(oriented)])
    allowed = int(np.floor(target_rate * len(scores))) - int(np.sum(oriented == np.inf))
    if not len(finite):
        threshold = 0.0
    elif allowed <= 0:
        threshold = float(finite[-1])
    else:
        threshold = float(finite[max(len(finite) - allowed - 1, 0)])
    rule = FlagRule(
        threshold=threshold if above else -threshold,
        above=above,
        target_rate=target_rate,
        validation_rate=0.0,
    )
    return rule.model_copy(update={"validation_rate": float(fires(rule, scores).mean())})


def flag_lists(fired: Mapping[str, np.ndarray], n: int) -> list[list[str]]:
    """Per patch, the names of the flags that fired, in FLAGS order."""
    out: list[list[str]] = [[] for _ in range(n)]
    for name in (name for name in FLAGS if name in fired):
        for i in np.flatnonzero(fired[name]):
            out[i].append(name)
    return out
