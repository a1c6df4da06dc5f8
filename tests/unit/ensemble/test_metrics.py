"""Ensemble metrics: Triton attempts by member and gRPC code, probabilities and decisions where the
ensemble decides, and the serving release."""

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY
from tritonclient.utils import InferenceServerException

from pcam_core.serving import EnsembleModel
from services.ensemble.metrics import grpc_code, record_answer
from services.ensemble.releases import ReleaseRegistry
from services.ensemble.retry import UNAVAILABLE, RetryPolicy
from services.ensemble.triton import TritonMembers
from tests.unit.ensemble.fakes import FakeTriton, mean_pixel, release_with

FAST = RetryPolicy(attempts=3, backoff_s=0.001, max_backoff_s=0.001)


def sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def attempts(member: str, call: str = "infer") -> float:
    return sample("pcam_ensemble_triton_call_duration_seconds_count", member=member, call=call)


def errors(member: str, code: str, call: str = "infer") -> float:
    return sample("pcam_ensemble_triton_errors_total", member=member, call=call, code=code)


def logit(images: np.ndarray) -> np.ndarray:
    return 4 * mean_pixel(images) - 2  # black patch: p = 0.12, white patch: p = 0.88


@pytest.mark.parametrize(
    ("status", "code"),
    [
        (UNAVAILABLE, "UNAVAILABLE"),
        (str(grpc.StatusCode.INVALID_ARGUMENT), "INVALID_ARGUMENT"),
        ("DEADLINE_EXCEEDED", "DEADLINE_EXCEEDED"),
        (None, "UNKNOWN"),
        ("something else", "UNKNOWN"),
    ],
)
def test_grpc_codes_are_a_bounded_set(status, code) -> None:
    assert grpc_code(InferenceServerException("x", status=status)) == code


async def test_each_attempt_is_timed_and_each_failed_one_counted_by_member_and_code(tmp_path) -> None:
    release = release_with(tmp_path, ("m-ok", 1.0, 1.0), ("m-flaky", 1.0, 1.0))
    client = FakeTriton({"m-ok": logit, "m-flaky": logit}, failures={"m-flaky": (UNAVAILABLE, 1)})
    before = (
        attempts("m-ok"),
        attempts("m-flaky"),
        errors("m-flaky", "UNAVAILABLE"),
        attempts("m-ok", "config"),
    )
    logits = await TritonMembers(client, 1.0, FAST).logits(
        release.members, np.zeros((2, 96, 96, 3), np.uint8)
    )
    assert logits.shape == (2, 2)
    assert attempts("m-ok") == before[0] + 1
    assert attempts("m-flaky") == before[1] + 2  # the failed attempt and its retry
    assert errors("m-flaky", "UNAVAILABLE") == before[2] + 1
    assert errors("m-ok", "UNAVAILABLE") == 0
    assert attempts("m-ok", "config") == before[3] + 1  # the max batch size, asked once


async def test_probabilities_and_decisions_are_recorded_per_operating_point(tmp_path) -> None:
    release = release_with(tmp_path, ("m-dec", 1.0, 1.0))
    members = TritonMembers(FakeTriton({"m-dec": logit}), 1.0, FAST)
    images = np.stack([np.zeros((96, 96, 3), np.uint8)] * 2 + [np.full((96, 96, 3), 255, np.uint8)])
    positives = sample("pcam_ensemble_decisions_total", operating_point="screening", label="1")
    negatives = sample("pcam_ensemble_decisions_total", operating_point="screening", label="0")
    count = sample("pcam_ensemble_prediction_probability_count")
    low = sample("pcam_ensemble_prediction_probability_bucket", le="0.2")
    spread = sample("pcam_ensemble_prediction_uncertainty_sum", tta="true")
    spreads = sample("pcam_ensemble_prediction_uncertainty_count", tta="true")
    response = await EnsembleModel(release).predict(members, images, "screening", tta=True)
    record_answer(response)  # what the /v1/infer route does with every answer
    assert [r.label for r in response.results] == [0, 0, 1]
    assert sample("pcam_ensemble_decisions_total", operating_point="screening", label="1") == positives + 1
    assert sample("pcam_ensemble_decisions_total", operating_point="screening", label="0") == negatives + 2
    assert sample("pcam_ensemble_prediction_probability_count") == count + 3  # patches, not TTA views
    assert sample("pcam_ensemble_prediction_probability_bucket", le="0.2") == low + 2
    assert sample("pcam_ensemble_prediction_uncertainty_count", tta="true") == spreads + 3
    recorded = sample("pcam_ensemble_prediction_uncertainty_sum", tta="true") - spread
    assert recorded == pytest.approx(sum(r.uncertainty for r in response.results))


async def test_release_info_follows_the_registry(tmp_path) -> None:
    def info(release: str) -> float | None:
        return REGISTRY.get_sample_value("pcam_release_info", {"service": "ensemble", "release": release})

    first = release_with(tmp_path, ("m-rel", 1.0, 1.0))
    first = first.model_copy(update={"release_id": "ens-info-1"})

    async def ready(_) -> bool:
        return True

    registry = ReleaseRegistry(first, ready)
    assert info("ens-info-1") == 1
    await registry.take_up(first.model_copy(update={"release_id": "ens-info-2"}))
    assert info("ens-info-2") == 1 and info("ens-info-1") is None
