"""The whole-request deadline of the prediction routes."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from services.common.problems import Problem


@asynccontextmanager
async def deadline(seconds: float, retry_after_s: int) -> AsyncIterator[None]:
    """Run the block within `seconds`, else a 504 problem with Retry-After.

    504 rather than 503: nothing is known to be down, the answer just took too long (a large batch
    with TTA or explain, a slow dependency). Work shared with other requests keeps running.
    """
    scope = asyncio.timeout(seconds)
    try:
        async with scope:
            yield
    except TimeoutError as exc:
        if not scope.expired():
            raise  # some other timeout: not ours to rename
        raise Problem(
            504,
            "deadline-exceeded",
            "Request took too long",
            f"No answer within the request deadline of {seconds:g} s; retry, or send fewer images.",
            headers={"Retry-After": str(retry_after_s)},
        ) from exc
