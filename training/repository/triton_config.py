"""A member's Triton model configuration (config.pbtxt) for the cpu or gpu serving target.

Built as tritonclient's ModelConfig message from the model I/O contract and written in protobuf's text
format, so the file is what Triton parses, not text that merely looks like it:

- cpu: `backend: "python"` running model.onnx with onnxruntime (training/triton/model.py), KIND_CPU;
- gpu: `backend: "onnxruntime"` with onnxruntime's TensorRT execution accelerator (FP16, engine cache on
  a mounted volume), KIND_GPU, warmup.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pcam_core.contract import (
    INPUT_NAME,
    INPUT_SHAPE,
    INPUT_TRITON_DTYPE,
    MEMBER_OUTPUTS,
    OUTPUT_SHAPES,
    OUTPUT_TRITON_DTYPE,
)
from pcam_core.release import PRECISIONS
from training.config import TritonConfig

if TYPE_CHECKING:
    from types import ModuleType

    from tritonclient.grpc.model_config_pb2 import ModelConfig

ServingTarget = Literal["cpu", "gpu"]
SERVING_TARGETS: tuple[ServingTarget, ...] = ("cpu", "gpu")
BACKENDS: dict[ServingTarget, str] = {"cpu": "python", "gpu": "onnxruntime"}
KEPT_VERSIONS = 2
"""Model versions Triton keeps loaded: the serving release's and the one before, so that a rolling
release swaps without a failed request (docs/architecture.md#rolling-releases; `pcam package --rolling`)."""


def check_serving(target: str, precision: str = "fp32") -> None:
    """Refuse an unknown serving target or precision, and INT8 anywhere but the cpu target."""
    if target not in SERVING_TARGETS:
        raise ValueError(f"unknown serving target {target!r}; choose from {list(SERVING_TARGETS)}")
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {list(PRECISIONS)}")
    if precision == "int8" and target != "cpu":
        # TensorRT builds its FP16 engine from the float graph; given a QDQ graph it would build an
        # INT8 engine, a precision nothing here measures or calibrates for (and the cpu recipe's uint8
        # activations, U8S8, are not what TensorRT's explicit quantization takes: it needs signed int8).
        raise ValueError(
            f"precision int8 (the static-QDQ INT8 graphs) is served on the cpu target only; the {target} "
            "target builds TensorRT engines (triton.trt_precision) from the fp32 graphs: use precision fp32"
        )


def _pb() -> ModuleType:
    # Imported on use: tritonclient.grpc loads grpc, which importing the pipeline or running
    # `pcam --help` should not pay for (tests/unit/training/test_dependencies.py).
    from tritonclient.grpc import model_config_pb2

    return model_config_pb2


def _shape(batch: int) -> str:
    """An input shape in the TensorRT provider's profile syntax, e.g. image:8x96x96x3."""
    return f"{INPUT_NAME}:" + "x".join(str(d) for d in (batch, *INPUT_SHAPE))


def engine_cache_path(name: str, sha256: str, triton: TritonConfig) -> str:
    """The member's TensorRT engine cache directory: one per member and weights, under the mounted volume.

    onnxruntime's docs require cached engines to be invalidated whenever the model changes (the provider
    does not notice new weights by itself), so a directory per weights digest makes a new release start a
    fresh cache instead of serving new weights with an old engine. One level below the mount point
    only: the provider creates a missing cache directory, but not its parents.
    """
    return f"{triton.trt_engine_cache_path.rstrip('/')}/{name}-{sha256[:16]}"


def _common_config(pb: ModuleType, name: str, target: ServingTarget, triton: TritonConfig) -> ModelConfig:
    """What both targets share: the contract's input and outputs, instances, dynamic batching, threads."""
    kind, count = (
        (pb.ModelInstanceGroup.KIND_CPU, triton.instance_count)
        if target == "cpu"
        else (pb.ModelInstanceGroup.KIND_GPU, triton.gpu_instance_count)
    )
    return pb.ModelConfig(
        name=name,
        backend=BACKENDS[target],
        max_batch_size=triton.max_batch_size,
        input=[
            pb.ModelInput(
                name=INPUT_NAME, data_type=pb.DataType.Value(f"TYPE_{INPUT_TRITON_DTYPE}"), dims=INPUT_SHAPE
            )
        ],
        output=[
            pb.ModelOutput(
                name=name,
                data_type=pb.DataType.Value(f"TYPE_{OUTPUT_TRITON_DTYPE}"),
                dims=OUTPUT_SHAPES[name],
            )
            for name in MEMBER_OUTPUTS
        ],
        instance_group=[pb.ModelInstanceGroup(kind=kind, count=count)],
        version_policy=pb.ModelVersionPolicy(latest=pb.ModelVersionPolicy.Latest(num_versions=KEPT_VERSIONS)),
        # Set even with a zero delay: the message's presence is what turns dynamic batching on.
        dynamic_batching=pb.ModelDynamicBatching(
            max_queue_delay_microseconds=triton.max_queue_delay_microseconds,
            # Admission control at the model: a bounded queue, and no work for callers long gone.
            default_queue_policy=pb.ModelQueuePolicy(
                max_queue_size=triton.max_queue_size,
                default_timeout_microseconds=triton.queue_timeout_microseconds,
                timeout_action=pb.ModelQueuePolicy.REJECT,
            ),
        ),
        parameters={
            "intra_op_thread_count": pb.ModelParameter(string_value=str(triton.intra_op_threads)),
            "inter_op_thread_count": pb.ModelParameter(string_value="1"),
        },
    )


def _add_gpu_settings(pb: ModuleType, config: ModelConfig, triton: TritonConfig, sha256: str) -> None:
    """The TensorRT accelerator, and warmup at batch 1 and the maximum.

    The explicit profile (1..max_batch_size) makes TensorRT build one engine for every batch size at
    warmup, instead of rebuilding whenever a larger batch arrives while serving.
    """
    tensorrt = config.optimization.execution_accelerators.gpu_execution_accelerator.add(name="tensorrt")
    tensorrt.parameters.update(
        {
            "precision_mode": triton.trt_precision,
            "trt_engine_cache_enable": "1",
            "trt_engine_cache_path": engine_cache_path(config.name, sha256, triton),
            "trt_profile_min_shapes": _shape(1),
            "trt_profile_opt_shapes": _shape(triton.max_batch_size),
            "trt_profile_max_shapes": _shape(triton.max_batch_size),
        }
    )
    for batch in sorted({1, triton.max_batch_size}):
        zeros = pb.ModelWarmup.Input(
            data_type=pb.DataType.Value(f"TYPE_{INPUT_TRITON_DTYPE}"), dims=INPUT_SHAPE, zero_data=True
        )
        config.model_warmup.add(name=f"zeros_batch_{batch}", batch_size=batch).inputs[INPUT_NAME].CopyFrom(
            zeros
        )


def model_config(
    name: str, triton: TritonConfig, target: ServingTarget = "cpu", sha256: str = ""
) -> ModelConfig:
    """A member's Triton ModelConfig for a serving target, from the model I/O contract.

    The gpu target needs the sha256 of the member's model.onnx (its engine cache directory).
    """
    if target not in SERVING_TARGETS:
        raise ValueError(f"unknown serving target {target!r}; choose from {list(SERVING_TARGETS)}")
    if target == "gpu" and not sha256:
        raise ValueError("the gpu target's config needs the sha256 of the member's model.onnx")
    pb = _pb()
    config = _common_config(pb, name, target, triton)
    if target == "gpu":
        _add_gpu_settings(pb, config, triton, sha256)
    return config


def config_pbtxt(name: str, triton: TritonConfig, target: ServingTarget = "cpu", sha256: str = "") -> str:
    """A member's config.pbtxt for a serving target: model_config in protobuf's text format."""
    from google.protobuf import text_format

    return text_format.MessageToString(model_config(name, triton, target, sha256))


def parse_config(text: str) -> ModelConfig:
    """A config.pbtxt as a ModelConfig; ValueError if it is not one."""
    from google.protobuf import text_format

    try:
        return text_format.Parse(text, _pb().ModelConfig())
    except text_format.ParseError as exc:
        raise ValueError(f"not a Triton model config: {exc}") from exc


def same_config(text: str, other: str) -> bool:
    """Whether two config.pbtxt texts say the same, however they are laid out (False if one does not parse)."""
    try:
        return parse_config(text) == parse_config(other)
    except ValueError:
        return False


def serving_target_of(text: str) -> ServingTarget:
    """The serving target a config.pbtxt was written for, by its backend."""
    return "gpu" if parse_config(text).backend == BACKENDS["gpu"] else "cpu"
