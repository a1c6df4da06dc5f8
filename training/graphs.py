"""Running a member's exported graph in onnxruntime, and where it lives in a model repository: no torch,
so in-process scoring (`pcam predict -r`, `pcam slide predict -r`, `pcam evaluate`) starts without it."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from pcam_core.contract import INPUT_NAME, OUTPUT_NAME
from pcam_core.serving import per_patch
from training.repository.layout import MODEL_FILE


def member_onnx(repository: Path, name: str, version: int = 1) -> Path:
    """Where a member's ONNX graph lives in a model repository."""
    return repository / name / str(version) / MODEL_FILE


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session configured as the Triton python backend model configures it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(sess: ort.InferenceSession, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Logits (N,) of uint8 (B, 96, 96, 3) batches through the exported graph."""
    return onnx_outputs(sess, batches, (OUTPUT_NAME,))[OUTPUT_NAME]


def onnx_outputs(
    sess: ort.InferenceSession, batches: Iterable[np.ndarray], names: Sequence[str]
) -> dict[str, np.ndarray]:
    """The named outputs of uint8 (B, 96, 96, 3) batches through the exported graph: (N,) for the
    contract's one-value outputs, (N, *shape) for the others."""
    parts: list[list[np.ndarray]] = [[] for _ in names]
    for batch in batches:
        for part, value in zip(
            parts, sess.run(list(names), {INPUT_NAME: np.ascontiguousarray(batch)}), strict=True
        ):
            part.append(value)
    return {name: per_patch(name, np.concatenate(part)) for name, part in zip(names, parts, strict=True)}
