"""Starts the real stack once per session: redis-server, tritonserver and the three services.

The model repository is built by the real `pcam build-repository` with the smoke config, so the
suite exercises training, export and serving together. Every process is stopped at the end, also
when a test fails, and the teardown fails if any of them is left behind.
"""

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from devstack.groups import group_members
from devstack.stack import LocalStack, StackConfig, StackPorts
from pcam_core.release import ReleaseManifest, load_release

ROOT = Path(__file__).resolve().parents[2]
TRITON_VENV = ROOT / ".venv-triton"
SHM = Path("/dev/shm")

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def model_repository(smoke_build: tuple[Path, Path]) -> Path:
    """The session's freshly trained and exported smoke ensemble (tests/conftest.py); its build's work
    dir is `model_repository.parent / "run"`."""
    return smoke_build[0]


@pytest.fixture(scope="session")
def release(model_repository: Path) -> ReleaseManifest:
    return load_release(model_repository)


@contextmanager
def own_stack(
    model_repository: Path, work_dir: Path, environment: Mapping[str, str] | None = None
) -> Iterator[LocalStack]:
    """A whole stack on free ports, its processes started with `environment` on top of this one's (kept
    for the block, so restarted processes get it too); stopped at the end, failing if any survives."""
    config = StackConfig(
        model_repository=model_repository, triton_venv=TRITON_VENV, work_dir=work_dir, ports=StackPorts.free()
    )
    with pytest.MonkeyPatch.context() as patch:
        for name, value in (environment or {}).items():
            patch.setenv(name, value)
        with LocalStack(config) as local:
            try:
                yield local
            finally:
                leaders = [p.popen.pid for p in local.processes.values()]  # restarted ones included
    survivors = {pid: group_members(pid) for pid in leaders if group_members(pid)}
    assert not survivors, f"processes left behind: {survivors}"
    regions = sorted(path.name for path in SHM.glob(f"{local.triton_shm_prefix()}*"))
    assert not regions, f"shared memory left behind: {regions}"


@pytest.fixture(scope="session")
def stack(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    with own_stack(model_repository, tmp_path_factory.mktemp("stack")) as local:
        yield local


@pytest.fixture(scope="session")
def gateway(stack: LocalStack) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=stack.config.url("gateway"), timeout=60) as client:
        yield client
