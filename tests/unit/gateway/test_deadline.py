"""The request deadline: a slow upload is the client's 408, a slow answer the server's 504."""

import asyncio

import pytest

from pcam_core.errors import PCamError
from pcam_core.problems import status_of
from services.common.problems import problem_response
from services.gateway.deadline import deadline


async def test_the_deadline_passing_while_the_upload_arrives_is_408() -> None:
    with pytest.raises(PCamError) as info:
        async with deadline(0.05, retry_after_s=3) as budget:
            with budget.upload():
                await asyncio.sleep(1)  # a client sending its body too slowly
    assert status_of(info.value) == 408 and info.value.kind == "request-timeout"


async def test_the_deadline_passing_while_computing_is_504_with_retry_after() -> None:
    with pytest.raises(PCamError) as info:
        async with deadline(0.05, retry_after_s=3) as budget:
            with budget.upload():
                await asyncio.sleep(0)  # the upload arrived
            await asyncio.sleep(1)  # the answer takes too long
    assert status_of(info.value) == 504 and problem_response(info.value).headers["Retry-After"] == "3"


async def test_another_timeout_inside_is_not_renamed() -> None:
    with pytest.raises(TimeoutError):
        async with deadline(5, retry_after_s=3):
            async with asyncio.timeout(0.01):
                await asyncio.sleep(1)
