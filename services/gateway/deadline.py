"""The whole-request deadline of the prediction routes."""

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

from pcam_core.errors import DeadlineExceeded, UploadTimeout


class Deadline:
    """What the request was doing when its deadline passed: receiving the upload, or computing."""

    def __init__(self) -> None:
        self.cut_during_upload = False

    @contextmanager
    def upload(self) -> Iterator[None]:
        """Mark the block as receiving the client's body: a deadline passing here is the client's."""
        try:
            yield
        except asyncio.CancelledError:  # how asyncio.timeout interrupts the read
            self.cut_during_upload = True
            raise


@asynccontextmanager
async def deadline(seconds: float, retry_after_s: int) -> AsyncIterator[Deadline]:
    """Run the block within `seconds`, else UploadTimeout if the upload was still arriving (a slow
    client) or DeadlineExceeded (with a retry delay) if the answer took too long.

    Not DependencyUnavailable: nothing is known to be down, the answer just took too long (a large
    batch with TTA or explain, a slow dependency). Work shared with other requests keeps running.
    """
    state = Deadline()
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield state
    except TimeoutError as exc:
        if not scope.expired():
            raise  # some other timeout: not ours to rename
        if state.cut_during_upload:
            raise UploadTimeout(
                f"The upload did not arrive within the request deadline of {seconds:g} s."
            ) from exc
        raise DeadlineExceeded(
            f"No answer within the request deadline of {seconds:g} s; retry, or send fewer images.",
            retry_after_s=retry_after_s,
        ) from exc
