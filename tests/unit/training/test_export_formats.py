"""`pcam export --format ...`, `pcam build-repository --target gpu` and `pcam retarget` on the shared smoke build.

No new training: the smoke work dir is copied, and training resumes from its finished state.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score
from typer.testing import CliRunner

from pcam_core.release import load_release
from training.cli import app
from training.config import load_config
from training.data.pcam_h5 import read_labels
from training.repository import config_pbtxt, sha256_file

runner = CliRunner()


@pytest.fixture(scope="module")
def work_copy(built, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A private copy of the smoke work dir (the shared one stays read-only)."""
    _, work = built
    return Path(shutil.copytree(work, tmp_path_factory.mktemp("export") / "work"))


@pytest.fixture
def no_tensorrt(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` fails, as on this machine
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_gpu_target_from_an_existing_work_dir_without_retraining(built, work_copy: Path, tmp_path: Path):
    repo, _ = built
    checkpoints = {p: p.read_bytes() for p in work_copy.glob("members/*/checkpoint.pt")}
    out = tmp_path / "gpu"
    args = ["build-repository", "-c", "smoke", "-o", str(out), "-w", str(work_copy), "--target", "gpu"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert {p: p.read_bytes() for p in checkpoints} == checkpoints  # training resumed as finished
    gpu, cpu = load_release(out), load_release(repo)
    # Same weights, hence the same member digests and the same weights part of the release id.
    assert [m.sha256 for m in gpu.members] == [m.sha256 for m in cpu.members]
    assert gpu.release_id.rsplit("-", 1)[1] == cpu.release_id.rsplit("-", 1)[1]
    triton = load_config("smoke").triton
    for m in gpu.members:
        assert sorted(p.name for p in (out / m.name / "1").iterdir()) == ["model.onnx"]
        assert (out / m.name / "config.pbtxt").read_text() == config_pbtxt(m.name, triton, "gpu", m.sha256)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_retarget_writes_the_built_release_for_the_gpu(built, tmp_path: Path):
    repo, _ = built
    out = tmp_path / "gpu"
    result = runner.invoke(app, ["retarget", "-r", str(repo), "-o", str(out), "-c", "smoke"])
    assert result.exit_code == 0, result.output
    assert (out / "release.json").read_bytes() == (repo / "release.json").read_bytes()
    for m in load_release(out).members:
        assert sha256_file(out / m.name / "1" / "model.onnx") == m.sha256
        assert '"onnxruntime"' in (out / m.name / "config.pbtxt").read_text()
    again = runner.invoke(app, ["retarget", "-r", str(repo), "-o", str(out)])
    assert again.exit_code == 1 and "--force" in again.output
    unknown = runner.invoke(app, ["retarget", "-r", str(repo), "-o", str(tmp_path / "x"), "-t", "tpu"])
    assert unknown.exit_code == 1 and "serving target" in unknown.output


def test_export_all_formats_reports_parity_and_the_int8_auc_change(work_copy: Path, no_tensorrt):
    args = ["export", "-c", "smoke", "-w", str(work_copy)]
    result = runner.invoke(app, [*args, "-f", "onnx", "-f", "torchscript", "-f", "int8", "-f", "tensorrt"])
    assert result.exit_code == 0, result.output
    output = " ".join(result.output.split())
    assert "TensorRT plan skipped: needs the `tensorrt` Python package and a CUDA GPU" in output
    labels = read_labels(work_copy / "normalized" / "valid.h5")
    head = {"test_resnet": "/fc/Gemm", "test_vit": "/head/Gemm"}
    for member in load_config("smoke").members:
        directory = work_copy / "members" / member.name
        report = json.loads((directory / "export.json").read_text())
        formats = report["formats"]
        assert set(formats) == {"onnx", "torchscript", "int8", "tensorrt"}
        for name in ("onnx", "torchscript", "int8"):
            assert sha256_file(directory / formats[name]["file"]) == formats[name]["sha256"]
        assert formats["onnx"]["parity_max_abs_diff"] <= 1e-4
        assert formats["torchscript"]["parity_max_abs_diff"] <= 1e-4
        int8 = formats["int8"]
        fp32_auc = roc_auc_score(labels, np.load(directory / "valid_logits.npy"))
        assert int8["auc_fp32"] == pytest.approx(fp32_auc)
        assert int8["auc_delta"] == pytest.approx(int8["auc_int8"] - int8["auc_fp32"])
        assert abs(int8["auc_delta"]) < 0.1 and int8["patches"] == len(labels)
        # The classifier head and the feature distance's product, downstream of the pooling: not quantized.
        assert sorted(int8["float_nodes"]) == sorted(["/MatMul", head[member.architecture]])
        assert f"{member.name}: int8" in output and "valid AUC" in output
        assert formats["tensorrt"]["skipped"].startswith("TensorRT plan skipped")
        assert not (directory / "model.plan").exists()

    # Back to the default (onnx only): the other formats' files of this member go, the rest stay.
    result = runner.invoke(app, [*args, "-m", "resnet"])
    assert result.exit_code == 0, result.output
    resnet, vit = work_copy / "members" / "resnet", work_copy / "members" / "vit"
    assert set(json.loads((resnet / "export.json").read_text())["formats"]) == {"onnx"}
    assert not (resnet / "model.pt").exists() and not (resnet / "model.int8.onnx").exists()
    assert (vit / "model.pt").exists() and (vit / "model.int8.onnx").exists()


def test_unknown_export_format_is_refused(work_copy: Path):
    result = runner.invoke(app, ["export", "-c", "smoke", "-w", str(work_copy), "-f", "coreml"])
    assert result.exit_code == 1 and "unknown export format" in result.output
