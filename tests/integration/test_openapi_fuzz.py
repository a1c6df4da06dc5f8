"""Schemathesis over the OpenAPI descriptions of the gateway and of the internal services (preprocess,
ensemble), against the real stack: whatever a client sends that a description allows (and much that
it does not), the answer is never a 5xx, and it matches what the description promises (status codes,
media types, bodies).

Bounded and reproducible: a fixed seed, deterministic generation, a few dozen cases per operation.
Every case is one request from this process's address, counted against the session gateway's rate
limit (1200 a minute, shared with the other tests): the run stays far below it, and a 429 fails the
test loudly rather than passing as a documented status.

Each description is built here from the service's own app (`create_app`), and
`test_the_fuzzed_descriptions_are_the_served_ones` checks that they are the ones the running services
serve. The internal services have no rate limit.
Loading it from the running gateway would need `schemathesis.pytest.from_fixture`, whose lazy loader
(schemathesis 4.32.5) reads `Function._nodeid`, gone in pytest 9.2.
"""

import httpx
import pytest
import schemathesis
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from devstack.stack import LocalStack
from pcam_core import wire
from services.ensemble.app import create_app as create_ensemble
from services.ensemble.settings import EnsembleSettings
from services.gateway.app import create_app
from services.gateway.settings import GatewaySettings
from services.preprocess.app import create_app as create_preprocess
from services.preprocess.settings import PreprocessSettings

pytestmark = pytest.mark.integration
SEED = 20240601
MAX_EXAMPLES = 25
"""Fuzzing cases per operation (the examples and coverage phases add their own, deterministic ones)."""
MAX_REQUESTS = 600
"""Half the session gateway's rate limit: the rest of the suite keeps its share of the minute."""
CONFIG = schemathesis.Config.from_dict(
    {
        "seed": SEED,
        "generation": {
            "max-examples": MAX_EXAMPLES,
            "deterministic": True,
            "database": "none",
            "no-shrink": True,  # a failure is reported as found: shrinking would add unbounded requests
        },
    }
)
# The session gateway runs with default settings (no API keys, the default rate limit).
DESCRIPTION = create_app(GatewaySettings()).openapi()
schema = schemathesis.openapi.from_dict(DESCRIPTION, config=CONFIG)
INTERNAL = {
    "preprocess": create_preprocess(PreprocessSettings()).openapi(),
    "ensemble": create_ensemble(EnsembleSettings()).openapi(),
}
preprocess_schema = schemathesis.openapi.from_dict(INTERNAL["preprocess"], config=CONFIG)
ensemble_schema = schemathesis.openapi.from_dict(INTERNAL["ensemble"], config=CONFIG)
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
# Raw image bodies of every documented type, not only the PNG and JPEG schemathesis knows, and the
# ensemble's binary batch frame: generated
# bytes, like its own binary bodies.
schemathesis.serializer.alias(["image/bmp", "image/tiff", wire.MEDIA_TYPE], "application/octet-stream")
sent = {"requests": 0}


def test_the_fuzzed_descriptions_are_the_served_ones(gateway: httpx.Client, stack: LocalStack) -> None:
    served = gateway.get("/openapi.json")
    assert served.status_code == 200
    assert served.json() == DESCRIPTION
    for service, description in INTERNAL.items():
        assert httpx.get(f"{stack.config.url(service)}/openapi.json", timeout=30).json() == description


@schema.parametrize()
def test_gateway_never_answers_5xx_and_keeps_its_description(
    case: schemathesis.Case, stack: LocalStack
) -> None:
    sent["requests"] += 1
    assert sent["requests"] <= MAX_REQUESTS, "too many cases for the shared rate limit: bound the run"
    response = case.call(base_url=stack.config.url("gateway"), timeout=60)
    assert response.status_code != 429, "rate limited: the run must stay below the gateway's limit"
    case.validate_response(response, checks=CHECKS)


@preprocess_schema.parametrize()
def test_preprocess_never_answers_5xx_and_keeps_its_description(
    case: schemathesis.Case, stack: LocalStack
) -> None:
    case.validate_response(case.call(base_url=stack.config.url("preprocess"), timeout=60), checks=CHECKS)


@ensemble_schema.parametrize()
def test_ensemble_never_answers_5xx_and_keeps_its_description(
    case: schemathesis.Case, stack: LocalStack
) -> None:
    case.validate_response(case.call(base_url=stack.config.url("ensemble"), timeout=60), checks=CHECKS)
