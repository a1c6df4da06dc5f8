import random
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from devstack import ports
from devstack.ports import bindable, ephemeral_range, free_ports, reserve

ROOT = Path(__file__).resolve().parents[3]


class Scripted(random.Random):
    """Picks the given ports in order."""

    def __init__(self, picks: list[int]) -> None:
        super().__init__()
        self.picks = iter(picks)

    def choice(self, seq):  # noqa: ANN001, ANN201 (random.Random's signature)
        pick = next(self.picks)
        assert pick in seq
        return pick


@pytest.fixture
def own_reservations(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Reservations in a folder of this test's, apart from those of the rest of the run."""
    monkeypatch.setattr(ports, "RESERVATIONS", tmp_path / "reservations")
    return tmp_path / "reservations"


def unused_ports(count: int) -> Iterator[int]:
    """Ports under the ephemeral range that this process has not reserved and no server holds."""
    rng = random.Random(7)
    found = 0
    while found < count:
        port = rng.randrange(ports.LOWEST, ephemeral_range().start)
        if port not in ports._held and bindable(port):
            found += 1
            yield port


def in_child(code: str) -> str:
    """What a separate Python process prints running `code` (devstack importable)."""
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True, timeout=60
    ).stdout.strip()


def test_ports_are_distinct_below_the_ephemeral_range_free_and_reserved() -> None:
    picked = free_ports(7)
    assert len(set(picked)) == 7
    assert all(ports.LOWEST <= port < ephemeral_range().start for port in picked)
    assert all(bindable(port) for port in picked)
    assert not any(reserve(port) for port in picked)  # a second pick in this process skips them too


def test_another_process_cannot_have_a_reserved_port_until_its_holder_exits(own_reservations: Path) -> None:
    child = f"from pathlib import Path; from devstack import ports; ports.RESERVATIONS = Path({str(own_reservations)!r})"
    mine = free_ports(1)[0]
    assert in_child(f"{child}; print(ports.reserve({mine}))") == "False"
    theirs = int(in_child(f"{child}; print(ports.free_port())"))
    assert reserve(theirs)  # the kernel dropped the child's lock when it exited


def test_a_port_some_server_holds_is_skipped(own_reservations: Path) -> None:
    taken, free = unused_ports(2)
    with socket.socket() as server:
        server.bind(("127.0.0.1", taken))
        server.listen()
        assert free_ports(1, rng=Scripted([taken, free])) == [free]


def test_the_ephemeral_range_is_read_from_the_kernel_setting(tmp_path: Path) -> None:
    setting = tmp_path / "ip_local_port_range"
    setting.write_text("32768\t60999\n")
    assert ephemeral_range(setting) == range(32768, 61000)
