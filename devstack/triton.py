"""Running the real tritonserver shipped in the nvidia-pytriton wheel (docs/architecture.md#local-runtime-without-docker)."""

from __future__ import annotations

import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"
REPOSITORY_POLL_S = 1
DEFAULT_SHM_PREFIX = "triton_python_backend_shm_region_"
"""Triton's own name prefix for its python backend's /dev/shm regions (tensors to and from the stubs)."""


def opentelemetry_trace_settings(traces_url: str, rate: int = 1, service_name: str = "triton") -> list[str]:
    """The `--trace-config` values exporting every `rate`-th request's spans to an OTLP/HTTP `traces_url`.

    In OpenTelemetry mode Triton continues the W3C `traceparent` it receives in gRPC metadata, so its
    spans join the ensemble's trace. docker-compose.yml and the Helm chart pass the same values (tested).
    """
    return [
        "mode=opentelemetry",
        f"opentelemetry,url={traces_url}",
        f"opentelemetry,resource=service.name={service_name}",
        f"rate={rate}",
        "level=TIMESTAMPS",
    ]


def opentelemetry_trace_args(traces_url: str, rate: int = 1) -> list[str]:
    """tritonserver flags for `opentelemetry_trace_settings`."""
    return [f"--trace-config={setting}" for setting in opentelemetry_trace_settings(traces_url, rate)]


@dataclass(frozen=True)
class TritonInstall:
    """Paths inside the dedicated Triton virtualenv (numpy<2 + onnxruntime + nvidia-pytriton)."""

    venv: Path

    @property
    def site_packages(self) -> Path:
        return self.venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"

    @property
    def server(self) -> Path:
        return self.site_packages / "pytriton" / "tritonserver" / "bin" / "tritonserver"

    def check(self) -> None:
        """Fail with a hint when the Triton virtualenv is missing."""
        if not self.server.exists():
            raise FileNotFoundError(f"{self.server} not found: run `make triton-env` to create {self.venv}")

    def backend_directory(self, target: Path) -> Path:
        """Assemble python backend + stub for this Python version in `target` (idempotent)."""
        server_root = self.site_packages / "pytriton" / "tritonserver"
        python_backend = target / "python"
        if not (python_backend / "triton_python_backend_stub").exists():
            shutil.rmtree(python_backend, ignore_errors=True)
            shutil.copytree(server_root / "backends" / "python", python_backend)
            shutil.copy2(
                server_root / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub",
                python_backend / "triton_python_backend_stub",
            )
        return target

    def environment(self, path: str) -> dict[str, str]:
        """PATH puts the venv's python3 first: the stub finds its interpreter there, not by PYTHONPATH."""
        return {
            "PATH": f"{self.venv / 'bin'}:{path}",
            "LD_LIBRARY_PATH": str(self.site_packages / "nvidia_pytriton.libs"),
        }

    def command(
        self,
        repository: Path,
        backends: Path,
        http_port: int,
        grpc_port: int,
        metrics_port: int,
        shm_prefix: str = DEFAULT_SHM_PREFIX,
    ) -> list[str]:
        """tritonserver argv serving `repository` on loopback; its python backend's shared memory regions
        are named `shm_prefix...` in /dev/shm."""
        return [
            str(self.server),
            f"--backend-config=python,shm-region-prefix-name={shm_prefix}",
            f"--model-repository={repository}",
            f"--backend-directory={backends}",
            f"--http-port={http_port}",
            f"--grpc-port={grpc_port}",
            f"--metrics-port={metrics_port}",
            "--http-address=127.0.0.1",
            "--grpc-address=127.0.0.1",
            "--metrics-address=127.0.0.1",
            # Poll: a release rolled into the repository (`pcam package --rolling`) loads as new
            # model versions while the previous ones keep serving (docs/architecture.md#rolling-releases).
            "--model-control-mode=poll",
            f"--repository-poll-secs={REPOSITORY_POLL_S}",
            "--strict-readiness=true",
            "--exit-on-error=true",
            "--log-verbose=0",
        ]


def remove_shared_memory(prefix: str, folder: Path = Path("/dev/shm")) -> list[str]:
    """Remove the regions named `prefix...` (a stopped or killed Triton's python backend leaves them
    behind); their names."""
    removed = []
    for region in folder.glob(f"{prefix}*"):
        region.unlink(missing_ok=True)
        removed.append(region.name)
    return removed
