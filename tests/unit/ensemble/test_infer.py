"""POST /v1/infer end to end over ASGI, with Triton faked at the gRPC client: failures, TTA, explain."""

import base64
import io
import logging

import httpx
import numpy as np
import pytest
from fastapi import FastAPI
from PIL import Image

from pcam_core import wire
from pcam_core.release import ReleaseManifest
from pcam_core.rule import combine_release, sigmoid
from pcam_core.tta import dihedral_views
from services.common.release_watch import ReleaseWatcher
from services.ensemble.app import create_app
from services.ensemble.releases import ReleaseRegistry
from services.ensemble.retry import QUEUE_REJECTIONS, UNAVAILABLE, RetryPolicy
from services.ensemble.settings import EnsembleSettings
from services.ensemble.triton import TritonMembers
from tests.unit.ensemble.fakes import FakeTriton, LogitFn, mean_pixel, release_with

FRAME = {"content-type": wire.MEDIA_TYPE}
FAST = RetryPolicy(attempts=2, backoff_s=0.001, max_backoff_s=0.001)


def make_app(release: ReleaseManifest, client: FakeTriton, tmp_path, **settings) -> FastAPI:
    """The ensemble app with its lifespan's state set by hand (ASGITransport runs no lifespan)."""
    app = create_app(EnsembleSettings(model_repository=tmp_path, max_images=64, **settings))
    app.state.triton = TritonMembers(client, 1.0, FAST)

    async def members_ready(_manifest: ReleaseManifest) -> bool:
        return True

    app.state.releases = ReleaseRegistry(release, members_ready)
    app.state.watcher = ReleaseWatcher(tmp_path, release, app.state.releases.take_up, service="test")
    return app


async def post(app: FastAPI, images: np.ndarray, **params) -> httpx.Response:
    body = wire.encode(wire.Batch(images, release="rel-e"))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ensemble") as client:
        return await client.post("/v1/infer", params=params, content=body, headers=FRAME)


def patches(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, 96, 96, 3), dtype=np.uint8)


def weighted_pixels(seed: int) -> LogitFn:
    """A member whose logit is a fixed, orientation-sensitive linear function of the pixels."""
    weights = np.random.default_rng(seed).normal(size=(96 * 96 * 3,)) / 500.0
    return lambda images: (images.reshape(len(images), -1) / 255.0 - 0.5) @ weights


# Failure semantics


@pytest.fixture
def three(tmp_path) -> ReleaseManifest:
    return release_with(tmp_path, ("a", 1.0, 1.0), ("b", 2.0, 3.0), ("c", 0.5, 1.0), temperature=2.0)


def members_abc(**failures) -> FakeTriton:
    fns = {"a": mean_pixel, "b": lambda x: 2 * mean_pixel(x) - 1, "c": lambda x: -mean_pixel(x)}
    return FakeTriton(fns, failures=failures)


async def test_by_default_one_failed_member_fails_the_request_with_503(three, tmp_path) -> None:
    client = members_abc(c=(UNAVAILABLE, -1))
    response = await post(make_app(three, client, tmp_path, retry_after_s=7), patches(2))
    assert response.status_code == 503 and response.headers["retry-after"] == "7"
    assert response.headers["content-type"] == "application/problem+json"
    assert "c: c failed (2 attempts)" in response.json()["detail"]
    assert len(client.requests("c")) == 2  # retried once (attempts=2), then given up


async def test_a_transient_failure_that_recovers_is_not_degraded(three, tmp_path) -> None:
    response = await post(make_app(three, members_abc(c=(UNAVAILABLE, 1)), tmp_path), patches(2))
    assert response.status_code == 200 and response.json()["degraded"] is False


async def test_min_members_allows_a_degraded_answer_over_the_members_that_answered(
    three, tmp_path, caplog
) -> None:
    images = patches(3)
    app = make_app(three, members_abc(b=(UNAVAILABLE, -1)), tmp_path, min_members=2)
    with caplog.at_level(logging.WARNING, logger="pcam_core.serving"):
        response = await post(app, images)
    assert response.status_code == 200
    body = response.json()
    assert body["degraded"] is True and body["missing_members"] == ["b"]
    assert all(set(r["members"]) == {"a", "c"} for r in body["results"])
    # The same rule over a and c: their weights renormalized, the ensemble temperature still applied.
    logits = np.stack([mean_pixel(images), -mean_pixel(images)], axis=1)
    expected = combine_release(logits, three, ["a", "c"]).probability
    np.testing.assert_allclose([r["probability"] for r in body["results"]], expected, rtol=1e-6)
    assert [r.getMessage() for r in caplog.records if "degraded answer" in r.getMessage()]


async def test_one_member_left_applies_its_temperature_and_the_ensemble_temperature(three, tmp_path) -> None:
    images = patches(2)
    client = members_abc(a=(UNAVAILABLE, -1), c=(UNAVAILABLE, -1))
    body = (await post(make_app(three, client, tmp_path, min_members=1), images)).json()
    assert body["missing_members"] == ["a", "c"]
    z = 2 * mean_pixel(images) - 1  # member b: temperature 2; ensemble temperature 2
    np.testing.assert_allclose([r["probability"] for r in body["results"]], sigmoid(z / 2 / 2), rtol=1e-6)


async def test_fewer_than_min_members_is_503(three, tmp_path) -> None:
    client = members_abc(a=(UNAVAILABLE, -1), c=(UNAVAILABLE, -1))
    response = await post(make_app(three, client, tmp_path, min_members=2), patches(1))
    assert (
        response.status_code == 503
        and "2 of 3 members required, 2 failed: a: a failed (2 attempts); c: " in response.json()["detail"]
    )


@pytest.mark.parametrize("rejection", QUEUE_REJECTIONS)
async def test_a_member_queue_refusing_the_call_is_503_overloaded_not_retried(
    three, tmp_path, rejection
) -> None:
    client = members_abc(b=(UNAVAILABLE, -1, f": {rejection}"))
    response = await post(make_app(three, client, tmp_path, retry_after_s=4), patches(2))
    assert response.status_code == 503 and response.headers["retry-after"] == "4"
    assert response.json()["type"].endswith("/overloaded") and rejection in response.json()["detail"]
    assert len(client.requests("b")) == 1  # a repeat would add load where there is too much


async def test_a_member_with_malformed_output_is_502(three, tmp_path) -> None:
    client = members_abc()
    client.bad_output = {"a"}
    response = await post(make_app(three, client, tmp_path), patches(2))
    assert response.status_code == 502 and "a: expected logit of shape" in response.json()["detail"]


async def test_a_member_refusing_the_call_is_502_not_retried(three, tmp_path) -> None:
    client = members_abc(a=("StatusCode.INVALID_ARGUMENT", -1))
    response = await post(make_app(three, client, tmp_path), patches(2))
    assert response.status_code == 502 and "retry-after" not in response.headers
    assert response.json()["type"].endswith("model-error") and len(client.requests("a")) == 1


# TTA


@pytest.fixture
def two(tmp_path) -> ReleaseManifest:
    return release_with(tmp_path, ("a", 1.5, 1.0), ("b", 0.7, 2.0), temperature=1.3)


def members_ab(max_batch_size: int = 256) -> FakeTriton:
    return FakeTriton({"a": weighted_pixels(1), "b": weighted_pixels(2)}, max_batch_size=max_batch_size)


async def test_tta_sends_the_8_views_of_every_patch_in_one_request_per_member(two, tmp_path) -> None:
    client = members_ab()
    body = (await post(make_app(two, client, tmp_path), patches(3), tta=True)).json()
    assert client.requests("a") == [24] and client.requests("b") == [24]
    assert [r["tta_views"] for r in body["results"]] == [8, 8, 8]


async def test_tta_is_the_mean_over_views_and_respects_the_max_batch_size(two, tmp_path) -> None:
    images = patches(3)
    client = members_ab(max_batch_size=5)
    body = (await post(make_app(two, client, tmp_path), images, tta=True)).json()
    assert sorted(client.requests("a")) == [4, 5, 5, 5, 5]
    views = dihedral_views(images)
    per_view = [
        combine_release(np.stack([weighted_pixels(1)(v), weighted_pixels(2)(v)], axis=1), two).probability
        for v in views
    ]
    np.testing.assert_allclose([r["probability"] for r in body["results"]], np.mean(per_view, axis=0))
    plain = (await post(make_app(two, members_ab(), tmp_path), images)).json()
    assert [r["tta_views"] for r in plain["results"]] == [1, 1, 1]
    assert plain["results"][0]["probability"] != body["results"][0]["probability"]


async def test_tta_is_invariant_to_rotating_the_patch(two, tmp_path) -> None:
    images = patches(2, seed=5)
    upright = (await post(make_app(two, members_ab(), tmp_path), images, tta=True)).json()
    rotated_images = np.ascontiguousarray(np.rot90(images, 1, axes=(1, 2)))
    rotated = (await post(make_app(two, members_ab(), tmp_path), rotated_images, tta=True)).json()
    for mine, theirs in zip(upright["results"], rotated["results"], strict=True):
        # The same 8 views in another order: equal up to the order of an 8-term float64 sum.
        for key in ("probability", "uncertainty"):
            assert mine[key] == pytest.approx(theirs[key], rel=0, abs=1e-12)
        assert mine["members"] == pytest.approx(theirs["members"], rel=0, abs=1e-12)
        assert mine["uncertainty"] > 0


# Explain


def center_member(images: np.ndarray) -> np.ndarray:
    """Sees only the center 32x32: the logit grows with the dark pixels there."""
    dark = (images[:, 32:64, 32:64].mean(axis=-1) < 100).mean(axis=(1, 2))
    return 4 * dark - 1


def tumor_patch() -> np.ndarray:
    image = np.full((1, 96, 96, 3), 200, np.uint8)
    image[:, 32:64, 32:64] = 50
    return image


async def test_explain_marks_the_center_and_leaves_the_corners(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0))
    client = FakeTriton({"a": center_member})
    response = await post(make_app(release, client, tmp_path), tumor_patch(), explain=True)
    assert response.status_code == 200
    assert client.requests("a") == [1 + 121]  # the patch and its 121 occluded copies, one request
    result = response.json()["results"][0]
    explanation = result["explanation"]
    grid = np.array(explanation["grid"])
    assert grid.shape == (11, 11) and explanation["window"] == 16 and explanation["stride"] == 8
    assert explanation["baseline"] == pytest.approx(result["probability"])
    assert (grid[4:7, 4:7] > 0.01).all()  # windows inside the center 32..64
    for corner in (grid[:2, :2], grid[:2, -2:], grid[-2:, :2], grid[-2:, -2:]):
        np.testing.assert_allclose(corner, 0, atol=1e-9)
    png = Image.open(io.BytesIO(base64.b64decode(explanation["overlay_png"])))
    assert png.format == "PNG" and png.size == (96, 96)


async def test_explain_with_tta_is_still_one_request_per_member(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0))
    client = FakeTriton({"a": center_member})
    body = (await post(make_app(release, client, tmp_path), tumor_patch(), explain=True, tta=True)).json()
    assert client.requests("a") == [8 + 121]
    result = body["results"][0]
    assert result["tta_views"] == 8 and len(result["explanation"]["grid"]) == 11


def center_map(images: np.ndarray) -> np.ndarray:
    """An orientation-sensitive map: the dark pixels, plus a stripe down the left edge."""
    heat = (images.mean(axis=-1) < 128).astype(np.float32)
    heat[:, :, :4] += 0.5
    return heat


async def test_explain_cam_comes_with_the_one_call_as_the_members_maps_in_calibrated_logit_units(
    tmp_path,
) -> None:
    release = release_with(tmp_path, ("a", 2.0, 1.0), ("b", 0.5, 3.0), activation_map="cam")
    client = FakeTriton({"a": center_member, "b": center_member}, maps={"a": center_map, "b": center_map})
    images = np.concatenate([tumor_patch(), patches(1)])
    response = await post(make_app(release, client, tmp_path), images, explain="cam")
    assert response.status_code == 200, response.text
    assert client.requests("a") == client.requests("b") == [2]  # the patches alone: no copies
    assert all(names == ["logit", "activation_map"] for names in client.outputs)
    results = response.json()["results"]
    for image, result in zip(images, results, strict=True):
        explanation = result["explanation"]
        assert explanation["method"] == "cam" and explanation["window"] is None
        assert explanation["members"] == {"a": "cam", "b": "cam"}
        assert explanation["baseline"] == pytest.approx(result["probability"])
        # Weights 1:3, temperatures 2 and 0.5: 0.25 / 2 + 0.75 / 0.5 = 1.625 times the shared map.
        expected = 1.625 * center_map(image[None])[0]
        np.testing.assert_allclose(explanation["grid"], expected, atol=1e-4)
    hot = np.asarray(Image.open(io.BytesIO(base64.b64decode(results[0]["explanation"]["overlay_png"]))))
    assert hot[48, 48, 0] > hot[48, 48, 2] and hot.shape == (96, 96, 3)


async def test_explain_cam_with_tta_maps_the_patch_as_sent(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0), activation_map="cam")
    client = FakeTriton({"a": center_member}, maps={"a": center_map})
    body = (await post(make_app(release, client, tmp_path), tumor_patch(), explain="cam", tta=True)).json()
    assert client.requests("a") == [8]
    grid = np.array(body["results"][0]["explanation"]["grid"])
    np.testing.assert_allclose(grid, center_map(tumor_patch())[0], atol=1e-4)  # the left stripe: view 0


async def test_explain_cam_is_refused_by_name_when_a_member_has_no_map(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0))  # graphs exported before the output existed
    client = FakeTriton({"a": center_member})
    response = await post(make_app(release, client, tmp_path), tumor_patch(), explain="cam")
    assert response.status_code == 422 and response.json()["members"] == ["a"]
    assert response.json()["type"].endswith("explain-unavailable") and client.calls == []


async def test_explain_cam_is_not_held_to_the_occlusion_batch_limit(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0), activation_map="cam")
    client = FakeTriton({"a": center_member}, maps={"a": center_map})
    response = await post(
        make_app(release, client, tmp_path, max_explain_images=2), patches(3), explain="cam"
    )
    assert response.status_code == 200 and client.requests("a") == [3]


async def test_a_map_of_the_wrong_shape_is_a_model_error(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0), activation_map="cam")
    client = FakeTriton({"a": center_member}, maps={"a": lambda images: center_map(images)[:, :48]})
    response = await post(make_app(release, client, tmp_path), patches(2), explain="cam")
    assert response.status_code == 502 and "activation_map of shape (2, 96, 96)" in response.json()["detail"]


async def test_explain_is_refused_above_its_batch_limit(two, tmp_path) -> None:
    client = members_ab()
    response = await post(make_app(two, client, tmp_path, max_explain_images=2), patches(3), explain=True)
    assert response.status_code == 422 and response.json()["max_explain_images"] == 2
    assert "at most 2" in response.json()["detail"] and client.calls == []
    assert (await post(make_app(two, client, tmp_path, max_explain_images=2), patches(3))).status_code == 200


@pytest.mark.parametrize(
    ("params", "kind"),
    [({"tta": "maybe"}, "invalid-request"), ({"operating_point": "x"}, "unknown-operating-point")],
)
async def test_bad_options_are_422(two, tmp_path, params, kind) -> None:
    response = await post(make_app(two, members_ab(), tmp_path), patches(1), **params)
    assert response.status_code == 422 and response.json()["type"].endswith(kind)
