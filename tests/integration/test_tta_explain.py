"""Test-time augmentation and occlusion explanations end to end: gateway, preprocess, ensemble, Triton.

Every upload is bytes no other test sends (`unique_png`), so each first answer is a fresh computation.
"""

import base64
import re
from io import BytesIO
from pathlib import Path

import httpx
import numpy as np
import pytest
import redis
from PIL import Image

from devstack.stack import LocalStack
from pcam_core.explain import grid_shape
from services.ensemble.settings import EnsembleSettings
from services.gateway.cache import KEY_PREFIX
from tests.integration.test_predict import PROBLEM, png, triton_patches, unique_png

pytestmark = pytest.mark.integration
ROTATION_ATOL = 1e-5
"""The 8 views of a rotated patch are the 8 views of the patch, in another order: only the order of
the float32 sums over views (and the batch position of each view in Triton) differs."""


def predict(gateway: httpx.Client, data: bytes, **options: str) -> dict:
    response = gateway.post("/v1/predict", params=options, files={"file": ("p.png", data, "image/png")})
    assert response.status_code == 200, response.text
    return response.json()


def answer(result: dict) -> dict:
    """A result without what differs between two responses with the same answer."""
    return {k: v for k, v in result.items() if k not in ("cached", "request_id")}


def test_tta_is_invariant_to_rotating_the_upload(gateway: httpx.Client, patch_paths: list[Path]) -> None:
    data = unique_png(patch_paths[3], 20_000)
    pixels = np.asarray(Image.open(BytesIO(data)).convert("RGB"))
    plain = predict(gateway, data, tta="true")
    assert plain["tta"] is True and plain["cached"] is False
    # Macenko normalization is exactly rotation-equivariant: the stain estimate is built from the set of
    # pixels only (optical-density covariance, angle percentiles, concentration percentiles), and each
    # pixel is then mapped on its own; this patch is tissue, so it is normalized, not passed through.
    assert plain["quality"]["stain_normalized"] is True
    for quarter_turns in (1, 2, 3):
        turned = predict(gateway, png(np.ascontiguousarray(np.rot90(pixels, quarter_turns))), tta="true")
        assert turned["tta"] is True and turned["cached"] is False
        assert turned["probability"] == pytest.approx(plain["probability"], abs=ROTATION_ATOL)
        assert turned["uncertainty"] == pytest.approx(plain["uncertainty"], abs=ROTATION_ATOL)
        assert turned["members"] == pytest.approx(plain["members"], abs=ROTATION_ATOL)
        assert turned["quality"] == plain["quality"]
    flipped = predict(gateway, png(np.ascontiguousarray(pixels[:, ::-1])), tta="true")
    assert flipped["probability"] == pytest.approx(plain["probability"], abs=ROTATION_ATOL)
    # Without TTA the members see another view and answer differently (about 5e-3 on this patch with
    # the smoke models), so the invariance above is TTA's doing.
    untouched = predict(gateway, data)
    rotated = predict(gateway, png(np.ascontiguousarray(np.rot90(pixels))))
    assert untouched["tta"] is False and rotated["tta"] is False
    assert abs(rotated["probability"] - untouched["probability"]) > 10 * ROTATION_ATOL


def test_tta_and_plain_answers_differ_and_never_share_a_cache_entry(
    gateway: httpx.Client, stack: LocalStack, patch_paths: list[Path]
) -> None:
    uploads = [unique_png(path, 20_100 + i) for i, path in enumerate(patch_paths[4:7])]
    plain = [predict(gateway, data) for data in uploads]
    augmented = [predict(gateway, data, tta="true") for data in uploads]
    assert all(p["tta"] is False and p["cached"] is False for p in plain)
    # Same bytes, other options: another cache key, so the TTA answer is computed, not read.
    assert all(a["tta"] is True and a["cached"] is False for a in augmented)
    assert [a["sha256"] for a in augmented] == [p["sha256"] for p in plain]
    # The uncertainty with TTA is the spread over members and the 8 views, not over members alone.
    pairs = list(zip(augmented, plain, strict=True))
    # The release's conformal rule was fitted on one view: TTA answers carry no prediction set.
    assert all(p["prediction_set"] in ([0], [1], [0, 1]) for p in plain)
    assert all(a["prediction_set"] is None for a in augmented)
    assert any(a["uncertainty"] != pytest.approx(p["uncertainty"]) for a, p in pairs)
    assert any(a["probability"] != pytest.approx(p["probability"]) for a, p in pairs)
    for tta, first in (("false", plain), ("true", augmented)):
        again = [predict(gateway, data, tta=tta) for data in uploads]
        assert all(a["cached"] is True for a in again)
        assert [answer(a) for a in again] == [answer(f) for f in first]
    with redis.Redis(port=stack.config.ports.redis) as client:
        for result in plain:
            keys = {k.decode() for k in client.keys(f"{KEY_PREFIX}:*:balanced:*:{result['sha256']}")}
            assert {re.search(r":(tta=[01]):", k).group(1) for k in keys} == {"tta=0", "tta=1"}, keys


def test_explain_returns_a_grid_an_overlay_and_the_plain_probability(
    gateway: httpx.Client, patch_paths: list[Path]
) -> None:
    data = unique_png(patch_paths[7], 21_000)
    explained = predict(gateway, data, explain="true")
    plain = predict(gateway, data)  # another cache key: computed again, without explain
    assert plain["cached"] is False and plain["explanation"] is None
    explanation = explained["explanation"]
    assert explanation is not None
    window, stride = explanation["window"], explanation["stride"]
    defaults = EnsembleSettings.model_fields
    assert (window, stride) == (defaults["occlusion_window"].default, defaults["occlusion_stride"].default)
    rows, columns = grid_shape(96, window, stride)
    assert (rows, columns) == (11, 11)  # windows of 16 px every 8 px: offsets 0, 8, ..., 80
    grid = np.asarray(explanation["grid"])
    assert grid.shape == (rows, columns) and np.isfinite(grid).all() and np.abs(grid).max() <= 1
    assert explanation["baseline"] == pytest.approx(plain["probability"], abs=1e-6)
    assert explained["probability"] == pytest.approx(plain["probability"], abs=1e-6)
    overlay = Image.open(BytesIO(base64.b64decode(explanation["overlay_png"], validate=True)))
    assert overlay.format == "PNG" and overlay.size == (96, 96) and overlay.mode in ("RGB", "RGBA")

    # With TTA too, the probability is the TTA one while the baseline stays the unaugmented patch's:
    # the occluded copies are not augmented, and the grid compares like with like.
    both = predict(gateway, data, explain="true", tta="true")
    augmented = predict(gateway, data, tta="true")
    assert both["tta"] is True and both["probability"] == pytest.approx(augmented["probability"], abs=1e-6)
    assert both["explanation"]["baseline"] == pytest.approx(plain["probability"], abs=1e-6)
    assert np.asarray(both["explanation"]["grid"]) == pytest.approx(grid, abs=1e-6)


def test_explain_in_a_batch_explains_each_image(gateway: httpx.Client, patch_paths: list[Path]) -> None:
    uploads = [unique_png(path, 21_100 + i) for i, path in enumerate(patch_paths[8:10])]
    response = gateway.post(
        "/v1/predict/batch",
        params={"explain": "true"},
        files=[("files", (f"{i}.png", data)) for i, data in enumerate(uploads)],
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    for data, result in zip(uploads, results, strict=True):
        single = predict(gateway, data)
        assert result["explanation"]["baseline"] == pytest.approx(single["probability"], abs=1e-6)
        assert np.asarray(result["explanation"]["grid"]).shape == (11, 11)
    assert results[0]["explanation"]["grid"] != results[1]["explanation"]["grid"]


def over_the_explain_limit(
    gateway: httpx.Client, patch_paths: list[Path], explain: str, salt: int
) -> tuple[httpx.Response, list[bytes], int]:
    """A batch of one image more than the explain limit, explained: the response, uploads and limit."""
    limit = EnsembleSettings().max_explain_images  # the stack's services run with default settings
    uploads = [unique_png(patch_paths[i % len(patch_paths)], salt + i) for i in range(limit + 1)]
    response = gateway.post(
        "/v1/predict/batch",
        params={"explain": explain},
        files=[("files", (f"{i}.png", data)) for i, data in enumerate(uploads)],
    )
    return response, uploads, limit


def test_explain_on_too_many_images_is_a_422_problem(gateway: httpx.Client, patch_paths: list[Path]) -> None:
    response, uploads, limit = over_the_explain_limit(gateway, patch_paths, "true", 21_200)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["type"].endswith("/explain-batch-size") and body["status"] == 422
    assert str(limit + 1) in body["detail"] and str(limit) in body["detail"]
    assert body["request_id"] == response.headers["x-request-id"]
    # Without explain the same batch is fine.
    fine = gateway.post(
        "/v1/predict/batch", files=[("files", (f"{i}.png", data)) for i, data in enumerate(uploads)]
    )
    assert fine.status_code == 200 and len(fine.json()["results"]) == limit + 1


def test_explain_cam_is_the_members_maps_from_the_one_triton_call(
    gateway: httpx.Client, stack: LocalStack, patch_paths: list[Path]
) -> None:
    data = unique_png(patch_paths[11], 21_300)
    plain = predict(gateway, data)
    before = triton_patches(stack)
    explained = predict(gateway, data, explain="cam")
    after = triton_patches(stack)
    # One patch per member, as for the plain answer: the maps are outputs of the same forward pass.
    assert {model: after[model] - before.get(model, 0) for model in after} == {
        model: 1.0 for model in plain["members"]
    }
    explanation = explained["explanation"]
    # The smoke release has one member of each kind: a CNN's CAM and a ViT's attention rollout.
    assert explanation["method"] == "cam" and explanation["members"] == {
        "resnet": "cam",
        "vit": "attention_rollout",
    }
    grid = np.asarray(explanation["grid"])
    assert grid.shape == (96, 96) and np.isfinite(grid).all() and np.abs(grid).max() > 0
    assert explanation["baseline"] == pytest.approx(plain["probability"], abs=1e-6)
    assert explained["probability"] == pytest.approx(plain["probability"], abs=1e-6)
    overlay = Image.open(BytesIO(base64.b64decode(explanation["overlay_png"], validate=True)))
    assert overlay.format == "PNG" and overlay.size == (96, 96)
    occlusion = predict(gateway, data, explain="occlusion")
    assert occlusion["cached"] is False and occlusion["explanation"]["method"] == "occlusion"
    again = predict(gateway, data, explain="cam")
    assert again["cached"] is True and again["explanation"] == explanation


def test_explain_cam_is_not_held_to_the_occlusion_limit(
    gateway: httpx.Client, patch_paths: list[Path]
) -> None:
    response, _, limit = over_the_explain_limit(gateway, patch_paths, "cam", 21_400)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == limit + 1 and all(r["explanation"]["method"] == "cam" for r in results)
