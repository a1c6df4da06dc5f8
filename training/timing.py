"""onnxruntime sessions timed in turns on the same patches, so machine noise falls on all of them alike."""

from __future__ import annotations

import time
from collections.abc import Mapping

import numpy as np
import onnxruntime as ort

from pcam_core.contract import INPUT_NAME, OUTPUT_NAME

TIMED_BATCHES = {32: 20, 1: 100}
"""Batch size -> most timing rounds: a full dynamic batch, and a lone patch."""
TIMING_MIN_ROUNDS = 5
TIMING_BUDGET_S = 30.0
"""Per batch size: past it (and TIMING_MIN_ROUNDS) timing stops, so big members do not take minutes."""
WARMUP_RUNS = 2


def _elapsed_ms(sess: ort.InferenceSession, batch: np.ndarray) -> float:
    started = time.perf_counter()
    sess.run([OUTPUT_NAME], {INPUT_NAME: batch})
    return (time.perf_counter() - started) * 1000


def timed_in_turns(
    sessions: Mapping[str, ort.InferenceSession], images: np.ndarray
) -> dict[int, dict[str, np.ndarray]]:
    """Per TIMED_BATCHES size, each session's milliseconds per run, round by round (paired rounds).

    Every round runs each session once on the same batch (images repeated up to the size), in an order
    rotated each round; the first runs of each (buffers allocated, kernels picked) are not timed.
    """
    names = list(sessions)
    timings: dict[int, dict[str, np.ndarray]] = {}
    for size, most in TIMED_BATCHES.items():
        batch = np.ascontiguousarray(images[np.arange(size) % len(images)], dtype=np.uint8)
        for sess in sessions.values():
            for _ in range(WARMUP_RUNS):
                _elapsed_ms(sess, batch)
        times: dict[str, list[float]] = {name: [] for name in names}
        started = time.perf_counter()
        for i in range(most):
            for name in names[i % len(names) :] + names[: i % len(names)]:
                times[name].append(_elapsed_ms(sessions[name], batch))
            if i + 1 >= TIMING_MIN_ROUNDS and time.perf_counter() - started > TIMING_BUDGET_S:
                break
        timings[size] = {name: np.array(values) for name, values in times.items()}
    return timings
