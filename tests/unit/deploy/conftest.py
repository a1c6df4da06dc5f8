"""Paths and offline tools (docs/architecture.md#offline-checks) for the deployment-artifact tests."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[3]
VENV_BIN = Path(sys.executable).parent


def find_tool(name: str) -> str:
    """A tool from the project virtualenv (where `make venv`/`make deploy-tools` put it) or PATH."""
    found = shutil.which(name, path=str(VENV_BIN)) or shutil.which(name)
    assert found, f"{name} is needed: `make deploy-tools` installs it into the virtualenv"
    return found


def kubernetes_validate_output(tool: str, manifests: str, directory: Path, version: str) -> str:
    """Run `kubernetes-validate --strict` for one Kubernetes version on manifests; assert it passes."""
    path = directory / "manifests.yaml"
    path.write_text(manifests)
    done = subprocess.run(
        [tool, "--strict", "-k", version, "--quiet", str(path)],
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    return output


@pytest.fixture(scope="session")
def helm() -> str:
    return find_tool("helm")


@pytest.fixture(scope="session")
def kubectl() -> str:
    return find_tool("kubectl")


@pytest.fixture(scope="session")
def docker_compose() -> str:
    return find_tool("docker-compose")


@pytest.fixture(scope="session")
def hadolint() -> str:
    return find_tool("hadolint")


@pytest.fixture(scope="session")
def kubernetes_validate() -> str:
    return find_tool("kubernetes-validate")
