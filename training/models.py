"""Architectures by name (timm) and the wrapper that makes any of them honour the model I/O contract."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import timm
import torch
from torch import nn

import training.architectures  # noqa: F401  (registers the project's own architectures with timm)
from pcam_core.contract import PATCH_SIZE
from training.config import MemberConfig
from training.weights import load_pretrained

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
SIZED_AT_CONSTRUCTION = ("vision_transformer", "deit", "eva", "beit", "cait", "xcit", "swin_transformer")
"""timm modules whose models fix their input size (position embeddings) when built: built for 96."""


def check_architecture(architecture: str) -> None:
    """Raise ValueError with suggestions if timm has no model of that name."""
    if not timm.is_model(architecture):
        close = timm.list_models(f"*{architecture.split('_')[0]}*")[:8]
        raise ValueError(f"unknown timm architecture {architecture!r}; similar: {close}")


def _sized_at_construction(architecture: str) -> bool:
    module = timm.models.model_entrypoint(architecture).__module__.rsplit(".", 1)[-1]
    return module.startswith(SIZED_AT_CONSTRUCTION)


def create_backbone(architecture: str, **kwargs: Any) -> nn.Module:
    """A randomly initialised timm model with one output (the tumor logit), sized for 96x96 input."""
    check_architecture(architecture)
    options: dict[str, Any] = {"num_classes": 1, "pretrained": False}
    if _sized_at_construction(architecture):
        options["img_size"] = PATCH_SIZE
    options.update(kwargs)
    return timm.create_model(architecture, **options)


class ContractModel(nn.Module):
    """uint8 (N, 96, 96, 3) RGB -> logit (N, 1); scaling, normalization and NHWC->NCHW live in the graph.

    So the exported ONNX takes the wire format itself and no client can get the normalization wrong.
    """

    def __init__(self, backbone: nn.Module, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.backbone = backbone
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalize(self, image: torch.Tensor) -> torch.Tensor:
        """uint8 NHWC RGB as the backbone takes it: float NCHW, scaled and normalized."""
        x = image.permute(0, 3, 1, 2).float() / 255.0
        return (x - self.mean) / self.std

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.backbone(self.normalize(image))


def build_model(architecture: str, **kwargs: Any) -> ContractModel:
    """The contract-wrapped model for an architecture, normalized with the mean/std timm lists for it."""
    backbone = create_backbone(architecture, **kwargs)
    cfg = getattr(backbone, "pretrained_cfg", None) or {}
    return ContractModel(backbone, cfg.get("mean", IMAGENET_MEAN), cfg.get("std", IMAGENET_STD))


def build_member_model(member: MemberConfig) -> ContractModel:
    """A member's model: its architecture and model_kwargs, with its verified ``pretrained`` weights if set."""
    model = build_model(member.architecture, **member.model_kwargs)
    if member.pretrained is not None:
        load_pretrained(model.backbone, member.pretrained, member.architecture)
    return model
