"""Release hot reload: notice a new release.json in the model repository and hand it over, no restart.

`pcam package --rolling` adds a release's models as new versions and switches release.json last, with
an atomic rename; a whole repository replaced by a rename is noticed the same way (a new inode).
"""

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Generic, TypeVar

from pydantic import ValidationError

from pcam_core.release import RELEASE_FILENAME, ReleaseManifest, load_release
from services.common.metric_names import counter

log = logging.getLogger(__name__)
REJECTED = counter("pcam_release_rejected_total")
REJECTION_REASONS = ("unreadable", "not_taken_up")
Fingerprint = tuple[int, int, int]
T = TypeVar("T")


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class ReleaseWatcher:
    """Polls <repository>/release.json and calls on_change with each new, valid release.

    A file that is missing or does not validate is logged and skipped: the serving release stays. So
    does a release on_change fails on (its models do not load), tried again after retry_failed_s;
    both are counted in pcam_release_rejected_total.
    """

    def __init__(
        self,
        repository: Path,
        current: ReleaseManifest,
        on_change: Callable[[ReleaseManifest], Awaitable[None]],
        interval_s: float = 2.0,
        retry_failed_s: float = 10.0,
        *,
        service: str,
    ) -> None:
        """`service` labels pcam_release_rejected_total."""
        self.path = repository / RELEASE_FILENAME
        self._rejected = {reason: REJECTED.labels(service, reason) for reason in REJECTION_REASONS}
        self.release_id = current.release_id
        self._on_change = on_change
        self._interval_s = interval_s
        self._retry_failed_s = retry_failed_s
        self._seen = _fingerprint(self.path)
        self._failed: tuple[Fingerprint, float] | None = None
        self._lock = asyncio.Lock()

    async def check(self) -> bool:
        """Look once; True when a new release was handed over."""
        async with self._lock:  # one reload at a time, whether polled or asked for by a request
            seen = _fingerprint(self.path)
            if seen is None or seen == self._seen:
                return False
            failed_lately = (
                self._failed is not None
                and self._failed[0] == seen
                and time.monotonic() - self._failed[1] < self._retry_failed_s
            )
            if failed_lately:
                return False  # callers get an answer now, not another wait for the same failure
            try:
                manifest = await asyncio.to_thread(load_release, self.path)
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("ignoring unreadable %s: %s", self.path, exc)
                self._rejected["unreadable"].inc()
                self._seen = seen
                return False
            if manifest.release_id == self.release_id:
                self._seen = seen
                return False
            try:
                await self._on_change(manifest)
            except Exception:  # noqa: BLE001 - a release that cannot be served must not stop the watch
                log.exception(
                    "release %s not taken up; still serving %s", manifest.release_id, self.release_id
                )
                self._rejected["not_taken_up"].inc()
                self._failed = (seen, time.monotonic())  # _seen unchanged: tried again after retry_failed_s
                return False
            log.info("release %s now serving (was %s)", manifest.release_id, self.release_id)
            self._seen, self.release_id = seen, manifest.release_id
            return True

    async def run(self) -> None:
        """Poll until cancelled."""
        while True:
            await asyncio.sleep(self._interval_s)
            await self.check()


@asynccontextmanager
async def watching(watcher: ReleaseWatcher) -> AsyncIterator[ReleaseWatcher]:
    """Run the watcher's poll loop for the block (an app's lifespan) and stop it after."""
    task = asyncio.create_task(watcher.run(), name="release-watch")
    try:
        yield watcher
    finally:
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task


class LastTwo(Generic[T]):
    """What a service holds per release for the serving release and the one before it.

    During a rolling release the services switch at slightly different moments; holding both lets
    every request be served by the release its batch names.
    """

    def __init__(self, release_id: str, value: T) -> None:
        self.current: tuple[str, T] = (release_id, value)
        self.previous: tuple[str, T] | None = None

    def push(self, release_id: str, value: T) -> None:
        """Make release_id current (one assignment each: a reader never sees a mix)."""
        self.previous, self.current = self.current, (release_id, value)

    def get(self, release_id: str) -> T | None:
        for entry in (self.current, self.previous):
            if entry is not None and entry[0] == release_id:
                return entry[1]
        return None
