"""The Triton model repository (docs/architecture.md#model-repository): member directories plus release.json.

Three jobs, one module each:

- triton_config: a member's config.pbtxt for the cpu or gpu serving target, as tritonclient's
  ModelConfig written in protobuf's text format;
- manifest: the release manifest (id, weights digests, data provenance) that release.json holds;
- layout and publishing: the files on disk, built in staging and renamed into place, rolled in as
  new model versions, or retargeted.

Two serving targets come from the same ONNX weights and the same release.json; the cpu target can
serve the members' static-QDQ INT8 copies instead (precision int8, recorded per member in release.json).
"""

from training.repository.layout import (
    BACKEND_FILE,
    BACKEND_SOURCE,
    CONFIG_FILE,
    MODEL_FILE,
    member_target,
    model_versions,
    next_versions,
    write_member,
    write_members,
)
from training.repository.manifest import (
    VERSION,
    MemberArtifact,
    build_manifest,
    data_provenance,
    release_id,
    sha256_file,
)
from training.repository.publishing import (
    check_target,
    holds_release,
    publish,
    retarget_repository,
    roll_release,
    staging_dir,
    write_repository,
)
from training.repository.triton_config import (
    BACKENDS,
    KEPT_VERSIONS,
    SERVING_TARGETS,
    ServingTarget,
    check_serving,
    config_pbtxt,
    engine_cache_path,
    model_config,
    parse_config,
)

__all__ = [
    "BACKENDS",
    "BACKEND_FILE",
    "BACKEND_SOURCE",
    "CONFIG_FILE",
    "KEPT_VERSIONS",
    "MODEL_FILE",
    "SERVING_TARGETS",
    "VERSION",
    "MemberArtifact",
    "ServingTarget",
    "build_manifest",
    "check_serving",
    "check_target",
    "config_pbtxt",
    "data_provenance",
    "engine_cache_path",
    "holds_release",
    "member_target",
    "model_config",
    "model_versions",
    "next_versions",
    "parse_config",
    "publish",
    "release_id",
    "retarget_repository",
    "roll_release",
    "sha256_file",
    "staging_dir",
    "write_member",
    "write_members",
    "write_repository",
]
