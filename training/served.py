"""The graph a member serves: its logit and, from the same forward pass, its feature distance and
activation map (training/maps.py).

The feature distance is the squared Mahalanobis distance of the penultimate (pre-logit) features from
the nearer of the two class means under one shared covariance (Lee et al. 2018), divided by the
feature dimension: near 1 for training-like patches, far above for inputs the member never saw. The
means and the precision are fitted on training patches at export and become constants of the graph,
so serving the score costs one small matrix product per patch, not a second pass.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from sklearn.covariance import LedoitWolf
from torch import nn

from training import maps
from training.models import ContractModel


@dataclass(frozen=True)
class FeatureDensity:
    """Class means (2, D) and the shared precision (D, D) of a member's penultimate features."""

    means: np.ndarray
    precision: np.ndarray
    patches: int
    shrinkage: float


def penultimate(model: ContractModel, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pre-logit features (N, D), logits (N, 1)) of uint8 NHWC images in one forward pass."""
    features, logit, _ = forward_parts(model, images)
    return features, logit


def forward_parts(
    model: ContractModel, images: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(pre-logit features (N, D), logits (N, 1), forward_features' output) of uint8 NHWC images."""
    backbone = model.backbone
    last = backbone.forward_features(model.normalize(images))
    features = backbone.forward_head(last, pre_logits=True)
    return features, backbone.get_classifier()(features), last


def fit_feature_density(
    model: ContractModel, images: np.ndarray, labels: np.ndarray, batch: int = 128
) -> FeatureDensity:
    """Fit the density to uint8 (N, 96, 96, 3) training patches and their labels (both classes needed)."""
    labels = np.asarray(labels).astype(int).reshape(-1)
    if set(np.unique(labels)) != {0, 1}:
        raise ValueError("the feature density needs training patches of both classes")
    model = model.eval()
    with torch.no_grad():
        parts = [
            penultimate(model, torch.from_numpy(images[i : i + batch]))[0]
            for i in range(0, len(images), batch)
        ]
    features = torch.cat(parts).double().numpy()
    means = np.stack([features[labels == c].mean(axis=0) for c in (0, 1)])
    # Ledoit-Wolf shrinkage: thousands of patches cannot pin down a 2048 x 2048 covariance alone.
    estimator = LedoitWolf(assume_centered=True).fit(features - means[labels])
    return FeatureDensity(means, estimator.precision_, len(features), float(estimator.shrinkage_))


class ServedModel(nn.Module):
    """uint8 (N, 96, 96, 3) -> (logit (N, 1), feature_distance (N, 1), activation_map (N, 96, 96)):
    the member's served graph."""

    def __init__(self, model: ContractModel, density: FeatureDensity) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("means", torch.tensor(density.means, dtype=torch.float32))
        self.register_buffer("precision", torch.tensor(density.precision, dtype=torch.float32))
        self.map_kind = maps.map_kind(model.backbone)
        # Switches a ViT's blocks to the attention path that yields the weights: same function.
        self.recorder = (
            maps.AttentionRecorder(model.backbone) if self.map_kind == maps.ATTENTION_ROLLOUT else None
        )

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        if self.recorder is not None:
            self.recorder.take()  # drop what forwards outside this graph recorded
        features, logit, last = forward_parts(self.model, image)
        delta = features[:, None, :] - self.means[None]  # (N, 2, D)
        squared = ((delta @ self.precision) * delta).sum(dim=-1)  # (N, 2)
        activation = maps.activation_map(self.model.backbone, last, logit, self.recorder)
        return logit, squared.min(dim=1).values[:, None] / features.shape[1], activation
