"""Scoring a slide's cells: background sends nothing, and an interrupted run resumes where it stopped."""

from pathlib import Path

import numpy as np
import pytest

from tests.unit.slides.counting import CountingScorer
from training.slides.grid import CellGrid
from training.slides.reader import Slide
from training.slides.scoring import Progress, score_cells
from training.slides.tissue import tissue_cells


@pytest.fixture
def setup(synthetic_slide):
    with Slide(synthetic_slide.path) as slide:
        grid = CellGrid.over(slide.size)
        yield slide, grid, tissue_cells(slide.thumbnail(grid.stride))


def test_only_tissue_cells_are_read_and_sent(setup) -> None:
    slide, grid, tissue = setup
    assert 0 < tissue.sum() < tissue.size  # the synthetic section is surrounded by glass
    scorer = CountingScorer()
    progress = score_cells(slide, grid, tissue, scorer, Progress.empty(grid, "k"), batch=64, show=False)
    assert scorer.patches == tissue.sum() and (progress.done == tissue).all()
    assert np.isnan(progress.probability[~tissue]).all() and not np.isnan(progress.probability[tissue]).any()
    assert [len(call) for call in scorer.calls[:-1]] == [64] * (len(scorer.calls) - 1)  # the last: the rest
    assert progress.release == "rel-1" and progress.threshold == 0.5


def test_an_interrupted_run_resumes_without_scoring_finished_cells_again(setup, tmp_path: Path) -> None:
    slide, grid, tissue = setup
    checkpoint = tmp_path / "slide.progress.npz"
    broken = CountingScorer(fail_on=3)
    with pytest.raises(ConnectionError):
        score_cells(
            slide, grid, tissue, broken, Progress.empty(grid, "run"), checkpoint, batch=32, show=False
        )
    resumed = Progress.resume(checkpoint, grid, "run")
    assert resumed.done.sum() == broken.patches > 0
    finishing = CountingScorer()
    done = score_cells(slide, grid, tissue, finishing, resumed, checkpoint, batch=32, show=False)
    assert broken.patches + finishing.patches == tissue.sum() and (done.done == tissue).all()
    whole = score_cells(
        slide, grid, tissue, CountingScorer(), Progress.empty(grid, "x"), batch=32, show=False
    )
    np.testing.assert_array_equal(done.probability, whole.probability)  # the same answer as one run


def test_a_checkpoint_of_another_run_is_not_resumed(setup, tmp_path: Path) -> None:
    slide, grid, tissue = setup
    checkpoint = tmp_path / "slide.progress.npz"
    score_cells(slide, grid, tissue, CountingScorer(), Progress.empty(grid, "first"), checkpoint, show=False)
    assert Progress.resume(checkpoint, grid, "first").done.sum() == tissue.sum()
    assert Progress.resume(checkpoint, grid, "other options").done.sum() == 0


def test_a_release_change_mid_run_stops_the_run(setup) -> None:
    slide, grid, tissue = setup
    progress = Progress.empty(grid, "k")
    progress.release = "rel-0"  # what the checkpoint's cells were scored by
    with pytest.raises(RuntimeError, match="rel-0 -> rel-1"):
        score_cells(slide, grid, tissue, CountingScorer(), progress, show=False)


def test_calls_overlap_up_to_the_concurrency_and_no_further(setup) -> None:
    slide, grid, tissue = setup
    scorer = CountingScorer(
        meet=3
    )  # the first three calls wait for each other: they must be in flight at once
    progress = score_cells(
        slide, grid, tissue, scorer, Progress.empty(grid, "k"), batch=32, show=False, concurrency=3
    )
    assert scorer.peak == 3 and len(scorer.calls) > 3
    alone = score_cells(
        slide, grid, tissue, CountingScorer(), Progress.empty(grid, "k"), batch=32, show=False
    )
    np.testing.assert_array_equal(progress.probability, alone.probability)


def test_a_failed_call_keeps_what_the_calls_beside_it_answered(setup, tmp_path: Path) -> None:
    slide, grid, tissue = setup
    checkpoint = tmp_path / "slide.progress.npz"
    broken = CountingScorer(fail_on=2, meet=3)
    with pytest.raises(ConnectionError):
        score_cells(
            slide, grid, tissue, broken, Progress.empty(grid, "run"), checkpoint, batch=32, show=False,
            concurrency=3,
        )  # fmt: skip
    resumed = Progress.resume(checkpoint, grid, "run")
    assert len(broken.calls) >= 2 and resumed.done.sum() == broken.patches  # calls 1 and 3 were kept
    finishing = CountingScorer()
    score_cells(slide, grid, tissue, finishing, resumed, checkpoint, batch=32, show=False, concurrency=3)
    assert broken.patches + finishing.patches == tissue.sum() and (resumed.done == tissue).all()
