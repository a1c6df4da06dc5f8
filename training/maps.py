"""Activation maps from a member's own forward pass: where its logit comes from, with no second pass.

Both kinds are in logit units, zero-sum over the patch and positive where the evidence for tumor is:
- CNNs: the class activation map (Zhou et al. 2016). Cell k of the last feature map scores
  (head(f_k) - head(mean of the cells)) / K: its own share of the logit minus an even share. For the
  usual head (pooling, then a linear classifier) that is exactly the CAM w . f_k centred and divided
  by K. A MobileNetV3-style head (a 1x1 conv and an activation after the pooling) is linearised at
  the patch's pooled features instead: g . (f_k - mean) / K with g the logit's gradient there
  (Grad-CAM, Selvaraju et al. 2017), written into the graph (no backward pass) and costing one head
  evaluation, where evaluating that head per cell cost K.
- ViTs: attention rollout (Abnar & Zuidema 2020). The class token's attention flow over the patch
  tokens, heads averaged and the residual path added as 0.5 A + 0.5 I per block; the map gives each
  token (rollout share - even share) x logit.
Each cell's value fills the pixels it covers (nearest-neighbour), so the map is 96x96 for any grid.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from timm.models.mobilenetv3 import MobileNetV3
from torch import Tensor, nn

from pcam_core.contract import ACTIVATION_MAP_SHAPE
from pcam_core.release import ActivationMapKind

CAM: ActivationMapKind = "cam"
ATTENTION_ROLLOUT: ActivationMapKind = "attention_rollout"
SLOPE_STEP = 1e-3
"""Half-width of the central difference that takes the head activation's slope (exact for
hardswish's quadratic part; a kink within the step blurs one channel's slope)."""


def to_patch(grid: Tensor) -> Tensor:
    """(N, h, w) cell values -> (N, 96, 96): each pixel carries the value of the cell it lies in."""
    return F.interpolate(grid[:, None], size=ACTIVATION_MAP_SHAPE, mode="nearest")[:, 0]


def head_gradient(backbone: MobileNetV3, pooled: Tensor) -> Tensor:
    """(N, C) gradient of the logit with respect to (N, C, 1, 1) pooled features, through a
    MobileNetV3-style head: the classifier's weights carried back through the activation's slope and
    the 1x1 conv."""
    hidden = backbone.conv_head(pooled)

    def activation(values: Tensor) -> Tensor:  # elementwise per channel: eval-mode norm, then act
        return backbone.act2(backbone.norm_head(values))

    slope = (activation(hidden + SLOPE_STEP) - activation(hidden - SLOPE_STEP)) / (2 * SLOPE_STEP)
    carried = slope.flatten(1) * backbone.classifier.weight[0]
    return carried @ backbone.conv_head.weight.flatten(1)


def cell_contributions(backbone: nn.Module, feature_map: Tensor) -> Tensor:
    """(N, h, w) class activation map of a (N, C, h, w) last feature map under the backbone's head."""
    # -1 for the batch everywhere: the exported graph keeps a dynamic batch axis.
    _, c, h, w = feature_map.shape
    cells = h * w
    if isinstance(backbone, MobileNetV3) and backbone.global_pool.pool_type == "avg":
        # The head's own pooling and conv on the same tensor: onnxruntime computes them once for both.
        mean = backbone.global_pool(feature_map)
        gradient = head_gradient(backbone, mean)[:, :, None, None]
        return (gradient * (feature_map - mean)).sum(dim=1) / cells
    per_cell = backbone.forward_head(feature_map.permute(0, 2, 3, 1).reshape(-1, c, 1, 1))
    pooled = backbone.forward_head(feature_map.mean(dim=(2, 3), keepdim=True))
    return (per_cell.reshape(-1, cells) - pooled.reshape(-1, 1)).reshape(-1, h, w) / cells


def attention_rollout(attentions: Sequence[Tensor], prefix_tokens: int, class_token: bool = True) -> Tensor:
    """(N, T - prefix) share of the attention flow reaching each patch token, from every block's
    (N, heads, T, T) attention in order: the class token's flow, or without one (average pooling)
    the patch tokens' mean flow."""
    rollout = None
    for attention in attentions:
        mixed = 0.5 * attention.mean(dim=1)
        mixed = mixed + 0.5 * torch.eye(mixed.shape[-1], dtype=mixed.dtype, device=mixed.device)
        rollout = mixed if rollout is None else mixed @ rollout
    assert rollout is not None, "a ViT without blocks"
    flow = rollout[:, 0] if class_token else rollout[:, prefix_tokens:].mean(dim=1)
    flow = flow[:, prefix_tokens:]
    return flow / flow.sum(dim=-1, keepdim=True)


class AttentionRecorder:
    """Keeps every block's attention weights of a timm VisionTransformer's last forward pass.

    Switches each block to the unfused attention path (the fused kernel never materialises the
    weights) and hooks its attention dropout, whose input and output are the softmaxed weights.
    """

    def __init__(self, backbone: nn.Module) -> None:
        self.attentions: list[Tensor] = []
        self.prefix_tokens = int(getattr(backbone, "num_prefix_tokens", 1))
        # The class token's row only when the head reads the class token (global_pool "token").
        self.class_token = getattr(backbone, "global_pool", "token") == "token"
        self.grid = tuple(backbone.patch_embed.grid_size)
        for block in backbone.blocks:
            block.attn.fused_attn = False
            block.attn.attn_drop.register_forward_hook(self._keep)

    def _keep(self, module: nn.Module, inputs: tuple[Tensor, ...], output: Tensor) -> None:
        self.attentions.append(output)

    def take(self) -> list[Tensor]:
        """The attentions recorded since the last take, in block order."""
        attentions, self.attentions = self.attentions, []
        return attentions


def is_vision_transformer(backbone: nn.Module) -> bool:
    """A timm ViT whose blocks' attention can be recorded (class token first, patch grid known)."""
    blocks = getattr(backbone, "blocks", None)
    return (
        blocks is not None
        and hasattr(backbone, "patch_embed")
        and all(hasattr(getattr(b, "attn", None), "attn_drop") for b in blocks)
    )


def map_kind(backbone: nn.Module) -> ActivationMapKind:
    """The kind of activation map a backbone's served graph carries."""
    return ATTENTION_ROLLOUT if is_vision_transformer(backbone) else CAM


def activation_map(
    backbone: nn.Module, features: Tensor, logit: Tensor, recorder: AttentionRecorder | None
) -> Tensor:
    """(N, 96, 96) map of one forward pass: the backbone's forward_features output, its (N, 1) logit
    and, for a ViT, the recorder that watched the pass."""
    if recorder is not None:
        share = attention_rollout(recorder.take(), recorder.prefix_tokens, recorder.class_token)
        centred = (share - 1.0 / share.shape[1]) * logit
        return to_patch(centred.reshape(-1, *recorder.grid))
    if features.ndim != 4:
        raise ValueError(
            f"{type(backbone).__name__}: no activation map for features of shape {tuple(features.shape)}"
        )
    return to_patch(cell_contributions(backbone, features))
