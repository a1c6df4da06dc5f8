"""Putting a release on disk as a model repository: built in staging and renamed into place, rolled in
as new model versions, or rewritten for another serving target.

A reader never sees a half-written repository: a new one is built in a staging directory next to the
target and renamed into place; a rolling release switches release.json last.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

from pcam_core.release import RELEASE_FILENAME, ReleaseManifest, load_release, write_release
from training.config import TritonConfig
from training.repository.layout import MODEL_FILE, member_target, model_versions, write_member, write_members
from training.repository.manifest import VERSION, MemberArtifact, sha256_file
from training.repository.triton_config import KEPT_VERSIONS, ServingTarget, check_serving

log = logging.getLogger(__name__)


def holds_release(target: Path) -> bool:
    """Whether target already is a model repository: a release.json or any (model) directory in it.

    Plain files at the root (a README, .gitignore) do not count: Triton ignores them.
    """
    return target.is_dir() and any(p.is_dir() or p.name == RELEASE_FILENAME for p in target.iterdir())


def check_target(target: Path, force: bool) -> None:
    """Refuse early to build over an existing repository unless forced."""
    if target.exists() and not target.is_dir():
        raise FileExistsError(f"{target} exists and is not a directory")
    if holds_release(target) and not force:
        raise FileExistsError(f"{target} already holds a model repository; pass --force to replace it")


def _carry_root_files(target: Path, staging: Path) -> None:
    """Keep the plain files at target's root (documentation, .gitignore) in the new repository."""
    if target.is_dir():
        for path in target.iterdir():
            if path.is_file() and not path.is_symlink() and path.name != RELEASE_FILENAME:
                shutil.copy2(path, staging / path.name)


def staging_dir(target: Path) -> Path:
    """A fresh hidden directory next to target (same filesystem, so the final rename is atomic)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    return Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.building-"))


def publish(staging: Path, target: Path, force: bool) -> Path:
    """Move a complete staging directory to target, replacing an existing one (a repository only if forced)."""
    check_target(target, force)
    if target.exists():
        old = target.with_name(f".{target.name}.old-{uuid.uuid4().hex[:8]}")
        target.rename(old)
        try:
            staging.rename(target)
        except OSError:
            old.rename(target)  # put the previous release back
            raise
        shutil.rmtree(old)
    else:
        staging.rename(target)
    return target


def write_repository(
    target: Path,
    members: Sequence[MemberArtifact],
    manifest: ReleaseManifest,
    triton: TritonConfig,
    force: bool = False,
    serving_target: ServingTarget = "cpu",
) -> Path:
    """Write members (for the cpu or gpu serving target) and release.json into staging, then publish as target."""
    check_serving(serving_target)
    for m in members:
        check_serving(serving_target, m.precision)
    check_target(target, force)
    staging = staging_dir(target)
    try:
        write_members(staging, members, triton, serving_target)
        write_release(manifest, staging)
        _carry_root_files(target, staging)
        staging.chmod(0o755)  # mkdtemp makes it 0700; the served directory must be readable
        publish(staging, target, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("model repository %s (%s): release %s", target, serving_target, manifest.release_id)
    return target


def retarget_repository(
    source: Path, target: Path, triton: TritonConfig, serving_target: ServingTarget, force: bool = False
) -> ReleaseManifest:
    """Write a built repository's release for another serving target: same release.json, same model.onnx.

    Every member's model.onnx is checked against the sha256 in source's release.json first; a release
    with INT8 members is refused for the gpu target (check_serving).
    """
    manifest = load_release(source)
    members = []
    for m in manifest.members:
        onnx = source / m.name / str(m.version) / MODEL_FILE
        if m.version != VERSION:
            raise ValueError(
                f"{m.name}: version {m.version} in release.json; retarget writes version {VERSION} only"
            )
        if not onnx.is_file():
            raise FileNotFoundError(f"{onnx} is missing")
        actual = sha256_file(onnx)
        if actual != m.sha256:
            raise ValueError(f"{onnx}: sha256 {actual} differs from release.json's {m.sha256}")
        members.append(
            MemberArtifact(
                m.name,
                m.architecture,
                onnx,
                m.temperature,
                m.weight,
                dict(m.metrics),
                m.precision,
                m.activation_map,
            )
        )
    write_repository(target, members, manifest, triton, force, serving_target)
    return manifest


def roll_release(
    target: Path,
    members: Sequence[MemberArtifact],
    manifest: ReleaseManifest,
    triton: TritonConfig,
    serving_target: ServingTarget = "cpu",
) -> Path:
    """Add a release to a serving repository as new model versions, then switch release.json.

    The previous release's versions stay (Triton keeps KEPT_VERSIONS loaded), so the services swap
    to the new release without a failed request; versions older than those are removed afterwards.
    """
    if serving_target != "cpu":
        # The gpu config.pbtxt names a TensorRT engine cache per weights: a roll would rewrite it, and
        # Triton reloads every version of a model whose config changed (no swap without a gap).
        raise ValueError(
            "rolling releases serve the cpu target only for now; publish a gpu release with --force "
            "(a gap-free gpu swap needs a model name per release)"
        )
    for m in members:
        check_serving(serving_target, m.precision)
    previous = load_release(target)  # raises if target holds no release: nothing to roll onto
    for m in manifest.members:
        existing = member_target(target, m.name)
        if existing not in (None, serving_target):
            raise ValueError(f"{target / m.name} serves the {existing} target, not {serving_target}")
        if m.version in model_versions(target, m.name):
            raise FileExistsError(f"{target / m.name / str(m.version)} exists: versions only grow")
    by_name = {m.name: m for m in members}
    for m in manifest.members:
        write_member(target, by_name[m.name], m.version, triton, serving_target)
    write_release(manifest, target)  # atomic: the services pick the new release up from here
    for m in manifest.members:
        for old in model_versions(target, m.name)[:-KEPT_VERSIONS]:
            shutil.rmtree(target / m.name / str(old))
    log.info(
        "model repository %s: release %s rolled in after %s", target, manifest.release_id, previous.release_id
    )
    return target
