"""Shared fixtures for the training package's unit tests (CPU, two threads at most)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_pcam(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set in PCam's layout, shared by tests that only read it."""
    from training.data.synthetic import synthesize

    directory = tmp_path_factory.mktemp("pcam")
    synthesize(directory, {"train": 96, "valid": 64, "test": 16}, seed=7)
    return directory


@pytest.fixture(scope="session")
def built(smoke_build: tuple[Path, Path]) -> tuple[Path, Path]:
    """(repository, work dir) of the session's one smoke build (tests/conftest.py), shared read-only."""
    return smoke_build


def _tiny_config(prefix: str, train: int, seed: int = 0, **changes) -> dict:
    return {
        "release_prefix": prefix,
        "seed": seed,
        "threads": 2,
        "data": {"synthetic": {"train": train, "valid": 64, "test": 16, "seed": seed + 1}},
        "stain": {"fit_patches": 32},
        "members": [
            {"name": "resnet", "architecture": "test_resnet", "epochs": 1, "batch_size": 32, "lr": 0.003}
        ],
        **changes,
    }


@pytest.fixture(scope="session")
def tiny_config():
    """A one-member run config (timm's test_resnet) on a small synthetic set, as a dict to vary."""
    return _tiny_config


@pytest.fixture(scope="session")
def staged():
    """Write a config dict to root/config.yaml and run `pcam stain-reference` into root/work."""
    import yaml
    from typer.testing import CliRunner

    from training.cli import app

    def stage(config: dict, root: Path) -> tuple[Path, Path]:
        root.mkdir(parents=True, exist_ok=True)
        path, work = root / "config.yaml", root / "work"
        path.write_text(yaml.safe_dump(config))
        result = CliRunner().invoke(app, ["stain-reference", "-c", str(path), "-w", str(work)])
        assert result.exit_code == 0, result.output
        return path, work

    return stage
