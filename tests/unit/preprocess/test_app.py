import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from pcam_core import wire
from services.preprocess.app import create_app
from services.preprocess.settings import PreprocessSettings
from tests.unit.common.release_fixture import write_test_release


@pytest.fixture
def client(tmp_path):
    write_test_release(tmp_path, "rel-app")
    settings = PreprocessSettings(model_repository=tmp_path, max_images=3, max_image_bytes=64 * 1024)
    with TestClient(create_app(settings)) as client:
        yield client


def test_batch_comes_back_binary_with_one_item_per_upload(client, patch_paths) -> None:
    files = [("files", ("a.png", patch_paths[0].read_bytes())), ("files", ("b.txt", b"nope"))]
    response = client.post("/v1/preprocess", files=files)
    assert response.status_code == 200
    assert response.headers["content-type"] == wire.MEDIA_TYPE
    batch = wire.decode(response.content)
    assert batch.images.shape == (1, 96, 96, 3)
    assert [item.ok for item in batch.items] == [True, False]
    assert batch.release == "rel-app"


def test_readyz_names_the_release(client) -> None:
    assert client.get("/readyz").json()["release"] == "rel-app"


def test_too_many_files_is_a_problem(client, patch_paths) -> None:
    files = [("files", (f"{i}.png", patch_paths[0].read_bytes())) for i in range(4)]
    response = client.post("/v1/preprocess", files=files)
    assert response.status_code == 413 and "3 files" in response.json()["detail"]
    assert response.headers["content-type"] == "application/problem+json"


def test_oversized_file_is_413(client) -> None:
    response = client.post("/v1/preprocess", files=[("files", ("big.png", b"\x89PNG" + b"0" * 70_000))])
    assert response.status_code == 413 and "65536" in response.json()["detail"]


def test_json_body_is_415(client) -> None:
    response = client.post("/v1/preprocess", json={"files": []})
    assert response.status_code == 415 and "multipart/form-data" in response.json()["detail"]


def test_missing_field_is_422(client, patch_paths) -> None:
    response = client.post("/v1/preprocess", files=[("image", ("a.png", patch_paths[0].read_bytes()))])
    assert response.status_code == 422 and "'files'" in response.json()["detail"]


def test_a_new_release_is_served_without_a_restart(tmp_path, patch_paths) -> None:
    import time

    import numpy as np

    from pcam_core.release import write_release

    first = write_test_release(tmp_path, "rel-1")
    settings = PreprocessSettings(model_repository=tmp_path, release_poll_s=0.02)
    files = [("files", ("a.png", patch_paths[0].read_bytes()))]
    with TestClient(create_app(settings)) as client:
        before = wire.decode(client.post("/v1/preprocess", files=files).content)
        # Another stain reference: the same upload must come back normalized differently.
        reference = first.stain_reference.model_copy(
            update={"max_concentrations": tuple(2 * c for c in first.stain_reference.max_concentrations)}
        )
        write_release(
            first.model_copy(update={"release_id": "rel-2", "stain_reference": reference}), tmp_path
        )
        deadline = time.monotonic() + 10
        while client.get("/readyz").json()["release"] != "rel-2" and time.monotonic() < deadline:
            time.sleep(0.02)
        after = wire.decode(client.post("/v1/preprocess", files=files).content)
        # The release the ensemble still serves, asked for by the gateway mid-swap: still held.
        previous = wire.decode(
            client.post("/v1/preprocess", params={"release": "rel-1"}, files=files).content
        )
        unknown = wire.decode(client.post("/v1/preprocess", params={"release": "rel-9"}, files=files).content)
    assert before.release == "rel-1" and after.release == "rel-2"
    assert not np.array_equal(before.images, after.images)
    assert previous.release == "rel-1" and np.array_equal(previous.images, before.images)
    assert unknown.release == "rel-2"  # not held: the newest


def frame(*uploads: bytes) -> dict:
    return {"content": wire.encode_uploads(uploads), "headers": {"content-type": wire.UPLOADS_MEDIA_TYPE}}


def test_the_uploads_frame_answers_as_multipart_does(client, patch_paths) -> None:
    uploads = [patch_paths[0].read_bytes(), b"nope", patch_paths[1].read_bytes()]
    framed = client.post("/v1/preprocess", **frame(*uploads))
    multipart = client.post(
        "/v1/preprocess", files=[("files", (f"{i}", data)) for i, data in enumerate(uploads)]
    )
    assert framed.status_code == multipart.status_code == 200
    assert framed.content == multipart.content


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (frame(b"a", b"b", b"c", b"d"), 413, "too-many-files"),
        (frame(b"\x89PNG" + b"0" * 70_000), 413, "image-too-large"),
        (frame(), 422, "missing-file"),
        (
            {"content": b"\x00\x00\x00\x02abc", "headers": {"content-type": wire.UPLOADS_MEDIA_TYPE}},
            400,
            "malformed-batch",
        ),
    ],
    ids=["too-many", "too-large", "empty", "malformed"],
)
def test_a_bad_uploads_frame_is_the_same_problem_as_bad_multipart(client, body, status, kind) -> None:
    response = client.post("/v1/preprocess", **body)
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith(kind)
    assert response.headers["content-type"] == "application/problem+json"


def pixels(*paths) -> dict:
    images = np.stack([np.asarray(Image.open(path).convert("RGB")) for path in paths])
    return {"content": wire.encode(wire.Batch(images)), "headers": {"content-type": wire.MEDIA_TYPE}}


def test_patches_sent_as_pixels_are_normalized_as_their_png_uploads_are(client, patch_paths) -> None:
    """The tensor input: the same patches as pixels give the same normalized batch as their PNGs."""
    as_pixels = client.post("/v1/preprocess", **pixels(patch_paths[0], patch_paths[1]))
    as_png = client.post(
        "/v1/preprocess", files=[("files", (p.name, p.read_bytes())) for p in patch_paths[:2]]
    )
    assert as_pixels.status_code == as_png.status_code == 200
    assert as_pixels.content == as_png.content
    assert [item.ok for item in wire.decode(as_pixels.content).items] == [True, True]


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        (
            {"content": b"\x00\x00\x00\x09{}", "headers": {"content-type": wire.MEDIA_TYPE}},
            400,
            "malformed-batch",
        ),
        (
            {
                "content": wire.encode(wire.Batch(np.zeros((0, 96, 96, 3), np.uint8))),
                "headers": {"content-type": wire.MEDIA_TYPE},
            },
            422,
            "batch-size",
        ),
        (
            {
                "content": wire.encode(wire.Batch(np.zeros((4, 96, 96, 3), np.uint8))),
                "headers": {"content-type": wire.MEDIA_TYPE},
            },
            422,
            "batch-size",
        ),
    ],
    ids=["malformed", "empty", "too-many"],
)
def test_a_bad_pixel_frame_is_a_problem(client, body, status, kind) -> None:
    response = client.post("/v1/preprocess", **body)
    assert response.status_code == status, response.text
    assert response.json()["type"].endswith(kind)
