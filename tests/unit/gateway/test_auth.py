"""API keys: the key store alone, the key tool, and 401/403/200 through the app."""

import hmac
import io
import sys

import pytest
from fastapi.testclient import TestClient

from pcam_core.errors import PCamError
from pcam_core.problems import status_of
from services.common.problems import problem_response
from services.gateway import auth, keys
from services.gateway.app import create_app
from services.gateway.auth import ApiKeys, hash_key
from services.gateway.settings import GatewaySettings
from tests.unit.gateway.fakes import unreachable_settings

ALICE, BOB = "pcam_alice-secret", "pcam_bob-secret"
PROBLEM = "application/problem+json"


def test_identify_compares_every_hash_in_constant_time(monkeypatch) -> None:
    calls, compare = [], hmac.compare_digest

    def spy(a: str, b: str) -> bool:
        calls.append((a, b))
        return compare(a, b)

    monkeypatch.setattr(auth.hmac, "compare_digest", spy)
    store = ApiKeys([("alice", hash_key(ALICE)), ("bob", hash_key(BOB))])
    assert store.identify(ALICE) == "alice"
    assert store.identify(BOB) == "bob"
    assert store.identify("pcam_guess") is None
    assert len(calls) == 6  # no early exit on a match: every stored hash is compared each time
    assert all(ALICE not in pair and BOB not in pair for pair in calls)  # only hashes are compared


def test_missing_is_401_invalid_is_403() -> None:
    store = ApiKeys([("alice", hash_key(ALICE))])
    with pytest.raises(PCamError) as missing:
        store.authenticate(None, None)
    assert status_of(missing.value) == 401 and "WWW-Authenticate" in problem_response(missing.value).headers
    with pytest.raises(PCamError) as invalid:
        store.authenticate("nope", None)
    assert status_of(invalid.value) == 403
    assert store.authenticate(None, ALICE) == "alice"
    assert store.authenticate(ALICE, "nope") == "alice"  # X-API-Key wins over Bearer


def test_entries_from_settings_and_file(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"# team keys\n\nbob:{hash_key(BOB)}\n")
    store = ApiKeys.load([f"alice:{hash_key(ALICE).upper()}"], path)
    assert store.identify(ALICE) == "alice" and store.identify(BOB) == "bob"
    assert not ApiKeys.load([], None).enabled


def test_a_plaintext_key_in_the_settings_is_refused_without_echoing_it(tmp_path) -> None:
    path = tmp_path / "keys"
    path.write_text(f"alice:{hash_key(ALICE)}\n{BOB}\n")
    with pytest.raises(ValueError) as info:
        ApiKeys.load([], path)
    assert "entry 2" in str(info.value) and BOB not in str(info.value)
    with pytest.raises(ValueError) as info:
        ApiKeys.load([f"alice:{ALICE}"], None)
    assert ALICE not in str(info.value)


def test_settings_accept_a_comma_separated_env_value(monkeypatch) -> None:
    monkeypatch.setenv("PCAM_GATEWAY_API_KEY_HASHES", f"alice:{hash_key(ALICE)}, bob:{hash_key(BOB)}")
    assert len(GatewaySettings().api_key_hashes) == 2
    monkeypatch.setenv("PCAM_GATEWAY_API_KEY_HASHES", f'["alice:{hash_key(ALICE)}"]')
    assert len(GatewaySettings().api_key_hashes) == 1


def test_the_key_tool_prints_the_key_once_and_the_line_to_store(capsys, monkeypatch) -> None:
    assert keys.main(["new", "carol"]) == 0
    key, line = capsys.readouterr().out.splitlines()
    assert key.startswith("pcam_") and len(key) > 40
    assert line == f"carol:{hash_key(key)}"
    assert ApiKeys.parse([line], "test").identify(key) == "carol"
    monkeypatch.setattr(sys, "stdin", io.StringIO(key + "\n"))
    assert keys.main(["hash", "carol"]) == 0
    assert capsys.readouterr().out.strip() == line


@pytest.fixture
def client():
    settings = unreachable_settings(api_key_hashes=[f"alice:{hash_key(ALICE)}"], retry_after_s=7)
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.mark.parametrize("path", ["/v1/models", "/v1/predict", "/v1/predict/batch"])
def test_v1_routes_require_a_key(client, path: str) -> None:
    method = client.get if path == "/v1/models" else client.post
    missing = method(path)
    assert missing.status_code == 401 and missing.headers["content-type"] == PROBLEM
    assert missing.headers["www-authenticate"].startswith("Bearer")
    invalid = method(path, headers={"x-api-key": "pcam_wrong"})
    assert invalid.status_code == 403 and invalid.headers["content-type"] == PROBLEM
    assert invalid.json()["request_id"] == invalid.headers["x-request-id"]


def test_a_valid_key_passes_as_header_or_bearer(client) -> None:
    # Past authentication the dependencies are down: 503, not 401/403.
    for headers in ({"x-api-key": ALICE}, {"authorization": f"Bearer {ALICE}"}):
        response = client.post("/v1/predict", files={"file": ("a.png", b"x")}, headers=headers)
        assert response.status_code == 503, response.text
    assert client.post("/v1/predict", headers={"authorization": f"Basic {ALICE}"}).status_code == 401


def test_operations_and_docs_stay_open(client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").status_code == 503  # answered (dependencies down), not refused
    for path in ("/metrics", "/docs", "/openapi.json"):
        assert client.get(path).status_code == 200, path


def test_openapi_declares_the_schemes_and_the_401_403(client) -> None:
    spec = client.get("/openapi.json").json()
    assert set(spec["components"]["securitySchemes"]) == {"ApiKey", "Bearer"}
    operation = spec["paths"]["/v1/predict"]["post"]
    assert operation["security"] == [{"ApiKey": []}, {"Bearer": []}]
    assert {"401", "403"} <= set(operation["responses"])
    assert "security" not in spec["paths"]["/readyz"]["get"]


def test_a_malformed_key_setting_never_echoes_its_value(monkeypatch: pytest.MonkeyPatch) -> None:
    from services.gateway.settings import GatewaySettings

    secret = "pcam_SuperSecretPlaintextKey"
    monkeypatch.setenv("PCAM_GATEWAY_API_KEY_HASHES", f'["alice:{secret}"')  # broken JSON
    with pytest.raises(Exception) as raised:
        GatewaySettings()
    assert secret not in str(raised.value) and secret not in repr(raised.value)


def test_failed_attempts_count_against_the_address_so_key_guessing_is_rate_limited(client) -> None:
    from services.gateway.breaker import CircuitBreaker
    from services.gateway.ratelimit import RateLimiter
    from tests.unit.gateway.fakes import FakeRedis

    client.app.state.limiter = RateLimiter(FakeRedis(), 2, CircuitBreaker("redis-auth-test", 3, 10))
    statuses = [
        client.get("/v1/models", headers={"x-api-key": f"pcam_guess{i}"}).status_code for i in range(3)
    ]
    assert statuses == [403, 403, 429]
    # A valid key is its own client: the guesses from this address do not block it.
    assert (
        client.post("/v1/predict", files={"file": ("a.png", b"x")}, headers={"x-api-key": ALICE}).status_code
        == 503
    )
