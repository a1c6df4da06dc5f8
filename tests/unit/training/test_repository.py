"""Triton config generation (cpu and gpu targets), release ids and the all-or-nothing repository write."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pcam_core.release import (
    DataProvenance,
    EnsembleRule,
    OperatingPoint,
    StainReference,
    load_release,
)
from training.config import TritonConfig
from training.repository import (
    BACKEND_SOURCE,
    MemberArtifact,
    build_manifest,
    config_pbtxt,
    release_id,
    retarget_repository,
    sha256_file,
    write_repository,
)

TRITON = TritonConfig(
    max_batch_size=32, max_queue_delay_microseconds=1500, instance_count=2, intra_op_threads=3
)


def _parsed(text: str):
    """A config.pbtxt as Triton reads it: tritonclient's ModelConfig, parsed from protobuf's text format."""
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(text, model_config_pb2.ModelConfig())


def _message(text: str, pb):
    """A config.pbtxt fragment (one message, as the f-string generator wrote it) parsed as pb."""
    from google.protobuf import text_format

    return text_format.Parse(text, pb)


def test_config_pbtxt_states_the_contract_and_the_serving_settings():
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    config = _parsed(config_pbtxt("resnet", TRITON))
    assert config.name == "resnet" and config.backend == "python"
    assert config.max_batch_size == 32
    assert list(config.input) == [
        _message('name: "image" data_type: TYPE_UINT8 dims: [ 96, 96, 3 ]', pb.ModelInput())
    ]
    assert list(config.output) == [
        _message('name: "logit" data_type: TYPE_FP32 dims: [ 1 ]', pb.ModelOutput()),
        _message('name: "feature_distance" data_type: TYPE_FP32 dims: [ 1 ]', pb.ModelOutput()),
        _message('name: "activation_map" data_type: TYPE_FP32 dims: [ 96, 96 ]', pb.ModelOutput()),
    ]
    assert list(config.instance_group) == [_message("kind: KIND_CPU count: 2", pb.ModelInstanceGroup())]
    assert config.dynamic_batching == _message(
        "max_queue_delay_microseconds: 1500 "
        "default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 5000000 }",
        pb.ModelDynamicBatching(),
    )
    assert config.parameters["intra_op_thread_count"] == _message('string_value: "3"', pb.ModelParameter())


def test_config_pbtxt_parses_as_a_triton_model_config():
    text_format = pytest.importorskip("google.protobuf.text_format")
    model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    config = text_format.Parse(config_pbtxt("vit", TRITON), model_config_pb2.ModelConfig())
    assert config.name == "vit" and config.backend == "python" and config.max_batch_size == 32
    (inp,), (out, *_) = config.input, config.output
    assert (inp.name, list(inp.dims), inp.data_type) == ("image", [96, 96, 3], model_config_pb2.TYPE_UINT8)
    assert (out.name, list(out.dims), out.data_type) == ("logit", [1], model_config_pb2.TYPE_FP32)
    assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_CPU
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert config.parameters["intra_op_thread_count"].string_value == "3"


def test_release_id_names_prefix_time_and_content():
    created = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    rid = release_id("demo", '{"members": "a"}', created)
    assert re.fullmatch(r"demo-20260102030405-[0-9a-f]{8}", rid)
    assert release_id("demo", '{"members": "b"}', created) != rid  # other content, other release


@pytest.fixture
def members(tmp_path: Path) -> list[MemberArtifact]:
    out = []
    for name in ("alpha", "beta"):
        onnx = tmp_path / f"{name}.onnx"
        onnx.write_bytes(name.encode() * 100)
        out.append(
            MemberArtifact(name, "test_resnet", onnx, temperature=1.5, weight=1.0, metrics={"auc": 0.9})
        )
    return out


def _manifest(members: list[MemberArtifact]):
    point = OperatingPoint(threshold=0.5, sensitivity=0.9, specificity=0.9, criterion="test")
    return build_manifest(
        "unit",
        members,
        DataProvenance(source="synthetic"),
        StainReference(stain_matrix=((0.6, 0.2), (0.7, 0.8), (0.4, 0.5)), max_concentrations=(1.9, 1.0)),
        EnsembleRule(operating_points=dict.fromkeys(("screening", "balanced", "high_specificity"), point)),
    )


def test_repository_layout_and_manifest(tmp_path: Path, members):
    target = tmp_path / "repo"
    write_repository(target, members, _manifest(members), TRITON)
    manifest = load_release(target)
    assert sorted(p.name for p in target.iterdir()) == ["alpha", "beta", "release.json"]
    for m in manifest.members:
        assert (target / m.name / "config.pbtxt").read_text() == config_pbtxt(m.name, TRITON)
        assert sha256_file(target / m.name / "1" / "model.onnx") == m.sha256
        assert (target / m.name / "1" / "model.py").read_bytes() == BACKEND_SOURCE.read_bytes()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging left behind


def test_existing_repository_is_kept_unless_forced(tmp_path: Path, members):
    target = tmp_path / "repo"
    first = write_repository(target, members, _manifest(members[:1]), TRITON)
    with pytest.raises(FileExistsError, match="--force"):
        write_repository(target, members, _manifest(members), TRITON)
    assert [m.name for m in load_release(first).members] == ["alpha"]
    write_repository(target, members, _manifest(members), TRITON, force=True)
    assert [m.name for m in load_release(target).members] == ["alpha", "beta"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_a_directory_holding_only_documentation_is_filled_and_keeps_it(tmp_path: Path, members):
    target = tmp_path / "repo"
    target.mkdir()
    (target / "README.md").write_text("generated by pcam build-repository\n")
    write_repository(target, members, _manifest(members), TRITON)
    assert (target / "release.json").exists()
    write_repository(target, members, _manifest(members), TRITON, force=True)
    assert (target / "README.md").read_text() == "generated by pcam build-repository\n"


def test_failed_write_leaves_nothing_half_built(tmp_path: Path, members):
    manifest = _manifest(members)
    members[1].onnx.unlink()  # the copy of the second member fails mid-way
    with pytest.raises(FileNotFoundError):
        write_repository(tmp_path / "repo", members, manifest, TRITON)
    assert not (tmp_path / "repo").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


SHA = "0123456789abcdef" * 4


def test_gpu_config_pbtxt_shares_the_contract_and_adds_tensorrt_and_warmup():
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    config = _parsed(config_pbtxt("resnet", TRITON, "gpu", SHA))
    assert config.backend == "onnxruntime" and config.max_batch_size == 32
    # The parts both targets share are generated once: the cpu config from `input` on is in the gpu config.
    cpu = _parsed(config_pbtxt("resnet", TRITON))
    shared = ("input", "output", "version_policy", "dynamic_batching", "parameters")
    assert {f: getattr(config, f) for f in shared} == {f: getattr(cpu, f) for f in shared}
    assert list(config.instance_group) == [_message("kind: KIND_GPU count: 1", pb.ModelInstanceGroup())]
    assert config.dynamic_batching == _message(
        "max_queue_delay_microseconds: 1500 "
        "default_queue_policy { max_queue_size: 64 default_timeout_microseconds: 5000000 }",
        pb.ModelDynamicBatching(),
    )
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert accelerator.parameters["precision_mode"] == "FP16"
    assert accelerator.parameters["trt_engine_cache_enable"] == "1"
    assert f"/trt_engine_cache/resnet-{SHA[:16]}" in accelerator.parameters.values()
    assert len(config.model_warmup) == 2
    assert [w.inputs["image"].zero_data for w in config.model_warmup] == [True, True]


def test_config_without_weights_digest_or_for_an_unknown_target_is_refused():
    with pytest.raises(ValueError, match="sha256"):
        config_pbtxt("resnet", TRITON, "gpu")
    with pytest.raises(ValueError, match="serving target"):
        config_pbtxt("resnet", TRITON, "tpu")  # type: ignore[arg-type]


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_both_targets_parse_as_triton_model_configs(target: str):
    text_format = pytest.importorskip("google.protobuf.text_format")
    pb = pytest.importorskip("tritonclient.grpc.model_config_pb2")
    triton = TRITON.model_copy(update={"gpu_instance_count": 3, "trt_engine_cache_path": "/cache/"})
    config = text_format.Parse(config_pbtxt("vit", triton, target, SHA), pb.ModelConfig())
    (inp,), (out, *_) = config.input, config.output
    assert (inp.name, list(inp.dims), inp.data_type) == ("image", [96, 96, 3], pb.TYPE_UINT8)
    assert (out.name, list(out.dims), out.data_type) == ("logit", [1], pb.TYPE_FP32)
    assert config.max_batch_size == 32 and config.dynamic_batching.max_queue_delay_microseconds == 1500
    if target == "cpu":
        assert config.backend == "python" and not config.model_warmup
        assert (config.instance_group[0].kind, config.instance_group[0].count) == (
            pb.ModelInstanceGroup.KIND_CPU,
            2,
        )
        return
    assert config.backend == "onnxruntime"
    assert (config.instance_group[0].kind, config.instance_group[0].count) == (
        pb.ModelInstanceGroup.KIND_GPU,
        3,
    )
    (accelerator,) = config.optimization.execution_accelerators.gpu_execution_accelerator
    assert accelerator.name == "tensorrt"
    assert dict(accelerator.parameters) == {
        "precision_mode": "FP16",
        "trt_engine_cache_enable": "1",
        "trt_engine_cache_path": f"/cache/vit-{SHA[:16]}",
        "trt_profile_min_shapes": "image:1x96x96x3",
        "trt_profile_opt_shapes": "image:32x96x96x3",
        "trt_profile_max_shapes": "image:32x96x96x3",
    }
    assert [w.batch_size for w in config.model_warmup] == [1, 32]
    for warmup in config.model_warmup:
        assert set(warmup.inputs) == {"image"}
        data = warmup.inputs["image"]
        assert (data.data_type, list(data.dims), data.zero_data) == (pb.TYPE_UINT8, [96, 96, 3], True)


def test_gpu_repository_layout_has_no_python_model(tmp_path: Path, members):
    target = tmp_path / "repo"
    write_repository(target, members, _manifest(members), TRITON, serving_target="gpu")
    manifest = load_release(target)
    for m in manifest.members:
        assert sha256_file(target / m.name / "1" / "model.onnx") == m.sha256
        assert sorted(p.name for p in (target / m.name / "1").iterdir()) == ["model.onnx"]
        assert (target / m.name / "config.pbtxt").read_text() == config_pbtxt(m.name, TRITON, "gpu", m.sha256)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_failed_gpu_write_keeps_the_previous_repository(tmp_path: Path, members):
    target = tmp_path / "repo"
    write_repository(target, members, _manifest(members[:1]), TRITON, serving_target="gpu")
    before = {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()}
    manifest = _manifest(members)
    members[1].onnx.unlink()  # the second member's copy fails mid-way
    with pytest.raises(FileNotFoundError):
        write_repository(target, members, manifest, TRITON, force=True, serving_target="gpu")
    assert {p.relative_to(target): p.read_bytes() for p in target.rglob("*") if p.is_file()} == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
    with pytest.raises(FileNotFoundError):  # and nothing at all where there was nothing
        write_repository(tmp_path / "fresh", members, manifest, TRITON, serving_target="gpu")
    assert not (tmp_path / "fresh").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_retarget_keeps_the_release_and_checks_the_weights(tmp_path: Path, members):
    cpu = write_repository(tmp_path / "cpu", members, _manifest(members), TRITON)
    gpu = tmp_path / "gpu"
    retarget_repository(cpu, gpu, TRITON, "gpu")
    assert (gpu / "release.json").read_bytes() == (cpu / "release.json").read_bytes()
    for m in load_release(gpu).members:
        assert (gpu / m.name / "1" / "model.onnx").read_bytes() == (
            cpu / m.name / "1" / "model.onnx"
        ).read_bytes()
        assert (gpu / m.name / "config.pbtxt").read_text() == config_pbtxt(m.name, TRITON, "gpu", m.sha256)
    (cpu / "beta" / "1" / "model.onnx").write_bytes(b"other weights")
    with pytest.raises(ValueError, match="sha256"):
        retarget_repository(cpu, tmp_path / "gpu2", TRITON, "gpu")
    assert not (tmp_path / "gpu2").exists()
    with pytest.raises(ValueError, match="serving target"):
        write_repository(tmp_path / "x", members, _manifest(members), TRITON, serving_target="tpu")  # type: ignore[arg-type]
