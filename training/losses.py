"""Training losses on logits, chosen by name in a member's config (`loss: bce | weighted_bce | focal`).

All take logits and float {0, 1} targets of the same shape and return the mean loss.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torchvision.ops import sigmoid_focal_loss

from training.config import MemberConfig

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def bce(**_: object) -> LossFn:
    """Plain binary cross-entropy with logits."""
    return lambda logits, targets: F.binary_cross_entropy_with_logits(logits, targets)


def weighted_bce(pos_weight: float, **_: object) -> LossFn:
    """BCE with the positive term weighted by pos_weight (e.g. n_negative / n_positive)."""
    weight = torch.tensor(float(pos_weight))

    def loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets, pos_weight=weight.to(logits.device))

    return loss


def focal(alpha: float = 0.25, gamma: float = 2.0, **_: object) -> LossFn:
    """Focal loss (Lin et al. 2017): -alpha_t (1 - p_t)^gamma log(p_t), alpha=-1 for no class weighting.

    torchvision's implementation; its log term is BCE-with-logits, so it is stable for large logits.
    """
    return lambda logits, targets: sigmoid_focal_loss(
        logits, targets, alpha=alpha, gamma=gamma, reduction="mean"
    )


LOSSES: dict[str, Callable[..., LossFn]] = {"bce": bce, "weighted_bce": weighted_bce, "focal": focal}


def positive_weight(labels: np.ndarray) -> float:
    """n_negative / n_positive of a label array: weighted BCE's default, balancing the two classes."""
    labels = np.asarray(labels)
    positives = int(np.count_nonzero(labels))
    if positives == 0 or positives == len(labels):
        raise ValueError(
            "pos_weight cannot be derived from training labels of one class; set it in the config"
        )
    return (len(labels) - positives) / positives


def build_loss(member: MemberConfig, train_labels: np.ndarray | None = None) -> LossFn:
    """The member's configured loss; weighted BCE without pos_weight takes it from the training labels."""
    pos_weight = member.pos_weight
    if member.loss == "weighted_bce" and pos_weight is None:
        if train_labels is None:
            raise ValueError("weighted_bce needs pos_weight in the config or a training set with .labels")
        pos_weight = positive_weight(train_labels)
    return LOSSES[member.loss](pos_weight=pos_weight, alpha=member.focal_alpha, gamma=member.focal_gamma)
