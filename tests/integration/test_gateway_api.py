"""The gateway's safety features against the real stack: API keys, rate limit, cache=false,
single-flight, and a Redis that stops mid-run.

Settings the session's gateway does not have (keys, a low limit, its own Redis) run in extra gateway
processes pointing at the session's preprocess and ensemble, so no other test sees them.
"""

import asyncio
import re
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok
from devstack.stack import LocalStack
from devstack.stack import start_redis as start_redis_server
from services.gateway.auth import hash_key, new_key
from tests.integration.test_predict import triton_successes, unique_png

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"
RATE_LIMIT = 5


def start_gateway(
    stack: LocalStack, work: Path, name: str, redis_port: int, **env: str
) -> tuple[ManagedProcess, str]:
    """Another gateway process on a free port, sharing the session's preprocess and ensemble; and its URL."""
    port = free_port()
    settings = {
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "PREPROCESS_URL": stack.config.url("preprocess"),
        "ENSEMBLE_URL": stack.config.url("ensemble"),
        "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0",
        **env,
    }
    process = ManagedProcess(
        name,
        [sys.executable, "-m", "services.gateway"],
        work / f"{name}.log",
        env={f"PCAM_GATEWAY_{k}": v for k, v in settings.items()},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        process.wait_until(http_ok(f"{url}/readyz"), 60, "ready")
    except BaseException:
        process.stop()
        raise
    return process, url


def start_redis(work: Path, port: int, password: str | None = None) -> ManagedProcess:
    server = shutil.which("redis-server")
    assert server, "redis-server not found"
    return start_redis_server(server, port, work / f"redis-{port}.log", f"redis-{port}", password)


@pytest.fixture(scope="module")
def api_keys() -> dict[str, str]:
    return {name: new_key() for name in ("alice", "bob", "carol")}


@pytest.fixture(scope="module")
def secured(
    stack: LocalStack, api_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> Iterator[httpx.Client]:
    """A gateway with API keys (from a key file of hashes) and a low rate limit."""
    work = tmp_path_factory.mktemp("secured-gateway")
    key_file = work / "api-keys"
    key_file.write_text("".join(f"{name}:{hash_key(key)}\n" for name, key in api_keys.items()))
    process, url = start_gateway(
        stack,
        work,
        "gateway-secured",
        stack.config.ports.redis,
        API_KEY_FILE=str(key_file),
        RATE_LIMIT_PER_MINUTE=str(RATE_LIMIT),
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            yield client
    finally:
        process.stop()
    assert all(key not in process.log_path.read_text() for key in api_keys.values())


def triton_delta(stack: LocalStack, before: dict[str, float]) -> dict[str, float]:
    after = triton_successes(stack)
    return {model: after[model] - before.get(model, 0.0) for model in after}


def test_api_keys_401_403_and_both_headers(
    secured: httpx.Client, api_keys: dict[str, str], patch_paths: list[Path]
) -> None:
    missing = secured.get("/v1/models")
    assert missing.status_code == 401 and missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"].startswith("Bearer")
    invalid = secured.post("/v1/predict", headers={"x-api-key": "pcam_not-a-key"})
    assert invalid.status_code == 403 and invalid.headers["content-type"] == PROBLEM
    assert invalid.json()["request_id"] == invalid.headers["x-request-id"]
    assert secured.get("/v1/models", headers={"x-api-key": api_keys["alice"]}).status_code == 200
    response = secured.post(
        "/v1/predict",
        headers={"authorization": f"Bearer {api_keys['alice']}"},
        files={"file": ("p.png", unique_png(patch_paths[50], 5000))},
    )
    assert response.status_code == 200, response.text
    assert response.json()["cached"] is False
    for path in ("/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"):
        assert secured.get(path).status_code == 200, path


def test_rate_limit_per_key_in_redis(
    secured: httpx.Client, api_keys: dict[str, str], stack: LocalStack
) -> None:
    if time.time() % 60 > 50:  # a fixed one-minute window: start well inside one
        time.sleep(61 - time.time() % 60)
    bob = {"x-api-key": api_keys["bob"]}
    statuses = [secured.get("/v1/models", headers=bob).status_code for _ in range(RATE_LIMIT)]
    assert statuses == [200] * RATE_LIMIT
    refused = secured.get("/v1/models", headers=bob)
    assert refused.status_code == 429 and refused.headers["content-type"] == PROBLEM
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert secured.get("/v1/models", headers={"x-api-key": api_keys["carol"]}).status_code == 200
    with redis.Redis(port=stack.config.ports.redis) as client:
        # Kept in Redis: every gateway process sharing it enforces one limit.
        assert client.keys("pcam:ratelimit:v1:key:bob:*")


def test_cache_false_recomputes_and_refreshes_the_entry(
    gateway: httpx.Client, stack: LocalStack, patch_paths: list[Path]
) -> None:
    upload = {"file": ("p.png", unique_png(patch_paths[51], 5100), "image/png")}
    before = triton_successes(stack)
    first = gateway.post("/v1/predict", files=upload)
    assert first.status_code == 200 and first.json()["cached"] is False
    one_request = triton_delta(stack, before)
    assert all(count > 0 for count in one_request.values())
    assert gateway.post("/v1/predict", files=upload).json()["cached"] is True
    before = triton_successes(stack)
    fresh = gateway.post("/v1/predict", params={"cache": "false"}, files=upload)
    assert fresh.status_code == 200 and fresh.json()["cached"] is False
    assert triton_delta(stack, before) == one_request
    assert fresh.json()["probability"] == pytest.approx(first.json()["probability"])
    assert gateway.post("/v1/predict", files=upload).json()["cached"] is True


def test_concurrent_identical_requests_reach_triton_once(
    gateway: httpx.Client, stack: LocalStack, patch_paths: list[Path]
) -> None:
    def files(salt: int) -> list[tuple[str, tuple[str, bytes]]]:
        return [("files", (f"{i}.png", unique_png(patch_paths[i], salt + i))) for i in range(16)]

    # One request's worth: the same batch size, other bytes.
    before = triton_successes(stack)
    alone = gateway.post("/v1/predict/batch", params={"cache": "false"}, files=files(6000))
    assert alone.status_code == 200
    one_request = triton_delta(stack, before)

    same = files(7000)

    async def burst(n: int) -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.config.url("gateway"), timeout=60) as client:
            # cache=false: only single-flight can keep the copies from reaching Triton.
            return await asyncio.gather(
                *(client.post("/v1/predict/batch", params={"cache": "false"}, files=same) for _ in range(n))
            )

    before = triton_successes(stack)
    responses = asyncio.run(burst(6))
    assert all(r.status_code == 200 for r in responses)
    assert triton_delta(stack, before) == one_request
    results = [r.json()["results"] for r in responses]
    assert all(entry["cached"] is False for batch in results for entry in batch)
    assert all(
        [e["probability"] for e in batch] == [e["probability"] for e in results[0]] for batch in results
    )
    shared = re.search(r"^pcam_gateway_singleflight_joins_total (\S+)$", gateway.get("/metrics").text, re.M)
    assert shared and float(shared.group(1)) >= 5 * 16


def test_redis_stopped_mid_run_answers_stay_correct(
    stack: LocalStack, patch_paths: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("own-redis")
    port = free_port()
    own_redis = start_redis(work, port)
    process, url = start_gateway(
        stack,
        work,
        "gateway-own-redis",
        port,
        REDIS_BREAKER_FAILURES="2",
        REDIS_BREAKER_RESET_S="1",
        RATE_LIMIT_PER_MINUTE="4",  # exceeded below while Redis is down: the limit fails open
    )
    seen = {"file": ("p.png", unique_png(patch_paths[52], 5200), "image/png")}
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            first = client.post("/v1/predict", files=seen)
            assert first.status_code == 200 and first.json()["cached"] is False
            assert client.post("/v1/predict", files=seen).json()["cached"] is True
            own_redis.stop()
            for i in range(5):
                # Seen before: the gateway's own memory answers without Redis. New: computed.
                again = client.post("/v1/predict", files=seen)
                assert again.status_code == 200 and again.json()["cached"] is True, again.text
                assert again.json()["probability"] == first.json()["probability"]
                new = {"file": ("p.png", unique_png(patch_paths[53], 5300 + i), "image/png")}
                computed = client.post("/v1/predict", files=new)
                assert computed.status_code == 200 and computed.json()["cached"] is False, computed.text
            ready = client.get("/readyz")
            assert ready.status_code == 200 and ready.json()["redis"] is False
            metrics = client.get("/metrics").text
            assert 'pcam_gateway_breaker_open{dependency="redis"} 1.0' in metrics
            assert re.search(
                r'^pcam_gateway_redis_skipped_total\{reason="[a-z_]+",use="rate_limit"\} [1-9]', metrics, re.M
            )
            # Redis back (empty): after the breaker's pause, computed answers are stored in it again.
            own_redis = start_redis(work, port)
            deadline, stored = time.monotonic() + 15, 0
            with redis.Redis(port=port) as direct:
                while not stored and time.monotonic() < deadline:
                    time.sleep(0.5)
                    new = {
                        "file": (
                            "p.png",
                            unique_png(patch_paths[54], int(time.monotonic() * 1000)),
                            "image/png",
                        )
                    }
                    assert client.post("/v1/predict", files=new).status_code == 200
                    stored = len(direct.keys("pcam:result:*"))
            assert stored
    finally:
        process.stop()
        own_redis.stop()


def test_redis_auth_from_a_password_file_caches_and_a_wrong_password_fails_open(
    stack: LocalStack, patch_paths: list[Path], tmp_path_factory: pytest.TempPathFactory
) -> None:
    work = tmp_path_factory.mktemp("auth-redis")
    port, password = free_port(), new_key()
    password_file = work / "redis-password"
    password_file.write_text(password + "\n")
    own_redis = start_redis(work, port, password)
    authed, authed_url = start_gateway(
        stack, work, "gateway-redis-auth", port, REDIS_PASSWORD_FILE=str(password_file)
    )
    wrong, wrong_url = start_gateway(stack, work, "gateway-redis-wrong", port, REDIS_PASSWORD="not-it")
    upload = {"file": ("p.png", unique_png(patch_paths[53], 5300), "image/png")}
    try:
        with httpx.Client(base_url=authed_url, timeout=60) as client:
            assert client.post("/v1/predict", files=upload).json()["cached"] is False
            assert client.post("/v1/predict", files=upload).json()["cached"] is True
            assert client.get("/readyz").json()["redis"] is True
        assert redis.Redis(port=port, password=password).dbsize() >= 1
        with httpx.Client(base_url=wrong_url, timeout=60) as client:
            refused = client.post("/v1/predict", files=upload)
            assert refused.status_code == 200 and refused.json()["cached"] is False
            assert client.get("/readyz").json()["redis"] is False
    finally:
        for process in (authed, wrong, own_redis):
            process.stop()
    assert all(password not in p.log_path.read_text() for p in (authed, wrong))


def test_a_revoked_key_is_refused_after_the_restart_that_reloads_the_keys(
    stack: LocalStack, api_keys: dict[str, str], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Revoking is removing the key's line; the gateway reads its key file at startup."""
    work = tmp_path_factory.mktemp("revoked")
    key_file = work / "api-keys"
    kept = {name: key for name, key in api_keys.items() if name != "bob"}
    key_file.write_text("".join(f"{name}:{hash_key(key)}\n" for name, key in kept.items()))
    process, url = start_gateway(
        stack, work, "gateway-revoked", stack.config.ports.redis, API_KEY_FILE=str(key_file)
    )
    try:
        with httpx.Client(base_url=url, timeout=60) as client:
            revoked = client.get("/v1/models", headers={"x-api-key": api_keys["bob"]})
            assert revoked.status_code == 403 and revoked.headers["content-type"] == PROBLEM
            assert client.get("/v1/models", headers={"x-api-key": api_keys["alice"]}).status_code == 200
    finally:
        process.stop()


def histogram(gateway: httpx.Client, name: str) -> tuple[float, float]:
    """(count, sum) of one of the gateway's histograms, from its /metrics."""
    text = gateway.get("/metrics").text
    values = [re.search(rf"^{name}_{part} (\S+)$", text, re.M) for part in ("count", "sum")]
    assert all(values), f"{name} not exported"
    return float(values[0].group(1)), float(values[1].group(1))  # type: ignore[union-attr]


def test_concurrent_single_patch_requests_share_batches_and_get_their_own_answers(
    gateway: httpx.Client, stack: LocalStack, patch_paths: list[Path]
) -> None:
    uploads = [unique_png(patch_paths[i], 8000 + i) for i in range(32)]
    # The same patches in one batch request, computed together: the reference for each answer.
    alone = gateway.post(
        "/v1/predict/batch",
        params={"cache": "false"},
        files=[("files", (f"{i}.png", data)) for i, data in enumerate(uploads)],
    )
    assert alone.status_code == 200
    expected = [entry["probability"] for entry in alone.json()["results"]]
    batches_before, patches_before = histogram(gateway, "pcam_gateway_batch_size")

    async def concurrently() -> list[httpx.Response]:
        async with httpx.AsyncClient(base_url=stack.config.url("gateway"), timeout=60) as client:
            return await asyncio.gather(
                *(
                    client.post("/v1/predict", params={"cache": "false"}, files={"file": ("p.png", data)})
                    for data in uploads
                )
            )

    responses = asyncio.run(concurrently())
    assert [r.status_code for r in responses] == [200] * len(uploads)
    answers = [r.json() for r in responses]
    assert all(answer["cached"] is False for answer in answers)
    # Each request got its own patch's answer back (Triton's batch composition may move the last digits).
    assert [a["probability"] for a in answers] == pytest.approx(expected, abs=1e-5)
    assert len({a["sha256"] for a in answers}) == len(uploads)
    batches, patches = histogram(gateway, "pcam_gateway_batch_size")
    assert patches - patches_before == len(uploads)
    # 32 requests in flight at once cannot all have gone alone: fewer batches than patches formed.
    assert 1 <= batches - batches_before < len(uploads)
