"""`--precision int8`: the cpu target serves the static-QDQ INT8 exports, calibrated on their own logits.

No new training: the shared smoke work dir is copied, and training resumes from its finished state.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from pcam_core.release import Member, load_release
from pcam_core.rule import combine_release
from training.calibrate import Calibration, fit_temperature
from training.cli import app
from training.config import load_config
from training.data.pcam_h5 import iter_images, read_labels
from training.graphs import onnx_logits, session
from training.repository import BACKEND_SOURCE, config_pbtxt, sha256_file

runner = CliRunner()
HEADS = {"test_resnet": "/fc/Gemm", "test_vit": "/head/Gemm"}


def _text(result) -> str:
    return " ".join(result.output.split())  # rich wraps long lines


@pytest.fixture(scope="module")
def int8_build(built, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """(repository, work dir, output) of `pcam build-repository --precision int8` over a copy of the smoke work dir."""
    _, work = built
    root = tmp_path_factory.mktemp("int8")
    copy, repo = Path(shutil.copytree(work, root / "work")), root / "repo"
    args = ["build-repository", "-c", "smoke", "-o", str(repo), "-w", str(copy), "--precision", "int8"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return repo, copy, result.output


@pytest.fixture
def fp32_work(built, tmp_path: Path) -> Path:
    """A private copy of the smoke work dir, exported fp32 only (no model.int8.onnx)."""
    _, work = built
    return Path(shutil.copytree(work, tmp_path / "work"))


def test_the_repository_serves_the_int8_graphs_and_release_json_says_so(int8_build):
    repo, work, output = int8_build
    manifest = load_release(repo)
    triton = load_config("smoke").triton
    assert "(cpu, int8)" in output
    for m in manifest.members:
        served, int8 = repo / m.name / "1" / "model.onnx", work / "members" / m.name / "model.int8.onnx"
        assert m.precision == "int8"
        assert served.read_bytes() == int8.read_bytes()
        assert m.sha256 == sha256_file(served) != sha256_file(work / "members" / m.name / "model.onnx")
        assert (repo / m.name / "1" / "model.py").read_bytes() == BACKEND_SOURCE.read_bytes()
        assert (repo / m.name / "config.pbtxt").read_text() == config_pbtxt(m.name, triton)
    assert json.loads((repo / "release.json").read_text())["members"][0]["precision"] == "int8"


def test_calibration_is_fitted_on_the_int8_logits(int8_build):
    repo, work, _ = int8_build
    manifest = load_release(repo)
    valid = work / "normalized" / "valid.h5"
    labels = read_labels(valid)
    assert Calibration.model_validate_json((work / "calibration.json").read_text()).precision == "int8"
    for m in manifest.members:
        int8 = np.load(work / "members" / m.name / "valid_logits.int8.npy")
        fp32 = np.load(work / "members" / m.name / "valid_logits.npy")
        assert m.temperature == pytest.approx(fit_temperature(int8, labels))
        assert m.temperature != pytest.approx(fit_temperature(fp32, labels))  # 1-2 % apart on smoke
    # The graph that is served reproduces the recorded operating points through the serving rule.
    served = np.stack(
        [
            onnx_logits(session(repo / m.name / "1" / "model.onnx"), iter_images(valid))
            for m in manifest.members
        ],
        axis=1,
    )
    p = combine_release(served, manifest).probability
    for point in manifest.ensemble.operating_points.values():
        predicted = p >= point.threshold
        assert predicted[labels == 1].mean() == pytest.approx(point.sensitivity)
        assert (~predicted[labels == 0]).mean() == pytest.approx(point.specificity)


def test_export_records_and_shows_the_int8_speedup(int8_build):
    _, work, _ = int8_build
    for member in load_config("smoke").members:
        int8 = json.loads((work / "members" / member.name / "export.json").read_text())["formats"]["int8"]
        for batch in (32, 1):
            for key in (f"speedup_batch{batch}", f"fp32_ms_batch{batch}", f"int8_ms_batch{batch}"):
                assert int8[key] > 0, key
            assert int8[f"rounds_batch{batch}"] >= 5
        assert int8["timing_threads"] == load_config("smoke").triton.intra_op_threads
        # The classifier head after the global pooling (test_resnet) or the class token (test_vit) stays
        # float, and so does the feature distance's product beside it.
        assert sorted(int8["float_nodes"]) == sorted(["/MatMul", HEADS[member.architecture]])
    from training.commands.views import export_lines
    from training.workdir import WorkDir

    reports = {
        m.name: json.loads((work / "members" / m.name / "export.json").read_text())
        for m in load_config("smoke").members
    }
    lines = [line for line in export_lines(reports, WorkDir(work)) if ": int8 " in line]
    assert len(lines) == 2 and all("speedup over fp32: x" in line and "at batch 1" in line for line in lines)
    assert all("left in float after the pooling: 2 node(s)" in line for line in lines)


def test_package_warns_about_a_slower_or_less_accurate_int8_member(
    int8_build, tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    _, work, _ = int8_build
    copy = Path(shutil.copytree(work, tmp_path / "work"))
    report = copy / "members" / "resnet" / "export.json"
    entry = json.loads(report.read_text())
    entry["formats"]["int8"] |= {
        "speedup_batch32": 0.5,
        "speedup_batch1": 1.5,
        "auc_fp32": 0.9,
        "auc_int8": 0.8,
    }
    report.write_text(json.dumps(entry))
    args = ["package", "-c", "smoke", "-w", str(copy), "-o", str(tmp_path / "repo"), "--precision", "int8"]
    with caplog.at_level(logging.WARNING, logger="training.pipeline"):
        result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output  # a warning, not a refusal
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    resnet = [w for w in warnings if w.startswith("resnet: ")]
    assert resnet == [
        "resnet: int8 is slower than fp32 (x0.50 at batch 32); judge it before serving it in int8",
        "resnet: int8 loses 11.1% of the validation AUC (0.9000 -> 0.8000); judge it before serving it in int8",
    ]
    assert load_release(tmp_path / "repo").members[0].precision == "int8"


def test_the_gpu_target_refuses_int8(int8_build, fp32_work: Path, tmp_path: Path):
    repo, work, _ = int8_build
    for command in (
        ["build-repository", "-c", "smoke", "-w", str(fp32_work)],
        ["package", "-c", "smoke", "-w", str(work)],
    ):
        result = runner.invoke(
            app, [*command, "-o", str(tmp_path / "gpu"), "-t", "gpu", "--precision", "int8"]
        )
        assert result.exit_code == 1, result.output
        assert "cpu target only" in _text(result) and "TensorRT" in _text(result)
    retarget = runner.invoke(app, ["retarget", "-r", str(repo), "-o", str(tmp_path / "gpu"), "-t", "gpu"])
    assert retarget.exit_code == 1 and "cpu target only" in _text(retarget)
    assert not (tmp_path / "gpu").exists()


def test_int8_without_an_int8_export_names_the_step(fp32_work: Path, tmp_path: Path):
    assert not list(fp32_work.glob("members/*/model.int8.onnx"))
    package = ["package", "-c", "smoke", "-w", str(fp32_work), "-o", str(tmp_path / "repo")]
    result = runner.invoke(app, [*package, "--precision", "int8"])
    assert result.exit_code == 1 and "run `pcam export --format int8` first" in _text(result)
    calibrate = runner.invoke(app, ["calibrate", "-c", "smoke", "-w", str(fp32_work), "--precision", "int8"])
    assert calibrate.exit_code == 1 and "run `pcam export --format int8` first" in _text(calibrate)
    unknown = runner.invoke(app, [*package, "--precision", "fp16"])
    assert unknown.exit_code == 1 and "unknown precision 'fp16'" in _text(unknown)
    assert not (tmp_path / "repo").exists()


def test_a_calibration_for_the_other_precision_is_refused(int8_build, tmp_path: Path):
    _, work, _ = int8_build
    result = runner.invoke(app, ["package", "-c", "smoke", "-w", str(work), "-o", str(tmp_path / "repo")])
    assert result.exit_code == 1
    assert "fitted on the int8 graphs'" in _text(result)
    assert "run `pcam calibrate --precision fp32`" in _text(result)
    assert not (tmp_path / "repo").exists()


def test_files_written_before_precision_existed_read_as_fp32(built):
    repo, work = built
    member = json.loads((repo / "release.json").read_text())["members"][0]
    member.pop("precision", None)
    assert Member.model_validate(member).precision == "fp32"
    calibration = json.loads((work / "calibration.json").read_text())
    calibration.pop("precision", None)
    assert Calibration.model_validate(calibration).precision == "fp32"
