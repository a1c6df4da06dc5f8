"""TensorRT plans from the exported ONNX graphs, when the `tensorrt` package and a CUDA GPU are present.

A plan is tied to the GPU architecture (and TensorRT version) it was built on, so it is an optional
export artifact: the production repository serves the ONNX graph through onnxruntime's TensorRT
execution accelerator, which builds and caches its engine on the serving GPU (docs/architecture.md#model-repository).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from pcam_core.contract import INPUT_NAME, INPUT_SHAPE

log = logging.getLogger(__name__)
WORKSPACE_BYTES = 1 << 30


def _import_tensorrt():
    import tensorrt  # noqa: PLC0415  (optional dependency, only on GPU machines)

    return tensorrt


def unavailable() -> str | None:
    """None when a plan can be built here, else a one-line message naming what is missing."""
    missing = []
    try:
        _import_tensorrt()
    except (ImportError, OSError):  # OSError: the wheel is there but its CUDA libraries are not
        missing.append("the `tensorrt` Python package")
    if not torch.cuda.is_available():
        missing.append("a CUDA GPU (torch.cuda.is_available() is False)")
    if not missing:
        return None
    return f"TensorRT plan skipped: needs {' and '.join(missing)}"


def build_plan(onnx_path: Path, plan_path: Path, max_batch_size: int, fp16: bool = True) -> Path:
    """Build a serialized engine with one optimization profile for batches 1..max_batch_size (opt: max)."""
    trt = _import_tensorrt()
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 10 networks are always explicit-batch (the flag is gone); TensorRT 8 needs it.
    explicit = getattr(trt.NetworkDefinitionCreationFlag, "EXPLICIT_BATCH", None)
    network = builder.create_network(0 if explicit is None else 1 << int(explicit))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise RuntimeError(f"TensorRT cannot parse {onnx_path}: {errors}")
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, WORKSPACE_BYTES)
    if fp16:
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    profile.set_shape(
        INPUT_NAME, (1, *INPUT_SHAPE), (max_batch_size, *INPUT_SHAPE), (max_batch_size, *INPUT_SHAPE)
    )
    config.add_optimization_profile(profile)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(f"TensorRT failed to build an engine from {onnx_path}")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    plan_path.write_bytes(bytes(serialized))
    log.info("%s: TensorRT plan (%s, batch 1..%d)", plan_path, "FP16" if fp16 else "FP32", max_batch_size)
    return plan_path
