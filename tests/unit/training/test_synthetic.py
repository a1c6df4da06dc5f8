"""The synthetic set: PCam's center-32 rule, periphery decoys, determinism, HDF5 layout."""

from __future__ import annotations

import csv
from pathlib import Path

import h5py
import numpy as np
import pytest

from training.data.pcam_h5 import meta_file, split_files
from training.data.synthetic import Kind, SlideStains, generate_split, render


@pytest.fixture(scope="module")
def patches():
    return generate_split(1200, seed=11)[0]


def test_labels_follow_the_center_32_rule(patches):
    center = patches.tumor_mask[:, 32:64, 32:64]  # rows/cols 32..63, written out independently
    assert np.array_equal(patches.labels, center.any(axis=(1, 2)).astype(np.uint8))
    assert patches.labels.dtype == np.uint8


def test_kinds_render_as_intended(patches):
    kinds, labels, anywhere = patches.kinds, patches.labels, patches.tumor_mask.any(axis=(1, 2))
    assert (labels[kinds == Kind.POSITIVE] == 1).all()
    assert (labels[kinds != Kind.POSITIVE] == 0).all()
    assert not anywhere[kinds == Kind.NEGATIVE].any()


def test_periphery_only_decoys_exist_and_are_negative(patches):
    decoy = patches.tumor_mask.any(axis=(1, 2)) & (patches.labels == 0)
    negatives = patches.labels == 0
    assert 0.15 <= decoy.sum() / negatives.sum() <= 0.35
    # A decoy's tumor is real tumor, just outside the center region.
    assert patches.tumor_mask[decoy].sum(axis=(1, 2)).min() > 0
    assert not patches.tumor_mask[decoy][:, 32:64, 32:64].any()


def test_about_half_positive(patches):
    assert 0.4 <= patches.labels.mean() <= 0.6


def test_tumor_nuclei_are_dark_hematoxylin(patches):
    gray = patches.images.astype(float).mean(axis=-1)
    mask = patches.tumor_mask
    assert gray[mask].mean() < gray[~mask].mean() - 60


def test_same_tissue_looks_different_on_another_slide():
    stains = SlideStains.sample(np.random.default_rng(0), 2)
    kinds = np.array([Kind.POSITIVE, Kind.NEGATIVE] * 8)
    on_slide = [render(np.random.default_rng(1), kinds, np.full(16, s), stains) for s in (0, 1)]
    assert np.array_equal(on_slide[0].tumor_mask, on_slide[1].tumor_mask)  # same tissue ...
    color = [p.images.reshape(-1, 3).astype(float).mean(axis=0) for p in on_slide]
    assert np.abs(color[0] - color[1]).max() > 5  # ... other stain: what normalization must undo


def test_same_seed_same_data_other_seed_other_data():
    a, slides_a = generate_split(200, seed=5)
    b, slides_b = generate_split(200, seed=5)
    c, _ = generate_split(200, seed=6)
    assert np.array_equal(a.images, b.images) and np.array_equal(a.labels, b.labels)
    assert np.array_equal(slides_a, slides_b)
    assert not np.array_equal(a.images, c.images)


def test_files_follow_pcam_layout(tiny_pcam: Path):
    expected = generate_split(96, seed=7, split_index=0)[0]
    x_path, y_path = split_files(tiny_pcam, "train")
    assert x_path.name == "camelyonpatch_level_2_split_train_x.h5"
    assert y_path.name == "camelyonpatch_level_2_split_train_y.h5"
    with h5py.File(x_path, "r") as fx, h5py.File(y_path, "r") as fy:
        assert list(fx.keys()) == ["x"] and list(fy.keys()) == ["y"]
        assert fx["x"].dtype == np.uint8 and fx["x"].shape == (96, 96, 96, 3)
        assert fx["x"].chunks == (1, 96, 96, 3)
        assert fy["y"].dtype == np.uint8 and fy["y"].shape == (96, 1, 1, 1)
        assert np.array_equal(fx["x"][:], expected.images)
        assert np.array_equal(fy["y"][:].reshape(-1), expected.labels)
    for split, n in (("valid", 64), ("test", 16)):
        with h5py.File(split_files(tiny_pcam, split)[0], "r") as f:
            assert f["x"].shape == (n, 96, 96, 3)


def test_meta_csv_matches_labels_and_names_slides(tiny_pcam: Path):
    with meta_file(tiny_pcam, "valid").open(newline="") as f:
        rows = list(csv.DictReader(f))
    labels = generate_split(64, seed=7, split_index=1)[0].labels
    assert [r["center_tumor_patch"] == "True" for r in rows] == [bool(v) for v in labels]
    assert all(r["wsi"].startswith("synthetic_valid_slide_") for r in rows)
    assert {"coord_y", "coord_x", "tumor_patch"} <= set(rows[0])
