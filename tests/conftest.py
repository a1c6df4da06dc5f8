"""Fixtures every test may use."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PATCHES_DIR = Path(__file__).parent / "data" / "he" / "patches"


@pytest.fixture(scope="session")
def patch_paths() -> list[Path]:
    """The real 96x96 H&E patches (see tests/data/he/README.md for their origin and licenses)."""
    paths = sorted(PATCHES_DIR.glob("*.png"))
    assert paths, f"no patches in {PATCHES_DIR}"
    return paths


@pytest.fixture(scope="session")
def tissue_patches(patch_paths: list[Path]) -> np.ndarray:
    """uint8 (N, 96, 96, 3) of the torchstain-derived patches, which are all tissue."""
    return np.stack(
        [np.asarray(Image.open(p).convert("RGB")) for p in patch_paths if p.name.startswith(("src", "tgt"))]
    )
