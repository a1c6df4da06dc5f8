"""The CPU Triton model repository (DESIGN.md section 4): member directories plus release.json.

Built in a staging directory next to the target and renamed into place, so a reader never sees a
half-written repository.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import tempfile
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from services.common.contract import (
    INPUT_NAME,
    INPUT_SHAPE,
    INPUT_TRITON_DTYPE,
    OUTPUT_NAME,
    OUTPUT_SHAPE,
    OUTPUT_TRITON_DTYPE,
)
from services.common.release import (
    RELEASE_FILENAME,
    DataProvenance,
    EnsembleRule,
    Member,
    ReleaseManifest,
    StainReference,
    write_release,
)
from training.config import TritonConfig

log = logging.getLogger(__name__)
VERSION = 1
MODEL_FILE = "model.onnx"
BACKEND_FILE = "model.py"
BACKEND_SOURCE = Path(__file__).parent / "triton" / BACKEND_FILE


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _dims(shape: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def config_pbtxt(name: str, triton: TritonConfig) -> str:
    """A member's config.pbtxt for the python backend, generated from the model I/O contract."""
    return f"""name: "{name}"
backend: "python"
max_batch_size: {triton.max_batch_size}
input [
  {{
    name: "{INPUT_NAME}"
    data_type: TYPE_{INPUT_TRITON_DTYPE}
    dims: {_dims(INPUT_SHAPE)}
  }}
]
output [
  {{
    name: "{OUTPUT_NAME}"
    data_type: TYPE_{OUTPUT_TRITON_DTYPE}
    dims: {_dims(OUTPUT_SHAPE)}
  }}
]
instance_group [
  {{
    kind: KIND_CPU
    count: {triton.instance_count}
  }}
]
dynamic_batching {{
  max_queue_delay_microseconds: {triton.max_queue_delay_microseconds}
}}
parameters: {{
  key: "intra_op_thread_count"
  value: {{ string_value: "{triton.intra_op_threads}" }}
}}
parameters: {{
  key: "inter_op_thread_count"
  value: {{ string_value: "1" }}
}}
"""


def release_id(prefix: str, member_sha256s: Sequence[str], created: datetime) -> str:
    """<prefix>-<UTC yyyymmddHHMMSS>-<8 hex of a hash over the members' weights>."""
    weights = hashlib.sha256("\n".join(member_sha256s).encode()).hexdigest()[:8]
    return f"{prefix}-{created.astimezone(UTC):%Y%m%d%H%M%S}-{weights}"


@dataclass(frozen=True)
class MemberArtifact:
    """A trained, exported and calibrated member, ready to go into the repository."""

    name: str
    architecture: str
    onnx: Path
    temperature: float
    weight: float
    metrics: dict[str, float] = field(default_factory=dict)


def build_manifest(
    prefix: str,
    members: Sequence[MemberArtifact],
    data: DataProvenance,
    stain_reference: StainReference,
    ensemble: EnsembleRule,
    created: datetime | None = None,
) -> ReleaseManifest:
    """The release manifest binding these weights, data, stain reference and calibration."""
    created = created or datetime.now(UTC)
    entries = [
        Member(
            name=m.name,
            architecture=m.architecture,
            version=VERSION,
            sha256=sha256_file(m.onnx),
            temperature=m.temperature,
            weight=m.weight,
            metrics=m.metrics,
        )
        for m in members
    ]
    return ReleaseManifest(
        release_id=release_id(prefix, [e.sha256 for e in entries], created),
        created_at=created.astimezone(UTC).isoformat(timespec="seconds"),
        data=data,
        stain_reference=stain_reference,
        members=tuple(entries),
        ensemble=ensemble,
    )


def data_provenance(source: str, files: Sequence[Path], description: str = "") -> DataProvenance:
    """Provenance with the sha256 of every data file, keyed by file name."""
    return DataProvenance(
        source=source, checksums={f.name: sha256_file(f) for f in files}, description=description
    )


def write_members(directory: Path, members: Sequence[MemberArtifact], triton: TritonConfig) -> None:
    """<member>/config.pbtxt, <member>/1/model.onnx and <member>/1/model.py for every member."""
    for m in members:
        version_dir = directory / m.name / str(VERSION)
        version_dir.mkdir(parents=True)
        (directory / m.name / "config.pbtxt").write_text(config_pbtxt(m.name, triton))
        shutil.copyfile(m.onnx, version_dir / MODEL_FILE)
        shutil.copyfile(BACKEND_SOURCE, version_dir / BACKEND_FILE)


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
) -> Path:
    """Write members and release.json into a staging directory, then publish it as target."""
    check_target(target, force)
    staging = staging_dir(target)
    try:
        write_members(staging, members, triton)
        write_release(manifest, staging)
        _carry_root_files(target, staging)
        staging.chmod(0o755)  # mkdtemp makes it 0700; the served directory must be readable
        publish(staging, target, force)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("model repository %s: release %s", target, manifest.release_id)
    return target
