"""The whole local stack: Redis, Triton, preprocess, ensemble, gateway, started in dependency order."""

from __future__ import annotations

import logging
import os
import shutil
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

import redis

from devstack.ports import free_ports
from devstack.processes import ManagedProcess, check_ports_free, http_ok
from devstack.triton import TritonInstall, opentelemetry_trace_args, remove_shared_memory
from services.common import ports
from services.common.tracing import otlp_traces_url

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StackPorts:
    gateway: int = ports.GATEWAY
    preprocess: int = ports.PREPROCESS
    ensemble: int = ports.ENSEMBLE
    triton_http: int = ports.TRITON_HTTP
    triton_grpc: int = ports.TRITON_GRPC
    triton_metrics: int = ports.TRITON_METRICS
    redis: int = ports.REDIS

    @classmethod
    def from_env(cls) -> StackPorts:
        """Defaults, each overridable by `PCAM_<NAME>_PORT` (e.g. PCAM_GATEWAY_PORT)."""
        return cls(
            **{
                name: int(os.environ.get(f"PCAM_{name.upper()}_PORT", default))
                for name, default in cls().__dict__.items()
            }
        )

    @classmethod
    def free(cls) -> StackPorts:
        """Free ports for every process, reserved while this process lives (tests)."""
        names = list(cls().__dict__)
        return cls(**dict(zip(names, free_ports(len(names)), strict=True)))


@dataclass
class StackConfig:
    model_repository: Path
    triton_venv: Path
    work_dir: Path
    ports: StackPorts = field(default_factory=StackPorts)
    redis_server: str = "redis-server"
    startup_timeout_s: float = 180.0
    service_environment: dict[str, str] = field(default_factory=dict)
    """Settings for the services on top of this process's environment (e.g. two stacks side by side)."""

    def url(self, service: str) -> str:
        return f"http://127.0.0.1:{getattr(self.ports, service)}"


class LocalStack:
    """Context manager: starts every process, waits for readiness, stops all of them on exit."""

    SERVICES = ("preprocess", "ensemble", "gateway")

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.processes: dict[str, ManagedProcess] = {}

    def __enter__(self) -> LocalStack:
        # A taken port would let readiness probes reach someone else's process (an orphan of an
        # earlier stack): refuse it by name before anything starts.
        check_ports_free(vars(self.config.ports))
        try:
            self._start_redis()
            self._start_triton()
            for service in self.SERVICES:
                self._start_service(service)
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def stop(self) -> None:
        """Stop every started process, last started first; one failing to stop never spares the rest."""
        # A second Ctrl-C while stopping must not leave the remaining processes running.
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
        try:
            for process in reversed(list(self.processes.values())):
                try:
                    process.stop()
                except Exception:
                    logger.exception("stopping %s failed", process.name)
            if "triton" in self.processes:
                remove_shared_memory(self.triton_shm_prefix())
            self.processes.clear()
        finally:
            signal.pthread_sigmask(signal.SIG_SETMASK, previous)

    def restart(self, name: str) -> ManagedProcess:
        """Start process `name` again as the stack started it (same ports, same settings), once ready.

        Whatever is left of the old process (still running, or killed and not yet reaped) is stopped
        first. The process keeps its place in the stop order. Fault-injection tests recover through
        this, so the recovery path is the one `make run` takes.
        """
        starters = {"redis": self._start_redis, "triton": self._start_triton}
        if name not in self.processes or not (name in starters or name in self.SERVICES):
            raise ValueError(f"{name!r} is not a process of this stack: {sorted(self.processes)}")
        self.processes[name].stop()
        if name in starters:
            starters[name]()
        else:
            self._start_service(name)
        return self.processes[name]

    def triton_shm_prefix(self) -> str:
        """Triton's python-backend regions are named for this stack (its gRPC port), so that the stack
        removes what its Triton left in /dev/shm, and nothing of another's."""
        return f"pcam-triton-{self.config.ports.triton_grpc}-"

    def _log(self, name: str) -> Path:
        return self.config.work_dir / "logs" / f"{name}.log"

    def _start_redis(self) -> None:
        server = shutil.which(self.config.redis_server)
        if server is None:
            raise FileNotFoundError(
                "redis-server not found: install it (Debian: apt-get install redis-server)"
            )
        self.processes["redis"] = start_redis(server, self.config.ports.redis, self._log("redis"), "redis")

    def _start_triton(self) -> None:
        install = TritonInstall(self.config.triton_venv)
        install.check()
        backends = install.backend_directory(self.config.work_dir / "triton-backends")
        p = self.config.ports
        remove_shared_memory(self.triton_shm_prefix())  # what a killed Triton of this stack left
        command = install.command(
            self.config.model_repository,
            backends,
            p.triton_http,
            p.triton_grpc,
            p.triton_metrics,
            self.triton_shm_prefix(),
        )
        if traces_url := otlp_traces_url():  # the services trace too: Triton joins their traces
            command += opentelemetry_trace_args(traces_url)
        process = ManagedProcess(
            "triton",
            # Under the guard: Triton's python-backend stubs are its children, out of PR_SET_PDEATHSIG's
            # reach; the guard takes them down with Triton when the stack dies.
            [sys.executable, "-m", "devstack.guard", "--shm-prefix", self.triton_shm_prefix(), *command],
            self._log("triton"),
            env=install.environment(os.environ.get("PATH", "")),
        )
        self.processes["triton"] = process
        process.wait_until(
            http_ok(f"http://127.0.0.1:{p.triton_http}/v2/health/ready"),
            self.config.startup_timeout_s,
            "ready",
        )

    def _start_service(self, service: str) -> None:
        p, prefix = self.config.ports, f"PCAM_{service.upper()}_"
        env = {f"{prefix}PORT": str(getattr(p, service)), f"{prefix}HOST": "127.0.0.1"}
        env.update(
            {
                "preprocess": {f"{prefix}MODEL_REPOSITORY": str(self.config.model_repository)},
                "ensemble": {
                    f"{prefix}MODEL_REPOSITORY": str(self.config.model_repository),
                    f"{prefix}TRITON_GRPC_URL": f"127.0.0.1:{p.triton_grpc}",
                },
                "gateway": {
                    f"{prefix}PREPROCESS_URL": self.config.url("preprocess"),
                    f"{prefix}ENSEMBLE_URL": self.config.url("ensemble"),
                    f"{prefix}REDIS_URL": f"redis://127.0.0.1:{p.redis}/0",
                },
            }[service]
        )
        env.update(self.config.service_environment)
        argv = [sys.executable, *service_arguments(service)]
        process = ManagedProcess(service, argv, self._log(service), env=env)
        self.processes[service] = process
        process.wait_until(
            http_ok(f"{self.config.url(service)}/readyz"), self.config.startup_timeout_s, "ready"
        )


def service_arguments(service: str) -> list[str]:
    """The Python arguments that run a service: the same as its image's CMD (tested)."""
    return ["-m", f"services.{service}"]


def start_redis(server: str, port: int, log: Path, name: str, password: str | None = None) -> ManagedProcess:
    """A redis-server on loopback without persistence, started and answering PING (stopped on failure).

    With `password`, clients must AUTH; it goes into a 0600 config file beside the log, never onto the
    command line (which `ps` shows to every user).
    """
    command = [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
    if password is not None:
        config = log.with_suffix(".conf")
        descriptor = os.open(config, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.fchmod(descriptor, 0o600)  # also when the file existed with a wider mode
        with os.fdopen(descriptor, "w") as stream:
            stream.write(f"requirepass {password}\n")
        command.insert(1, str(config))
    process = ManagedProcess(name, command, log)
    client = redis.Redis(port=port, socket_timeout=1, password=password)

    def pong() -> bool:
        try:
            return bool(client.ping())
        except redis.RedisError:
            return False

    try:
        process.wait_until(pong, 30, "answering PING")
    except BaseException:
        process.stop()
        raise
    finally:
        client.close()
    return process
