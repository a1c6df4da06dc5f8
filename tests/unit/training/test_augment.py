"""Augmentation (training.augment): the dihedral group, HED and color jitter, determinism, the config's
defaults, and reproducible training with jitter and with DataLoader workers."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.augment import (
    HED_FROM_RGB,
    RGB_FROM_HED,
    augment,
    color_jitter,
    dihedral,
    dihedral_inverse,
    dihedral_transform,
    hed_jitter,
)
from training.config import AugmentConfig, ColorJitterConfig, HedJitterConfig, MemberConfig
from training.data.pcam_h5 import PCamH5Dataset, split_files
from training.train import train_member


def _patch(n: int = 1, seed: int = 0) -> torch.Tensor:
    """Asymmetric random uint8 NHWC patches (no rotation or flip maps one onto itself)."""
    return torch.randint(0, 256, (n, 96, 96, 3), generator=torch.Generator().manual_seed(seed)).to(
        torch.uint8
    )


def _tissue(n: int = 16) -> torch.Tensor:
    """Pinkish-purple H&E-like colors rather than noise, away from 0 and 255."""
    g = torch.Generator().manual_seed(1)
    base = torch.tensor([180.0, 110.0, 170.0])
    noise = torch.randn((n, 96, 96, 3), generator=g) * 25
    return (base + noise).round().clamp(20, 240).to(torch.uint8)


def test_dihedral_group_has_eight_distinct_invertible_elements():
    patch = _patch()
    results = [dihedral_transform(patch, t) for t in range(8)]
    assert len({bytes(r.numpy()) for r in results}) == 8
    for t, r in enumerate(results):
        assert torch.equal(dihedral_inverse(r, t), patch)
    # Closure: composing any two elements gives one of the eight.
    keys = {bytes(r.numpy()): t for t, r in enumerate(results)}
    for a in range(8):
        for b in range(8):
            assert bytes(dihedral_transform(results[a], b).numpy()) in keys


def test_random_dihedral_applies_one_group_element_per_patch():
    patches = _patch(32, seed=2)
    out = dihedral(patches, torch.Generator().manual_seed(0))
    for p, o in zip(patches, out, strict=True):
        assert any(torch.equal(dihedral_transform(p[None], t)[0], o) for t in range(8))


def test_hed_matrix_is_skimages():
    assert torch.allclose(RGB_FROM_HED @ HED_FROM_RGB, torch.eye(3, dtype=torch.float64))
    # skimage.color.hed_from_rgb, first row, as published there.
    assert torch.allclose(HED_FROM_RGB[0], torch.tensor([1.87798274, -1.00767869, -0.55611582]).double())


def test_hed_jitter_zero_is_identity_within_one_level():
    images = torch.cat([_patch(4), _tissue(4)])
    out = hed_jitter(images, torch.Generator().manual_seed(0), scale=0.0, shift=0.0)
    assert out.dtype == torch.uint8 and out.shape == images.shape
    assert (out.int() - images.int()).abs().max() <= 1


@pytest.mark.parametrize(
    "jitter",
    [
        lambda x, g: hed_jitter(x, g, scale=0.05, shift=0.05),
        lambda x, g: color_jitter(x, g, brightness=0.2, contrast=0.2, saturation=0.2),
    ],
    ids=["hed", "color"],
)
def test_jitter_changes_colors_keeps_uint8_shape_and_is_seeded(jitter):
    images = _tissue()
    out = jitter(images, torch.Generator().manual_seed(5))
    assert out.dtype == torch.uint8 and out.shape == images.shape
    changed = (out.int() - images.int()).abs().float().mean(dim=(1, 2, 3))
    assert (changed > 0.5).all()  # every image's colors moved
    assert torch.equal(out, jitter(images, torch.Generator().manual_seed(5)))
    assert not torch.equal(out, jitter(images, torch.Generator().manual_seed(6)))
    # Per image: the same patch twice in a batch is jittered differently.
    twice = jitter(images[:1].repeat(2, 1, 1, 1), torch.Generator().manual_seed(5))
    assert not torch.equal(twice[0], twice[1])


def test_color_jitter_zero_is_identity():
    images = _patch(3)
    out = color_jitter(images, torch.Generator().manual_seed(0), 0.0, 0.0, 0.0)
    assert torch.equal(out, images)


def test_default_augment_is_the_old_dihedral_draw_for_draw():
    images = _patch(16, seed=3)
    g1, g2 = torch.Generator().manual_seed(9), torch.Generator().manual_seed(9)
    assert torch.equal(augment(images, g1, AugmentConfig()), dihedral(images, g2))
    assert torch.equal(g1.get_state(), g2.get_state())  # same number of draws


def test_full_augment_is_deterministic_and_checks_its_input():
    config = AugmentConfig(hed_jitter=HedJitterConfig(), color_jitter=ColorJitterConfig())
    images = _tissue(8)
    a = augment(images, torch.Generator().manual_seed(4), config)
    assert torch.equal(a, augment(images, torch.Generator().manual_seed(4), config))
    assert a.dtype == torch.uint8 and a.shape == images.shape
    with pytest.raises(ValueError, match="uint8 NHWC"):
        augment(images.float(), torch.Generator(), config)
    off = AugmentConfig(dihedral=False)
    assert torch.equal(augment(images, torch.Generator(), off), images)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_augment_on_cuda_draws_the_same_and_matches_the_cpu_within_one_level():
    """Training augments on the GPU: the same draws from the CPU generator, the same images up to the
    rounding of float32 log/exp on another device."""
    config = AugmentConfig(hed_jitter=HedJitterConfig(), color_jitter=ColorJitterConfig())
    images = _tissue(64)
    on_cpu, on_gpu = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    expected = augment(images, on_cpu, config)
    found = augment(images.cuda(), on_gpu, config)
    assert found.device.type == "cuda" and found.dtype == torch.uint8
    assert torch.equal(on_cpu.get_state(), on_gpu.get_state())
    assert (found.cpu().int() - expected.int()).abs().max() <= 1


def test_config_defaults_and_dump():
    member = MemberConfig(name="r", architecture="test_resnet", epochs=1, lr=1e-3)
    assert member.augment == AugmentConfig(dihedral=True, hed_jitter=None, color_jitter=None)
    assert member.num_workers == 0
    dumped = member.model_dump()
    assert "augment" not in dumped and "num_workers" not in dumped  # fingerprints of older runs hold
    jittered = MemberConfig.model_validate(
        {
            "name": "r",
            "architecture": "test_resnet",
            "epochs": 1,
            "lr": 1e-3,
            "augment": {"hed_jitter": {"scale": 0.05, "shift": 0.05}, "color_jitter": {"brightness": 0.1}},
            "num_workers": 2,
        }
    )
    assert jittered.augment.hed_jitter == HedJitterConfig()
    assert jittered.model_dump()["augment"]["color_jitter"]["contrast"] == 0.1
    assert jittered.model_dump()["num_workers"] == 2
    with pytest.raises(ValueError):
        AugmentConfig.model_validate({"blur": True})  # not offered


def _weights(directory: Path, checkpoint: Path, **changes) -> dict:
    train_set = PCamH5Dataset(*split_files(directory, "train"))
    valid_set = PCamH5Dataset(*split_files(directory, "valid"))
    member = MemberConfig(
        name="r", architecture="test_resnet", **{"epochs": 1, "batch_size": 32, "lr": 1e-3, **changes}
    )
    train_member(member, train_set, valid_set, valid_set.labels, 3, checkpoint)
    return torch.load(checkpoint, weights_only=True)["state_dict"]


def test_workers_and_jitter_train_reproducibly(tiny_pcam: Path, tmp_path: Path):
    # With workers the sampler's draws come earlier (prefetching) than without, so the weights differ
    # from num_workers=0, but one seed and one worker count give the same weights every time.
    base = _weights(tiny_pcam, tmp_path / "a" / "m.pt")
    w1 = _weights(tiny_pcam, tmp_path / "b" / "m.pt", num_workers=2)
    w2 = _weights(tiny_pcam, tmp_path / "c" / "m.pt", num_workers=2)
    assert all(torch.equal(w1[k], w2[k]) for k in w1)
    jitter = {"augment": AugmentConfig(hed_jitter=HedJitterConfig(), color_jitter=ColorJitterConfig())}
    j1 = _weights(tiny_pcam, tmp_path / "d" / "m.pt", **jitter)
    j2 = _weights(tiny_pcam, tmp_path / "e" / "m.pt", **jitter)
    assert all(torch.equal(j1[k], j2[k]) for k in j1)
    assert not all(torch.equal(base[k], j1[k]) for k in base)
