"""A small synthetic pyramidal slide, written once per session."""

import pytest

from training.slides.synthetic import SyntheticSlide, write_synthetic_slide


@pytest.fixture(scope="session")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory) -> SyntheticSlide:
    return write_synthetic_slide(
        tmp_path_factory.mktemp("slides") / "synthetic.tiff", size=(576, 768), seed=3
    )
