"""Losses by name: focal loss against its formula, its BCE limit, weighted BCE; the config's checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from training.config import MemberConfig
from training.losses import LOSSES, build_loss, focal, positive_weight, weighted_bce


def _member(**changes) -> MemberConfig:
    return MemberConfig(name="m", architecture="test_resnet", epochs=1, lr=1e-3, **changes)


def _batch(seed: int = 0, n: int = 512) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, generator=generator, dtype=torch.float64) * 4
    targets = torch.randint(0, 2, (n,), generator=generator).to(torch.float64)
    return logits, targets


def _reference_focal(logits: torch.Tensor, targets: torch.Tensor, alpha: float, gamma: float) -> torch.Tensor:
    """-alpha_t (1 - p_t)^gamma log(p_t), written out directly."""
    p = torch.sigmoid(logits)
    p_t = torch.where(targets == 1, p, 1 - p)
    alpha_t = torch.where(targets == 1, torch.full_like(p, alpha), torch.full_like(p, 1 - alpha))
    if alpha < 0:
        alpha_t = torch.ones_like(p)
    return (-alpha_t * (1 - p_t) ** gamma * torch.log(p_t)).mean()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.25, 2.0), (0.5, 1.0), (0.9, 3.5), (-1, 2.0)])
def test_focal_matches_the_reference_formula(alpha: float, gamma: float):
    logits, targets = _batch()
    got = focal(alpha=alpha, gamma=gamma)(logits, targets)
    torch.testing.assert_close(got, _reference_focal(logits, targets, alpha, gamma), rtol=1e-10, atol=1e-12)


def test_focal_with_gamma_0_and_no_alpha_is_bce():
    logits, targets = _batch(1)
    torch.testing.assert_close(
        focal(alpha=-1, gamma=0)(logits, targets), F.binary_cross_entropy_with_logits(logits, targets)
    )


def test_focal_is_stable_for_large_logits():
    logits = torch.tensor([-200.0, -50.0, 50.0, 200.0])
    targets = torch.tensor([1.0, 0.0, 1.0, 0.0])  # two confidently wrong, two confidently right
    loss = focal()(logits, targets)
    assert torch.isfinite(loss)
    assert loss > 10  # the wrong ones dominate, not NaN or inf
    logits.requires_grad_(True)
    focal()(logits, targets).backward()
    assert torch.isfinite(logits.grad).all()


def test_weighted_bce_with_weight_one_is_bce():
    logits, targets = _batch(2)
    torch.testing.assert_close(
        weighted_bce(pos_weight=1.0)(logits.float(), targets.float()),
        F.binary_cross_entropy_with_logits(logits.float(), targets.float()),
    )


def test_weighted_bce_weights_the_positive_term():
    logits, targets = _batch(3)
    p = torch.sigmoid(logits)
    expected = (-(3.0 * targets * torch.log(p) + (1 - targets) * torch.log(1 - p))).mean()
    torch.testing.assert_close(weighted_bce(pos_weight=3.0)(logits, targets), expected)


def test_losses_are_chosen_by_name():
    logits, targets = _batch(4)
    logits, targets = logits.float(), targets.float()
    assert set(LOSSES) == {"bce", "weighted_bce", "focal"}
    bce = F.binary_cross_entropy_with_logits(logits, targets)
    torch.testing.assert_close(build_loss(_member())(logits, targets), bce)
    torch.testing.assert_close(
        build_loss(_member(loss="focal"))(logits, targets), _reference_focal(logits, targets, 0.25, 2.0)
    )
    torch.testing.assert_close(
        build_loss(_member(loss="focal", focal_alpha=-1, focal_gamma=0))(logits, targets), bce
    )
    torch.testing.assert_close(
        build_loss(_member(loss="weighted_bce", pos_weight=2.0))(logits, targets),
        weighted_bce(pos_weight=2.0)(logits, targets),
    )


def test_weighted_bce_defaults_to_the_class_ratio_of_the_training_labels():
    labels = np.array([1, 0, 0, 0, 1, 0], dtype=np.float32)
    assert positive_weight(labels) == 2.0
    logits, targets = _batch(5)
    torch.testing.assert_close(
        build_loss(_member(loss="weighted_bce"), labels)(logits, targets),
        weighted_bce(pos_weight=2.0)(logits, targets),
    )
    with pytest.raises(ValueError, match="one class"):
        positive_weight(np.ones(4))
    with pytest.raises(ValueError, match="pos_weight"):
        build_loss(_member(loss="weighted_bce"))


@pytest.mark.parametrize(
    "changes",
    [
        {"loss": "dice"},
        {"loss": "bce", "pos_weight": 2.0},  # pos_weight without weighted BCE
        {"loss": "weighted_bce", "pos_weight": 0},
        {"loss": "focal", "focal_alpha": 1.5},
        {"loss": "focal", "focal_gamma": -1},
        {"warmup_steps": 10, "warmup_epochs": 1},
        {"patience": 0},
    ],
)
def test_bad_training_settings_are_refused(changes: dict):
    with pytest.raises(ValidationError):
        _member(**changes)


def test_new_settings_default_to_the_previous_behaviour():
    member = _member()
    assert (member.loss, member.pos_weight, member.patience) == ("bce", None, None)
    assert (member.focal_alpha, member.focal_gamma, member.amp) == (0.25, 2.0, True)
    assert member.warmup_steps is None and member.warmup_epochs is None
