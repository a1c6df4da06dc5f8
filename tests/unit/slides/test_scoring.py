"""Scoring a slide's cells: background sends nothing, and an interrupted run resumes where it stopped."""

from pathlib import Path

import numpy as np
import pytest

from pcam_client.tensor import PixelPredictions
from training.slides.grid import CellGrid
from training.slides.reader import Slide
from training.slides.scoring import Progress, score_cells
from training.slides.tissue import tissue_cells


class CountingScorer:
    """Answers each patch with its mean darkness; counts patches; fails on call number `fail_on`."""

    def __init__(self, release: str = "rel-1", fail_on: int | None = None) -> None:
        self.release, self.fail_on = release, fail_on
        self.calls: list[np.ndarray] = []

    def __call__(self, patches: np.ndarray) -> PixelPredictions:
        if self.fail_on is not None and len(self.calls) + 1 == self.fail_on:
            raise ConnectionError("gateway went away")
        self.calls.append(patches)
        probability = 1 - patches.reshape(len(patches), -1).mean(axis=1).astype(np.float32) / 255
        n = len(patches)
        return PixelPredictions(
            probability, (probability > 0.5).astype(np.int32), np.zeros(n, np.float32), probability > 0.9,
            "balanced", 0.5, self.release, (self.release,), False, 0,
        )  # fmt: skip

    @property
    def patches(self) -> int:
        return sum(map(len, self.calls))


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
