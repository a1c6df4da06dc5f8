"""The ensemble handing patches to a real Triton in system shared memory (PCAM_ENSEMBLE_TRITON_SHARED_MEMORY).

The same answers as through the gRPC message, recovery when Triton restarts without the regions, and
nothing left in /dev/shm once the stack stops.
"""

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from devstack.stack import LocalStack
from tests.integration.conftest import SHM, own_stack
from tests.integration.test_faults import kill, until
from tests.integration.test_predict import unique_png

pytestmark = pytest.mark.integration
SHARED_MEMORY = {
    "PCAM_ENSEMBLE_TRITON_SHARED_MEMORY": "true",
    "PCAM_ENSEMBLE_TRITON_SHARED_MEMORY_SLOTS": "2",
}


def regions() -> set[str]:
    return {path.name for path in SHM.glob("pcam-ensemble-*")}


@pytest.fixture(scope="module")
def shared(model_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalStack]:
    """The stack with shared memory on; once it stopped, none of its ensembles' regions is left."""
    with own_stack(model_repository, tmp_path_factory.mktemp("shm"), SHARED_MEMORY) as local:
        yield local
        ensemble = local.processes["ensemble"].popen.pid  # the tests never restart it
    left = {name for name in regions() if name.startswith(f"pcam-ensemble-{ensemble}-")}
    assert not left, f"shared memory regions left behind: {left}"


def batch(url: str, uploads: list[bytes]) -> list[dict]:
    files = [("files", (f"{i}.png", data, "image/png")) for i, data in enumerate(uploads)]
    response = httpx.post(f"{url}/v1/predict/batch", params={"cache": "false"}, files=files, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_answers_equal_those_sent_inside_the_grpc_message(
    shared: LocalStack, stack: LocalStack, patch_paths: list[Path]
) -> None:
    ensemble = shared.processes["ensemble"].popen.pid
    ours = {name for name in regions() if f"pcam-ensemble-{ensemble}-" in name}
    assert len(ours) == 2  # the configured slots, named for this ensemble process
    uploads = [unique_png(patch_paths[i], 0x5E0000 + i) for i in range(12)]
    in_memory = batch(shared.config.url("gateway"), uploads)
    in_message = batch(stack.config.url("gateway"), uploads)
    assert [r["label"] for r in in_memory] == [r["label"] for r in in_message]
    for a, b in zip(in_memory, in_message, strict=True):
        assert a["probability"] == pytest.approx(b["probability"], abs=1e-6)
        assert a["members"] == pytest.approx(b["members"], abs=1e-6)


def test_a_restarted_triton_gets_the_regions_again_without_restarting_the_ensemble(
    shared: LocalStack, patch_paths: list[Path]
) -> None:
    url, ensemble = shared.config.url("gateway"), shared.processes["ensemble"].popen.pid
    kill(shared, "triton")
    shared.restart("triton")
    uploads = [unique_png(patch_paths[i], 0x5F0000 + i) for i in range(4)]
    until(lambda: httpx.post(f"{url}/v1/predict/batch", params={"cache": "false"},
                             files=[("files", ("p.png", uploads[0], "image/png"))], timeout=60).status_code == 200,
          30, "predicting again")  # fmt: skip
    assert len(batch(url, uploads)) == 4
    assert shared.processes["ensemble"].popen.pid == ensemble
