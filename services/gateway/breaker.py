"""A small circuit breaker: after K consecutive failures skip the dependency for T seconds."""

import logging
import time
from collections.abc import Callable

from services.gateway.metrics import BREAKER_OPEN

logger = logging.getLogger(__name__)


class CircuitBreaker:
    """Closed: calls pass. Open: calls are skipped. After `reset_after_s`, half-open: one trial call
    at a time; its success closes the breaker, its failure opens it again for `reset_after_s`.

    Not thread-safe by design: one instance per event loop (asyncio runs callbacks one at a time).
    """

    def __init__(
        self,
        name: str,
        failure_threshold: int,
        reset_after_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name, self.failure_threshold, self.reset_after_s = name, failure_threshold, reset_after_s
        self._clock = clock
        self._failures = 0
        self._opened_at: float | None = None
        self._trial_since: float | None = None
        BREAKER_OPEN.labels(name).set(0)

    @property
    def is_open(self) -> bool:
        """Whether calls are being skipped (open or half-open)."""
        return self._opened_at is not None

    def allow(self) -> bool:
        """Whether the caller may try the dependency now (it must then record the outcome)."""
        if self._opened_at is None:
            return True
        now = self._clock()
        if now - self._opened_at < self.reset_after_s:
            return False
        # Half-open: one trial at a time, so a still-dead dependency costs one timeout, not one per
        # request; a trial whose caller never reports (cancelled) frees the slot after reset_after_s.
        if self._trial_since is not None and now - self._trial_since < self.reset_after_s:
            return False
        self._trial_since = now
        return True

    def record_success(self) -> None:
        if self._opened_at is not None:
            logger.info("%s reachable again: breaker closed", self.name)
            BREAKER_OPEN.labels(self.name).set(0)
        self._failures, self._opened_at, self._trial_since = 0, None, None

    def record_failure(self) -> None:
        self._failures += 1
        was_open = self._opened_at is not None
        if was_open or self._failures >= self.failure_threshold:
            if not was_open:
                logger.warning(
                    "%s failed %d times in a row: skipping it for %.0f s (requests go on without it)",
                    self.name,
                    self._failures,
                    self.reset_after_s,
                )
                BREAKER_OPEN.labels(self.name).set(1)
            self._opened_at, self._trial_since = self._clock(), None
