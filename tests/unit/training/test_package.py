"""`pcam package`: the repository from a finished work dir equals what build-repository wrote from it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2
from typer.testing import CliRunner

from training.cli import app


def _release(repository: Path) -> dict:
    return json.loads((repository / "release.json").read_text())


def test_package_writes_the_built_release_from_the_work_dir(built: tuple[Path, Path], tmp_path: Path):
    repository, work = built
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    result = CliRunner().invoke(
        app, ["package", "-c", "smoke", "-w", str(copy), "-o", str(tmp_path / "repo")]
    )
    assert result.exit_code == 0, result.output
    packaged, original = _release(tmp_path / "repo"), _release(repository)
    for key in ("members", "stain_reference", "ensemble", "data"):
        assert packaged[key] == original[key], key
    for member in original["members"]:
        name = member["name"]
        assert (tmp_path / "repo" / name / "1" / "model.onnx").read_bytes() == (
            repository / name / "1" / "model.onnx"
        ).read_bytes()


def test_package_names_the_missing_step(built: tuple[Path, Path], tmp_path: Path):
    _, work = built
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    (copy / "calibration.json").unlink()
    result = CliRunner().invoke(
        app, ["package", "-c", "smoke", "-w", str(copy), "-o", str(tmp_path / "repo")]
    )
    assert result.exit_code == 1
    assert "pcam calibrate" in result.output
    assert not (tmp_path / "repo").exists()


def test_package_refuses_a_config_whose_members_were_not_calibrated(built: tuple[Path, Path], tmp_path: Path):
    import yaml

    from training.config import load_config

    _, work = built
    copy = tmp_path / "work"
    shutil.copytree(work, copy)
    config = load_config("smoke").model_dump(mode="json")
    config["members"] = config["members"][:1]
    path = tmp_path / "one-member.yaml"
    path.write_text(yaml.safe_dump(config))
    result = CliRunner().invoke(
        app, ["package", "-c", str(path), "-w", str(copy), "-o", str(tmp_path / "repo")]
    )
    assert result.exit_code == 1
    assert "run `pcam calibrate` again" in " ".join(result.output.split())
    assert not (tmp_path / "repo").exists()


def test_rolling_releases_add_versions_keep_the_previous_and_prune_older(
    built: tuple[Path, Path], tmp_path: Path
):
    _, work = built
    copy, repo = tmp_path / "work", tmp_path / "repo"
    shutil.copytree(work, copy)
    base = ["package", "-c", "smoke", "-w", str(copy), "-o", str(repo)]
    assert CliRunner().invoke(app, base).exit_code == 0
    first = _release(repo)
    name = first["members"][0]["name"]
    config = (repo / name / "config.pbtxt").read_text()
    policy = text_format.Parse("latest: { num_versions: 2 }", model_config_pb2.ModelVersionPolicy())
    assert text_format.Parse(config, model_config_pb2.ModelConfig()).version_policy == policy

    for expected_versions in ([1, 2], [2, 3]):
        result = CliRunner().invoke(app, [*base, "--rolling"])
        assert result.exit_code == 0, result.output
        release = _release(repo)
        assert {m["version"] for m in release["members"]} == {expected_versions[-1]}
        for member in release["members"]:
            versions = sorted(int(p.name) for p in (repo / member["name"]).iterdir() if p.name.isdigit())
            assert versions == expected_versions
            assert (repo / member["name"] / str(member["version"]) / "model.onnx").read_bytes() == (
                copy / "members" / member["name"] / "model.onnx"
            ).read_bytes()
        assert (repo / name / "config.pbtxt").read_text() == config  # unchanged: no Triton reload
        assert not list(repo.glob("*/.*.partial"))
    assert release["release_id"] != first["release_id"]


def test_rolling_needs_a_serving_repository_of_the_same_target(built: tuple[Path, Path], tmp_path: Path):
    _, work = built
    copy, repo = tmp_path / "work", tmp_path / "repo"
    shutil.copytree(work, copy)
    base = ["package", "-c", "smoke", "-w", str(copy), "-o", str(repo)]
    result = CliRunner().invoke(app, [*base, "--rolling"])
    assert result.exit_code == 1 and not (repo / "release.json").exists()
    assert CliRunner().invoke(app, base).exit_code == 0
    result = CliRunner().invoke(app, [*base, "--rolling", "--target", "gpu"])
    assert result.exit_code == 1
    assert "rolling releases serve the cpu target only" in " ".join(result.output.split())
