"""Release hot reload: notice a new release.json in the model repository and hand it over, no restart.

`pcam package --rolling` adds a release's models as new versions and switches release.json last, with
an atomic rename; a whole repository replaced by a rename is noticed the same way (a new inode).
"""

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from pathlib import Path

from pydantic import ValidationError

from services.common.release import RELEASE_FILENAME, ReleaseManifest, load_release

log = logging.getLogger(__name__)
Fingerprint = tuple[int, int, int]


def _fingerprint(path: Path) -> Fingerprint | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns, stat.st_size


class ReleaseWatcher:
    """Polls <repository>/release.json and calls on_change with each new, valid release.

    A file that is missing or does not validate is logged and skipped: the serving release stays.
    """

    def __init__(
        self,
        repository: Path,
        current: ReleaseManifest,
        on_change: Callable[[ReleaseManifest], Awaitable[None]],
        interval_s: float = 2.0,
    ) -> None:
        self.path = repository / RELEASE_FILENAME
        self.release_id = current.release_id
        self._on_change = on_change
        self._interval_s = interval_s
        self._seen = _fingerprint(self.path)
        self._lock = asyncio.Lock()

    async def check(self) -> bool:
        """Look once; True when a new release was handed over."""
        async with self._lock:  # one reload at a time, whether polled or asked for by a request
            seen = _fingerprint(self.path)
            if seen is None or seen == self._seen:
                return False
            try:
                manifest = await asyncio.to_thread(load_release, self.path)
            except (OSError, ValueError, ValidationError) as exc:
                log.warning("ignoring unreadable %s: %s", self.path, exc)
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
                return False  # _seen unchanged: tried again at the next look
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
