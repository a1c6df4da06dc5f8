"""Every error status the gateway documents, produced against real processes, each a problem+json
with the request id (docs/gateway.md, Errors). Elsewhere: 401/403/429 in test_gateway_api.py, 415
and 422 (image size, operating point) in test_predict.py, 422 for explain in test_tta_explain.py.

400, 413 and 415 come from the session gateway. 502, 503 and 504 need a broken dependency, so they
come from extra gateway processes that share the session's preprocess and Redis but not its ensemble:
one points at a port nothing listens on (down: 503), one at a fake ensemble in this process that
answers nonsense (502) or nothing at all (504).
"""

import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok
from devstack.stack import LocalStack
from services.common.uploads import max_multipart_bytes
from services.gateway.settings import GatewaySettings
from tests.integration.test_predict import PROBLEM, unique_png

pytestmark = pytest.mark.integration
RETRY_AFTER_S = 7
REQUEST_TIMEOUT_S = 1.0
SMALL_MAX_IMAGES, SMALL_MAX_IMAGE_BYTES = 2, 2048
STALL_S = 30.0
"""How long the fake ensemble holds a request in `stall` mode (released at teardown)."""


def assert_problem(response: httpx.Response, status: int, kind: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["type"].endswith(f"/{kind}"), body
    assert body["title"] and body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


class FakeEnsemble:
    """An HTTP server standing in for the ensemble: `garbage` answers 200 with a body that is not the
    ensemble's JSON; `stall` keeps the request open without answering."""

    def __init__(self) -> None:
        self.mode = "garbage"
        self.release = threading.Event()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                if fake.mode == "stall":
                    fake.release.wait(STALL_S)
                body = b"<html>not the ensemble</html>"
                self.send_response(200)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "FakeEnsemble":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)


def launch_gateway(
    stack: LocalStack, work: Path, name: str, ensemble_url: str, **env: str
) -> tuple[ManagedProcess, str]:
    """A gateway process on a free port with the session's preprocess and Redis, not yet probed."""
    port = free_port()
    settings = {
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "PREPROCESS_URL": stack.config.url("preprocess"),
        "ENSEMBLE_URL": ensemble_url,
        "REDIS_URL": f"redis://127.0.0.1:{stack.config.ports.redis}/0",
        "RETRY_AFTER_S": str(RETRY_AFTER_S),
        **env,
    }
    process = ManagedProcess(
        name,
        [sys.executable, "-m", "services.gateway"],
        work / f"{name}.log",
        env={f"PCAM_GATEWAY_{k}": v for k, v in settings.items()},
    )
    return process, f"http://127.0.0.1:{port}"


@pytest.fixture(scope="module")
def broken(
    stack: LocalStack, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[httpx.Client, httpx.Client, FakeEnsemble]]:
    """(gateway whose ensemble is down, gateway whose ensemble is the fake, the fake)."""
    work = tmp_path_factory.mktemp("broken-gateways")
    processes: list[ManagedProcess] = []
    with FakeEnsemble() as fake:
        try:
            # Both start at once; only then is either waited for.
            down = launch_gateway(stack, work, "gateway-ensemble-down", f"http://127.0.0.1:{free_port()}")
            processes.append(down[0])
            faked = launch_gateway(
                stack,
                work,
                "gateway-ensemble-fake",
                fake.url,
                REQUEST_TIMEOUT_S=str(REQUEST_TIMEOUT_S),
                DOWNSTREAM_TIMEOUT_S="3",
            )
            processes.append(faked[0])
            for process, url in (down, faked):
                process.wait_until(http_ok(f"{url}/healthz"), 60, "alive")  # never ready: no ensemble
            with (
                httpx.Client(base_url=down[1], timeout=30) as down_client,
                httpx.Client(base_url=faked[1], timeout=30) as fake_client,
            ):
                yield down_client, fake_client, fake
        finally:
            fake.release.set()  # let stalled handlers finish before the gateways stop
            for process in processes:
                process.stop()


# 400


def test_malformed_multipart_is_400(gateway: httpx.Client) -> None:
    response = gateway.post(
        "/v1/predict",
        content=b"--not-the-boundary\r\ngarbage",
        headers={"content-type": "multipart/form-data; boundary=xyz"},
    )
    assert_problem(response, 400, "malformed-multipart")


def test_empty_image_is_400_alone_and_an_entry_in_a_batch(
    gateway: httpx.Client, patch_paths: list[Path]
) -> None:
    assert_problem(gateway.post("/v1/predict", files={"file": ("empty.png", b"")}), 400, "empty-image")
    good = unique_png(patch_paths[11], 22_000)
    response = gateway.post(
        "/v1/predict/batch", files=[("files", ("empty.png", b"")), ("files", ("good.png", good))]
    )
    assert response.status_code == 200, response.text
    empty, answered = response.json()["results"]
    assert empty["status"] == 400 and empty["type"].endswith("/empty-image")
    assert 0.0 <= answered["probability"] <= 1.0


# 413


def test_image_over_the_size_limit_is_413(gateway: httpx.Client) -> None:
    limit = GatewaySettings().max_image_bytes  # the session's gateway runs with default settings
    oversized = b"\x89PNG\r\n\x1a\n" + bytes(limit)
    body = assert_problem(
        gateway.post("/v1/predict", files={"file": ("big.png", oversized)}), 413, "image-too-large"
    )
    assert str(limit) in body["detail"]
    raw = gateway.post("/v1/predict", content=oversized, headers={"content-type": "image/png"})
    assert_problem(raw, 413, "payload-too-large")
    batch = gateway.post(
        "/v1/predict/batch", files=[("files", ("a.png", b"x")), ("files", ("b.png", oversized))]
    )
    assert "File 1 of 'files'" in assert_problem(batch, 413, "image-too-large")["detail"]


def test_more_files_than_the_batch_limit_is_413(gateway: httpx.Client) -> None:
    limit = GatewaySettings().max_images
    files = [("files", (f"{i}.png", b"x")) for i in range(limit + 1)]
    body = assert_problem(gateway.post("/v1/predict/batch", files=files), 413, "too-many-files")
    assert str(limit) in body["detail"]


@pytest.fixture(scope="module")
def small_limits(stack: LocalStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    """A gateway with the session's ensemble and tiny upload limits, so its body cap is small."""
    work = tmp_path_factory.mktemp("small-limits-gateway")
    process, url = launch_gateway(
        stack,
        work,
        "gateway-small-limits",
        stack.config.url("ensemble"),
        MAX_IMAGES=str(SMALL_MAX_IMAGES),
        MAX_IMAGE_BYTES=str(SMALL_MAX_IMAGE_BYTES),
    )
    try:
        process.wait_until(http_ok(f"{url}/readyz"), 60, "ready")
        with httpx.Client(base_url=url, timeout=30) as client:
            yield client
    finally:
        process.stop()


def test_a_body_over_the_cap_is_413_even_without_content_length(small_limits: httpx.Client) -> None:
    cap = max_multipart_bytes(SMALL_MAX_IMAGES, SMALL_MAX_IMAGE_BYTES)
    boundary = "capcapcap"
    part = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="x.png"\r\n\r\n'.encode()
        + bytes(cap)
        + f"\r\n--{boundary}--\r\n".encode()
    )

    def chunked() -> Iterator[bytes]:  # no Content-Length: only counting what arrives can refuse it
        for start in range(0, len(part), 4096):
            yield part[start : start + 4096]

    response = small_limits.post(
        "/v1/predict/batch",
        content=chunked(),
        headers={"content-type": f"multipart/form-data; boundary={boundary}"},
    )
    assert "content-length" not in response.request.headers
    body = assert_problem(response, 413, "payload-too-large")
    assert str(cap) in body["detail"]


# 415 and 422 (beyond test_predict.py)


def test_a_body_that_is_neither_multipart_nor_an_image_is_415(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/predict", content=b"hello", headers={"content-type": "text/plain"})
    assert_problem(response, 415, "unsupported-media-type")


def test_an_option_that_is_not_a_boolean_is_422_before_the_upload_is_read(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/predict", params={"tta": "maybe"}, content=b"never read")
    body = assert_problem(response, 422, "invalid-request")
    assert "tta" in body["detail"]


# 502, 503, 504


def test_ensemble_down_is_503_with_retry_after(
    broken: tuple[httpx.Client, httpx.Client, FakeEnsemble], patch_paths: list[Path]
) -> None:
    down, _, _ = broken
    data = unique_png(patch_paths[12], 22_100)
    for response in (
        down.post("/v1/predict", files={"file": ("p.png", data)}),
        down.post("/v1/predict/batch", files=[("files", ("p.png", data))]),
        down.get("/v1/models"),
    ):
        body = assert_problem(response, 503, "service-unavailable")
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert "ensemble" in body["detail"]
    ready = down.get("/readyz")
    assert ready.status_code == 503
    assert ready.json() == {"status": "not ready", "redis": True, "preprocess": True, "ensemble": False}
    assert down.get("/healthz").status_code == 200


def test_ensemble_answering_nonsense_is_502(
    broken: tuple[httpx.Client, httpx.Client, FakeEnsemble], patch_paths: list[Path]
) -> None:
    _, faked, fake = broken
    fake.mode = "garbage"
    data = unique_png(patch_paths[13], 22_200)
    for response in (faked.post("/v1/predict", files={"file": ("p.png", data)}), faked.get("/v1/models")):
        body = assert_problem(response, 502, "bad-gateway")
        assert "ensemble" in body["detail"]


def test_request_deadline_is_504_with_retry_after(
    broken: tuple[httpx.Client, httpx.Client, FakeEnsemble], patch_paths: list[Path]
) -> None:
    _, faked, fake = broken
    fake.mode = "stall"
    data = unique_png(patch_paths[14], 22_300)
    for send in (
        lambda: faked.post("/v1/predict", files={"file": ("p.png", data)}),
        lambda: faked.post("/v1/predict/batch", files=[("files", ("p.png", data))]),
    ):
        response = send()  # the fake ensemble never answers: only the deadline can end the request
        body = assert_problem(response, 504, "deadline-exceeded")
        assert response.headers["retry-after"] == str(RETRY_AFTER_S)
        assert f"{REQUEST_TIMEOUT_S:g} s" in body["detail"]
