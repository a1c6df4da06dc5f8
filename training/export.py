"""ONNX export of contract models, checked against PyTorch, and inference with the exported graph."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from services.common.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
from training.models import ContractModel

log = logging.getLogger(__name__)
OPSET = 17
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
"""Accepted |onnxruntime - PyTorch| logit difference: PARITY_ATOL + PARITY_RTOL * |logit|.

Absolute alone is not enough: float32 rounding grows with the logit, and trained members emit
logits in the hundreds (measured: 2.7e-4 at |logit| 69, i.e. 4e-6 relative). A broken export
(wrong normalization, layout, weights) is off by far more than 1e-4 relative.
"""


class ParityError(RuntimeError):
    """The exported graph does not compute what the PyTorch model computes."""


def export_onnx(model: ContractModel, path: Path) -> Path:
    """Export with the uint8 NHWC input 'image', output 'logit' (N, 1) and a dynamic batch axis."""
    model = model.eval()
    example = torch.zeros((2, *INPUT_SHAPE), dtype=torch.uint8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        # The TorchScript exporter (the one measured to match onnxruntime, DESIGN.md section 3) warns
        # that it is legacy, and tracing warns about timm's shape asserts; neither changes the graph.
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        torch.onnx.export(
            model,
            (example,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def session(path: Path, threads: int = 1) -> ort.InferenceSession:
    """A CPU onnxruntime session configured as the Triton python backend model configures it."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_logits(sess: ort.InferenceSession, batches: Iterable[np.ndarray]) -> np.ndarray:
    """Logits (N,) of uint8 (B, 96, 96, 3) batches through the exported graph."""
    outputs = [sess.run([OUTPUT_NAME], {INPUT_NAME: np.ascontiguousarray(b)})[0] for b in batches]
    return np.concatenate(outputs).reshape(-1)


def check_parity(model: ContractModel, path: Path, images: np.ndarray, threads: int = 1) -> float:
    """Max |onnxruntime - PyTorch| logit over images (one batch, and a few one by one); raise past tolerance."""
    with torch.no_grad():
        expected = model.eval()(torch.from_numpy(images)).numpy().reshape(-1)
    sess = session(path, threads)
    batched = onnx_logits(sess, [images])
    single = onnx_logits(sess, (images[i : i + 1] for i in range(min(4, len(images)))))
    diff = np.abs(batched - expected)
    diff_single = np.abs(single - expected[: len(single)])
    limit = PARITY_ATOL + PARITY_RTOL * np.abs(expected)
    # Written so that NaN fails too.
    if not (np.all(diff <= limit) and np.all(diff_single <= limit[: len(single)])):
        worst = int(np.argmax(diff - limit))
        raise ParityError(
            f"{path}: onnxruntime differs from PyTorch by {diff[worst]:.3g} at logit {expected[worst]:.3g} "
            f"(allowed {PARITY_ATOL:g} + {PARITY_RTOL:g} * |logit|)"
        )
    largest = float(max(diff.max(), diff_single.max()))
    log.info(
        "%s: parity with PyTorch, max |diff| %.2g (max |logit| %.3g)", path, largest, np.abs(expected).max()
    )
    return largest
