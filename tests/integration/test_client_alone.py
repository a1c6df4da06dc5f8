"""pcam_client installed alone (its wheel and the core's, in a fresh virtualenv) talks to the real stack."""

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import httpx
import pytest

from devstack.stack import LocalStack

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

CHECKOUT_LITTER = ("build", "*.egg-info", "__pycache__")

# What the platform needs and a client must not drag in.
PLATFORM_ONLY = {
    "pcam-platform",
    "numpy",
    "pillow",
    "fastapi",
    "starlette",
    "uvicorn",
    "redis",
    "tritonclient",
    "torch",
    "pydantic-settings",
}

# Run by the fresh virtualenv's interpreter: everything it prints comes from the client alone.
CLIENT_SCRIPT = """
import json, sys
from pathlib import Path
from pcam_client import ItemError, PCamAPIError, PCamClient

url, patch = sys.argv[1], Path(sys.argv[2])
out = {}
with PCamClient(url) as client:
    out["ready"] = client.ready().ready
    out["release_id"] = client.models().release_id
    result = client.predict(patch, operating_point="screening", cache=False)
    out["probability"] = result.probability
    out["label"] = result.label
    entries = client.predict_batch([patch, b"not an image"])
    out["batch"] = [type(e).__name__ for e in entries]
    out["batch_error_kind"] = entries[1].kind if isinstance(entries[1], ItemError) else None
    try:
        client.predict(patch, operating_point="no-such-point")
    except PCamAPIError as error:
        out["refused"] = [error.status, error.type]
import pcam_client
out["client_file"] = pcam_client.__file__
out["modules"] = sorted({name.split(".")[0] for name in sys.modules})
print(json.dumps(out))
"""


def run(*args: str | Path, cwd: Path | None = None) -> str:
    done = subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, check=False, timeout=600, cwd=cwd
    )
    assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def client_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtualenv holding the client's and the core's wheels and what they declare, nothing else."""
    work = tmp_path_factory.mktemp("client-alone")
    wheels = work / "wheels"
    # The wheels are built from copies of the two folders (a build writes build/ and *.egg-info into the
    # project it builds, never into the checkout), each by its own pyproject.toml with this environment's
    # pinned build backend; their dependencies come from the package index, bound by the project's pins.
    sources = [work / "src" / name for name in ("pcam_core", "pcam_client")]
    for source in sources:
        shutil.copytree(ROOT / source.name, source, ignore=shutil.ignore_patterns(*CHECKOUT_LITTER))
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
        "--wheel-dir", wheels, *sources)  # fmt: skip
    environment = work / "venv"
    venv.create(environment, with_pip=True)
    python = environment / "bin" / "python"
    run(python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
        "-c", ROOT / "requirements" / "constraints.txt", *sorted(wheels.glob("*.whl")))  # fmt: skip
    return python


def test_the_client_installs_without_the_platform(client_python: Path) -> None:
    listed = json.loads(run(client_python, "-m", "pip", "list", "--format", "json"))
    installed = {entry["name"].lower().replace("_", "-") for entry in listed}
    assert {"pcam-platform-client", "pcam-platform-core", "httpx", "pydantic"} <= installed
    assert not installed & PLATFORM_ONLY
    # Run outside the checkout, whose folders would otherwise be importable from the working directory.
    outside = client_python.parents[2]
    for package in ("services", "training", "devstack"):
        done = subprocess.run(
            [client_python, "-c", f"import {package}"], capture_output=True, check=False, cwd=outside
        )
        assert done.returncode != 0, f"{package} importable beside the client alone"


def test_the_client_alone_calls_the_running_stack(
    client_python: Path, stack: LocalStack, gateway: httpx.Client, patch_paths: list[Path]
) -> None:
    url = stack.config.url("gateway")
    patch = patch_paths[0]
    out = json.loads(run(client_python, "-c", CLIENT_SCRIPT, url, patch, cwd=client_python.parents[2]))

    direct = gateway.post(
        "/v1/predict",
        params={"operating_point": "screening", "cache": "false"},
        files={"file": (patch.name, patch.read_bytes(), "image/png")},
    )
    assert direct.status_code == 200, direct.text
    assert out["ready"] is True
    assert out["release_id"] == direct.json()["release"]
    assert out["probability"] == pytest.approx(direct.json()["probability"], abs=1e-6)
    assert out["label"] == direct.json()["label"]
    assert out["batch"] == ["Prediction", "ItemError"]
    assert out["batch_error_kind"]
    status, problem_type = out["refused"]
    assert status == 422 and problem_type.endswith("unknown-operating-point")
    assert "numpy" not in out["modules"] and "services" not in out["modules"]
    installed = client_python.parents[1]  # the virtualenv: the wheel's copy ran, not the checkout's
    assert out["client_file"].startswith(str(installed))
