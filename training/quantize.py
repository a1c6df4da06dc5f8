"""INT8 copies of the exported ONNX graphs (onnxruntime static quantization) and what they cost in AUC.

Static QDQ quantization, not dynamic, because:

- conv nets (the ensemble's CNN members) keep their accuracy with per-channel int8 weights and
  activation ranges calibrated once, offline; dynamic quantization recomputes activation ranges per
  batch at run time and turns Conv into ConvInteger, which onnxruntime's CPU kernels run slowly;
- QDQ (QuantizeLinear/DequantizeLinear pairs around float ops) is the form onnxruntime's CPU provider
  fuses into its integer kernels (QLinearConv, QLinearMatMul), and the graph still reads as the float one.

U8S8: uint8 activations, int8 (signed) per-channel weights. This file serves the cpu target, whose
python backend runs the graph with onnxruntime's CPU provider, and there U8S8 is what turns every
quantized convolution into an integer kernel. onnxruntime's quantization guide ("Quantize ONNX Models",
section "Data type selection") lists U8U8, U8S8 and S8S8 as what its CPU quantization runs; it names
S8S8 with QDQ its default and first choice for the balance of speed and accuracy, and says that on
x86-64 with AVX2 or AVX-512 it computes U8S8 with the VPMADDUBSW instruction for performance, whose
16-bit intermediate can saturate, an issue it says CPUs with VNNI (and ARM) do not have. What decided
it is measured, on the 2-core AMD EPYC with AVX-512 VNNI the demo config runs on: with S8S8 onnxruntime
fused only 10 of resnet10t's 14 convolutions (29 of mobilenetv3_small_100's 53) into QLinearConv and
ran the rest as float Conv between a DequantizeLinear and a QuantizeLinear (resnet10t x1.3 at batch 32,
mobilenet x0.2); with U8S8 it fuses every quantized convolution (all 14 of resnet10t's, 52 of
mobilenet's 53, the 53rd being the float head's conv_head): resnet10t x2.4 at batch 32 and x2.5-2.7 at
batch 1 with the same validation AUC, mobilenet x0.55-0.67. On an x86 CPU without VNNI the saturation
the guide describes may cost accuracy (its remedies are reduce_range or U8U8); the validation AUC in
export.json is measured with the kernels of the machine that ran the export, so re-judge it when the
serving machine's CPU differs.

A TensorRT int8 path would need S8S8: TensorRT's explicit (QDQ) quantization takes signed int8 only,
and onnxruntime's quantization on the GPU supports only S8S8. That is not what this file serves: the
gpu target builds its TensorRT engines (FP16 by default) from the fp32 graphs, and check_serving refuses
int8 members on it, so the cpu target's recipe is free to use what the CPU runs fastest.

Only Conv, Gemm and MatMul are quantized: they carry nearly all the compute, while Softmax,
LayerNorm, GELU, residual Adds and the in-graph uint8 -> float normalization stay in float32, which is
what keeps ViT members usable in int8. The activation ranges come from a seeded sample of *training*
patches, so the validation AUC that judges the int8 graph is measured on patches it was not calibrated
on. The input/output contract (uint8 image, FP32 logit, dynamic batch) is unchanged.

The classifier head stays in float32 (float_head()): every Conv, Gemm and MatMul that runs after the
graph's global pooling, found in the ONNX graph itself, is passed to quantize_static as
nodes_to_exclude. After pooling there is one activation vector per patch, no spatial (or token) axis to
average rounding errors away, and its values are wide: the demo's mobilenetv3_small_100 reaches about
3,800 after `conv_head`, so one int8 activation scale over its MinMax range is a step of 15 or more and
the small features the logit depends on round to nothing. Quantizing its head took its validation AUC
from 0.978 to 0.602; the same recipe with only `conv_head` and `classifier` left in float keeps 0.978.
The head is a small share of the compute (a 1x1 conv and a Gemm on one pooled vector per patch): the
demo members' int8 speedups did not move beyond run-to-run noise with it left in float.

The pooling is found as the last GlobalAveragePool, GlobalMaxPool, ReduceMean or ReduceMax node, or
Gather along axis 1 (a ViT's class token), that every path from the image input to the logit passes
through (shape-only paths through Shape/Size do not count): in CNNs the head's global pooling, not
the squeeze-excitation blocks' ReduceMeans, which the residual path bypasses; in ViTs the class-token
Gather (or the ReduceMean over tokens of an averaging head), so the head Gemm stays float and every
transformer block's MatMuls are quantized as before. A graph without such a node keeps nothing in
float. export.json records the excluded node names (`float_nodes`).

What int8 buys is measured beside what it costs: speedup() times the fp32 and the int8 session on the
same validation patches, as the cpu target's python backend runs them (`pcam package --precision int8`).
int8_concerns() names what falls short of the recipe's aim (a speedup over 1 at under 1 % AUC loss),
which export and package log as warnings; nothing is refused.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import onnx
import onnxruntime as ort
from onnxruntime.quantization import (
    CalibrationDataReader,
    CalibrationMethod,
    QuantFormat,
    QuantType,
    quantize_static,
)
from onnxruntime.quantization.shape_inference import quant_pre_process
from sklearn.metrics import roc_auc_score

from pcam_core.contract import INPUT_NAME
from training.progress import with_progress
from training.timing import TIMED_BATCHES, timed_in_turns

log = logging.getLogger(__name__)
QUANTIZED_OPS = ("Conv", "Gemm", "MatMul")
METHOD = (
    "onnxruntime static QDQ, U8S8: per-channel int8 weights, MinMax-calibrated uint8 activations; Conv, Gemm, MatMul, "
    "except those after the global pooling (the classifier head), kept in float"
)
POOLING_OPS = ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax")
"""Ops that pool a feature map (or the tokens) to one vector when every input-to-logit path crosses them."""
SHAPE_OPS = ("Shape", "Size")
"""Their outputs carry a tensor's shape, not its values: no data flows through them."""
MAX_AUC_LOSS = 0.01
"""int8_concerns(): a relative validation AUC loss above this (1 %) is warned about."""
CALIBRATION_BATCH = 32


class PatchReader(CalibrationDataReader):
    """Feeds uint8 (B, 96, 96, 3) batches to onnxruntime's calibrator under the contract's input name."""

    def __init__(self, batches: Iterable[np.ndarray]) -> None:
        self._batches: Iterator[np.ndarray] = iter(batches)

    def get_next(self) -> dict[str, np.ndarray] | None:
        batch = next(self._batches, None)
        return None if batch is None else {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.uint8)}


class Quantized(NamedTuple):
    path: Path
    float_nodes: list[str]
    """Names of the Conv/Gemm/MatMul nodes left in float (the classifier head), in graph order."""


def _name_nodes(model: onnx.ModelProto) -> None:
    """Give unnamed nodes unique names: nodes_to_exclude matches by name, and "" would match them all."""
    taken = {node.name for node in model.graph.node}
    for i, node in enumerate(model.graph.node):
        if not node.name:
            name = f"{node.op_type}_pcam_{i}"
            while name in taken:
                name += "_"
            node.name = name
            taken.add(name)


def _reaches_output(graph: onnx.GraphProto, skip: onnx.NodeProto | None = None) -> bool:
    """Whether data flows from the graph inputs to the logit (the first output) without running skip
    (nodes in graph order). The activation map's path skips the pooling by design: it does not count."""
    live = {i.name for i in graph.input} - {init.name for init in graph.initializer}
    for node in graph.node:
        if node is skip or node.op_type in SHAPE_OPS:
            continue
        if any(name in live for name in node.input):
            live.update(node.output)
    return graph.output[0].name in live


def _is_pooling(node: onnx.NodeProto) -> bool:
    if node.op_type in POOLING_OPS:
        return True
    axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
    return node.op_type == "Gather" and axis == 1  # x[:, 0]: a ViT's class token


def float_head(model: onnx.ModelProto) -> list[str]:
    """Names of the QUANTIZED_OPS nodes after the graph's global pooling: the classifier head, kept float.

    The pooling node is the last pooling op (POOLING_OPS, or a Gather along axis 1) without which no
    data reaches the output; the head is everything downstream of it. [] when there is none.
    """
    graph = model.graph
    if not _reaches_output(graph):
        return []
    pool = next(
        (n for n in reversed(graph.node) if _is_pooling(n) and not _reaches_output(graph, skip=n)), None
    )
    if pool is None:
        return []
    downstream, head = set(pool.output), []
    for node in graph.node[list(graph.node).index(pool) + 1 :]:
        if any(name in downstream for name in node.input):
            downstream.update(node.output)
            if node.op_type in QUANTIZED_OPS:
                head.append(node.name)
    return head


def quantize_int8(onnx_path: Path, out_path: Path, calibration: np.ndarray) -> Quantized:
    """Statically quantize (QDQ, U8S8: per-channel int8 weights, MinMax-calibrated uint8 activations) to out_path.

    The classifier head (float_head()) stays in float; its node names come back with the path.
    """
    out_path.parent.mkdir(parents=True, exist_ok=True)
    batches = [calibration[i : i + CALIBRATION_BATCH] for i in range(0, len(calibration), CALIBRATION_BATCH)]
    with tempfile.TemporaryDirectory(prefix="pcam-int8-") as tmp:
        # onnxruntime's recommended pre-processing: shape inference and graph fusions, so that the
        # quantizer sees the final ops (e.g. Conv+BatchNorm fused) and quantizes those.
        prepared = Path(tmp) / "prepared.onnx"
        quant_pre_process(str(onnx_path), str(prepared))
        # The head is looked up in the graph the quantizer sees, with the names it will match.
        model = onnx.load(str(prepared))
        _name_nodes(model)
        onnx.save(model, str(prepared))
        head = float_head(model)
        quantize_static(
            str(prepared),
            str(out_path),
            PatchReader(with_progress(batches, len(calibration), "int8 calibration")),
            quant_format=QuantFormat.QDQ,
            op_types_to_quantize=list(QUANTIZED_OPS),
            nodes_to_exclude=head,
            per_channel=True,
            activation_type=QuantType.QUInt8,  # U8S8: see the module docstring
            weight_type=QuantType.QInt8,
            calibrate_method=CalibrationMethod.MinMax,
        )
    return Quantized(out_path, head)


def auc_change(labels: np.ndarray, fp32_logits: np.ndarray, int8_logits: np.ndarray) -> dict[str, Any]:
    """Validation AUC of the fp32 and the int8 graph, their difference (int8 - fp32) and the logit drift."""
    fp32, int8 = np.asarray(fp32_logits).reshape(-1), np.asarray(int8_logits).reshape(-1)
    if len(np.unique(labels)) < 2:  # AUC is undefined on one class; say so rather than fail the export
        auc_fp32 = auc_int8 = delta = None
    else:
        auc_fp32, auc_int8 = float(roc_auc_score(labels, fp32)), float(roc_auc_score(labels, int8))
        delta = auc_int8 - auc_fp32
    return {
        "auc_fp32": auc_fp32,
        "auc_int8": auc_int8,
        "auc_delta": delta,
        "max_abs_logit_diff": float(np.max(np.abs(int8 - fp32))),
        "patches": int(len(labels)),
    }


def speedup(fp32: ort.InferenceSession, int8: ort.InferenceSession, images: np.ndarray) -> dict[str, float]:
    """Median ms per run of both sessions and the median fp32/int8 ratio, at every TIMED_BATCHES size.

    The two run in turns on the same patches, their order swapped every round, so load from other
    processes and warm caches fall on both alike.
    """
    report: dict[str, float] = {}
    for size, times in timed_in_turns({"fp32": fp32, "int8": int8}, images).items():
        fp32_ms, int8_ms = times["fp32"], times["int8"]
        report |= {
            f"fp32_ms_batch{size}": float(np.median(fp32_ms)),
            f"int8_ms_batch{size}": float(np.median(int8_ms)),
            # Ratios of paired rounds: a slow spell on the machine slows both runs of a round.
            f"speedup_batch{size}": float(np.median(fp32_ms / int8_ms)),
            f"rounds_batch{size}": len(fp32_ms),
        }
    return report


def int8_concerns(entry: Mapping[str, Any]) -> list[str]:
    """What an export.json int8 entry falls short of: a speedup under 1, a relative AUC loss over 1 %.

    Entries written before a field existed are judged on the fields they have.
    """
    concerns = []
    slower = [
        f"x{entry[f'speedup_batch{b}']:.2f} at batch {b}"
        for b in TIMED_BATCHES
        if entry.get(f"speedup_batch{b}") is not None and entry[f"speedup_batch{b}"] < 1
    ]
    if slower:
        concerns.append(f"int8 is slower than fp32 ({', '.join(slower)})")
    fp32, int8 = entry.get("auc_fp32"), entry.get("auc_int8")
    if fp32 and int8 is not None and (fp32 - int8) / fp32 > MAX_AUC_LOSS:
        concerns.append(
            f"int8 loses {(fp32 - int8) / fp32:.1%} of the validation AUC ({fp32:.4f} -> {int8:.4f})"
        )
    return concerns
