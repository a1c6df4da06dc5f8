"""Downstream's error mapping, with httpx's MockTransport standing in for the two services."""

import httpx
import numpy as np
import pytest

from pcam_core import wire
from pcam_core.errors import Overloaded, PCamError
from pcam_core.problems import PROBLEM_MEDIA_TYPE, status_of
from pcam_core.schemas import InferOptions
from services.common.problems import problem_response
from services.gateway.downstream import Downstream
from tests.unit.common.release_fixture import write_test_release


def downstream(handler, refresh_s: float = 60.0) -> Downstream:
    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    return Downstream(client, "http://pre", "http://ens", release_refresh_s=refresh_s, retry_after_s=9)


@pytest.fixture
def release_json(tmp_path) -> bytes:
    from pcam_core.release import summarize

    return summarize(write_test_release(tmp_path, "rel-d")).model_dump_json().encode()


async def test_last_known_release_survives_an_ensemble_outage(release_json) -> None:
    calls = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        if len(calls) == 1:
            return httpx.Response(200, content=release_json)
        raise httpx.ConnectError("down")

    client = downstream(handler, refresh_s=0.0)
    assert (await client.release()).release_id == "rel-d"
    assert (await client.release()).release_id == "rel-d"
    assert calls == ["/v1/release"] * 3  # the refresh, and its one retry on a fresh connection


async def test_no_release_known_and_ensemble_down_is_503() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("down")

    with pytest.raises(PCamError) as info:
        await downstream(handler).release()
    assert status_of(info.value) == 503 and problem_response(info.value).headers["Retry-After"] == "9"


async def test_an_overloaded_dependency_is_passed_on_with_its_retry_after_and_not_retried() -> None:
    calls = []
    problem = {"type": "https://pcam.example/problems/overloaded", "title": "Overloaded", "status": 503}

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.path)
        body = {**problem, "detail": "This service holds 64 requests in flight and may hold 64."}
        return httpx.Response(
            503, json=body, headers={"content-type": PROBLEM_MEDIA_TYPE, "retry-after": "2"}
        )

    with pytest.raises(Overloaded, match="preprocess service is overloaded: This service holds 64") as info:
        await downstream(handler).preprocess([b"x"])
    assert problem_response(info.value).headers["Retry-After"] == "2" and calls == ["/v1/preprocess"]


async def test_a_client_fault_judged_downstream_passes_through() -> None:
    problem = {
        "type": "https://pcam.example/problems/too-many-files",
        "title": "Too many files",
        "status": 413,
        "detail": "At most 2.",
    }

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(413, json=problem, headers={"content-type": PROBLEM_MEDIA_TYPE})

    with pytest.raises(PCamError) as info:
        await downstream(handler).preprocess([b"a"])
    assert status_of(info.value) == 413 and info.value.kind == "too-many-files"


@pytest.mark.parametrize(
    "response",
    [
        httpx.Response(200, content=b"not a frame"),
        httpx.Response(500, text="boom"),
        httpx.Response(200, content=wire.encode(wire.Batch(np.zeros((0, 96, 96, 3), np.uint8), items=[]))),
    ],
    ids=["garbage", "server-error", "item-count"],
)
async def test_unreadable_or_inconsistent_answers_are_502(response: httpx.Response) -> None:
    with pytest.raises(PCamError) as info:
        await downstream(lambda request: response).preprocess([b"a"])
    assert status_of(info.value) == 502


async def test_ensemble_gets_the_release_and_the_options() -> None:
    seen = {}

    def handler(request: httpx.Request) -> httpx.Response:
        seen["release"] = wire.decode(request.content).release
        seen["params"] = dict(request.url.params)
        return httpx.Response(
            200, json={"release": "r", "operating_point": "balanced", "threshold": 0.5, "results": []}
        )

    with pytest.raises(PCamError):  # zero results for one patch: inconsistent
        await downstream(handler).infer(
            np.zeros((1, 96, 96, 3), np.uint8), InferOptions(operating_point="balanced", tta=True), "rel-x"
        )
    assert seen["release"] == "rel-x"
    assert seen["params"] == {"operating_point": "balanced", "tta": "true", "explain": "false"}


async def test_a_dropped_connection_is_tried_once_more_then_503(release_json) -> None:
    attempts: list[int] = []

    def flaky(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        if len(attempts) == 1:  # a keep-alive connection closed by a restarting service
            raise httpx.ConnectTimeout("server disconnected")
        return httpx.Response(200, content=release_json)

    assert (await downstream(flaky).release()).release_id == "rel-d"
    assert len(attempts) == 2

    attempts.clear()

    def down(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ConnectError("refused")

    with pytest.raises(PCamError) as info:
        await downstream(down).release()
    assert status_of(info.value) == 503 and len(attempts) == 2


async def test_a_read_timeout_is_not_retried() -> None:
    attempts: list[int] = []

    def slow(request: httpx.Request) -> httpx.Response:
        attempts.append(1)
        raise httpx.ReadTimeout("no answer")

    with pytest.raises(PCamError) as info:
        await downstream(slow).release()
    assert status_of(info.value) == 503 and len(attempts) == 1
