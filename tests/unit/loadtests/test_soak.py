"""make soak's memory verdict and its resident-memory reading."""

import os

from devstack.groups import resident_bytes
from loadtests.soak import growth_violations

MIB = 2**20


def test_growth_within_the_bound_passes_and_beyond_it_is_named() -> None:
    before = {"gateway": 100 * MIB, "triton": 400 * MIB}
    assert growth_violations(before, {"gateway": 110 * MIB, "triton": 380 * MIB}, 0.10) == []
    (violation,) = growth_violations(before, {"gateway": 111 * MIB, "triton": 400 * MIB}, 0.10)
    assert violation.startswith("gateway: 100 -> 111 MiB")


def test_a_vanished_process_is_not_a_growth() -> None:
    assert growth_violations({"redis": 10 * MIB}, {}, 0.10) == []


def test_resident_bytes_of_this_process_group_include_this_process() -> None:
    mine = resident_bytes(os.getpgid(0))
    assert mine > 10 * MIB  # a Python interpreter with pytest loaded
