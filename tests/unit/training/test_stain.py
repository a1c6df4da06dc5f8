"""Training normalizes with the serving MacenkoNormalizer, once per split, cached while valid."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from services.preprocess.stain import DEFAULT_REFERENCE, MacenkoNormalizer
from training.data.pcam_h5 import read_labels, sample_patches, split_files
from training.stain import fit_reference, normalize_split


def test_reference_is_fitted_from_training_patches(tiny_pcam: Path):
    reference = fit_reference(sample_patches(split_files(tiny_pcam, "train")[0], n=32, seed=0))
    assert reference.stain_matrix != DEFAULT_REFERENCE.stain_matrix
    h, e = np.asarray(reference.stain_matrix).T
    assert h[0] > e[0]  # hematoxylin absorbs more red than eosin


def test_cache_holds_what_the_serving_normalizer_returns(tiny_pcam: Path, tmp_path: Path):
    x, y = split_files(tiny_pcam, "valid")
    reference = fit_reference(sample_patches(split_files(tiny_pcam, "train")[0], n=32, seed=0))
    result = normalize_split(x, y, tmp_path / "valid.h5", reference)
    with h5py.File(x, "r") as src:
        expected = MacenkoNormalizer(reference).normalize(src["x"][:])
    with h5py.File(result.path, "r") as f:
        assert np.array_equal(f["x"][:], expected.images)
        assert np.array_equal(f["applied"][:], expected.applied)
        assert f["x"].chunks == (1, 96, 96, 3)
    assert np.array_equal(read_labels(result.path), read_labels(y))
    assert not result.reused and result.applied == expected.applied.mean()


def test_cache_is_reused_only_for_the_same_reference(tiny_pcam: Path, tmp_path: Path):
    x, y = split_files(tiny_pcam, "valid")
    out = tmp_path / "valid.h5"
    reference = fit_reference(sample_patches(split_files(tiny_pcam, "train")[0], n=32, seed=0))
    normalize_split(x, y, out, reference)
    assert normalize_split(x, y, out, reference).reused
    assert not normalize_split(x, y, out, DEFAULT_REFERENCE).reused
    assert not list(tmp_path.glob("*.tmp.h5"))
