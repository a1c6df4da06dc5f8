"""Release hot reload: a new, valid release.json is handed over once; anything else keeps the current."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from prometheus_client import REGISTRY

from pcam_core.release import RELEASE_FILENAME, ReleaseManifest, load_release
from services.common.release_watch import ReleaseWatcher, watching
from tests.unit.common.release_fixture import write_test_release


def rejected(reason: str) -> float:
    return (
        REGISTRY.get_sample_value("pcam_release_rejected_total", {"service": "test", "reason": reason}) or 0.0
    )


class Recorder:
    def __init__(self, fail: int = 0) -> None:
        self.seen: list[str] = []
        self.fail = fail

    async def __call__(self, manifest: ReleaseManifest) -> None:
        if self.fail:
            self.fail -= 1
            raise RuntimeError("models not ready")
        self.seen.append(manifest.release_id)


async def test_a_new_release_is_handed_over_once(tmp_path: Path):
    recorder = Recorder()
    watcher = ReleaseWatcher(tmp_path, write_test_release(tmp_path, "r1"), recorder, service="test")
    assert not await watcher.check()
    write_test_release(tmp_path, "r2")
    assert await watcher.check() and recorder.seen == ["r2"] and watcher.release_id == "r2"
    assert not await watcher.check()
    write_test_release(tmp_path, "r2")  # rewritten, same release: nothing to do
    assert not await watcher.check() and recorder.seen == ["r2"]


async def test_an_unreadable_release_keeps_the_current(tmp_path: Path):
    recorder = Recorder()
    watcher = ReleaseWatcher(tmp_path, write_test_release(tmp_path, "r1"), recorder, service="test")
    before = rejected("unreadable")
    (tmp_path / RELEASE_FILENAME).write_text("{not json")
    assert not await watcher.check()
    assert rejected("unreadable") == before + 1  # counted once, not at every look
    assert not await watcher.check() and rejected("unreadable") == before + 1
    (tmp_path / RELEASE_FILENAME).unlink()
    assert not await watcher.check()
    assert recorder.seen == [] and watcher.release_id == "r1"


async def test_a_release_that_fails_to_load_is_tried_again_after_a_pause(tmp_path: Path):
    recorder = Recorder(fail=1)
    watcher = ReleaseWatcher(
        tmp_path, write_test_release(tmp_path, "r1"), recorder, retry_failed_s=0.2, service="test"
    )
    before = rejected("not_taken_up")
    write_test_release(tmp_path, "r2")
    assert not await watcher.check() and watcher.release_id == "r1"
    assert rejected("not_taken_up") == before + 1
    assert not await watcher.check() and recorder.fail == 0 and recorder.seen == []  # not tried again yet
    await asyncio.sleep(0.25)
    assert await watcher.check() and recorder.seen == ["r2"]


async def test_the_poll_loop_runs_for_the_block_only(tmp_path: Path):
    recorder = Recorder()
    watcher = ReleaseWatcher(
        tmp_path, write_test_release(tmp_path, "r1"), recorder, interval_s=0.01, service="test"
    )
    async with watching(watcher):
        write_test_release(tmp_path, "r2")
        for _ in range(200):
            if recorder.seen:
                break
            await asyncio.sleep(0.01)
    assert recorder.seen == ["r2"]
    write_test_release(tmp_path, "r3")
    await asyncio.sleep(0.05)
    assert recorder.seen == ["r2"]  # stopped with the block


def test_a_repository_replaced_by_a_rename_is_noticed(tmp_path: Path):
    serving, staged = tmp_path / "repo", tmp_path / "staged"
    first = write_test_release(serving, "r1")
    write_test_release(staged, "r2")
    recorder = Recorder()
    watcher = ReleaseWatcher(serving, first, recorder, service="test")
    serving.rename(tmp_path / "old")
    staged.rename(serving)
    assert asyncio.run(watcher.check()) and recorder.seen == ["r2"]
    assert load_release(serving).release_id == "r2"


@pytest.fixture(autouse=True)
def _repository_dirs(tmp_path: Path) -> None:
    for name in ("repo", "staged"):
        (tmp_path / name).mkdir()
