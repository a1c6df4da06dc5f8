"""The preprocess service's input measures and flags (services/preprocess/quality.py)."""

import numpy as np
import pytest

from pcam_core.flags import BLURRED, INPUT_FLAGS, LOW_TISSUE, OFF_STAIN_COLOUR, STAIN_OUTLIER
from pcam_core.release import ReviewRules
from pcam_core.review import fit_rule
from services.preprocess.quality import (
    DISTANCE_BINS,
    INPUT_FLAG_ABOVE,
    fit_stain_distribution,
    input_flags,
    input_scores,
    measure,
)
from services.preprocess.stain import MacenkoNormalizer
from tests.ood_inputs import blurred, pen_marked
from training.data.synthetic import generate_split


def measured(images: np.ndarray, normalizer: MacenkoNormalizer, rules: ReviewRules | None = None):
    result = normalizer.normalize(images)
    distribution = rules.stain if rules is not None else None
    return measure(images, result, normalizer, distribution)


def mixes_of(reference_stains: np.ndarray, rng: np.random.Generator, n: int = 8) -> np.ndarray:
    """Patches rendered by Beer-Lambert from non-negative amounts of exactly two stains."""
    amounts = rng.uniform(0.0, 1.5, size=(n, 96, 96, 2))
    density = amounts @ reference_stains.T
    return np.clip(240.0 * np.exp(-density) - 1.0, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def in_distribution() -> tuple[np.ndarray, np.ndarray]:
    """Synthetic patches: a fitting half and a held-out half."""
    patches, _ = generate_split(512, seed=3)
    return patches.images[:256], patches.images[256:]


@pytest.fixture(scope="module")
def rules(in_distribution) -> tuple[ReviewRules, MacenkoNormalizer]:
    """Input rules fitted as pcam calibrate fits them, at 1 %, on the fitting half."""
    fitting, _ = in_distribution
    normalizer = MacenkoNormalizer().fit(fitting)
    result = normalizer.normalize(fitting)
    stain = fit_stain_distribution(result.stains, result.max_concentrations)
    shell = ReviewRules(stain=stain, feature_scales={}, flags={}, validation_patches=1, validation_flagged=0)
    scores = input_scores(measured(fitting, normalizer, shell))
    flags = {name: fit_rule(scores[name], 0.01, INPUT_FLAG_ABOVE[name]) for name in INPUT_FLAGS}
    return shell.model_copy(update={"flags": flags}), normalizer


def test_pure_stain_mixes_have_no_off_stain_colour_and_ink_has_much(tissue_patches: np.ndarray) -> None:
    normalizer = MacenkoNormalizer()
    stains = np.asarray(normalizer.reference.stain_matrix)
    mixes = measured(mixes_of(stains, np.random.default_rng(0)), normalizer)
    assert mixes.off_stain_colour.max() <= np.sqrt(1 / DISTANCE_BINS)  # the histogram's first bin
    inked = measured(pen_marked(np.random.default_rng(1), tissue_patches[:8]), normalizer)
    assert inked.off_stain_colour.min() > 0.2


def test_blur_lowers_sharpness(tissue_patches: np.ndarray) -> None:
    normalizer = MacenkoNormalizer()
    sharp = measured(tissue_patches, normalizer).sharpness
    soft = measured(blurred(np.random.default_rng(2), tissue_patches), normalizer).sharpness
    assert np.all(soft < sharp / 3)


def test_stain_distance_is_nan_without_tissue_and_infinite_without_an_h_and_e_estimate(
    rules, in_distribution
) -> None:
    review, normalizer = rules
    white = np.full((1, 96, 96, 3), 250, np.uint8)
    flat = np.broadcast_to(np.array([120, 60, 160], np.uint8), (1, 96, 96, 3))  # one colour: no two stains
    noise = np.random.default_rng(4).integers(0, 256, (1, 96, 96, 3), dtype=np.uint8)
    held_out = in_distribution[1][:32]
    distance = measured(np.concatenate([white, flat, noise, held_out]), normalizer, review).stain_distance
    assert np.isnan(distance[0]) and np.isinf(distance[1])
    assert distance[2] > np.nanmax(distance[3:])  # noise gets an estimate, far from every real one
    assert np.all(np.isfinite(distance[3:][~np.isnan(distance[3:])]))


def test_fitted_rules_stay_quiet_on_held_out_patches_and_fire_on_their_corruptions(
    rules, in_distribution
) -> None:
    """The mechanism on in-distribution patches (the OOD acceptance uses no generator patch:
    tests/integration/test_review_flags.py): each corruption trips the flag that measures it."""
    review, normalizer = rules
    _, held_out = in_distribution
    rng = np.random.default_rng(5)
    quiet = input_flags(measured(held_out, normalizer, review), review)
    assert np.mean([bool(f) for f in quiet]) <= 0.08  # four flags at 1 %, on 256 fresh patches
    soft = input_flags(measured(blurred(rng, held_out), normalizer, review), review)
    assert np.mean([BLURRED in f for f in soft]) >= 0.95
    inked = input_flags(measured(pen_marked(rng, held_out), normalizer, review), review)
    assert np.mean([OFF_STAIN_COLOUR in f or STAIN_OUTLIER in f for f in inked]) >= 0.95
    white = input_flags(measured(np.full((4, 96, 96, 3), 245, np.uint8), normalizer, review), review)
    assert all(LOW_TISSUE in f for f in white)


def test_without_rules_nothing_fires(tissue_patches: np.ndarray) -> None:
    assert input_flags(measured(tissue_patches[:3], MacenkoNormalizer()), None) == [[], [], []]


def test_every_measure_is_the_same_for_a_turned_or_flipped_patch(tissue_patches: np.ndarray) -> None:
    normalizer = MacenkoNormalizer()
    patches = tissue_patches[:6]
    plain = measured(patches, normalizer)
    for view in (np.rot90(patches, 1, axes=(1, 2)), np.rot90(patches, 2, axes=(1, 2)), patches[:, :, ::-1]):
        turned = measured(np.ascontiguousarray(view), normalizer)
        np.testing.assert_array_equal(turned.off_stain_colour, plain.off_stain_colour)
        np.testing.assert_allclose(turned.sharpness, plain.sharpness, rtol=1e-6)
        np.testing.assert_array_equal(turned.tissue_fraction, plain.tissue_fraction)
