"""ContractModel honours the I/O contract; ONNX, TorchScript and INT8 exports keep it (the INT8 one with its
classifier head in float); TensorRT skips cleanly."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from onnx import TensorProto, helper

from pcam_core.contract import INPUT_NAME, OUTPUT_NAME
from training import trt
from training.export import (
    OPSET,
    ParityError,
    check_parity,
    check_torchscript_parity,
    export_onnx,
    export_torchscript,
    load_torchscript,
)
from training.graphs import onnx_logits, session
from training.models import ContractModel, build_model, create_backbone
from training.quantize import MAX_AUC_LOSS, Quantized, auc_change, float_head, int8_concerns, quantize_int8


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, 96, 96, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def model() -> ContractModel:
    torch.manual_seed(0)
    return build_model("test_resnet").eval()


def test_contract_model_equals_manual_preprocessing(model: ContractModel, images: np.ndarray):
    mean = torch.tensor(model.backbone.pretrained_cfg["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(model.backbone.pretrained_cfg["std"]).view(1, 3, 1, 1)
    nchw = torch.from_numpy(images).float().permute(0, 3, 1, 2) / 255.0
    with torch.no_grad():
        manual = model.backbone((nchw - mean) / std)
        wrapped = model(torch.from_numpy(images))
    assert wrapped.shape == (5, 1) and wrapped.dtype == torch.float32
    torch.testing.assert_close(wrapped, manual, rtol=0, atol=1e-5)


def test_vits_are_built_for_96_pixel_patches():
    vit = create_backbone("test_vit")
    assert tuple(vit.patch_embed.img_size) == (96, 96)
    assert vit(torch.zeros(1, 3, 96, 96)).shape == (1, 1)


def test_unknown_architecture_is_refused():
    with pytest.raises(ValueError, match="unknown timm architecture"):
        create_backbone("resnet_that_does_not_exist")


@pytest.fixture(scope="module")
def exported(model: ContractModel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_onnx(model, tmp_path_factory.mktemp("onnx") / "model.onnx")


def test_onnx_graph_carries_the_contract(exported: Path):
    graph = onnx.load(str(exported)).graph
    (inp,), (out,) = graph.input, graph.output
    assert inp.name == INPUT_NAME and out.name == OUTPUT_NAME
    assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8
    assert out.type.tensor_type.elem_type == onnx.TensorProto.FLOAT
    in_dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
    out_dims = [d.dim_param or d.dim_value for d in out.type.tensor_type.shape.dim]
    assert in_dims == ["batch", 96, 96, 3] and out_dims == ["batch", 1]


def test_onnx_matches_pytorch_at_any_batch_size(model: ContractModel, exported: Path, images: np.ndarray):
    assert check_parity(model, exported, images) <= 1e-4
    logits = onnx_logits(session(exported), [images[:2], images[2:]])
    with torch.no_grad():
        expected = model(torch.from_numpy(images)).numpy().reshape(-1)
    np.testing.assert_allclose(logits, expected, rtol=0, atol=1e-4)


def test_parity_check_catches_a_different_graph(exported: Path, images: np.ndarray):
    torch.manual_seed(1)
    other = build_model("test_resnet").eval()  # other weights than the exported ones
    with pytest.raises(ParityError):
        check_parity(other, exported, images)


@pytest.mark.parametrize("architecture", ["test_resnet", "test_vit"])
def test_torchscript_matches_pytorch_at_any_batch_size(architecture: str, images: np.ndarray, tmp_path: Path):
    torch.manual_seed(0)
    model = build_model(architecture).eval()
    path = export_torchscript(model, tmp_path / "model.pt")
    # The same tolerance as the ONNX check: one batch of 5 and four single patches, the file reloaded.
    assert check_torchscript_parity(model, path, images) <= 1e-4
    traced = load_torchscript(path)
    with torch.no_grad():
        out = traced(torch.from_numpy(images[:3]))
    assert out.shape == (3, 1) and out.dtype == torch.float32


def test_torchscript_parity_catches_other_weights(model: ContractModel, images: np.ndarray, tmp_path: Path):
    path = export_torchscript(model, tmp_path / "model.pt")
    torch.manual_seed(1)
    with pytest.raises(ParityError, match="TorchScript"):
        check_torchscript_parity(build_model("test_resnet").eval(), path, images)


@pytest.fixture(scope="module")
def quantized(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Quantized:
    calibration = np.random.default_rng(3).integers(0, 256, (40, 96, 96, 3), dtype=np.uint8)
    return quantize_int8(exported, tmp_path_factory.mktemp("int8") / "model.int8.onnx", calibration)


def test_int8_graph_keeps_the_contract_and_tracks_the_float_graph(exported: Path, quantized: Quantized):
    rng = np.random.default_rng(4)
    int8, float_nodes = quantized
    assert float_nodes == ["/backbone/fc/Gemm"]  # the classifier after the global average pool
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    producer = {out: node.op_type for node in graph.node for out in node.output}
    floats = {i.name for i in graph.initializer if i.data_type == TensorProto.FLOAT}
    convs = [node for node in graph.node if node.op_type == "Conv"]
    assert convs and all(producer.get(x) == "DequantizeLinear" for c in convs for x in c.input[:2])
    (gemm,) = [node for node in graph.node if node.op_type == "Gemm"]
    assert gemm.name == "/backbone/fc/Gemm" and producer[gemm.input[0]] == "Flatten"
    assert gemm.input[1] in floats and gemm.input[2] in floats  # float weights, no QDQ pair
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == (INPUT_NAME, onnx.TensorProto.UINT8)
    assert (out.name, out.type.tensor_type.elem_type) == (OUTPUT_NAME, onnx.TensorProto.FLOAT)
    assert int8.stat().st_size < exported.stat().st_size
    images = rng.integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    fp32_logits = onnx_logits(session(exported), [images])
    int8_logits = onnx_logits(session(int8), [images[:1], images[1:]])  # dynamic batch kept
    assert int8_logits.shape == (6,) and np.isfinite(int8_logits).all()
    assert np.abs(int8_logits - fp32_logits).max() < 0.05 * max(1.0, np.abs(fp32_logits).max())


def test_int8_graph_is_u8s8_uint8_activations_and_int8_weights(quantized: Quantized, tmp_path: Path):
    graph = onnx.load(str(quantized.path)).graph
    inits = {i.name: i for i in graph.initializer}
    quantize = [node for node in graph.node if node.op_type == "QuantizeLinear"]
    dequantize = {
        out: node for node in graph.node if node.op_type == "DequantizeLinear" for out in node.output
    }
    # Activations: every QuantizeLinear (weights are stored quantized, no QuantizeLinear) yields uint8.
    assert quantize and all(inits[q.input[2]].data_type == TensorProto.UINT8 for q in quantize)
    convs = [node for node in graph.node if node.op_type == "Conv"]
    for conv in convs:
        x, w = dequantize[conv.input[0]], dequantize[conv.input[1]]
        assert inits[x.input[2]].data_type == TensorProto.UINT8  # the activation read as uint8
        weight, scale, zero_point = (inits[name] for name in w.input)
        assert weight.data_type == zero_point.data_type == TensorProto.INT8  # signed weights
        assert list(scale.dims) == [weight.dims[0]]  # one scale per output channel
        if len(conv.input) > 2:
            assert inits[dequantize[conv.input[2]].input[0]].data_type == TensorProto.INT32  # the bias
    # What U8S8 is for: onnxruntime's CPU provider fuses every quantized Conv into QLinearConv.
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(quantized.path), options, providers=["CPUExecutionProvider"])
    optimized = [node.op_type for node in onnx.load(options.optimized_model_filepath).graph.node]
    assert "Conv" not in optimized and optimized.count("QLinearConv") == len(convs)


@pytest.mark.parametrize(
    ("architecture", "head"),
    [
        ("test_vit", ["/backbone/head/Gemm"]),  # after the class-token Gather; blocks' MatMuls quantized
        (
            "test_efficientnet",
            ["/backbone/classifier/Gemm"],
        ),  # its SE blocks' ReduceMeans are not the pooling
    ],
)
def test_float_head_is_what_runs_after_the_global_pooling(architecture: str, head: list[str], tmp_path: Path):
    torch.manual_seed(0)
    model = onnx.load(str(export_onnx(build_model(architecture).eval(), tmp_path / "model.onnx")))
    assert float_head(model) == head


def _graph(nodes: list[onnx.NodeProto], *initializers: onnx.TensorProto) -> onnx.ModelProto:
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 2])
    graph = helper.make_graph(nodes, "g", [x], [y], list(initializers))
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])


def _weight(name: str, *shape: int) -> onnx.TensorProto:
    return helper.make_tensor(name, TensorProto.FLOAT, shape, np.zeros(shape, np.float32).ravel().tolist())


def test_float_head_follows_the_pooling_every_path_crosses():
    weights = (_weight("w", 4, 4, 1, 1), _weight("se", 4, 4, 1, 1), _weight("fc", 2, 4))
    squeeze_excite = [
        helper.make_node("Conv", ["x", "w"], ["a"], name="conv"),
        helper.make_node("ReduceMean", ["a"], ["m"], name="se_pool", axes=[2, 3]),
        helper.make_node("Conv", ["m", "se"], ["g"], name="se_conv"),
        helper.make_node("Sigmoid", ["g"], ["s"], name="se_gate"),
        helper.make_node("Mul", ["a", "s"], ["b"], name="gate"),  # the residual path around se_pool
    ]
    # Flattened with a shape computed from the feature map: a shape, not data, flows past the pooling.
    head = [
        helper.make_node("GlobalAveragePool", ["b"], ["p"], name="pool"),
        helper.make_node("Shape", ["b"], ["shape"], name="shape", end=1),
        helper.make_node("Concat", ["shape", "minus_one"], ["flat_shape"], name="concat", axis=0),
        helper.make_node("Reshape", ["p", "flat_shape"], ["f"], name="flatten"),
        helper.make_node("Gemm", ["f", "fc"], ["y"], name="fc", transB=1),
    ]
    minus_one = helper.make_tensor("minus_one", TensorProto.INT64, [1], [-1])
    model = _graph(squeeze_excite + head, *weights, minus_one)
    onnx.checker.check_model(model)
    assert float_head(model) == ["fc"]
    no_pooling = _graph([helper.make_node("Conv", ["x", "w"], ["y"], name="conv")], weights[0])
    assert float_head(no_pooling) == []


def test_int8_concerns_name_a_slower_or_less_accurate_graph():
    good = {"speedup_batch32": 1.3, "speedup_batch1": 1.5, "auc_fp32": 0.98, "auc_int8": 0.975}
    assert int8_concerns(good) == []
    assert int8_concerns({}) == []  # an entry from before the timing and AUC fields
    slow = int8_concerns({**good, "speedup_batch32": 0.2})
    assert slow == ["int8 is slower than fp32 (x0.20 at batch 32)"]
    lossy = int8_concerns({**good, "auc_int8": 0.98 * (1 - MAX_AUC_LOSS) - 1e-6})
    assert len(lossy) == 1 and "loses 1.0% of the validation AUC (0.9800 -> 0.9702)" in lossy[0]
    assert len(int8_concerns({**good, "speedup_batch1": 0.9, "auc_int8": 0.6})) == 2


def test_auc_change_reports_both_aucs_and_their_difference():
    labels = np.array([0, 0, 1, 1])
    change = auc_change(labels, np.array([0.1, 0.4, 0.35, 0.8]), np.array([0.1, 0.2, 0.35, 0.8]))
    assert change["auc_fp32"] == pytest.approx(0.75) and change["auc_int8"] == pytest.approx(1.0)
    assert change["auc_delta"] == pytest.approx(0.25) and change["max_abs_logit_diff"] == pytest.approx(0.2)
    assert change["patches"] == 4
    one_class = auc_change(np.ones(3), np.zeros(3), np.zeros(3))
    assert one_class["auc_fp32"] is None and one_class["auc_delta"] is None


def test_tensorrt_skip_message_names_what_is_missing(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # `import tensorrt` raises ImportError
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    message = trt.unavailable()
    assert message is not None and "\n" not in message
    assert message.startswith("TensorRT plan skipped") and "tensorrt" in message and "GPU" in message
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert "GPU" not in trt.unavailable() and "`tensorrt`" in trt.unavailable()
    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))
    assert trt.unavailable() is None
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert "`tensorrt`" not in trt.unavailable() and "GPU" in trt.unavailable()
