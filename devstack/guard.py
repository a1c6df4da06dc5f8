"""`python -m devstack.guard [--shm-prefix P] COMMAND...`: run COMMAND in this process group and take
the whole group down when the stack that started it dies.

PR_SET_PDEATHSIG reaches only a direct child of the stack. Triton's python-backend stubs are Triton's
children: when Triton is killed they are orphaned and, measured here, can keep running. The stack starts
Triton under this guard instead; the guard leads the process group, gets SIGTERM when the stack dies,
kills every other member of the group (Triton and each stub) with SIGKILL and removes the shared-memory
regions named `P...` that they leave. A SIGTERM while the stack lives is an ordinary stop (it reached
the whole group): the guard waits for COMMAND and exits with its status.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys

from devstack.groups import group_members
from devstack.processes import die_with_parent
from devstack.triton import remove_shared_memory


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m devstack.guard", description=__doc__)
    parser.add_argument("--shm-prefix", default="", help="remove /dev/shm/<prefix>* when the stack dies")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    if not args.command:
        parser.error("COMMAND is required")
    stack = os.getppid()
    die_with_parent(signal.SIGTERM, parent=stack)()

    def on_term(signum: int, _frame: object) -> None:
        if os.getppid() == stack:
            return  # an ordinary stop: COMMAND got the same signal; wait for it below
        for pid in group_members(os.getpgrp()):
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):  # it may end on its own meanwhile
                    os.kill(pid, signal.SIGKILL)
        if args.shm_prefix:
            remove_shared_memory(args.shm_prefix)
        os._exit(128 + signal.SIGKILL)

    signal.signal(signal.SIGTERM, on_term)
    child = subprocess.Popen(args.command)
    status = child.wait()
    return 128 - status if status < 0 else status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
