"""The served graph: the member's logit, feature distance and activation map from one pass
(training/served.py)."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pcam_core.contract import ACTIVATION_MAP_NAME, FEATURE_DISTANCE_NAME, MEMBER_OUTPUTS, OUTPUT_NAME
from training.data.synthetic import generate_split
from training.export import ParityError, check_parity, export_onnx
from training.graphs import onnx_outputs, session
from training.models import build_model
from training.served import ServedModel, fit_feature_density


@pytest.fixture(scope="module", params=["test_resnet", "test_vit", "pcam_pooled_linear"])
def served(request: pytest.FixtureRequest) -> tuple[ServedModel, np.ndarray]:
    """A member with its density fitted on synthetic training patches, and held-out patches."""
    torch.manual_seed(0)
    model = build_model(request.param).eval()
    patches, _ = generate_split(192, seed=7)
    density = fit_feature_density(model, patches.images[:128], patches.labels[:128])
    return ServedModel(model, density).eval(), patches.images[128:]


def test_the_logit_is_the_members_own(served) -> None:
    model, held_out = served
    images = torch.from_numpy(held_out[:8])
    with torch.no_grad():
        logit, distance, activation = model(images)
        # A ViT's blocks now take the attention path that yields the weights: the same function.
        np.testing.assert_allclose(logit.numpy(), model.model(images).numpy(), rtol=1e-5, atol=1e-5)
    assert distance.shape == (8, 1) and bool((distance >= 0).all())
    assert activation.shape == (8, 96, 96) and bool(activation.abs().amax() > 0)


def test_inputs_unlike_the_training_patches_lie_far(served) -> None:
    model, held_out = served
    noise = np.random.default_rng(0).integers(0, 256, (32, 96, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        near = model(torch.from_numpy(held_out))[1].numpy()
        far = model(torch.from_numpy(noise))[1].numpy()
    assert np.median(far) > 3 * np.median(near)


def test_the_exported_graph_serves_every_output_with_parity(served, tmp_path: Path) -> None:
    model, held_out = served
    path = export_onnx(model, tmp_path / "model.onnx")
    assert tuple(o.name for o in onnx.load(str(path)).graph.output) == MEMBER_OUTPUTS
    assert check_parity(model, path, held_out[:16]) <= 1e-4
    outputs = onnx_outputs(session(path), [held_out[:5], held_out[5:9]], MEMBER_OUTPUTS)
    assert outputs[OUTPUT_NAME].shape == outputs[FEATURE_DISTANCE_NAME].shape == (9,)
    assert outputs[ACTIVATION_MAP_NAME].shape == (9, 96, 96)
    other = ServedModel(model.model, fit_feature_density(model.model, held_out[:40], np.arange(40) % 2))
    with pytest.raises(ParityError, match=FEATURE_DISTANCE_NAME):  # same logits, another density
        check_parity(other.eval(), path, held_out[:16])


def test_the_density_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_feature_density(build_model("test_resnet"), np.zeros((4, 96, 96, 3), np.uint8), np.zeros(4))
