"""A member's files in a model repository: <member>/<version>/model.onnx (+ model.py) and <member>/config.pbtxt."""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from training.config import TritonConfig
from training.repository.manifest import VERSION, MemberArtifact, sha256_file
from training.repository.triton_config import ServingTarget, config_pbtxt, same_config, serving_target_of

MODEL_FILE = "model.onnx"
BACKEND_FILE = "model.py"
BACKEND_SOURCE = Path(__file__).parents[1] / "triton" / BACKEND_FILE
CONFIG_FILE = "config.pbtxt"


def write_member(
    directory: Path, member: MemberArtifact, version: int, triton: TritonConfig, target: ServingTarget = "cpu"
) -> None:
    """<member>/<version>/model.onnx (+ model.py for cpu) and <member>/config.pbtxt.

    The version directory is filled under a hidden name and renamed into place, so Triton (polling the
    repository) never loads a half-copied model; config.pbtxt is only rewritten when what it says
    changes, since Triton reloads every version of a model whose config changed.
    """
    model_dir = directory / member.name
    model_dir.mkdir(parents=True, exist_ok=True)
    partial = model_dir / f".{version}.partial"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir()
    shutil.copyfile(member.onnx, partial / MODEL_FILE)
    if target == "cpu":
        shutil.copyfile(BACKEND_SOURCE, partial / BACKEND_FILE)
    sha256 = sha256_file(partial / MODEL_FILE) if target == "gpu" else ""
    partial.rename(model_dir / str(version))
    config = config_pbtxt(member.name, triton, target, sha256)
    config_path = model_dir / CONFIG_FILE
    # Compared as messages: a config written in another layout (an older pcam) is not rewritten.
    if not config_path.exists() or not same_config(config_path.read_text(), config):
        tmp = config_path.with_name(f".{CONFIG_FILE}.tmp")
        tmp.write_text(config)
        tmp.replace(config_path)


def write_members(
    directory: Path, members: Sequence[MemberArtifact], triton: TritonConfig, target: ServingTarget = "cpu"
) -> None:
    """<member>/config.pbtxt and <member>/1/model.onnx for every member, plus <member>/1/model.py for cpu."""
    for m in members:
        write_member(directory, m, VERSION, triton, target)


def model_versions(repository: Path, name: str) -> list[int]:
    """The numeric version directories of a model in a repository, ascending."""
    model_dir = repository / name
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit())


def next_versions(repository: Path, names: Sequence[str]) -> dict[str, int]:
    """The version each member gets when a new release rolls into repository: one past its newest."""
    return {name: max(model_versions(repository, name), default=0) + 1 for name in names}


def member_target(repository: Path, name: str) -> ServingTarget | None:
    """The serving target a member of repository was written for; None if it has no config.pbtxt."""
    config = repository / name / CONFIG_FILE
    if not config.exists():
        return None
    try:
        return serving_target_of(config.read_text())
    except ValueError as exc:
        raise ValueError(f"{config}: {exc}") from exc
