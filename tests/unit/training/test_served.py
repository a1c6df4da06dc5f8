"""The served graph: the member's logit and its feature distance from one pass (training/served.py)."""

from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from pcam_core.contract import FEATURE_DISTANCE_NAME, OUTPUT_NAME
from training.data.synthetic import generate_split
from training.export import ParityError, check_parity, export_onnx, onnx_outputs, session
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
        logit, distance = model(images)
        np.testing.assert_array_equal(logit.numpy(), model.model(images).numpy())
    assert distance.shape == (8, 1) and bool((distance >= 0).all())


def test_inputs_unlike_the_training_patches_lie_far(served) -> None:
    model, held_out = served
    noise = np.random.default_rng(0).integers(0, 256, (32, 96, 96, 3), dtype=np.uint8)
    with torch.no_grad():
        near = model(torch.from_numpy(held_out))[1].numpy()
        far = model(torch.from_numpy(noise))[1].numpy()
    assert np.median(far) > 3 * np.median(near)


def test_the_exported_graph_serves_both_outputs_with_parity(served, tmp_path: Path) -> None:
    model, held_out = served
    path = export_onnx(model, tmp_path / "model.onnx")
    assert [o.name for o in onnx.load(str(path)).graph.output] == [OUTPUT_NAME, FEATURE_DISTANCE_NAME]
    assert check_parity(model, path, held_out[:16]) <= 1e-4
    outputs = onnx_outputs(session(path), [held_out[:5], held_out[5:9]], (OUTPUT_NAME, FEATURE_DISTANCE_NAME))
    assert outputs[OUTPUT_NAME].shape == outputs[FEATURE_DISTANCE_NAME].shape == (9,)
    other = ServedModel(model.model, fit_feature_density(model.model, held_out[:40], np.arange(40) % 2))
    with pytest.raises(ParityError, match=FEATURE_DISTANCE_NAME):  # same logits, another density
        check_parity(other.eval(), path, held_out[:16])


def test_the_density_needs_both_classes() -> None:
    with pytest.raises(ValueError, match="both classes"):
        fit_feature_density(build_model("test_resnet"), np.zeros((4, 96, 96, 3), np.uint8), np.zeros(4))
