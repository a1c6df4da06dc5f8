"""Initial weights: local files and registry entries, always SHA-256 verified, head dropped; no downloads."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest
import timm
import torch
import yaml
from pydantic import ValidationError

from training.config import MemberConfig, PretrainedConfig
from training.models import build_member_model, create_backbone
from training.weights import WeightsError, load_pretrained, read_state_dict, registry_lookup


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def source_state() -> dict[str, torch.Tensor]:
    """A 'pretrained' test_resnet with timm's default 1000-class head."""
    torch.manual_seed(123)
    return timm.create_model("test_resnet", pretrained=False).state_dict()


@pytest.fixture(params=["pt", "safetensors"])
def weights_file(request, tmp_path: Path, source_state) -> Path:
    if request.param == "safetensors":
        safetensors_torch = pytest.importorskip("safetensors.torch")
        path = tmp_path / "test_resnet.safetensors"
        safetensors_torch.save_file({k: v.contiguous() for k, v in source_state.items()}, str(path))
    else:
        path = tmp_path / "test_resnet.pth"
        torch.save({"state_dict": source_state, "epoch": 3}, path)  # a wrapped training checkpoint
    return path


def _assert_loaded_except_head(backbone: torch.nn.Module, source_state: dict[str, torch.Tensor]) -> None:
    own = backbone.state_dict()
    for key, tensor in source_state.items():
        if key.startswith("fc."):
            assert own[key].shape[0] == 1 and tensor.shape[0] == 1000
        else:
            torch.testing.assert_close(own[key], tensor, rtol=0, atol=0)


def test_local_file_loads_every_tensor_but_the_head(weights_file: Path, source_state, caplog):
    torch.manual_seed(0)
    backbone = create_backbone("test_resnet")
    spec = PretrainedConfig(path=weights_file, sha256=_digest(weights_file))
    with caplog.at_level(logging.INFO, logger="training.weights"):
        report = load_pretrained(backbone, spec, "test_resnet")
    _assert_loaded_except_head(backbone, source_state)
    assert sorted(report.skipped) == ["fc.bias", "fc.weight"] and sorted(report.missing) == sorted(
        report.skipped
    )
    assert "fc.weight" in caplog.text and "skipped" in caplog.text
    assert backbone(torch.zeros(2, 3, 96, 96)).shape == (2, 1)


def test_wrong_sha256_is_refused_naming_file_and_digests(weights_file: Path):
    actual = _digest(weights_file)
    spec = PretrainedConfig(path=weights_file, sha256="0" * 64)
    with pytest.raises(WeightsError, match="SHA-256 mismatch") as error:
        load_pretrained(create_backbone("test_resnet"), spec, "test_resnet")
    assert (
        str(weights_file) in str(error.value) and actual in str(error.value) and "0" * 64 in str(error.value)
    )


def _registry(tmp_path: Path, entries: dict, **extra) -> Path:
    path = tmp_path / "registry.yaml"
    path.write_text(yaml.safe_dump({**extra, "weights": entries}))
    return path


def test_member_built_from_a_registry_entry(tmp_path: Path, source_state):
    weights_dir = tmp_path / "weights"
    weights_dir.mkdir()
    torch.save(source_state, weights_dir / "resnet.pt")
    registry = _registry(
        tmp_path,
        {
            "tiny": {
                "path": "weights/resnet.pt",
                "sha256": _digest(weights_dir / "resnet.pt"),
                "architecture": "test_resnet",
            }
        },
    )
    member = MemberConfig.model_validate(
        {
            "name": "r",
            "architecture": "test_resnet",
            "epochs": 1,
            "lr": 1e-3,
            "pretrained": {"registry": str(registry), "name": "tiny"},
        }
    )
    _assert_loaded_except_head(build_member_model(member).backbone, source_state)


def test_unknown_registry_name_is_refused(tmp_path: Path):
    registry = _registry(
        tmp_path, {"tiny": {"path": "x.pt", "sha256": "a" * 64, "architecture": "test_resnet"}}
    )
    with pytest.raises(WeightsError, match=r"no weights named 'huge'.*known: \['tiny'\]"):
        registry_lookup(registry, "huge")


def test_registry_entry_for_another_architecture_is_refused(tmp_path: Path, source_state):
    torch.save(source_state, tmp_path / "resnet.pt")
    registry = _registry(
        tmp_path,
        {
            "tiny": {
                "path": "resnet.pt",
                "sha256": _digest(tmp_path / "resnet.pt"),
                "architecture": "test_resnet",
            }
        },
    )
    with pytest.raises(WeightsError, match="architecture 'test_resnet'"):
        load_pretrained(
            create_backbone("test_vit"), PretrainedConfig(registry=registry, name="tiny"), "test_vit"
        )


def test_url_entries_are_never_fetched_but_a_cached_file_is_used(tmp_path: Path, source_state):
    url = "https://weights.invalid/timm/test_resnet/model.pth"
    payload = tmp_path / "payload.pth"
    torch.save(source_state, payload)
    registry = _registry(
        tmp_path,
        {"tiny": {"url": url, "sha256": _digest(payload), "architecture": "test_resnet"}},
        cache_dir="cache",
    )
    with pytest.raises(WeightsError, match="never downloads") as error:
        registry_lookup(registry, "tiny")
    assert str(tmp_path / "cache" / "model.pth") in str(error.value)
    (tmp_path / "cache").mkdir()
    payload.rename(tmp_path / "cache" / "model.pth")
    backbone = create_backbone("test_resnet")
    load_pretrained(backbone, PretrainedConfig(registry=registry, name="tiny"), "test_resnet")
    _assert_loaded_except_head(backbone, source_state)


def test_weights_of_another_architecture_are_refused(tmp_path: Path, source_state):
    path = tmp_path / "resnet.pt"
    torch.save(source_state, path)
    with pytest.raises(WeightsError, match="do not fit"):
        load_pretrained(
            create_backbone("test_vit"), PretrainedConfig(path=path, sha256=_digest(path)), "test_vit"
        )


def test_vit_weights_at_another_size_are_resampled_to_96(tmp_path: Path):
    torch.manual_seed(1)
    source = timm.create_model("vit_tiny_patch16_224", pretrained=False, depth=2)  # 224 px, 1000 classes
    path = tmp_path / "vit.pth"
    torch.save(source.state_dict(), path)
    backbone = create_backbone("vit_tiny_patch16_224", depth=2)
    report = load_pretrained(
        backbone, PretrainedConfig(path=path, sha256=_digest(path)), "vit_tiny_patch16_224"
    )
    assert backbone.pos_embed.shape[1] == 1 + 6 * 6 and sorted(report.missing) == ["head.bias", "head.weight"]
    torch.testing.assert_close(
        backbone.patch_embed.proj.weight, source.patch_embed.proj.weight, rtol=0, atol=0
    )
    assert backbone(torch.zeros(2, 3, 96, 96)).shape == (2, 1)


def test_non_tensor_file_is_refused(tmp_path: Path):
    path = tmp_path / "notes.pt"
    torch.save({"hello": "world"}, path)
    with pytest.raises(WeightsError, match="no state_dict"):
        read_state_dict(path)


@pytest.mark.parametrize(
    "raw",
    [
        {"path": "w.pt"},  # no sha256
        {"path": "w.pt", "sha256": "xyz"},
        {"registry": "r.yaml"},  # no name
        {"registry": "r.yaml", "name": "a", "sha256": "a" * 64},
        {"path": "w.pt", "sha256": "a" * 64, "registry": "r.yaml", "name": "a"},
        {},
    ],
)
def test_bad_pretrained_specs_are_refused(raw: dict):
    with pytest.raises(ValidationError):
        PretrainedConfig.model_validate(raw)


def test_model_kwargs_cannot_ask_timm_to_download():
    with pytest.raises(ValidationError, match="pretrained"):
        MemberConfig(
            name="r", architecture="test_resnet", epochs=1, lr=1e-3, model_kwargs={"pretrained": True}
        )


def test_unset_pretrained_leaves_the_dump_unchanged():
    member = MemberConfig(name="r", architecture="test_resnet", epochs=1, lr=1e-3)
    assert "pretrained" not in member.model_dump() and "pretrained" not in member.model_dump_json()
    with_weights = member.model_copy(
        update={"pretrained": PretrainedConfig(path=Path("w.pt"), sha256="a" * 64)}
    )
    assert MemberConfig.model_validate(with_weights.model_dump(mode="json")) == with_weights
