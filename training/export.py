"""ONNX and TorchScript export of contract models, checked against PyTorch, and inference with the graphs."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from pcam_core.contract import (
    ACTIVATION_MAP_NAME,
    FEATURE_DISTANCE_NAME,
    INPUT_NAME,
    INPUT_SHAPE,
    MEMBER_OUTPUTS,
    OUTPUT_NAME,
)
from training.graphs import onnx_outputs, session
from training.models import ContractModel
from training.served import ServedModel

log = logging.getLogger(__name__)
OPSET = 17
PARITY_ATOL = 1e-4
PARITY_RTOL = 1e-4
"""Accepted |onnxruntime - PyTorch| logit difference: PARITY_ATOL + PARITY_RTOL * |logit|.

Absolute alone is not enough: float32 rounding grows with the logit, and trained members emit
logits in the hundreds (measured: 2.7e-4 at |logit| 69, i.e. 4e-6 relative). A broken export
(wrong normalization, layout, weights) is off by far more than 1e-4 relative.
"""


FEATURE_PARITY_RTOL = 1e-3
"""The feature distance is a quadratic form over up to 2048 features with a precision matrix's
entries: float32 accumulation differs by more than for the logit, still far below what a wrong graph
gives. Held to PARITY_ATOL + FEATURE_PARITY_RTOL * the batch's largest distance: a small distance is a
sum of large terms that cancel, so its rounding error is the size of theirs, not of the result
(measured: 4.7e-4 at a distance of 0.27 in a batch of trivial members, 2026-12-04)."""
MAP_PARITY_RTOL = 1e-3
"""The activation map is held to PARITY_ATOL + MAP_PARITY_RTOL * the patch's largest |value|: a map's
cells near zero are differences of near-equal head outputs, so a tolerance relative to each value
would hold them to noise; a wrong graph puts whole cells off by the map's scale."""
Exportable = ContractModel | ServedModel
"""A contract model (logit only) or the served graph (logit, feature distance, activation map)."""


def output_names(model: Exportable) -> tuple[str, ...]:
    """The graph outputs a model is exported with, in its forward's order."""
    return MEMBER_OUTPUTS if isinstance(model, ServedModel) else (OUTPUT_NAME,)


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


def export_onnx(model: Exportable, path: Path) -> Path:
    """Export with the uint8 NHWC input 'image', the model's outputs ('logit' (N, 1), and with a served
    model 'feature_distance' (N, 1) and 'activation_map' (N, 96, 96)) and a dynamic batch axis."""
    model = model.eval()
    outputs = output_names(model)
    path.parent.mkdir(parents=True, exist_ok=True)
    with _quiet_tracing():
        # The TorchScript-based exporter is the one measured to match onnxruntime (docs/architecture.md#model-io-contract).
        torch.onnx.export(
            model,
            (_example(),),
            str(path),
            input_names=[INPUT_NAME],
            output_names=list(outputs),
            dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *outputs)},
            opset_version=OPSET,
            dynamo=False,
        )
    return path


def export_torchscript(model: Exportable, path: Path) -> Path:
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


def _torch_outputs(module: torch.nn.Module, images: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        out = module(torch.from_numpy(np.ascontiguousarray(images)))
    return [value.numpy().reshape(len(images), -1) for value in (out if isinstance(out, tuple) else (out,))]


def check_close(name: str, got: np.ndarray, expected: np.ndarray, what: str) -> float:
    """Max |got - expected| of one contract output; ParityError past its tolerance (NaN fails too)."""
    rtol, scale = PARITY_RTOL, np.abs(expected)
    if name == FEATURE_DISTANCE_NAME:
        rtol, scale = FEATURE_PARITY_RTOL, np.broadcast_to(scale.max(), scale.shape)
    if name == ACTIVATION_MAP_NAME:
        rtol, scale = MAP_PARITY_RTOL, np.broadcast_to(scale.max(axis=1, keepdims=True), scale.shape)
    diff = np.abs(got - expected)
    limit = PARITY_ATOL + rtol * scale
    if not np.all(diff <= limit):
        worst = np.unravel_index(int(np.argmax(np.nan_to_num(diff - limit, nan=np.inf))), diff.shape)
        raise ParityError(
            f"{what}: {name} differs from PyTorch by {diff[worst]:.3g} at {expected[worst]:.3g} "
            f"(allowed {limit[worst]:.3g})"
        )
    return float(diff.max())


def parity(
    model: Exportable,
    images: np.ndarray,
    run: Callable[[np.ndarray], Sequence[np.ndarray]],
    what: str,
) -> float:
    """Max |exported - PyTorch| logit over images (one batch, and a few one by one); raise past the
    tolerance of any output.

    run maps a uint8 (B, 96, 96, 3) batch to the model's outputs through the exported artifact named by what.
    """
    model = model.eval()
    names = output_names(model)
    expected = _torch_outputs(model, images)
    batched = run(images)
    single = [run(images[i : i + 1]) for i in range(min(4, len(images)))]
    largest = 0.0
    for k, name in enumerate(names):
        want = expected[k]
        diff = check_close(name, np.asarray(batched[k]).reshape(want.shape), want, what)
        got_single = np.concatenate([np.asarray(out[k]).reshape(1, -1) for out in single])
        diff_single = check_close(name, got_single, want[: len(single)], what)
        if name == OUTPUT_NAME:
            largest = max(diff, diff_single)
    log.info(
        "%s: parity with PyTorch, max |logit diff| %.2g (max |logit| %.3g)",
        what,
        largest,
        np.abs(expected[0]).max(),
    )
    return largest


def check_parity(model: Exportable, path: Path, images: np.ndarray, threads: int = 1) -> float:
    """Max |onnxruntime - PyTorch| logit over images; raise ParityError past any output's tolerance."""
    sess = session(path, threads)
    names = output_names(model)
    return parity(
        model,
        images,
        lambda batch: list(onnx_outputs(sess, [batch], names).values()),
        f"{path} (onnxruntime)",
    )


def check_torchscript_parity(model: Exportable, path: Path, images: np.ndarray) -> float:
    """Max |TorchScript - PyTorch| logit over images, the saved file reloaded; raise ParityError past tolerance."""
    traced = load_torchscript(path)
    return parity(model, images, lambda batch: _torch_outputs(traced, batch), f"{path} (TorchScript)")
