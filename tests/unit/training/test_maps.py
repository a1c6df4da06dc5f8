"""Activation maps from the member's own forward pass (training/maps.py): CAM and attention rollout."""

import numpy as np
import pytest
import torch

from training import maps
from training.models import build_model


def test_a_cnn_map_is_the_class_activation_map_centred_over_the_cells() -> None:
    torch.manual_seed(0)
    model = build_model("test_resnet").eval()
    backbone = model.backbone
    images = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (3, 96, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        features = backbone.forward_features(model.normalize(images))
        got = maps.activation_map(backbone, features, backbone(model.normalize(images)), None).numpy()
    # Zhou et al.: the classifier's weights over every cell of the last feature map.
    weights = backbone.get_classifier().weight.detach().numpy()[0]
    cam = np.einsum("c,nchw->nhw", weights, features.numpy())
    cells = cam.shape[1] * cam.shape[2]
    expected = (cam - cam.mean(axis=(1, 2), keepdims=True)) / cells
    block = 96 // cam.shape[1]
    np.testing.assert_allclose(got[:, ::block, ::block], expected, rtol=1e-4, atol=1e-6)
    # Every pixel carries its cell's value: the map is constant on each cell's block.
    np.testing.assert_array_equal(got, np.repeat(np.repeat(got[:, ::block, ::block], block, 1), block, 2))
    np.testing.assert_allclose(got.sum(axis=(1, 2)), 0, atol=1e-5)


def test_the_map_points_where_the_evidence_is_not_at_its_mirror_image() -> None:
    model = build_model("pcam_pooled_linear").eval()  # per-pixel features: the map is per pixel
    with torch.no_grad():
        model.backbone.head.weight.copy_(torch.tensor([[1.0, -1.0, -1.0]]))  # red is evidence
    image = np.full((1, 96, 96, 3), 128, np.uint8)
    image[0, 4:20, 60:90] = (230, 40, 40)  # near the top, to the right
    tensor = torch.from_numpy(image)
    backbone = model.backbone
    with torch.no_grad():
        features = backbone.forward_features(model.normalize(tensor))
        heat = maps.activation_map(backbone, features, model(tensor), None).numpy()[0]
    assert (heat[4:20, 60:90] > 0).all() and (heat[30:, :] < 0).all() and (heat[:, :50] < 0).all()


def test_attention_rollout_multiplies_the_blocks_with_the_residual_path() -> None:
    first = torch.tensor([[[0.5, 0.5, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])[None]  # (N, heads, T, T)
    second = torch.tensor([[[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]]])[None]
    flow = maps.attention_rollout([first, second], prefix_tokens=1).numpy()
    mixed = [0.5 * a[0, 0].numpy() + 0.5 * np.eye(3) for a in (first, second)]
    rollout = mixed[1] @ mixed[0]
    np.testing.assert_allclose(flow[0], rollout[0, 1:] / rollout[0, 1:].sum())
    uniform = torch.full((2, 4, 5, 5), 0.2)
    np.testing.assert_allclose(maps.attention_rollout([uniform] * 3, 1).numpy(), 0.25, rtol=1e-6)


def test_a_vit_map_follows_its_recorded_attention_and_leaves_the_logit_alone() -> None:
    torch.manual_seed(0)
    model = build_model("test_vit").eval()
    images = torch.from_numpy(np.random.default_rng(1).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        fused = model(images)
        recorder = maps.AttentionRecorder(model.backbone)
        features = model.backbone.forward_features(model.normalize(images))
        logit = model.backbone.forward_head(features)
        attentions = recorder.take()
        heat = maps.activation_map(model.backbone, features, logit, _replay(recorder, attentions))
    assert len(attentions) == len(model.backbone.blocks)
    assert attentions[0].shape == (2, model.backbone.blocks[0].attn.num_heads, 37, 37)
    torch.testing.assert_close(logit, fused, rtol=1e-4, atol=1e-5)  # the unfused path computes the same
    share = maps.attention_rollout(attentions, recorder.prefix_tokens).numpy()
    expected = (share - 1 / 36) * logit.numpy()
    np.testing.assert_allclose(heat.numpy()[:, ::16, ::16], expected.reshape(2, 6, 6), rtol=1e-4, atol=1e-6)
    assert maps.map_kind(model.backbone) == maps.ATTENTION_ROLLOUT
    assert maps.map_kind(build_model("test_resnet").backbone) == maps.CAM


def _replay(recorder: maps.AttentionRecorder, attentions: list[torch.Tensor]) -> maps.AttentionRecorder:
    recorder.attentions = list(attentions)
    return recorder


def test_features_without_a_grid_have_no_map() -> None:
    backbone = build_model("test_resnet").backbone
    with pytest.raises(ValueError, match="no activation map"):
        maps.activation_map(backbone, torch.zeros(2, 8), torch.zeros(2, 1), None)


@pytest.mark.parametrize("architecture", ["mobilenetv3_small_100", "mobilenetv4_conv_small"])
def test_a_mobilenet_head_is_linearised_with_the_logits_own_gradient(architecture: str) -> None:
    torch.manual_seed(0)
    model = build_model(architecture).eval()
    backbone = model.backbone
    images = torch.from_numpy(np.random.default_rng(2).integers(0, 256, (2, 96, 96, 3), dtype=np.uint8))
    with torch.no_grad():
        features = backbone.forward_features(model.normalize(images))
        got = maps.activation_map(backbone, features, backbone.forward_head(features), None).numpy()
    pooled = features.mean(dim=(2, 3), keepdim=True).requires_grad_(True)
    (gradient,) = torch.autograd.grad(backbone.forward_head(pooled).sum(), pooled)  # Grad-CAM's weights
    cam = (gradient * (features - features.mean(dim=(2, 3), keepdim=True))).sum(dim=1)
    expected = (cam / (cam.shape[1] * cam.shape[2])).detach().numpy()
    block = 96 // cam.shape[1]
    scale = np.abs(expected).max()
    np.testing.assert_allclose(got[:, ::block, ::block], expected, atol=1e-3 * scale)
