"""The project's own architectures, registered in timm's registry so that configs name them like any other.

`pcam_pooled_linear` is not a tumor detector: it maps a patch's mean colour to a logit, so a release built
from it costs next to nothing per patch and a benchmark driven through it measures the platform (the
services, the protocol, Triton's batching), not the model (`benchmarks.ceiling`).
"""

from __future__ import annotations

from typing import Any

from timm.models import register_model
from torch import Tensor, nn


class PooledLinear(nn.Module):
    """Global average pooling then one linear layer: next to no compute at any batch size."""

    def __init__(self, in_chans: int = 3, num_classes: int = 1) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.head = nn.Linear(in_chans, num_classes)

    def forward_features(self, x: Tensor) -> Tensor:
        return x

    def forward_head(self, x: Tensor, pre_logits: bool = False) -> Tensor:
        pooled = x.mean(dim=(2, 3))
        return pooled if pre_logits else self.head(pooled)

    def get_classifier(self) -> nn.Module:
        return self.head

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def pcam_pooled_linear(pretrained: bool = False, **kwargs: Any) -> PooledLinear:
    """A trivial member for measuring the platform's ceiling (no pretrained weights exist)."""
    if pretrained:
        raise ValueError("pcam_pooled_linear has no pretrained weights")
    options = {key: kwargs[key] for key in ("in_chans", "num_classes") if key in kwargs}
    return PooledLinear(**options)
