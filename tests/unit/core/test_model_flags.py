"""The ensemble's review flags in answers (pcam_core.serving.model_flags) under fitted rules."""

import numpy as np

from pcam_core.flags import FEATURE_OUTLIER, MEMBER_DISAGREEMENT, TTA_INCONSISTENCY
from pcam_core.release import ReleaseManifest, ReviewRules, StainDistribution
from pcam_core.review import fit_rule
from pcam_core.serving import answer
from tests.unit.ensemble.fakes import release_with

STAIN = StainDistribution(
    mean=(0.0,) * 8, precision=tuple(tuple(float(i == j) for j in range(8)) for i in range(8)), patches=16
)


def with_review(release: ReleaseManifest) -> ReviewRules:
    """Rules fitted at 10 % on scores spread over 0..1 (disagreement) and 0..10 (features, views)."""
    spread = np.linspace(0.0, 0.2, 100)
    flags = {
        FEATURE_OUTLIER: fit_rule(np.linspace(0.0, 10.0, 100), 0.1),
        MEMBER_DISAGREEMENT: fit_rule(spread, 0.1),
        TTA_INCONSISTENCY: fit_rule(spread, 0.1),
    }
    return ReviewRules(
        stain=STAIN,
        feature_scales={"a": 1.0, "b": 2.0},
        flags=flags,
        validation_patches=100,
        validation_flagged=0.2,
    )


def test_each_model_flag_fires_on_its_own_score(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0), ("b", 1.0, 1.0))
    release = release.model_copy(update={"review": with_review(release)})
    logits = np.array([[0.0, 0.1], [-4.0, 4.0], [0.0, 0.1]])  # patch 1: the members disagree
    distances = np.array([[1.0, 2.0], [1.0, 2.0], [30.0, 2.0]])  # patch 2: far from training (score 15.5)
    plain = answer(logits, release, "balanced", feature_distances=distances)
    assert [r.flags for r in plain.results] == [[], [MEMBER_DISAGREEMENT], [FEATURE_OUTLIER]]
    assert all(r.label is not None for r in plain.results)
    abstained = answer(logits, release, "balanced", feature_distances=distances, abstain=True)
    assert [r.label is None for r in abstained.results] == [False, True, True]
    # Views that disagree with each other: tta_inconsistency, judged only with views.
    views = np.stack([logits] * 4 + [logits + np.array([[3.0, 3.0]])] * 4)
    tta = answer(views, release, "balanced", feature_distances=distances)
    assert TTA_INCONSISTENCY in tta.results[0].flags and TTA_INCONSISTENCY in tta.results[2].flags
    assert TTA_INCONSISTENCY not in plain.results[0].flags
    # Disagreement is judged on the unaugmented view, as it was fitted: patch 0 agrees there.
    assert MEMBER_DISAGREEMENT not in tta.results[0].flags


def test_without_rules_or_feature_distances_those_flags_stay_silent(tmp_path) -> None:
    release = release_with(tmp_path, ("a", 1.0, 1.0), ("b", 1.0, 1.0))
    logits = np.array([[-4.0, 4.0]])
    assert (
        answer(logits, release, "balanced", feature_distances=np.array([[99.0, 99.0]])).results[0].flags == []
    )
    reviewed = release.model_copy(update={"review": with_review(release)})
    assert answer(logits, reviewed, "balanced").results[0].flags == [MEMBER_DISAGREEMENT]
