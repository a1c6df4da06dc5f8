"""The project's own architectures are found by name like timm's, and honour the model I/O contract."""

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from training.config import load_config
from training.export import check_parity, export_onnx
from training.graphs import onnx_logits, session
from training.models import build_model

ROOT = Path(__file__).resolve().parents[3]


def test_the_ceiling_member_is_a_registered_architecture_of_next_to_no_compute() -> None:
    assert timm.is_model("pcam_pooled_linear")
    model = build_model("pcam_pooled_linear").eval()
    assert sum(p.numel() for p in model.backbone.parameters()) == 4  # 3 weights and a bias
    with pytest.raises(ValueError, match="no pretrained weights"):
        timm.create_model("pcam_pooled_linear", pretrained=True)


def test_the_ceiling_member_reads_the_mean_colour_and_exports(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = build_model("pcam_pooled_linear").eval()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(5, 96, 96, 3), dtype=np.uint8)
    shuffled = images.reshape(5, -1, 3)[:, rng.permutation(96 * 96)].reshape(images.shape)
    with torch.no_grad():
        logits = model(torch.from_numpy(images)).numpy()
        same_colours = model(torch.from_numpy(np.ascontiguousarray(shuffled))).numpy()
    np.testing.assert_allclose(logits, same_colours, atol=1e-5)  # only the mean colour matters
    path = export_onnx(model, tmp_path / "model.onnx")
    assert check_parity(model, path, images) <= 1e-4
    assert onnx_logits(session(path), [images]).shape == (5,)


def test_the_ceiling_config_names_only_the_trivial_member() -> None:
    config = load_config(ROOT / "training" / "configs" / "ceiling.yaml")
    assert {member.architecture for member in config.members} == {"pcam_pooled_linear"}
    assert len(config.members) == 2  # the demo's shape: one Triton model and one call per member
