"""Which slides a shard of a many-slide run scores."""

from pathlib import Path

import pytest

from training.slides.run import shard_of


@pytest.mark.parametrize(("shard", "positions"), [(None, [0, 1, 2, 3, 4]), ("0/2", [0, 2, 4]), ("1/2", [1, 3]),
                                                  ("2/3", [2]), ("4/5", [4])])  # fmt: skip
def test_a_shard_takes_every_nth_slide_from_its_index(shard: str | None, positions: list[int]) -> None:
    slides = [Path(f"s{i}.svs") for i in range(5)]
    assert shard_of(slides, shard) == [slides[i] for i in positions]


@pytest.mark.parametrize("shard", ["2/2", "1", "-1/3", "a/b", "1/0"])
def test_a_malformed_shard_is_refused_by_name(shard: str) -> None:
    with pytest.raises(ValueError, match="--shard"):
        shard_of([Path("s.svs")], shard)
