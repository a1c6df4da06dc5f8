"""Review flags through the real stack: quiet on the release's own validation split, raised on inputs
that are no H&E patch like it (tests/ood_inputs.py: none made by the training generator)."""

from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from devstack.stack import LocalStack
from pcam_client import PCamClient
from pcam_core.flags import FLAGS
from pcam_core.release import ReleaseManifest
from pcam_core.schemas import Prediction
from tests.ood_inputs import ood_sets
from training.data import pcam_h5

pytestmark = pytest.mark.integration
NEEDS_REVIEW_AT_LEAST = 0.95
FLAGGED_AT_MOST = 0.05


def png(pixels: np.ndarray) -> bytes:
    buffer = BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def predictions(stack: LocalStack, images: np.ndarray, **options: bool) -> list[Prediction]:
    with PCamClient(stack.config.url("gateway"), timeout=120) as client:
        results = client.predict_batch([png(image) for image in images], cache=False, **options)
    assert all(isinstance(r, Prediction) for r in results), [
        r for r in results if not isinstance(r, Prediction)
    ]
    return results  # type: ignore[return-value]


@pytest.fixture(scope="module")
def ood(tissue_patches: np.ndarray, patch_paths: list[Path]) -> dict[str, np.ndarray]:
    every_patch = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in patch_paths])
    assert len(every_patch) > len(tissue_patches)  # the StainTools panels too: more stains
    return ood_sets(every_patch)


def test_the_release_fitted_its_flags_within_budget(release: ReleaseManifest) -> None:
    review = release.review
    assert review is not None and set(review.flags) == set(FLAGS)
    assert review.validation_flagged <= FLAGGED_AT_MOST
    for name, rule in review.flags.items():
        assert rule.validation_rate <= rule.target_rate, name


def test_validation_patches_are_rarely_flagged_as_served(
    stack: LocalStack, release: ReleaseManifest, model_repository: Path
) -> None:
    # The raw validation split the smoke build fitted its rules on (conftest: build in <tmp>/run).
    valid_x, _ = pcam_h5.split_files(model_repository.parent / "run" / "data", "valid")
    images = np.concatenate(list(pcam_h5.iter_images(valid_x)))
    results = predictions(stack, images)
    flagged = np.mean([r.needs_review for r in results])
    assert all(r.needs_review == bool(r.flags) for r in results)
    assert flagged <= FLAGGED_AT_MOST
    # What serving computes is what calibration fitted on: the same share, give or take a patch that
    # sits exactly on a threshold.
    assert release.review is not None
    assert abs(flagged - release.review.validation_flagged) <= 2 / len(images)


def test_out_of_distribution_inputs_need_review(stack: LocalStack, ood: dict[str, np.ndarray]) -> None:
    shares, reasons = {}, {}
    for category, images in ood.items():
        results = predictions(stack, images)
        shares[category] = float(np.mean([r.needs_review for r in results]))
        reasons[category] = sorted({flag for r in results for flag in r.flags})
        assert all(r.label is not None for r in results)  # flagged, still answered: abstain is opt-in
    print("needs_review share by category:", shares, "flags raised:", reasons)
    failing = {c: s for c, s in shares.items() if s < NEEDS_REVIEW_AT_LEAST}
    assert not failing, f"needs_review below {NEEDS_REVIEW_AT_LEAST}: {failing}; all: {shares}"


def test_abstain_withholds_flagged_labels_and_is_its_own_cache_entry(
    stack: LocalStack, ood: dict[str, np.ndarray]
) -> None:
    images = ood["noise"][:4]
    abstained = predictions(stack, images, abstain=True)
    assert all(r.needs_review and r.flags and r.label is None for r in abstained)
    assert all(0.0 <= r.probability <= 1.0 for r in abstained)  # the probability is still given
    with PCamClient(stack.config.url("gateway")) as client:  # read the cache this time
        answered = client.predict_batch([png(image) for image in images])
    assert all(isinstance(r, Prediction) and r.label in (0, 1) and r.flags for r in answered)
