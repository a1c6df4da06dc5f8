"""A stand-in scorer for the slide tests: answers from the pixels, counts what it was sent."""

import threading

import numpy as np

from pcam_client.tensor import PixelPredictions


class CountingScorer:
    """Answers each patch with its mean darkness; counts patches; fails on call number `fail_on`.
    Thread-safe; with `meet` > 1 its first `meet` calls wait for each other (so they must overlap)."""

    def __init__(self, release: str = "rel-1", fail_on: int | None = None, meet: int = 1) -> None:
        self.release, self.fail_on = release, fail_on
        self.calls: list[np.ndarray] = []
        self.started = self.running = self.peak = 0
        self.lock = threading.Lock()
        self.meeting = threading.Barrier(meet, timeout=30)

    def __call__(self, patches: np.ndarray) -> PixelPredictions:
        with self.lock:
            self.started += 1
            number = self.started
            self.running += 1
            self.peak = max(self.peak, self.running)
        try:
            if number <= self.meeting.parties:
                self.meeting.wait()
            if number == self.fail_on:
                raise ConnectionError("gateway went away")
            with self.lock:
                self.calls.append(patches)
        finally:
            with self.lock:
                self.running -= 1
        probability = 1 - patches.reshape(len(patches), -1).mean(axis=1).astype(np.float32) / 255
        n = len(patches)
        return PixelPredictions(
            probability, (probability > 0.5).astype(np.int32), np.zeros(n, np.float32), probability > 0.9,
            "balanced", 0.5, self.release, (self.release,), False, 0,
        )  # fmt: skip

    @property
    def patches(self) -> int:
        return sum(map(len, self.calls))
