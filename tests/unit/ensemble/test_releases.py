"""The ensemble's releases: a new one becomes current only when its models are ready; the previous stays."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.ensemble.releases import ReleaseNotReady, ReleaseRegistry
from tests.unit.common.release_fixture import write_test_release


async def test_a_ready_release_becomes_current_and_the_old_one_previous(tmp_path: Path):
    first, second = write_test_release(tmp_path, "r1"), write_test_release(tmp_path, "r2")
    answers = iter([False, False, True])

    async def ready(_manifest) -> bool:
        return next(answers)

    registry = ReleaseRegistry(first, ready)
    await registry.take_up(second, poll_s=0.001)
    assert registry.current is second and registry.get("r1") is first and registry.get("r2") is second
    third = write_test_release(tmp_path, "r3")
    registry = ReleaseRegistry(second, ready_always)
    await registry.take_up(third)
    assert registry.get("r1") is None  # two releases back: no longer answered for


async def ready_always(_manifest) -> bool:
    return True


async def test_a_release_whose_models_never_load_is_not_taken_up(tmp_path: Path):
    first, second = write_test_release(tmp_path, "r1"), write_test_release(tmp_path, "r2")

    async def never(_manifest) -> bool:
        return False

    registry = ReleaseRegistry(first, never, ready_timeout_s=0.05)
    with pytest.raises(ReleaseNotReady, match="r2"):
        await registry.take_up(second, poll_s=0.01)
    assert registry.current is first and registry.get("r2") is None


async def test_an_unknown_release_is_looked_for_once_then_refused(tmp_path: Path):
    first, second = write_test_release(tmp_path, "r1"), write_test_release(tmp_path, "r2")
    registry = ReleaseRegistry(first, ready_always)
    looks: list[str] = []

    async def look_again() -> bool:
        looks.append("look")
        await registry.take_up(second)
        return True

    assert await registry.resolve("r1", look_again) is first and looks == []
    assert await registry.resolve("r2", look_again) is second and looks == ["look"]

    async def nothing_new() -> bool:
        return False

    assert await registry.resolve("r9", nothing_new) is None
    assert registry.current is second and await registry.resolve("r1", nothing_new) is first
    # A concurrent look (the poll loop) took the release up while this one waited: found all the same.
    third = write_test_release(tmp_path, "r3")

    async def taken_up_by_the_poll() -> bool:
        await registry.take_up(third)
        return False

    assert await registry.resolve("r3", taken_up_by_the_poll) is third
