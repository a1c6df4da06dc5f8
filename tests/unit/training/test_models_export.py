"""ContractModel honours the I/O contract; ONNX, TorchScript and INT8 exports keep it; TensorRT skips cleanly."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pcam_core.contract import INPUT_NAME, OUTPUT_NAME
from training import trt
from training.export import (
    ParityError,
    check_parity,
    check_torchscript_parity,
    export_onnx,
    export_torchscript,
    load_torchscript,
    onnx_logits,
    session,
)
from training.models import ContractModel, build_model, create_backbone
from training.quantize import auc_change, quantize_int8


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


def test_int8_graph_keeps_the_contract_and_tracks_the_float_graph(exported: Path, tmp_path: Path):
    rng = np.random.default_rng(3)
    calibration = rng.integers(0, 256, (40, 96, 96, 3), dtype=np.uint8)
    int8 = quantize_int8(exported, tmp_path / "model.int8.onnx", calibration)
    graph = onnx.load(str(int8)).graph
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in graph.node}
    (inp,), (out,) = graph.input, graph.output
    assert (inp.name, inp.type.tensor_type.elem_type) == (INPUT_NAME, onnx.TensorProto.UINT8)
    assert (out.name, out.type.tensor_type.elem_type) == (OUTPUT_NAME, onnx.TensorProto.FLOAT)
    assert int8.stat().st_size < exported.stat().st_size
    images = rng.integers(0, 256, (6, 96, 96, 3), dtype=np.uint8)
    fp32_logits = onnx_logits(session(exported), [images])
    int8_logits = onnx_logits(session(int8), [images[:1], images[1:]])  # dynamic batch kept
    assert int8_logits.shape == (6,) and np.isfinite(int8_logits).all()
    assert np.abs(int8_logits - fp32_logits).max() < 0.05 * max(1.0, np.abs(fp32_logits).max())


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
