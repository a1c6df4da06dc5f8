"""`pcam predict` in-process on real H&E patches with the shared smoke build, and the gateway client's
mapping with httpx's MockTransport (the real gateway: tests/integration/test_pcam_predict.py)."""

from __future__ import annotations

import csv
import hashlib
import json
from io import BytesIO
from pathlib import Path
from types import SimpleNamespace

import h5py
import httpx
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from pcam_core.release import load_release
from pcam_core.rule import combine_release, decide
from services.preprocess.decode import decode_patch
from services.preprocess.stain import MacenkoNormalizer
from training import RESEARCH_USE
from training.cli import app
from training.data.pcam_h5 import X_KEY, create_patch_dataset
from training.evaluate import score_split
from training.predict import (
    COLUMNS,
    LocalPredictor,
    collect_inputs,
    predict_local,
    predict_remote,
)

runner = CliRunner()


def png(pixels: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def inputs(patch_paths: list[Path], tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[Path]]:
    """A directory of real patches plus a wrong-size PNG, a non-image '.png' and a text file."""
    directory = tmp_path_factory.mktemp("predict-in")
    for path in patch_paths[:12]:
        (directory / path.name).write_bytes(path.read_bytes())
    (directory / "a_small.png").write_bytes(png(np.full((64, 64, 3), 200, np.uint8)))
    (directory / "b_not_an_image.png").write_bytes(b"not an image at all")
    (directory / "notes.txt").write_text("skipped: not an image suffix")
    (directory / "subdir").mkdir()
    return directory, sorted(p for p in directory.iterdir() if p.suffix == ".png")


@pytest.fixture(scope="module")
def predictor(built) -> LocalPredictor:
    return LocalPredictor(built[0])


def test_collect_inputs_sorts_directories_and_reports_skips(inputs, tmp_path: Path):
    directory, pngs = inputs
    missing = tmp_path / "missing.png"
    collected = collect_inputs([directory, missing])
    assert collected.files == [*pngs, missing]  # explicit paths are kept: they get (error) rows
    assert [p.name for p in collected.skipped] == ["notes.txt", "subdir"]


def test_in_process_rows_equal_the_evaluate_scoring_path(built, inputs, predictor, tmp_path: Path):
    repo, _ = built
    manifest = load_release(repo)
    _, pngs = inputs
    rows = predict_local(pngs, repo, "screening", predictor=predictor)
    assert [r.file for r in rows] == [str(p) for p in pngs]
    bad = {"a_small.png": "wrong-size: ", "b_not_an_image.png": "unsupported-image: "}
    for row in rows:
        assert row.sha256 == hashlib.sha256(Path(row.file).read_bytes()).hexdigest()
        name = Path(row.file).name
        if name in bad:
            assert row.error is not None and row.error.startswith(bad[name]) and row.probability is None
    good = [(p, r) for p, r in zip(pngs, rows, strict=True) if p.name not in bad]
    assert len(good) == 12 and all(r.error is None for _, r in good)

    # The same patches, decoded and normalized independently, through training.evaluate's scorer.
    normalized = MacenkoNormalizer(manifest.stain_reference).normalize(
        np.stack([decode_patch(p.read_bytes()) for p, _ in good])
    )
    x_path = tmp_path / "x.h5"
    with h5py.File(x_path, "w") as f:
        create_patch_dataset(f, X_KEY, len(good))[:] = normalized.images
    out = combine_release(score_split(manifest, repo, x_path), manifest)
    threshold = manifest.ensemble.operating_points["screening"].threshold
    got = np.array([r.probability for _, r in good])
    np.testing.assert_allclose(got, out.probability, rtol=0, atol=1e-6)
    np.testing.assert_allclose([r.uncertainty for _, r in good], out.uncertainty, rtol=0, atol=1e-6)
    assert [r.label for _, r in good] == decide(got, threshold).tolist()
    for i, (_, row) in enumerate(good):
        assert row.threshold == threshold and row.operating_point == "screening" and row.tta is False
        assert row.release_id == manifest.release_id
        assert row.stain_normalized == bool(normalized.applied[i])
        assert row.tissue_fraction == round(float(normalized.tissue_fraction[i]), 4)


def scores(predictor: LocalPredictor, images: np.ndarray, tta: bool = False) -> SimpleNamespace:
    """The predictor's answer as arrays: probability, uncertainty, member probabilities per patch."""
    answer = predictor.score(images, "balanced", tta=tta)
    return SimpleNamespace(
        probability=np.array([r.probability for r in answer.results]),
        uncertainty=np.array([r.uncertainty for r in answer.results]),
        member_probabilities=np.array([list(r.members.values()) for r in answer.results]),
    )


def explicit_dihedral(images: np.ndarray) -> list[np.ndarray]:
    """The 8 rotations/flips with numpy, independently of training.augment."""
    return [
        np.rot90(np.flip(images, 2) if flip else images, k, axes=(1, 2)) for flip in (0, 1) for k in range(4)
    ]


def test_tta_is_the_mean_over_explicitly_transformed_copies(built, patch_paths, predictor):
    manifest = load_release(built[0])
    images = (
        MacenkoNormalizer(manifest.stain_reference)
        .normalize(np.stack([decode_patch(p.read_bytes()) for p in patch_paths[:5]]))
        .images
    )
    views = explicit_dihedral(images)
    assert len({v[0].tobytes() for v in views}) == 8  # a real patch: 8 distinct views
    plain = [scores(predictor, np.ascontiguousarray(v)) for v in views]
    tta = scores(predictor, images, tta=True)
    np.testing.assert_allclose(tta.probability, np.mean([s.probability for s in plain], axis=0), atol=1e-6)
    spread = np.concatenate([s.member_probabilities for s in plain], axis=1).std(axis=1)
    np.testing.assert_allclose(tta.uncertainty, spread, atol=1e-6)
    assert not np.allclose(tta.probability, plain[0].probability, atol=1e-9)  # the views did change it


def test_tta_rows_use_the_tta_scores(built, patch_paths, predictor):
    manifest = load_release(built[0])
    rows = predict_local(patch_paths[:3], built[0], tta=True, predictor=predictor)
    images = (
        MacenkoNormalizer(manifest.stain_reference)
        .normalize(np.stack([decode_patch(p.read_bytes()) for p in patch_paths[:3]]))
        .images
    )
    expected = scores(predictor, images, tta=True)
    assert all(r.tta and r.operating_point == "balanced" for r in rows)
    np.testing.assert_allclose([r.probability for r in rows], expected.probability, atol=1e-6)
    np.testing.assert_allclose([r.uncertainty for r in rows], expected.uncertainty, atol=1e-6)


def test_cli_writes_csv_and_exits_1_on_error_rows(built, inputs, tmp_path: Path):
    directory, pngs = inputs
    output = tmp_path / "out" / "results.csv"
    args = ["predict", str(directory), "--repository", str(built[0]), "--output", str(output), "--tta"]
    result = runner.invoke(app, args)
    assert result.exit_code == 1, result.output  # two bad files; every row still written
    assert RESEARCH_USE in result.output and "skipped 2" in result.output and "notes.txt" in result.output
    with output.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        rows = list(reader)
    assert [r["file"] for r in rows] == [str(p) for p in pngs]
    assert sum(bool(r["error"]) for r in rows) == 2
    for row in rows:
        assert row["tta"] == "True" and row["operating_point"] == "balanced"
        if not row["error"]:
            assert 0 <= float(row["probability"]) <= 1 and row["label"] in ("0", "1")
            assert float(row["uncertainty"]) >= 0 and row["stain_normalized"] in ("True", "False")


def test_cli_one_image_prints_a_table(built, patch_paths):
    result = runner.invoke(app, ["predict", str(patch_paths[0]), "-r", str(built[0]), "-p", "conservative"])
    assert result.exit_code == 0, result.output
    assert "probability" in result.output and "screening" in result.output  # the alias, resolved
    assert RESEARCH_USE in result.output


def test_cli_csv_to_stdout(built, patch_paths):
    result = runner.invoke(app, ["predict", *map(str, patch_paths[:2]), "-r", str(built[0]), "-o", "-"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(result.stdout.splitlines()))
    assert [r["file"] for r in rows] == [str(p) for p in patch_paths[:2]]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "exactly one of"),
        (["--url", "http://gateway:8080", "--repository", "x"], "exactly one of"),
        (["--repository", "x", "-p", "nope"], "unknown operating point"),
    ],
)
def test_cli_refuses_bad_options_before_scoring(patch_paths, extra, message):
    result = runner.invoke(app, ["predict", str(patch_paths[0]), *extra])
    assert result.exit_code == 1
    assert message in " ".join(result.output.split())


# The gateway client, against a fake gateway answering the public API's shapes (pcam_core/schemas.py).


def fake_prediction(data: bytes) -> dict:
    return {
        "probability": 0.25,
        "label": 0,
        "operating_point": "balanced",
        "threshold": 0.5,
        "uncertainty": 0.01,
        "members": {"a": 0.25},
        "quality": {
            "tissue_fraction": 0.5,
            "stain_normalized": False,
            "stain_skip_reason": "insufficient_tissue",
        },
        "release": "r1",
        "sha256": hashlib.sha256(data).hexdigest(),
        "cached": False,
        "request_id": "x",
    }


WRONG_SIZE = {"type": "https://pcam.example/problems/wrong-size", "title": "Wrong image size", "status": 422,
              "detail": "Received 64x64; 96x96 is required."}  # fmt: skip


def fake_gateway(refuse_batches: bool = False) -> tuple[httpx.MockTransport, list[str]]:
    calls: list[str] = []

    def parts(request: httpx.Request) -> list[bytes]:
        # The multipart body's file contents (the test's files hold no CRLF).
        body = request.read()
        boundary = request.headers["content-type"].split("boundary=")[1].encode()
        chunks = body.split(b"--" + boundary)[1:-1]
        return [chunk.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n") for chunk in chunks]

    def answer(data: bytes) -> dict:
        return WRONG_SIZE if data.startswith(b"bad") else fake_prediction(data)

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(f"{request.url.path}?{request.url.query.decode()}")
        files = parts(request)
        if request.url.path == "/v1/predict/batch":
            if refuse_batches:
                return httpx.Response(413, json={"type": "x/image-too-large", "title": "t", "status": 413,
                                                 "detail": "File 1 exceeds the limit."})  # fmt: skip
            return httpx.Response(200, json={"results": [answer(d) for d in files], "request_id": "x"})
        body = answer(files[0])
        return httpx.Response(422 if body is WRONG_SIZE else 200, json=body)

    return httpx.MockTransport(handler), calls


@pytest.mark.parametrize("refuse_batches", [False, True])
def test_remote_rows_from_the_gateway_answers(tmp_path: Path, refuse_batches: bool):
    good, bad = tmp_path / "good.png", tmp_path / "bad.png"
    good.write_bytes(b"good bytes")
    bad.write_bytes(b"bad bytes")
    transport, calls = fake_gateway(refuse_batches)
    rows = predict_remote(
        [good, bad, tmp_path / "missing.png"], "http://gw", "aggressive", transport=transport
    )
    assert calls[0] == "/v1/predict/batch?operating_point=high_specificity"
    assert len(calls) == (3 if refuse_batches else 1)  # refused: each file alone
    ok, wrong, missing = rows
    assert ok.error is None and ok.probability == 0.25 and ok.release_id == "r1" and ok.tta is False
    assert ok.sha256 == hashlib.sha256(b"good bytes").hexdigest()
    assert ok.stain_normalized is False and ok.stain_skip_reason == "insufficient_tissue"
    assert wrong.error == "wrong-size: Received 64x64; 96x96 is required." and wrong.probability is None
    assert missing.error is not None and missing.error.startswith("unreadable")
    assert json.loads(ok.model_dump_json())["tissue_fraction"] == 0.5


def test_remote_gateway_down_ends_the_run(tmp_path: Path):
    path = tmp_path / "p.png"
    path.write_bytes(b"x")
    calls = []

    def unavailable(request: httpx.Request) -> httpx.Response:
        calls.append(1)
        body = {"type": "x/unavailable", "title": "t", "status": 503, "detail": "ensemble down"}
        return httpx.Response(503, json=body, headers={"retry-after": "0"})

    with pytest.raises(RuntimeError, match="ensemble down"):
        predict_remote([path], "http://gw", transport=httpx.MockTransport(unavailable))
    assert len(calls) == 4  # retried after Retry-After, then given up


def test_remote_wrong_api_key_ends_the_run(tmp_path: Path):
    path = tmp_path / "p.png"
    path.write_bytes(b"x")
    keys = []

    def forbidden(request: httpx.Request) -> httpx.Response:
        keys.append(request.headers.get("x-api-key"))
        body = {
            "type": "x/forbidden",
            "title": "Invalid API key",
            "status": 403,
            "detail": "The API key is not valid.",
        }
        return httpx.Response(403, json=body)

    with pytest.raises(RuntimeError, match="answered with forbidden: The API key is not valid"):
        predict_remote([path, path], "http://gw", transport=httpx.MockTransport(forbidden), api_key="nope")
    assert keys == ["nope"]  # not retried, and not file by file


def tta_gateway(applied: bool) -> tuple[httpx.MockTransport, list[str]]:
    """A gateway answering every batch with one result whose `tta` says whether TTA was applied."""
    calls: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        calls.append(request.url.query.decode())
        body = {**fake_prediction(b"good bytes"), "tta": applied}
        return httpx.Response(200, json={"results": [body], "request_id": "x"})

    return httpx.MockTransport(handler), calls


def test_remote_tta_is_requested_and_a_gateway_without_it_ends_the_run(tmp_path: Path):
    path = tmp_path / "good.png"
    path.write_bytes(b"good bytes")
    older, calls = tta_gateway(applied=False)
    with pytest.raises(RuntimeError, match="without TTA"):
        predict_remote([path], "http://gw", tta=True, transport=older)
    assert calls == ["operating_point=balanced&tta=true"]
    # Without --tta an answer without TTA is what was asked for.
    (row,) = predict_remote([path], "http://gw", transport=older)
    assert row.error is None and row.tta is False


def test_remote_tta_rows_say_tta(tmp_path: Path):
    path = tmp_path / "good.png"
    path.write_bytes(b"good bytes")
    current, calls = tta_gateway(applied=True)
    (row,) = predict_remote([path], "http://gw", "screening", tta=True, transport=current)
    assert calls == ["operating_point=screening&tta=true"]
    assert row.error is None and row.tta is True
