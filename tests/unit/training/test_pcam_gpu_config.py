"""The production profile validates and names real timm architectures (never instantiated here)."""

from __future__ import annotations

from pathlib import Path

import timm
import torch

from training.config import bundled_configs, load_config, save_config
from training.models import create_backbone


def test_pcam_gpu_profile_validates_and_its_architectures_exist_in_timm():
    config = load_config("pcam-gpu")
    assert "pcam-gpu" in bundled_configs()
    assert config.data.source == "pcam" and config.data.pcam_dir == Path("data/pcam")
    architectures = {m.architecture for m in config.members}
    assert architectures == {"seresnet50", "efficientnet_b3", "vit_base_patch16_224"}
    known = set(timm.list_models())
    for member in config.members:
        assert member.architecture in known, member.architecture
        assert member.amp and member.patience is not None
        assert member.pretrained is None  # the profile itself needs no weights files
    vit = next(m for m in config.members if m.architecture.startswith("vit"))
    assert vit.model_kwargs == {"img_size": 96}


def test_pcam_gpu_profile_round_trips(tmp_path: Path):
    config = load_config("pcam-gpu")
    assert load_config(save_config(config, tmp_path / "config.yaml")) == config


def test_small_vit_sibling_runs_at_96_pixels():
    """ViT-B/16's small sibling with the profile's model_kwargs: 96x96 in, one logit out."""
    vit = create_backbone("vit_tiny_patch16_224", img_size=96).eval()
    assert tuple(vit.patch_embed.img_size) == (96, 96) and vit.pos_embed.shape[1] == 1 + 6 * 6
    with torch.no_grad():
        assert vit(torch.zeros(2, 3, 96, 96)).shape == (2, 1)
