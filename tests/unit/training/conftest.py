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
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(repository, work dir) of one `pcam build-repository --config smoke`, shared read-only."""
    from typer.testing import CliRunner

    from training.cli import app

    root = tmp_path_factory.mktemp("build")
    repo, work = root / "model_repository", root / "work"
    args = ["build-repository", "--config", "smoke", "--output", str(repo), "--workdir", str(work)]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return repo, work
