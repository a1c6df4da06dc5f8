"""`make run`: build the demo model repository if there is none, start the stack, wait for Ctrl-C."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import time
from pathlib import Path

from devstack.processes import PortTakenError
from devstack.repository import build_repository
from devstack.stack import LocalStack, StackConfig, StackPorts
from devstack.supervisor import Supervisor
from pcam_core.release import RELEASE_FILENAME

EXAMPLE_PATCH = Path("tests/data/he/patches/src_r1c1.png")


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack", description=__doc__)
    parser.add_argument("--model-repository", type=Path, default=Path("model_repository"))
    parser.add_argument("--config", type=Path, default=Path("training/configs/demo.yaml"))
    parser.add_argument("--triton-venv", type=Path, default=Path(".venv-triton"))
    parser.add_argument("--work-dir", type=Path, default=Path("build/stack"))
    parser.add_argument(
        "--no-restart",
        action="store_true",
        help="stop the whole stack when any process exits, instead of starting that process again",
    )
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # not every readiness poll

    if not (args.model_repository / RELEASE_FILENAME).exists():
        print(
            f"No release in {args.model_repository}: building the demo repository from {args.config}",
            flush=True,
        )
        build_repository(args.config, args.model_repository)
    # Ctrl-C and SIGTERM both unwind the stack's context manager, which stops every process.
    # SIGINT is set explicitly: a shell starting us in the background would have it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    config = StackConfig(
        model_repository=args.model_repository.resolve(),
        triton_venv=args.triton_venv.resolve(),
        work_dir=args.work_dir.resolve(),
        ports=StackPorts.from_env(),
    )
    try:
        with LocalStack(config) as stack:
            _print_banner(stack)
            if not args.no_restart:
                supervisor = Supervisor(stack)
                while True:
                    supervisor.watch()
                    time.sleep(1)
            while all(p.alive() for p in stack.processes.values()):
                time.sleep(1)
            dead = [name for name, p in stack.processes.items() if not p.alive()]
            print(f"Stopping: {', '.join(dead)} exited (logs in {config.work_dir / 'logs'})", file=sys.stderr)
            return 1
    except PortTakenError as exc:
        print(f"Not started: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 0
    finally:
        print("Stopped every process of the stack.", flush=True)


def _print_banner(stack: LocalStack) -> None:
    """What this stack started and where: only its own processes (by pid), none found on a port."""
    config = stack.config
    gateway = config.url("gateway")
    pid = {name: process.popen.pid for name, process in stack.processes.items()}
    print(
        f"""
PCam platform is up (research use only). Logs: {config.work_dir / "logs"}
  gateway     {gateway}   (OpenAPI: {gateway}/docs; pid {pid["gateway"]})
  preprocess  {config.url("preprocess")}   (pid {pid["preprocess"]})
  ensemble    {config.url("ensemble")}   (pid {pid["ensemble"]})
  triton      http://127.0.0.1:{config.ports.triton_http} (gRPC {config.ports.triton_grpc}, metrics {config.ports.triton_metrics}; pid {pid["triton"]})
  redis       127.0.0.1:{config.ports.redis}   (pid {pid["redis"]})

Try:
  curl -s -F file=@{EXAMPLE_PATCH} '{gateway}/v1/predict?operating_point=screening'

A process that exits is started again (--no-restart: stop everything instead). Ctrl-C stops everything.""",
        flush=True,
    )


if __name__ == "__main__":
    sys.exit(main())
