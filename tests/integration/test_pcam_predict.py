"""`pcam predict --url` through the real stack gives what `pcam predict --repository` computes in-process."""

import csv
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from devstack.stack import LocalStack
from pcam_core.release import ReleaseManifest
from training.cli import app
from training.predict import COLUMNS

pytestmark = pytest.mark.integration
PROBABILITY_ATOL = 1e-5
"""Triton's python backend runs the same model.onnx with onnxruntime; only batch composition differs."""


def run_predict(args: list[str], output: Path) -> list[dict[str, str]]:
    result = CliRunner().invoke(app, ["predict", *args, "--output", str(output)])
    assert result.exit_code == 1, result.output  # the wrong-size file is an error row
    assert "Research use only" in result.output
    with output.open(newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames or ()) == COLUMNS
        return list(reader)


def test_url_rows_equal_in_process_rows(
    stack: LocalStack,
    model_repository: Path,
    release: ReleaseManifest,
    patch_paths: list[Path],
    tmp_path: Path,
) -> None:
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    for path in patch_paths:
        (inputs / path.name).write_bytes(path.read_bytes())
    buffer = BytesIO()
    Image.fromarray(np.full((64, 64, 3), 180, np.uint8)).save(buffer, format="PNG")
    (inputs / "wrong_size.png").write_bytes(buffer.getvalue())

    common = [str(inputs), "--operating-point", "screening"]
    remote = run_predict([*common, "--url", stack.config.url("gateway")], tmp_path / "remote.csv")
    local = run_predict([*common, "--repository", str(model_repository)], tmp_path / "local.csv")

    assert len(remote) == len(local) == len(patch_paths) + 1
    threshold = release.ensemble.operating_points["screening"].threshold
    for r, loc in zip(remote, local, strict=True):
        assert r["file"] == loc["file"] and r["sha256"] == loc["sha256"]
        assert r["error"] == loc["error"]  # the same decode function on both sides, the same problem
        if loc["error"]:
            assert Path(loc["file"]).name == "wrong_size.png"
            continue
        for key in ("operating_point", "release_id", "stain_normalized", "stain_skip_reason", "tta"):
            assert r[key] == loc[key], key
        assert r["release_id"] == release.release_id
        assert float(r["threshold"]) == pytest.approx(threshold)
        assert float(r["tissue_fraction"]) == pytest.approx(float(loc["tissue_fraction"]))
        p_remote, p_local = float(r["probability"]), float(loc["probability"])
        assert p_remote == pytest.approx(p_local, abs=PROBABILITY_ATOL)
        assert float(r["uncertainty"]) == pytest.approx(float(loc["uncertainty"]), abs=PROBABILITY_ATOL)
        if abs(p_local - threshold) > PROBABILITY_ATOL:
            assert r["label"] == loc["label"]
