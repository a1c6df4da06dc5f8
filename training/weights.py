"""Initial weights for a member: a local file or a registry entry, SHA-256 verified, loaded into timm.

The platform never fetches weights: a registry entry with a ``url`` is only usable once the file is
already at the registry's cache path (download it with your own tooling and check its digest).

Registry file (YAML)::

    cache_dir: cache            # where url entries are looked for; relative to this file; default: .
    weights:
      seresnet50.a1_in1k:
        url: https://huggingface.co/timm/seresnet50.a1_in1k/resolve/main/model.safetensors
        filename: seresnet50.a1_in1k.safetensors   # name in cache_dir; default: the url's last part
        sha256: 0123...                            # 64 hex digits, always verified
        architecture: seresnet50                   # must equal the member's architecture
      my_vit:
        path: weights/vit_base_in21k.pth           # a local file, relative to this file
        sha256: 4567...
        architecture: vit_base_patch16_224
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
import yaml
from torch import nn

from training.config import SHA256_PATTERN, PretrainedConfig
from training.repository.manifest import sha256_file

log = logging.getLogger(__name__)
_STATE_DICT_KEYS = ("state_dict_ema", "model_ema", "state_dict", "model")
"""Wrappers that training scripts put around a state_dict; the first present is unwrapped."""


class WeightsError(ValueError):
    """Initial weights that cannot be used: missing, wrong digest, unknown name, wrong architecture."""


@dataclass(frozen=True)
class WeightsFile:
    path: Path
    sha256: str
    architecture: str | None
    source: str


@dataclass
class LoadReport:
    """What loading a state_dict into a backbone did."""

    loaded: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    """Keys of the file not loaded: the classifier head of another shape, or keys the model lacks."""
    missing: list[str] = field(default_factory=list)
    """Keys of the model not in the file (left as initialised): only the classifier head is allowed."""


def verify_sha256(path: Path, expected: str) -> None:
    """Raise WeightsError naming the file and both digests unless the file's SHA-256 is expected."""
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    actual = sha256_file(path)
    if actual != expected.lower():
        raise WeightsError(
            f"SHA-256 mismatch for weights file {path}: expected {expected.lower()}, got {actual}; "
            "refusing to load it"
        )


def _registry_entries(registry: Path) -> tuple[dict[str, Any], Path]:
    if not registry.is_file():
        raise WeightsError(f"weights registry {registry} does not exist")
    raw = yaml.safe_load(registry.read_text()) or {}
    if not isinstance(raw, dict) or not isinstance(raw.get("weights"), dict):
        raise WeightsError(f"weights registry {registry} needs a 'weights:' mapping of name -> entry")
    cache_dir = registry.parent / str(raw.get("cache_dir", "."))
    return raw["weights"], cache_dir


def registry_lookup(registry: Path, name: str) -> WeightsFile:
    """The file, digest and architecture of a registry entry; its file must exist locally."""
    entries, cache_dir = _registry_entries(registry)
    if name not in entries:
        raise WeightsError(f"no weights named {name!r} in registry {registry}; known: {sorted(entries)}")
    entry = entries[name]
    where = f"registry {registry}, entry {name!r}"
    if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
        raise WeightsError(f"{where}: needs a 'sha256'")
    if not re.match(SHA256_PATTERN, entry["sha256"]):
        raise WeightsError(f"{where}: sha256 must be 64 hex digits, got {entry['sha256']!r}")
    if ("path" in entry) == ("url" in entry):
        raise WeightsError(f"{where}: needs exactly one of 'path' or 'url'")
    if "path" in entry:
        path = registry.parent / str(entry["path"])
    else:
        filename = entry.get("filename") or Path(urlparse(str(entry["url"])).path).name
        path = cache_dir / filename
        if not path.is_file():
            raise WeightsError(
                f"{where}: weights come from {entry['url']}, which this build never downloads; fetch the "
                f"file with your own tooling to {path} (sha256 {entry['sha256'].lower()}) and run again"
            )
    return WeightsFile(path, entry["sha256"].lower(), entry.get("architecture"), where)


def resolve(spec: PretrainedConfig, architecture: str) -> WeightsFile:
    """The verified-to-be local file of a member's ``pretrained:`` spec (digest not yet checked)."""
    if spec.path is not None:
        assert spec.sha256 is not None  # the config validator requires it
        return WeightsFile(spec.path, spec.sha256.lower(), None, "local file")
    assert spec.registry is not None and spec.name is not None
    weights = registry_lookup(spec.registry, spec.name)
    if weights.architecture is not None and weights.architecture != architecture:
        raise WeightsError(
            f"{weights.source}: weights are for architecture {weights.architecture!r}, "
            f"the member is {architecture!r}"
        )
    return weights


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """Tensors of a weights file: safetensors for *.safetensors, else torch.load(weights_only=True)."""
    if path.suffix == ".safetensors":
        if importlib.util.find_spec("safetensors") is None:
            raise WeightsError(f"{path} is a safetensors file but the 'safetensors' package is not installed")
        from safetensors.torch import load_file

        state: Any = load_file(str(path), device="cpu")
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict):
        for key in _STATE_DICT_KEYS:
            if isinstance(state.get(key), dict):
                state = state[key]
                break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} holds no state_dict (a mapping of parameter names to tensors)")
    return {k.removeprefix("module."): v for k, v in state.items()}


def _classifier_prefixes(backbone: nn.Module) -> tuple[str, ...]:
    names = (getattr(backbone, "pretrained_cfg", None) or {}).get("classifier") or ()
    names = (names,) if isinstance(names, str) else tuple(names)
    return tuple(f"{n}." for n in names) + tuple(names)


def _timm_filter(backbone: nn.Module, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The architecture's own timm checkpoint filter (e.g. ViT position embeddings resampled to 96 px)."""
    module = sys.modules.get(type(backbone).__module__)
    filter_fn = getattr(module, "checkpoint_filter_fn", None)
    if filter_fn is None:
        return state
    try:
        return filter_fn(state, backbone)
    except Exception as error:  # noqa: BLE001 - a filter that does not fit: load the keys as they are
        log.warning(
            "timm's checkpoint filter for %s failed (%s); loading keys unchanged",
            type(backbone).__name__,
            error,
        )
        return state


def load_state_dict_into(backbone: nn.Module, state: dict[str, torch.Tensor], source: str = "") -> LoadReport:
    """Load every key whose shape fits; the classifier head (other class count) is left as initialised.

    Raises WeightsError if anything other than the classifier head is missing or of another shape:
    that means weights of another architecture.
    """
    state = _timm_filter(backbone, state)
    own = backbone.state_dict()
    head = _classifier_prefixes(backbone)
    report = LoadReport()
    usable: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key in own and own[key].shape == tensor.shape:
            usable[key] = tensor
            report.loaded.append(key)
        else:
            report.skipped.append(key)
    report.missing = [k for k in own if k not in usable]
    # num_batches_tracked only counts steps; some checkpoints leave it out.
    bad = [k for k in report.missing if not k.startswith(head) and not k.endswith("num_batches_tracked")]
    if bad:
        raise WeightsError(
            f"weights {source} do not fit {type(backbone).__name__} beyond its classifier head "
            f"{list(head)}; unloadable model keys: {bad[:10]}{' ...' if len(bad) > 10 else ''}"
        )
    backbone.load_state_dict(usable, strict=False)
    log.info(
        "loaded %d tensors from %s; skipped from the file: %s; left initialised: %s",
        len(report.loaded),
        source,
        report.skipped or "none",
        report.missing or "none",
    )
    return report


def load_pretrained(backbone: nn.Module, spec: PretrainedConfig, architecture: str) -> LoadReport:
    """Resolve a member's ``pretrained:`` spec, verify the file's SHA-256, and load it into the backbone."""
    weights = resolve(spec, architecture)
    verify_sha256(weights.path, weights.sha256)
    return load_state_dict_into(backbone, read_state_dict(weights.path), f"{weights.source} ({weights.path})")
