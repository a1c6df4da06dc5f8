"""A rolling release under load: `pcam package --rolling` into the serving repository, no restart.

Its own stack on its own copy of the repository, so the session's stack keeps its release. Requests
run in threads through the swap; every one must succeed, answers move from the old release to the new
one, and the new release gets new cache keys.
"""

import re
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from devstack.stack import LocalStack
from pcam_core.release import load_release
from tests.conftest import SMOKE_CONFIG
from tests.integration.conftest import own_stack
from tests.integration.test_predict import unique_png
from training.cli import app as pcam

pytestmark = pytest.mark.integration
CLIENTS = 3


@pytest.fixture(scope="module")
def swap_stack(
    model_repository: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[LocalStack, Path]]:
    """(stack, work dir) serving a private copy of the smoke repository."""
    root = tmp_path_factory.mktemp("swap")
    repository, work = root / "model_repository", root / "work"
    shutil.copytree(model_repository, repository)
    shutil.copytree(model_repository.parent / "run", work)  # the build's work dir (conftest)
    with own_stack(repository, root / "stack") as local:
        yield local, work


def test_a_rolling_release_swaps_under_load_without_a_failed_request(
    swap_stack: tuple[LocalStack, Path], patch_paths: list[Path]
) -> None:
    stack, work = swap_stack
    repository = stack.config.model_repository
    old = load_release(repository)
    gateway_url = stack.config.url("gateway")
    answers: list[tuple[int, str | None]] = []  # (status, release or problem detail)
    stop = threading.Event()

    def client(offset: int) -> None:
        with httpx.Client(base_url=gateway_url, timeout=60) as http:
            n = offset
            while not stop.is_set():
                path = patch_paths[n % len(patch_paths)]
                # Bytes never sent before: every request goes through preprocess, ensemble and Triton.
                response = http.post("/v1/predict", files={"file": (path.name, unique_png(path, 10_000 + n))})
                body = response.json()
                answers.append((response.status_code, body.get("release") or body.get("detail")))
                n += CLIENTS

    threads = [threading.Thread(target=client, args=(i,)) for i in range(CLIENTS)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(2)
        args = ["package", "-c", str(SMOKE_CONFIG), "-w", str(work), "-o", str(repository), "--rolling"]
        result = CliRunner().invoke(pcam, args)
        assert result.exit_code == 0, result.output
        new = load_release(repository)
        assert new.release_id != old.release_id and {m.version for m in new.members} == {2}
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            recent = [release for _, release in answers[-2 * CLIENTS :]]
            if len(recent) == 2 * CLIENTS and set(recent) == {new.release_id}:
                break
            time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=120)

    statuses = {status for status, _ in answers}
    assert statuses == {200}, [a for a in answers if a[0] != 200][:5]
    releases = [release for _, release in answers]  # all 200 here
    assert releases[0] == old.release_id and releases[-1] == new.release_id
    assert set(releases) == {old.release_id, new.release_id}

    # The new release is served by the new model versions, under new cache keys.
    path = patch_paths[0]
    with httpx.Client(base_url=gateway_url, timeout=60) as http:
        for expected_cached in (False, True):
            body = http.post("/v1/predict", files={"file": (path.name, path.read_bytes())}).json()
            assert body["release"] == new.release_id and body["cached"] is expected_cached
    text = httpx.get(f"http://127.0.0.1:{stack.config.ports.triton_metrics}/metrics").text
    for member in new.members:
        pattern = rf'^nv_inference_request_success\{{[^}}]*model="{member.name}",version="{member.version}"[^}}]*\}} (\S+)$'
        served = re.search(pattern, text, re.M)
        assert served and float(served.group(1)) > 0, f"{member.name} version {member.version} served nothing"
