"""config.pbtxt of both serving targets, read back as Triton reads it (tritonclient's ModelConfig)."""

from __future__ import annotations

from pathlib import Path

import pytest
from google.protobuf import text_format
from tritonclient.grpc import model_config_pb2 as pb

from pcam_core import contract
from training.config import TritonConfig
from training.repository import MemberArtifact, config_pbtxt, write_member
from training.repository.triton_config import BACKENDS, KEPT_VERSIONS, same_config, serving_target_of

TRITON = TritonConfig(
    max_batch_size=16,
    max_queue_delay_microseconds=0,
    instance_count=2,
    gpu_instance_count=3,
    max_queue_size=24,
    queue_timeout_microseconds=750_000,
)
SHA = "fedcba9876543210" * 4


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_config_pbtxt_states_the_model_io_contract(target: str):
    config = text_format.Parse(config_pbtxt("member", TRITON, target, SHA), pb.ModelConfig())
    assert config.name == "member" and config.backend == BACKENDS[target]
    assert config.backend == {"cpu": "python", "gpu": "onnxruntime"}[target]
    assert config.max_batch_size == TRITON.max_batch_size
    (inp,) = config.input
    assert inp.name == contract.INPUT_NAME
    assert pb.DataType.Name(inp.data_type) == f"TYPE_{contract.INPUT_TRITON_DTYPE}"
    assert tuple(inp.dims) == contract.INPUT_SHAPE
    logit, distance, activation = config.output
    assert (logit.name, distance.name, activation.name) == (
        contract.OUTPUT_NAME,
        contract.FEATURE_DISTANCE_NAME,
        contract.ACTIVATION_MAP_NAME,
    )
    for out in (logit, distance, activation):
        assert pb.DataType.Name(out.data_type) == f"TYPE_{contract.OUTPUT_TRITON_DTYPE}"
    assert (tuple(logit.dims), tuple(distance.dims), tuple(activation.dims)) == ((1,), (1,), (96, 96))
    (group,) = config.instance_group
    kind, count = {"cpu": ("KIND_CPU", 2), "gpu": ("KIND_GPU", 3)}[target]
    assert (pb.ModelInstanceGroup.Kind.Name(group.kind), group.count) == (kind, count)
    assert config.version_policy.latest.num_versions == KEPT_VERSIONS
    # A zero delay still batches dynamically: the message is there, only its field is at the default.
    assert config.HasField("dynamic_batching") and config.dynamic_batching.max_queue_delay_microseconds == 0
    # Admission control at the model, on both targets: a bounded queue, stale requests rejected.
    policy = config.dynamic_batching.default_queue_policy
    assert (policy.max_queue_size, policy.default_timeout_microseconds) == (24, 750_000)
    assert policy.timeout_action == pb.ModelQueuePolicy.REJECT
    assert serving_target_of(config_pbtxt("member", TRITON, target, SHA)) == target
    if target == "gpu":
        assert [w.inputs[contract.INPUT_NAME].zero_data for w in config.model_warmup] == [True, True]
        assert [tuple(w.inputs[contract.INPUT_NAME].dims) for w in config.model_warmup] == [
            contract.INPUT_SHAPE
        ] * 2
    else:
        assert not config.HasField("optimization") and not config.model_warmup


def test_an_equivalent_config_in_another_layout_is_not_rewritten(tmp_path: Path):
    """A roll onto a repository whose config.pbtxt says the same in another layout leaves it alone."""
    onnx = tmp_path / "alpha.onnx"
    onnx.write_bytes(b"weights")
    member = MemberArtifact("alpha", "test_resnet", onnx, temperature=1.0, weight=1.0)
    repository = tmp_path / "repo"
    write_member(repository, member, 1, TRITON)
    path = repository / "alpha" / "config.pbtxt"
    other_layout = " ".join(path.read_text().split())  # one line: same message, other text
    path.write_text(other_layout)
    write_member(repository, member, 2, TRITON)
    assert path.read_text() == other_layout
    assert same_config(other_layout, config_pbtxt("alpha", TRITON))
    write_member(repository, member, 3, TRITON.model_copy(update={"max_batch_size": 8}))
    assert path.read_text() == config_pbtxt("alpha", TRITON.model_copy(update={"max_batch_size": 8}))
