"""ONNX and TorchScript export of contract models, checked against PyTorch, and inference with the graphs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

from pcam_core.contract import INPUT_NAME, INPUT_SHAPE, OUTPUT_NAME
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


@contextmanager
def _quiet_tracing() -> Iterator[None]:
    # Both exporters trace; tracing warns about timm's shape asserts, and torch warns that the TorchScript
    # exporter and torch.jit are deprecated. None of it changes the traced graph; parity is checked after.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning)
        warnings.filterwarnings("ignore", category=FutureWarning)
        yield


def _example() -> torch.Tensor:
    # Batch 2, not 1: a batch of 1 invites the tracer to specialise on it.
    return torch.zeros((2, *INPUT_SHAPE), dtype=torch.uint8)


def export_onnx(model: ContractModel, path: Path) -> Path:
    """Export with the uint8 NHWC input 'image', output 'logit' (N, 1) and a dynamic batch axis."""
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_tracing():
        # The TorchScript-based exporter is the one measured to match onnxruntime (docs/architecture.md#model-io-contract).
        torch.onnx.export(
            model,
            (_example(),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def export_torchscript(model: ContractModel, path: Path) -> Path:
    """torch.jit.trace of the contract model (uint8 NHWC in, logit out), saved as a TorchScript file.

    For PyTorch-side consumers (Triton's pytorch backend, C++ libtorch). torch.jit is deprecated in
    torch 2.x in favour of torch.export, but still the format libtorch and Triton load.
    """
    model = model.eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_tracing(), torch.no_grad():
        # check_trace would rerun the model and compare; check_torchscript_parity does that on real patches.
        traced = torch.jit.trace(model, (_example(),), check_trace=False)
        torch.jit.save(traced, str(path))
    return path


def load_torchscript(path: Path) -> torch.jit.ScriptModule:
    """A saved TorchScript model on the CPU, in eval mode."""
    with _quiet_tracing():
        return torch.jit.load(str(path), map_location="cpu").eval()


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


def _torch_logits(module: torch.nn.Module, images: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return module(torch.from_numpy(np.ascontiguousarray(images))).numpy().reshape(-1)


def parity(
    model: ContractModel, images: np.ndarray, run: Callable[[np.ndarray], np.ndarray], what: str
) -> float:
    """Max |exported - PyTorch| logit over images (one batch, and a few one by one); raise past tolerance.

    run maps a uint8 (B, 96, 96, 3) batch to (B,) logits through the exported artifact named by what.
    """
    expected = _torch_logits(model.eval(), images)
    batched = run(images).reshape(-1)
    single = np.concatenate([run(images[i : i + 1]).reshape(-1) for i in range(min(4, len(images)))])
    diff = np.abs(batched - expected)
    diff_single = np.abs(single - expected[: len(single)])
    limit = PARITY_ATOL + PARITY_RTOL * np.abs(expected)
    # Written so that NaN fails too.
    if not (np.all(diff <= limit) and np.all(diff_single <= limit[: len(single)])):
        worst = int(np.argmax(diff - limit))
        raise ParityError(
            f"{what}: differs from PyTorch by {diff[worst]:.3g} at logit {expected[worst]:.3g} "
            f"(allowed {PARITY_ATOL:g} + {PARITY_RTOL:g} * |logit|)"
        )
    largest = float(max(diff.max(), diff_single.max()))
    log.info(
        "%s: parity with PyTorch, max |diff| %.2g (max |logit| %.3g)", what, largest, np.abs(expected).max()
    )
    return largest


def check_parity(model: ContractModel, path: Path, images: np.ndarray, threads: int = 1) -> float:
    """Max |onnxruntime - PyTorch| logit over images; raise ParityError past tolerance."""
    sess = session(path, threads)
    return parity(model, images, lambda batch: onnx_logits(sess, [batch]), f"{path} (onnxruntime)")


def check_torchscript_parity(model: ContractModel, path: Path, images: np.ndarray) -> float:
    """Max |TorchScript - PyTorch| logit over images, the saved file reloaded; raise ParityError past tolerance."""
    traced = load_torchscript(path)
    return parity(model, images, lambda batch: _torch_logits(traced, batch), f"{path} (TorchScript)")
