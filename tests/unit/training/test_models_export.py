"""ContractModel honours the I/O contract; the ONNX export matches PyTorch and keeps the contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from services.common.contract import INPUT_NAME, OUTPUT_NAME
from training.export import ParityError, check_parity, export_onnx, onnx_logits, session
from training.models import ContractModel, build_model, create_backbone


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
