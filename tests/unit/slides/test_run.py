"""Which slides a shard of a many-slide run scores, and which it skips as done."""

from pathlib import Path

import pytest

from tests.unit.slides.counting import CountingScorer
from training.slides.run import predict_slide, shard_of


@pytest.mark.parametrize(("shard", "positions"), [(None, [0, 1, 2, 3, 4]), ("0/2", [0, 2, 4]), ("1/2", [1, 3]),
                                                  ("2/3", [2]), ("4/5", [4])])  # fmt: skip
def test_a_shard_takes_every_nth_slide_from_its_index(shard: str | None, positions: list[int]) -> None:
    slides = [Path(f"s{i}.svs") for i in range(5)]
    assert shard_of(slides, shard) == [slides[i] for i in positions]


@pytest.mark.parametrize("shard", ["2/2", "1", "-1/3", "a/b", "1/0"])
def test_a_malformed_shard_is_refused_by_name(shard: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        shard_of([Path("s.svs")], shard)


class Fails:
    """A scorer that must not be called."""

    def __call__(self, patches):
        raise AssertionError("a finished slide was scored again")


def test_a_finished_slide_is_skipped_unless_its_run_changed(synthetic_slide, tmp_path: Path) -> None:
    first = predict_slide(synthetic_slide.path, CountingScorer(), tmp_path, "balanced", show=False)
    assert (
        first.run and predict_slide(synthetic_slide.path, Fails(), tmp_path, "balanced", show=False) == first
    )
    again = CountingScorer()
    predict_slide(synthetic_slide.path, again, tmp_path, "balanced", show=False, rescore=True)
    other_point = CountingScorer()
    predict_slide(synthetic_slide.path, other_point, tmp_path, "screening", show=False)
    assert again.patches == other_point.patches == first.tissue_cells
