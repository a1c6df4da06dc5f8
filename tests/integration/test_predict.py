"""A real patch through gateway, preprocess, ensemble and Triton, cached in Redis."""

import hashlib
import re
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from devstack.stack import LocalStack
from pcam_core.conformal import as_lists, prediction_sets
from pcam_core.release import OPERATING_POINTS, ReleaseManifest, load_release

pytestmark = pytest.mark.integration
PROBLEM = "application/problem+json"


def triton_successes(stack: LocalStack) -> dict[str, float]:
    """nv_inference_request_success per model, scraped from Triton's metrics endpoint."""
    text = httpx.get(f"http://127.0.0.1:{stack.config.ports.triton_metrics}/metrics").text
    pattern = re.compile(r'^nv_inference_request_success\{[^}]*model="([^"]+)"[^}]*\} (\S+)$', re.M)
    return {model: float(value) for model, value in pattern.findall(text)}


def triton_patches(stack: LocalStack) -> dict[str, float]:
    """nv_inference_count (patches inferred) per model, scraped from Triton's metrics endpoint."""
    text = httpx.get(f"http://127.0.0.1:{stack.config.ports.triton_metrics}/metrics").text
    pattern = re.compile(r'^nv_inference_count\{[^}]*model="([^"]+)"[^}]*\} (\S+)$', re.M)
    return {model: float(value) for model, value in pattern.findall(text)}


def png(pixels: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def unique_png(path: Path, salt: int) -> bytes:
    """A real patch with one pixel changed: bytes no other test sends, so never a cache hit by accident."""
    pixels = np.asarray(Image.open(path).convert("RGB")).copy()
    pixels[0, 0] = [(salt >> shift) & 0xFF for shift in (0, 8, 16)]
    return png(pixels)


def assert_full_result(result: dict, release: ReleaseManifest, operating_point: str) -> None:
    point = release.ensemble.operating_points[operating_point]
    assert 0.0 <= result["probability"] <= 1.0
    assert result["label"] == int(result["probability"] >= point.threshold)
    assert result["operating_point"] == operating_point
    assert result["threshold"] == pytest.approx(point.threshold)
    assert result["release"] == release.release_id
    assert set(result["members"]) == {m.name for m in release.members}
    assert all(0.0 <= p <= 1.0 for p in result["members"].values())
    assert result["uncertainty"] == pytest.approx(np.std(list(result["members"].values())), abs=1e-9)
    assert 0.0 <= result["quality"]["tissue_fraction"] <= 1.0
    assert isinstance(result["quality"]["stain_normalized"], bool)
    assert re.fullmatch(r"[0-9a-f]{64}", result["sha256"])
    assert result["request_id"]
    rule = release.ensemble.conformal  # the release fits one by default
    assert rule is not None
    assert (
        result["prediction_set"]
        == as_lists(prediction_sets(np.array([result["probability"]]), rule.quantile))[0]
    )


def test_every_service_is_ready(stack: LocalStack) -> None:
    for service in ("gateway", "preprocess", "ensemble"):
        response = httpx.get(f"{stack.config.url(service)}/readyz")
        assert response.status_code == 200, response.text
    members = httpx.get(f"{stack.config.url('ensemble')}/readyz").json()["members"]
    assert members == {m.name: True for m in load_release(stack.config.model_repository).members}


@pytest.mark.parametrize("operating_point", OPERATING_POINTS)
def test_real_patch_full_response(
    gateway: httpx.Client, release: ReleaseManifest, patch_paths: list[Path], operating_point: str
) -> None:
    path = patch_paths[OPERATING_POINTS.index(operating_point)]
    # Bytes no other test sends (`pcam predict --url` sends every patch as is): a fresh computation.
    data = unique_png(path, 900 + OPERATING_POINTS.index(operating_point))
    response = gateway.post(
        "/v1/predict", params={"operating_point": operating_point}, files={"file": (path.name, data)}
    )
    assert response.status_code == 200, response.text
    result = response.json()
    assert_full_result(result, release, operating_point)
    assert result["cached"] is False
    assert result["request_id"] == response.headers["x-request-id"]


def test_repeat_is_served_from_redis_without_touching_triton(
    gateway: httpx.Client, stack: LocalStack, patch_paths: list[Path]
) -> None:
    upload = {"file": ("p.png", unique_png(patch_paths[10], 100), "image/png")}
    first = gateway.post("/v1/predict", files=upload)
    assert first.status_code == 200 and first.json()["cached"] is False
    before = triton_successes(stack)
    assert before and all(count > 0 for count in before.values())
    second = gateway.post("/v1/predict", files=upload)
    assert second.status_code == 200
    assert second.json()["cached"] is True
    assert triton_successes(stack) == before
    strip = lambda r: {k: v for k, v in r.json().items() if k not in ("cached", "request_id")}  # noqa: E731
    assert strip(second) == strip(first)


def test_raw_body_upload_and_alias(
    gateway: httpx.Client, release: ReleaseManifest, patch_paths: list[Path]
) -> None:
    response = gateway.post(
        "/v1/predict",
        params={"operating_point": "conservative"},
        content=unique_png(patch_paths[20], 400),
        headers={"content-type": "image/png", "x-request-id": "it-raw-1"},
    )
    assert response.status_code == 200, response.text
    assert_full_result(response.json(), release, "screening")
    assert response.json()["request_id"] == "it-raw-1"


def test_batch_keeps_order_isolates_bad_items_and_equals_singles(
    gateway: httpx.Client, release: ReleaseManifest, patch_paths: list[Path]
) -> None:
    good = [unique_png(p, 200 + i) for i, p in enumerate(patch_paths[30:34])]
    uploads = [good[0], b"not an image", *good[1:]]
    response = gateway.post(
        "/v1/predict/batch", files=[("files", (f"{i}", u)) for i, u in enumerate(uploads)]
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 5
    assert results[1]["status"] == 415 and results[1]["type"].endswith("/unsupported-image")
    answered = [results[0], *results[2:]]
    assert [r["sha256"] for r in answered] == [hashlib.sha256(u).hexdigest() for u in good]
    for result in answered:
        assert_full_result(result, release, "balanced")
        assert result["cached"] is False
    assert len({r["probability"] for r in answered}) > 1  # distinct patches, distinct answers
    # Each entry equals the single-image answer for the same bytes (now served from the cache).
    for data, result in zip(good, answered, strict=True):
        single = gateway.post("/v1/predict", files={"file": ("x.png", data)}).json()
        assert single["cached"] is True
        assert single["probability"] == pytest.approx(result["probability"])
        assert single["members"] == pytest.approx(result["members"])


def test_batch_singles_then_batch_agree_without_the_cache(
    gateway: httpx.Client, patch_paths: list[Path]
) -> None:
    uploads = [unique_png(p, 300 + i) for i, p in enumerate(patch_paths[40:44])]
    singles = [gateway.post("/v1/predict", files={"file": ("s.png", u)}).json() for u in uploads]
    assert all(s["cached"] is False for s in singles)
    other_point = gateway.post(
        "/v1/predict/batch",
        params={"operating_point": "high_specificity"},
        files=[("files", (str(i), u)) for i, u in enumerate(uploads)],
    ).json()["results"]
    assert all(r["cached"] is False for r in other_point)  # another operating point, another key
    for single, batched in zip(singles, other_point, strict=True):
        assert batched["probability"] == pytest.approx(single["probability"])


def test_non_image_is_a_problem(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/predict", files={"file": ("notes.txt", b"hello, not a patch")})
    assert response.status_code == 415
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == 415 and body["title"] and body["detail"] and body["request_id"]


def test_wrong_size_is_a_problem_naming_the_size(gateway: httpx.Client) -> None:
    response = gateway.post("/v1/predict", files={"file": ("big.png", png(np.zeros((64, 128, 3), np.uint8)))})
    assert response.status_code == 422
    assert response.headers["content-type"] == PROBLEM
    assert "128x64" in response.json()["detail"] and "96x96" in response.json()["detail"]


def test_unknown_operating_point_is_a_problem(gateway: httpx.Client, patch_paths: list[Path]) -> None:
    response = gateway.post(
        "/v1/predict",
        params={"operating_point": "lenient"},
        files={"file": ("p.png", patch_paths[0].read_bytes())},
    )
    assert response.status_code == 422 and response.headers["content-type"] == PROBLEM
    assert "lenient" in response.json()["detail"]


def test_models_describes_the_serving_release(gateway: httpx.Client, release: ReleaseManifest) -> None:
    body = gateway.get("/v1/models").json()
    assert body["release_id"] == release.release_id
    assert body["research_use_only"] is True
    assert body["data"]["source"] == "synthetic"
    assert [m["name"] for m in body["members"]] == [m.name for m in release.members]
    assert set(body["operating_points"]) == set(OPERATING_POINTS)
    assert body["conformal"] == release.ensemble.conformal.model_dump()


def test_metrics_are_exposed(gateway: httpx.Client) -> None:
    text = gateway.get("/metrics").text
    assert 'pcam_http_requests_total{method="POST",route="/v1/predict",service="gateway"' in text
