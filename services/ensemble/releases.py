"""The releases the ensemble answers for: the serving one and the one before it (hot reload).

A batch names the release whose stain reference normalized it. During a rolling release preprocess
and the ensemble switch at slightly different moments, so the ensemble answers for both releases
(Triton keeps both model versions loaded) and never turns a request away for being mid-swap.
"""

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

from pcam_core.release import ReleaseManifest
from services.common.release_watch import LastTwo
from services.ensemble.metrics import RELEASE

log = logging.getLogger(__name__)
MembersReady = Callable[[ReleaseManifest], Awaitable[bool]]


class ReleaseNotReady(RuntimeError):
    """A new release's models did not become ready on Triton in time."""


class ReleaseRegistry:
    """Holds the current and previous release; a new one is taken up once its models are ready."""

    def __init__(
        self, current: ReleaseManifest, members_ready: MembersReady, ready_timeout_s: float = 20.0
    ) -> None:
        self._releases = LastTwo(current.release_id, current)
        RELEASE.set(current.release_id)
        self._members_ready = members_ready
        self._ready_timeout_s = ready_timeout_s

    @property
    def current(self) -> ReleaseManifest:
        return self._releases.current[1]

    def get(self, release_id: str) -> ReleaseManifest | None:
        """The release of that id if this process can answer for it."""
        return self._releases.get(release_id)

    async def resolve(
        self, release_id: str, look_again: Callable[[], Awaitable[bool]]
    ) -> ReleaseManifest | None:
        """The release of that id; if unknown, look for a newer release.json first (preprocess may
        have taken it up before this process's next poll)."""
        found = self.get(release_id)
        if found is None:
            await look_again()  # False too when a concurrent look (the poll) took the release up first
            found = self.get(release_id)
        return found

    async def take_up(self, new: ReleaseManifest, poll_s: float = 0.2) -> None:
        """Wait until every member of new is ready on Triton, then make it current (one assignment)."""
        deadline = time.monotonic() + self._ready_timeout_s
        while not await self._members_ready(new):
            if time.monotonic() > deadline:
                raise ReleaseNotReady(
                    f"release {new.release_id}: members not ready on Triton after {self._ready_timeout_s:g} s"
                )
            await asyncio.sleep(poll_s)
        self._releases.push(new.release_id, new)
        RELEASE.set(new.release_id)
