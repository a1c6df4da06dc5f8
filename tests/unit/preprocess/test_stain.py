from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from PIL import Image
from torchstain.numpy.normalizers.macenko import NumpyMacenkoNormalizer

from services.preprocess.stain import DEFAULT_REFERENCE, MacenkoNormalizer, SkipReason

NORMALIZER = MacenkoNormalizer()


def load(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGB"))


def test_every_real_tissue_patch_agrees_with_torchstain(patch_paths: list[Path]) -> None:
    """Same parameters (docs/architecture.md#stain-normalization): within +-2 levels of the reference on every patch."""
    batch = np.stack([load(p) for p in patch_paths])
    ours = NORMALIZER.normalize(batch)
    reference = NumpyMacenkoNormalizer()  # defaults: Io 240, alpha 1, beta 0.15, the same reference
    assert ours.applied.all(), [p.name for p, a in zip(patch_paths, ours.applied, strict=True) if not a]
    worst = {
        path.name: int(
            np.abs(ours.images[i].astype(int) - reference.normalize(batch[i], stains=False)[0]).max()
        )
        for i, path in enumerate(patch_paths)
    }
    assert max(worst.values()) <= 2, {name: d for name, d in worst.items() if d > 2}


def test_fit_agrees_with_torchstain(patch_paths: list[Path]) -> None:
    image = load(patch_paths[0])
    ours = MacenkoNormalizer().fit(image[None]).reference
    reference = NumpyMacenkoNormalizer()
    reference.fit(image)
    np.testing.assert_allclose(ours.stain_matrix, reference.HERef, atol=1e-9)
    np.testing.assert_allclose(ours.max_concentrations, reference.maxCRef, rtol=1e-9)


def test_fitted_reference_is_used(tissue_patches: np.ndarray) -> None:
    fitted = MacenkoNormalizer().fit(tissue_patches)
    assert fitted.reference.stain_matrix != DEFAULT_REFERENCE.stain_matrix
    stains = np.asarray(fitted.reference.stain_matrix)
    np.testing.assert_allclose(np.linalg.norm(stains, axis=0), 1.0, atol=1e-9)
    assert stains[0, 0] > stains[0, 1]  # hematoxylin first: more red optical density
    own = fitted.normalize(tissue_patches)
    default = MacenkoNormalizer().normalize(tissue_patches)
    # Normalizing the fitting data to its own reference changes it less than to the default one.
    change = lambda r: np.abs(r.images.astype(int) - tissue_patches.astype(int)).mean()  # noqa: E731
    assert change(own) < change(default)


def hostile_patches() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    near_empty = np.full((96, 96, 3), 235, np.uint8)
    near_empty[40:44, 40:44] = (120, 60, 140)  # 16 tissue pixels
    saturated = np.full((96, 96, 3), 255, np.uint8)
    saturated[::7, ::7] = 0
    return {
        "white": np.full((96, 96, 3), 255, np.uint8),
        "black": np.zeros((96, 96, 3), np.uint8),
        "background": np.clip(rng.normal(238, 3, (96, 96, 3)), 0, 255).astype(np.uint8),
        "single-color": np.broadcast_to(np.array([150, 80, 160], np.uint8), (96, 96, 3)).copy(),
        "near-empty": near_empty,
        "saturated": saturated,
        "noise": rng.integers(0, 256, (96, 96, 3), dtype=np.uint8),
    }


@pytest.mark.parametrize("name", list(hostile_patches()))
def test_hostile_patches_come_back_unchanged_with_a_reason(name: str) -> None:
    patch = hostile_patches()[name]
    result = NORMALIZER.normalize(patch[None])
    assert not result.applied[0]
    assert isinstance(result.reasons[0], SkipReason)
    np.testing.assert_array_equal(result.images[0], patch)
    assert 0.0 <= result.tissue_fraction[0] <= 1.0


def test_reasons_name_the_cause() -> None:
    patches = hostile_patches()
    reasons = NORMALIZER.normalize(
        np.stack([patches["white"], patches["single-color"], patches["noise"]])
    ).reasons
    assert reasons == (
        SkipReason.INSUFFICIENT_TISSUE,
        SkipReason.DEGENERATE_STAINS,
        SkipReason.IMPLAUSIBLE_STAINS,
    )


@given(batch=arrays(np.uint8, st.tuples(st.integers(1, 3), st.just(96), st.just(96), st.just(3))))
@settings(max_examples=40, deadline=None)
def test_any_uint8_batch_gives_finite_uint8_and_equals_one_by_one(batch: np.ndarray) -> None:
    result = NORMALIZER.normalize(batch)
    assert result.images.dtype == np.uint8 and result.images.shape == batch.shape
    assert np.all(np.isfinite(result.tissue_fraction))
    for i in range(len(batch)):
        single = NORMALIZER.normalize(batch[i : i + 1])
        np.testing.assert_array_equal(result.images[i], single.images[0])
        assert result.applied[i] == single.applied[0] and result.reasons[i] == single.reasons[0]
        if not result.applied[i]:
            np.testing.assert_array_equal(result.images[i], batch[i])


@given(seed=st.integers(0, 2**32 - 1), size=st.integers(1, 6))
@settings(max_examples=15, deadline=None)
def test_real_patches_in_any_batch_composition_give_the_same_answer(
    seed: int, size: int, tissue_patches
) -> None:
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(tissue_patches), size)
    batch = tissue_patches[picks]
    result = NORMALIZER.normalize(batch)
    alone = NORMALIZER.normalize(tissue_patches)
    np.testing.assert_array_equal(result.images, alone.images[picks])


def test_fit_refuses_patches_without_tissue() -> None:
    with pytest.raises(ValueError, match="insufficient_tissue"):
        MacenkoNormalizer().fit(np.full((2, 96, 96, 3), 250, np.uint8))


@pytest.mark.parametrize("bad", [np.zeros((96, 96, 3), np.uint8), np.zeros((1, 96, 96, 3), np.float32)])
def test_wrong_array_types_raise(bad: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        NORMALIZER.normalize(bad)


def test_concurrent_callers_get_the_single_threaded_answer(tissue_patches: np.ndarray) -> None:
    from concurrent.futures import ThreadPoolExecutor

    expected = NORMALIZER.normalize(tissue_patches).images
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: NORMALIZER.normalize(tissue_patches).images, range(8)))
    for images in results:
        np.testing.assert_array_equal(images, expected)
