"""The images' contract, exercised without a Docker engine (docs/architecture.md#offline-checks).

For each service target of docker/services.Dockerfile: its CMD runs as written, with its ENV (paths
mapped onto this checkout: /app is the repository root, /opt/venv the project virtualenv, /models a
model repository, /tmp a temporary folder; the port moved to a free one), from its WORKDIR; /healthz
answers; the Dockerfile's HEALTHCHECK command passes against it (and fails once it is gone); SIGTERM ends
it with status 0 within the stop grace period docker-compose.yml gives it. The CPU Triton image's CMD,
as docker-compose.yml extends it with the OpenTelemetry trace config, runs the real Triton 2.51 the
same way. And docker-compose.yml runs each service from its own target.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from devstack.ports import free_port
from devstack.processes import ManagedProcess, http_ok
from devstack.stack import service_arguments
from devstack.triton import TritonInstall
from tests.integration.conftest import TRITON_VENV
from tests.unit.common.release_fixture import write_test_release
from tests.unit.deploy import dockerfile as df
from tests.unit.deploy.conftest import find_tool

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SERVICES_DOCKERFILE = df.load(ROOT / "docker" / "services.Dockerfile")
TRITON_DOCKERFILE = df.load(ROOT / "docker" / "triton-cpu.Dockerfile")
SERVICES = [stage.name for stage in SERVICES_DOCKERFILE.final_stages()]
STARTUP_TIMEOUT_S = 120


@pytest.fixture(scope="module")
def compose_model() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("COMPOSE_", "PCAM_", "DOCKER_"))}
    done = subprocess.run(
        [find_tool("docker-compose"), "-f", str(ROOT / "docker-compose.yml"), "config", "--format", "json"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _seconds(duration: str) -> float:
    """A compose duration (`25s`, `1m30s`) in seconds."""
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    return sum(float(n) * units[u] for n, u in re.findall(r"([\d.]+)(ms|h|m|s)", duration))


def _map(value: str, paths: dict[str, Path]) -> str:
    """An image path (or a PATH-like list of them) as the corresponding path of this checkout."""

    def one(item: str) -> str:
        for image_path, local in paths.items():
            if item == image_path or item.startswith(image_path + "/"):
                return str(local) + item[len(image_path) :]
        return item

    return ":".join(one(item) for item in value.split(":"))


def _image_env(dockerfile: df.Dockerfile, stage: df.Stage, paths: dict[str, Path]) -> dict[str, str]:
    """The stage's ENV on this machine: paths mapped, $PATH expanded, nothing else inherited but HOME."""
    env = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/tmp"), "LANG": "C.UTF-8"}
    for key, value in dockerfile.env(stage).items():
        expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: env.get(m.group(1), ""), value)
        env[key] = _map(expanded, paths)
    return env


def _resolve(argv: list[str], env: dict[str, str]) -> list[str]:
    found = shutil.which(argv[0], path=env["PATH"])
    assert found, f"{argv[0]} not on the image's PATH {env['PATH']}"
    return [found, *argv[1:]]


@pytest.mark.parametrize("service", SERVICES)
def test_service_target_runs_its_command_and_healthcheck(
    service: str, compose_model: dict, tmp_path: Path, monkeypatch
):
    stage = SERVICES_DOCKERFILE.stage(service)
    repository = tmp_path / "models"
    repository.mkdir()
    write_test_release(repository)  # preprocess/ensemble read /models/release.json; /healthz needs no Triton
    (tmp_path / "tmp").mkdir()
    app = tmp_path / "app"  # WORKDIR: only the code the image copies (pcam_core/ and services/ into /app/)
    for package in ("pcam_core", "services"):
        shutil.copytree(ROOT / package, app / package, ignore=shutil.ignore_patterns("__pycache__"))
    paths = {
        "/app": app,
        "/opt/venv": Path(sys.executable).parent.parent,  # the project virtualenv
        "/models": repository,
        "/tmp": tmp_path / "tmp",
    }
    env = _image_env(SERVICES_DOCKERFILE, stage, paths)
    prefix, port = f"PCAM_{service.upper()}_", free_port()
    assert env[f"{prefix}HOST"] == "0.0.0.0"
    env[f"{prefix}HOST"], env[f"{prefix}PORT"] = "127.0.0.1", str(port)  # loopback and a free port here
    workdir = Path(_map(SERVICES_DOCKERFILE.effective(stage, "WORKDIR").args, paths))
    image_command = SERVICES_DOCKERFILE.effective(stage, "CMD").exec_form()
    assert image_command == ["python", *service_arguments(service)], "the image runs what devstack runs"
    command = _resolve(image_command, env)
    assert Path(command[0]).parent == Path(sys.executable).parent, "python is the image venv's (mapped)"
    healthcheck = _resolve(SERVICES_DOCKERFILE.effective(stage, "HEALTHCHECK").exec_form(), env)
    grace_s = _seconds(compose_model["services"][service]["stop_grace_period"])

    process = _start(service, command, env, workdir, tmp_path, monkeypatch)
    try:
        process.wait_until(http_ok(f"http://127.0.0.1:{port}/healthz"), STARTUP_TIMEOUT_S, "healthy")
        check = subprocess.run(healthcheck, env=env, cwd=workdir, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
    finally:
        process.stop(grace_s)
    assert process.popen.returncode == 0, (
        f"{service} after SIGTERM: {process.popen.returncode}\n{process.log_tail()}"
    )
    gone = subprocess.run(healthcheck, env=env, cwd=workdir, capture_output=True, text=True, timeout=30)
    assert gone.returncode == 1, "the HEALTHCHECK must fail when the service is down"


def _start(
    name: str, argv: list[str], env: dict[str, str], cwd: Path, tmp_path: Path, monkeypatch
) -> ManagedProcess:
    """The process with the image's environment on top of a neutral one, in the image's WORKDIR."""
    for key in list(os.environ):
        if key.startswith(("PCAM_", "OTEL_", "PYTHON", "NUMBA_", "VIRTUAL_ENV", "LD_LIBRARY_PATH")):
            monkeypatch.delenv(key)  # nothing of this test run may stand in for the image's settings
    monkeypatch.chdir(cwd)
    return ManagedProcess(name, argv, tmp_path / f"{name}.log", env=env)


def test_the_cpu_triton_image_command_with_tracing_runs_the_real_triton(
    compose_model: dict, tmp_path: Path, monkeypatch
):
    install = TritonInstall(TRITON_VENV)
    install.check()
    (final,) = TRITON_DOCKERFILE.final_stages()
    repository = tmp_path / "models"
    repository.mkdir()
    write_test_release(repository)  # Triton ignores files at the repository root: no models, ready at once
    (tmp_path / "tmp").mkdir()
    paths = {
        "/opt/triton-venv": TRITON_VENV.resolve(),
        "/opt/tritonserver/backends": install.backend_directory(tmp_path / "backends"),
        "/models": repository,
        "/tmp": tmp_path / "tmp",
        "/home/triton-server": tmp_path,
    }
    env = _image_env(TRITON_DOCKERFILE, final, paths)
    compose_command = compose_model["services"]["triton"]["command"]
    image_command = TRITON_DOCKERFILE.effective(final, "CMD").exec_form()
    assert compose_command[: len(image_command)] == image_command  # compose only adds the trace config
    http, grpc, metrics = free_port(), free_port(), free_port()
    # The image listens on 8000-8002 on every address; here: free ports on loopback.
    local = [f"--http-port={http}", f"--grpc-port={grpc}", f"--metrics-port={metrics}",
             "--http-address=127.0.0.1", "--grpc-address=127.0.0.1", "--metrics-address=127.0.0.1"]  # fmt: skip
    argv = _resolve([_arg(arg, paths) for arg in compose_command], env) + local
    healthcheck = [
        arg.replace("127.0.0.1:8000/", f"127.0.0.1:{http}/")
        for arg in _resolve(TRITON_DOCKERFILE.effective(final, "HEALTHCHECK").exec_form(), env)
    ]
    grace_s = _seconds(compose_model["services"]["triton"].get("stop_grace_period", "10s"))

    workdir = Path(_map(TRITON_DOCKERFILE.effective(final, "WORKDIR").args, paths))
    process = _start("triton", argv, env, workdir, tmp_path, monkeypatch)
    try:
        process.wait_until(http_ok(f"http://127.0.0.1:{http}/v2/health/ready"), STARTUP_TIMEOUT_S, "ready")
        check = subprocess.run(healthcheck, env=env, capture_output=True, text=True, timeout=30)
        assert check.returncode == 0, check.stderr
        trace = httpx.get(f"http://127.0.0.1:{http}/v2/trace/setting", timeout=10).json()
        assert trace["trace_mode"] == "opentelemetry" and trace["trace_rate"] == "1"
        assert trace["url"] == "http://otel-collector:4318/v1/traces"
        assert trace["resource"] == "service.name=triton" and trace["trace_level"] == ["TIMESTAMPS"]
    finally:
        process.stop(grace_s)
    assert process.popen.returncode == 0, process.log_tail()


def _arg(arg: str, paths: dict[str, Path]) -> str:
    """`--flag=/image/path` with the path mapped; other arguments unchanged."""
    flag, sep, value = arg.partition("=")
    return f"{flag}={_map(value, paths)}" if sep and flag.startswith("--") and value.startswith("/") else arg


def test_compose_runs_each_service_from_its_own_target(compose_model: dict):
    for service in SERVICES:
        spec = compose_model["services"][service]
        assert (
            spec["build"]["dockerfile"] == "docker/services.Dockerfile" and spec["build"]["target"] == service
        )
        assert re.search(rf"/pcam-{service}:[^:]+$", spec["image"]), spec["image"]
        stage = SERVICES_DOCKERFILE.stage(service)
        command = spec.get("command") or SERVICES_DOCKERFILE.effective(stage, "CMD").exec_form()
        assert command[-2:] == ["-m", f"services.{service}"], command
        assert (
            spec["healthcheck"]["test"][1:] == SERVICES_DOCKERFILE.effective(stage, "HEALTHCHECK").exec_form()
        )
