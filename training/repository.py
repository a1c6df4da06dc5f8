"""The Triton model repository (DESIGN.md section 4): member directories plus release.json.

Two serving targets from the same ONNX weights and the same release.json:

- cpu: `backend: "python"` running model.onnx with onnxruntime (training/triton/model.py), KIND_CPU;
- gpu: `backend: "onnxruntime"` with onnxruntime's TensorRT execution accelerator (FP16, engine cache on
  a mounted volume), KIND_GPU, warmup.

Built in a staging directory next to the target and renamed into place, so a reader never sees a
half-written repository.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

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
    load_release,
    write_release,
)
from training.config import TritonConfig

log = logging.getLogger(__name__)
VERSION = 1
KEPT_VERSIONS = 2
"""Model versions Triton keeps loaded: the serving release's and the one before, so that a rolling
release swaps without a failed request (DESIGN.md section 4; `pcam package --rolling`)."""
MODEL_FILE = "model.onnx"
BACKEND_FILE = "model.py"
BACKEND_SOURCE = Path(__file__).parent / "triton" / BACKEND_FILE
ServingTarget = Literal["cpu", "gpu"]
SERVING_TARGETS: tuple[ServingTarget, ...] = ("cpu", "gpu")


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in chunks."""
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _dims(shape: Sequence[int]) -> str:
    return "[ " + ", ".join(str(d) for d in shape) + " ]"


def _shape(batch: int) -> str:
    """An input shape in the TensorRT provider's profile syntax, e.g. image:8x96x96x3."""
    return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, *INPUT_SHAPE))


def _common_config(name: str, backend: str, kind: str, count: int, triton: TritonConfig) -> str:
    """What both targets share: the contract's input and output, instances, dynamic batching, threads."""
    return f"""name: "{name}"
backend: "{backend}"
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
    kind: {kind}
    count: {count}
  }}
]
version_policy: {{ latest: {{ num_versions: {KEPT_VERSIONS} }} }}
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


def engine_cache_path(name: str, sha256: str, triton: TritonConfig) -> str:
    """The member's TensorRT engine cache directory: one per member and weights, under the mounted volume.

    onnxruntime's docs require cached engines to be invalidated whenever the model changes (the provider
    does not notice new weights by itself), so a directory per weights digest makes a new release start a
    fresh cache instead of serving new weights with an old engine. One level below the mount point
    only: the provider creates a missing cache directory, but not its parents.
    """
    return f"{triton.trt_engine_cache_path.rstrip('/')}/{name}-{sha256[:16]}"


def _warmup(batch: int) -> str:
    return f"""  {{
    name: "zeros_batch_{batch}"
    batch_size: {batch}
    inputs {{
      key: "{INPUT_NAME}"
      value: {{
        data_type: TYPE_{INPUT_TRITON_DTYPE}
        dims: {_dims(INPUT_SHAPE)}
        zero_data: true
      }}
    }}
  }}"""


def _gpu_config(name: str, triton: TritonConfig, sha256: str) -> str:
    """onnxruntime backend on the GPU with the TensorRT accelerator, and warmup at batch 1 and the maximum.

    The explicit profile (1..max_batch_size) makes TensorRT build one engine for every batch size at
    warmup, instead of rebuilding whenever a larger batch arrives while serving.
    """
    params = {
        "precision_mode": triton.trt_precision,
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": engine_cache_path(name, sha256, triton),
        "trt_profile_min_shapes": _shape(1),
        "trt_profile_opt_shapes": _shape(triton.max_batch_size),
        "trt_profile_max_shapes": _shape(triton.max_batch_size),
    }
    parameters = "".join(
        f'\n        parameters {{ key: "{key}" value: "{value}" }}' for key, value in params.items()
    )
    warmups = ",\n".join(_warmup(b) for b in sorted({1, triton.max_batch_size}))
    return (
        _common_config(name, "onnxruntime", "KIND_GPU", triton.gpu_instance_count, triton)
        + f"""optimization {{
  execution_accelerators {{
    gpu_execution_accelerator: [
      {{
        name: "tensorrt"{parameters}
      }}
    ]
  }}
}}
model_warmup [
{warmups}
]
"""
    )


def config_pbtxt(name: str, triton: TritonConfig, target: ServingTarget = "cpu", sha256: str = "") -> str:
    """A member's config.pbtxt for a serving target, generated from the model I/O contract.

    The gpu target needs the sha256 of the member's model.onnx (its engine cache directory).
    """
    if target == "cpu":
        return _common_config(name, "python", "KIND_CPU", triton.instance_count, triton)
    if target == "gpu":
        if not sha256:
            raise ValueError("the gpu target's config needs the sha256 of the member's model.onnx")
        return _gpu_config(name, triton, sha256)
    raise ValueError(f"unknown serving target {target!r}; choose from {list(SERVING_TARGETS)}")


def release_id(prefix: str, content: str, created: datetime) -> str:
    """<prefix>-<UTC yyyymmddHHMMSS>-<8 hex of a hash over what the release binds>.

    content covers the members (weights' sha256, model versions, temperatures, weights), the ensemble
    rule and the stain reference, so two releases built in one second still get two ids (and the
    gateway two sets of cache keys) unless they would serve identically.
    """
    digest = hashlib.sha256(content.encode()).hexdigest()[:8]
    return f"{prefix}-{created.astimezone(UTC):%Y%m%d%H%M%S}-{digest}"


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
    versions: Mapping[str, int] | None = None,
) -> ReleaseManifest:
    """The release manifest binding these weights (at these model versions; default 1), data, stain
    reference and calibration."""
    created = created or datetime.now(UTC)
    versions = versions or {}
    entries = [
        Member(
            name=m.name,
            architecture=m.architecture,
            version=versions.get(m.name, VERSION),
            sha256=sha256_file(m.onnx),
            temperature=m.temperature,
            weight=m.weight,
            metrics=m.metrics,
        )
        for m in members
    ]
    return ReleaseManifest(
        release_id=release_id(prefix, _bound_content(entries, ensemble, stain_reference), created),
        created_at=created.astimezone(UTC).isoformat(timespec="seconds"),
        data=data,
        stain_reference=stain_reference,
        members=tuple(entries),
        ensemble=ensemble,
    )


def _bound_content(members: Sequence[Member], ensemble: EnsembleRule, stain_reference: StainReference) -> str:
    """Canonical JSON of what a release serves with (its id's hash input)."""
    return json.dumps(
        {
            "members": [m.model_dump(mode="json") for m in members],
            "ensemble": ensemble.model_dump(mode="json"),
            "stain_reference": stain_reference.model_dump(mode="json"),
        },
        sort_keys=True,
    )


def data_provenance(source: str, files: Sequence[Path], description: str = "") -> DataProvenance:
    """Provenance with the sha256 of every data file, keyed by file name."""
    return DataProvenance(
        source=source, checksums={f.name: sha256_file(f) for f in files}, description=description
    )


def write_member(
    directory: Path, member: MemberArtifact, version: int, triton: TritonConfig, target: ServingTarget = "cpu"
) -> None:
    """<member>/<version>/model.onnx (+ model.py for cpu) and <member>/config.pbtxt.

    The version directory is filled under a hidden name and renamed into place, so Triton (polling the
    repository) never loads a half-copied model; config.pbtxt is only rewritten when it changes, since
    Triton reloads every version of a model whose config changed.
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
    config_path = model_dir / "config.pbtxt"
    if not config_path.exists() or config_path.read_text() != config:
        tmp = config_path.with_name(".config.pbtxt.tmp")
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


def _serving_target_of(repository: Path, name: str) -> ServingTarget | None:
    config = repository / name / "config.pbtxt"
    if not config.exists():
        return None
    return "gpu" if 'backend: "onnxruntime"' in config.read_text() else "cpu"


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
    previous = load_release(target)  # raises if target holds no release: nothing to roll onto
    for m in manifest.members:
        existing = _serving_target_of(target, m.name)
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
    if serving_target not in SERVING_TARGETS:
        raise ValueError(f"unknown serving target {serving_target!r}; choose from {list(SERVING_TARGETS)}")
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

    Every member's model.onnx is checked against the sha256 in source's release.json first.
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
        members.append(MemberArtifact(m.name, m.architecture, onnx, m.temperature, m.weight, dict(m.metrics)))
    write_repository(target, members, manifest, triton, force, serving_target)
    return manifest
