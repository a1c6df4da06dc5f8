import numpy as np
import pytest

from services.preprocess.stain import DEFAULT_REFERENCE, MacenkoNormalizer, SkipReason


def test_tissue_patches_are_normalized(tissue_patches: np.ndarray) -> None:
    result = MacenkoNormalizer().normalize(tissue_patches)
    assert result.images.dtype == np.uint8 and result.images.shape == tissue_patches.shape
    assert result.applied.all()
    assert all(reason is None for reason in result.reasons)
    assert ((result.tissue_fraction > 0) & (result.tissue_fraction <= 1)).all()
    assert not np.array_equal(result.images, tissue_patches)


@pytest.mark.parametrize("value", [0, 255, 240])
def test_flat_patches_come_back_unchanged_with_a_reason(value: int) -> None:
    flat = np.full((1, 96, 96, 3), value, dtype=np.uint8)
    result = MacenkoNormalizer().normalize(flat)
    assert not result.applied[0]
    assert result.reasons[0] in (SkipReason.INSUFFICIENT_TISSUE, SkipReason.DEGENERATE_STAINS)
    np.testing.assert_array_equal(result.images, flat)


def test_batch_equals_one_by_one(tissue_patches: np.ndarray) -> None:
    normalizer = MacenkoNormalizer()
    mixed = np.concatenate([tissue_patches[:3], np.full((1, 96, 96, 3), 255, np.uint8)])
    batch = normalizer.normalize(mixed)
    for i, patch in enumerate(mixed):
        single = normalizer.normalize(patch[None])
        np.testing.assert_array_equal(batch.images[i], single.images[0])
        assert batch.applied[i] == single.applied[0]


def test_fit_moves_the_reference_to_the_data(tissue_patches: np.ndarray) -> None:
    fitted = MacenkoNormalizer().fit(tissue_patches).reference
    assert fitted.stain_matrix != DEFAULT_REFERENCE.stain_matrix
    stains = np.asarray(fitted.stain_matrix)
    np.testing.assert_allclose(np.linalg.norm(stains, axis=0), 1.0, atol=1e-6)
    assert stains[0, 0] > stains[0, 1]  # hematoxylin first: more red optical density
    # Normalizing the fitting data to its own reference changes it little.
    own = MacenkoNormalizer(fitted).normalize(tissue_patches)
    assert np.abs(own.images.astype(int) - tissue_patches.astype(int)).mean() < 20


def test_fit_refuses_patches_without_tissue() -> None:
    with pytest.raises(ValueError, match="tissue"):
        MacenkoNormalizer().fit(np.full((2, 96, 96, 3), 250, np.uint8))
