"""Admission control: a bound on work in flight, refused at once beyond it, and the middleware that
applies it to a service's POSTs."""

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client import REGISTRY

from pcam_core.errors import Overloaded
from pcam_core.problems import PROBLEM_MEDIA_TYPE
from services.common.admission import Admission, AdmissionMiddleware
from services.common.metrics import HttpMetricsMiddleware
from services.common.problems import install_problem_handlers

SERVICE = "admission-test"


def sample(name: str, scope: str) -> float:
    return REGISTRY.get_sample_value(name, {"service": SERVICE, "scope": scope}) or 0.0


def test_work_beyond_the_limit_is_refused_at_once_and_counted() -> None:
    admission = Admission(SERVICE, "patches", limit=4, retry_after_s=2)
    refused = sample("pcam_admission_refused_total", "patches")
    admission.acquire(3)
    with pytest.raises(Overloaded) as raised:
        admission.acquire(2)
    assert raised.value.retry_after_s == 2 and "holds 3 patches" in raised.value.detail
    assert sample("pcam_admission_refused_total", "patches") == refused + 1
    admission.acquire(1)  # what still fits is admitted
    assert sample("pcam_admission_in_flight", "patches") == 4
    assert sample("pcam_admission_limit", "patches") == 4
    admission.release(4)
    assert admission.held == 0 and sample("pcam_admission_in_flight", "patches") == 0


def test_work_larger_than_the_limit_runs_alone_rather_than_never() -> None:
    admission = Admission(SERVICE, "patches", limit=4, retry_after_s=1)
    admission.acquire(10)
    with pytest.raises(Overloaded):
        admission.acquire(1)
    admission.release(10)
    assert admission.held == 0


@pytest.fixture
def app() -> FastAPI:
    """A service with one slow POST route held open by an event, limited to one request at a time."""
    app = FastAPI()
    app.state.release = asyncio.Event()
    admission = Admission(SERVICE, "requests", limit=1, retry_after_s=3)
    app.add_middleware(AdmissionMiddleware, admission=admission, router=app.router)
    app.add_middleware(HttpMetricsMiddleware, service=SERVICE)
    install_problem_handlers(app)

    @app.post("/work/{item}")
    async def work(item: int) -> dict[str, int]:
        await app.state.release.wait()
        return {"item": item}

    @app.get("/status")
    async def status() -> dict[str, str]:
        return {"status": "ok"}

    return app


async def test_a_post_beyond_the_limit_gets_a_503_problem_with_retry_after_and_gets_stay_open(app) -> None:
    route = {"service": SERVICE, "route": "/work/{item}", "method": "POST", "status": "503"}
    before = REGISTRY.get_sample_value("pcam_http_requests_total", route) or 0.0
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        held = asyncio.create_task(client.post("/work/1"))
        while sample("pcam_admission_in_flight", "requests") < 1:
            await asyncio.sleep(0.001)
        refused = await client.post("/work/2")
        assert refused.status_code == 503 and refused.headers["retry-after"] == "3"
        assert refused.headers["content-type"] == PROBLEM_MEDIA_TYPE
        assert refused.json()["type"].endswith("/overloaded")
        assert (await client.get("/status")).status_code == 200  # not work: never refused
        app.state.release.set()
        assert (await held).json() == {"item": 1}
        assert (await client.post("/work/3")).status_code == 200  # room again
    # Counted under its route template, as if routing had seen it.
    assert REGISTRY.get_sample_value("pcam_http_requests_total", route) == before + 1
