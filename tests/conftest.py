"""Fixtures every test may use, and the coverage per package at the end of a run with --cov."""

import shutil
from pathlib import Path

import numpy as np
import pytest
from filelock import FileLock
from PIL import Image

from devstack.repository import build_repository
from tests.coverage_summary import measured_packages, package_percentages, summary_lines

PATCHES_DIR = Path(__file__).parent / "data" / "he" / "patches"
SMOKE_CONFIG = Path(__file__).parents[1] / "training" / "configs" / "smoke.yaml"


@pytest.fixture(scope="session")
def smoke_build(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> tuple[Path, Path]:
    """(model repository, work dir) of one `pcam build-repository --config smoke` run as a user runs it
    (a child process), built once per run for every test and xdist worker: read it, copy it to change it."""
    # Under xdist the workers share the run's base directory: the first builds, the others wait on the lock
    # (pytest-xdist's recipe for a session fixture run once).
    shared = (
        tmp_path_factory.getbasetemp() if worker_id == "master" else tmp_path_factory.getbasetemp().parent
    )
    root, built = shared / "smoke", shared / "smoke.built"
    repository, work = root / "model_repository", root / "run"
    with FileLock(shared / "smoke.lock"):
        if not built.exists():
            shutil.rmtree(root, ignore_errors=True)  # what a failed build left
            build_repository(SMOKE_CONFIG, repository, work)
            built.touch()
    return repository, work


@pytest.fixture(scope="session")
def patch_paths() -> list[Path]:
    """The real 96x96 H&E patches (see tests/data/he/README.md for their origin and licenses)."""
    paths = sorted(PATCHES_DIR.glob("*.png"))
    assert paths, f"no patches in {PATCHES_DIR}"
    return paths


@pytest.fixture(scope="session")
def tissue_patches(patch_paths: list[Path]) -> np.ndarray:
    """uint8 (N, 96, 96, 3) of the torchstain-derived patches, which are all tissue."""
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p in patch_paths if p.name.startswith(("src", "tgt"))]
    )


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    """After pytest-cov's total (and its fail-under verdict): a line per package, worst first."""
    plugin = config.pluginmanager.getplugin("_cov")
    controller = getattr(plugin, "cov_controller", None)
    if controller is None or getattr(plugin, "cov_total", None) is None:
        return
    percentages = package_percentages(Path(controller.cov.config.data_file), measured_packages())
    terminalreporter.write_sep("=", f"coverage per package (total {plugin.cov_total:.1f} %)")
    for line in summary_lines(percentages):
        terminalreporter.write_line(line)
