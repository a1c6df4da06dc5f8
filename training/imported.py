"""Members trained outside `pcam`: an ONNX graph wrapped into the member contract (pcam_core/contract.py).

The wrapped graph takes the contract's input, uint8 RGB patches `image` [N, 96, 96, 3], turns them into
what the imported graph expects (float32, divided by `scale`, (x - mean) / std per channel, NCHW or
NHWC), runs it unchanged, and answers the contract's three outputs: `logit` [N, 1] from its output,
`feature_distance` [N, 1] as NaN (it has no features the platform knows: the feature_outlier flag is
left out of its release) and `activation_map` [N, 96, 96] as zeros (its release records no map, so
explain=cam is refused with explain-unavailable; occlusion works). Triton, the ensemble and
`pcam predict` then serve it like any member.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pcam_core.contract import (
    ACTIVATION_MAP_NAME,
    FEATURE_DISTANCE_NAME,
    INPUT_NAME,
    OUTPUT_NAME,
    PATCH_SIZE,
)
from training.config import ImportedGraph, ImportedInput
from training.graphs import session

MIN_OPSET = 13
"""Slice and Reshape take their bounds and shape as inputs from opset 10 and 5; 13 is the oldest the
wrapping nodes are written for."""
PREFIX = "pcam_import_"


class ImportedGraphError(ValueError):
    """An imported graph that cannot be served: wrong digest, several inputs or outputs, old opset."""


def verify(graph: ImportedGraph) -> Path:
    """The graph's path, after checking its SHA-256 against the config's."""
    if not graph.path.is_file():
        raise ImportedGraphError(f"{graph.path}: no such file")
    with graph.path.open("rb") as file:
        actual = hashlib.file_digest(file, "sha256").hexdigest()
    if actual != graph.sha256.lower():
        raise ImportedGraphError(f"{graph.path}: sha256 {actual}, the config expects {graph.sha256.lower()}")
    return graph.path


def preprocess(images: np.ndarray, spec: ImportedInput) -> np.ndarray:
    """uint8 NHWC patches as the imported graph expects them (what the wrapped graph computes)."""
    x = (images.astype(np.float32) / np.float32(spec.scale) - np.float32(spec.mean)) / np.float32(spec.std)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2) if spec.layout == "NCHW" else x)


def original_logits(graph: ImportedGraph, images: np.ndarray, threads: int = 1) -> np.ndarray:
    """(N,) tumor logits of the imported graph itself on uint8 patches preprocessed as its config says:
    what the wrapped graph must answer."""
    original = session(graph.path, threads)
    feed = {original.get_inputs()[0].name: preprocess(images, graph.input)}
    out = np.asarray(original.run(None, feed)[0], np.float32)
    return out[:, 1] - out[:, 0] if graph.output == "two_class_logits" else out.reshape(-1)


def _constant(name: str, value: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(value, name))


def _rename_reserved(body: onnx.GraphProto) -> None:
    """Give the imported graph's tensors that carry a contract name (its input called `image`, its
    output `logit`, ...) another one, so the wrapper's own tensors of those names stay single."""
    reserved = {INPUT_NAME, OUTPUT_NAME, FEATURE_DISTANCE_NAME, ACTIVATION_MAP_NAME}

    def renamed(name: str) -> str:
        return PREFIX + "theirs_" + name if name in reserved else name

    for node in body.node:
        node.input[:] = [renamed(name) for name in node.input]
        node.output[:] = [renamed(name) for name in node.output]
    for value in (*body.input, *body.output, *body.value_info, *body.initializer):
        value.name = renamed(value.name)


def wrap(graph: ImportedGraph, destination: Path) -> Path:
    """Write the imported graph wrapped into the member contract to `destination`; return it."""
    model = onnx.load(str(verify(graph)))
    body = model.graph
    initializers = {init.name for init in body.initializer}
    inputs = [i for i in body.input if i.name not in initializers]
    if len(inputs) != 1 or len(body.output) != 1:
        raise ImportedGraphError(
            f"{graph.path}: needs one input and one output, has inputs {[i.name for i in inputs]} and "
            f"outputs {[o.name for o in body.output]}"
        )
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 0)
    if opset < MIN_OPSET:
        raise ImportedGraphError(f"{graph.path}: opset {opset}; convert it to {MIN_OPSET} or later first")
    _rename_reserved(body)
    inputs = [i for i in body.input if i.name not in {init.name for init in body.initializer}]
    source_input, source_output = inputs[0].name, body.output[0].name
    spec, p = graph.input, PREFIX
    nodes = [
        _constant(p + "scale", np.array(spec.scale, np.float32)),
        _constant(p + "mean", np.array(spec.mean, np.float32)),
        _constant(p + "std", np.array(spec.std, np.float32)),
        helper.make_node("Cast", [INPUT_NAME], [p + "pixels"], to=TensorProto.FLOAT),
        helper.make_node("Div", [p + "pixels", p + "scale"], [p + "scaled"]),
        helper.make_node("Sub", [p + "scaled", p + "mean"], [p + "centered"]),
        helper.make_node(
            "Div", [p + "centered", p + "std"], [source_input if spec.layout == "NHWC" else p + "nhwc"]
        ),
    ]
    if spec.layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [p + "nhwc"], [source_input], perm=[0, 3, 1, 2]))
    nodes += list(body.node)
    if graph.output == "two_class_logits":
        nodes += [
            _constant(p + "zero", np.array([0], np.int64)),
            _constant(p + "one", np.array([1], np.int64)),
            _constant(p + "two", np.array([2], np.int64)),
            helper.make_node("Slice", [source_output, p + "zero", p + "one", p + "one"], [p + "normal"]),
            helper.make_node("Slice", [source_output, p + "one", p + "two", p + "one"], [p + "tumor"]),
            helper.make_node("Sub", [p + "tumor", p + "normal"], [p + "logit"]),
        ]
        tumor_logit = p + "logit"
    else:
        tumor_logit = source_output
    nodes += [
        _constant(p + "column", np.array([-1, 1], np.int64)),
        helper.make_node("Reshape", [tumor_logit, p + "column"], [OUTPUT_NAME]),
        # [N, 1] NaN and [N, 96, 96] zeros, N from the input's shape.
        helper.make_node("Shape", [INPUT_NAME], [p + "shape"]),
        _constant(p + "first", np.array([0], np.int64)),
        _constant(p + "second", np.array([1], np.int64)),
        helper.make_node("Slice", [p + "shape", p + "first", p + "second"], [p + "batch"]),
        _constant(p + "one_value", np.array([1], np.int64)),
        _constant(p + "map_shape", np.array([PATCH_SIZE, PATCH_SIZE], np.int64)),
        helper.make_node("Concat", [p + "batch", p + "one_value"], [p + "column_shape"], axis=0),
        helper.make_node("Concat", [p + "batch", p + "map_shape"], [p + "maps_shape"], axis=0),
        helper.make_node(
            "ConstantOfShape",
            [p + "column_shape"],
            [FEATURE_DISTANCE_NAME],
            value=numpy_helper.from_array(np.array([np.nan], np.float32)),
        ),  # fmt: skip
        helper.make_node(
            "ConstantOfShape",
            [p + "maps_shape"],
            [ACTIVATION_MAP_NAME],
            value=numpy_helper.from_array(np.array([0.0], np.float32)),
        ),  # fmt: skip
    ]
    wrapped = helper.make_graph(
        nodes,
        f"{body.name or 'imported'}_as_pcam_member",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.UINT8, ["batch", PATCH_SIZE, PATCH_SIZE, 3])],
        [
            helper.make_tensor_value_info(OUTPUT_NAME, TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info(FEATURE_DISTANCE_NAME, TensorProto.FLOAT, ["batch", 1]),
            helper.make_tensor_value_info(
                ACTIVATION_MAP_NAME, TensorProto.FLOAT, ["batch", PATCH_SIZE, PATCH_SIZE]
            ),
        ],
        initializer=list(body.initializer),
    )
    out = helper.make_model(wrapped, opset_imports=list(model.opset_import), ir_version=model.ir_version)
    out.functions.extend(model.functions)
    onnx.checker.check_model(out, full_check=True)
    destination.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(out, str(destination))
    return destination
