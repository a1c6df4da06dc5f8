"""Progress of the offline commands: bars that change nothing they count, stage lines, shell completion."""

from __future__ import annotations

import logging

import pytest
from typer.testing import CliRunner

from training import progress
from training.cli import app


def test_batches_pass_through_unchanged_while_the_bar_counts_their_items(monkeypatch) -> None:
    counted = []

    class RecordingBar:
        def __init__(self, **options) -> None:
            counted.append(options)

        def __enter__(self):
            return self

        def __exit__(self, *exc) -> None:
            pass

        def update(self, n: int) -> None:
            counted.append(n)

    monkeypatch.setattr(progress, "tqdm", RecordingBar)
    batches = [[1, 2, 3], [4], [5, 6]]
    assert list(progress.with_progress(batches, 6, "scoring")) == batches
    options, *updates = counted
    assert options["total"] == 6 and options["desc"] == "scoring" and options["disable"] is None
    assert updates == [3, 1, 2]


def test_a_stage_logs_its_start_and_elapsed_time(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="training.progress"), progress.stage("[3/6] training"):
        pass
    assert [r.getMessage() for r in caplog.records][0] == "[3/6] training ..."
    assert caplog.records[-1].getMessage().startswith("[3/6] training done in ")


@pytest.mark.parametrize("shell", ["bash", "zsh", "fish"])
def test_pcam_offers_shell_completion(shell: str) -> None:
    result = CliRunner().invoke(app, ["--show-completion", shell], prog_name="pcam")
    assert result.exit_code == 0 and "_PCAM_COMPLETE" in result.output
