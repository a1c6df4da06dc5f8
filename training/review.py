"""Fitting the review flags' rules on the validation split, from what serving itself computes.

Input scores come from the preprocess service's own measures of the raw validation patches; model
scores from the served graphs' validation outputs through the serving rule (pcam_core.rule). Each
flag's threshold lets it fire on `rate` of the validation patches (pcam_core.review.fit_rule).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from pcam_core.flags import FEATURE_OUTLIER, FLAGS, MEMBER_DISAGREEMENT, TTA_INCONSISTENCY, FlagRule
from pcam_core.release import ReviewRules, StainDistribution, StainReference
from pcam_core.review import fires, fit_rule
from pcam_core.rule import combine, feature_score
from services.preprocess.quality import INPUT_FLAG_ABOVE, InputMeasures, input_scores, measure
from services.preprocess.stain import MacenkoNormalizer
from training.data import pcam_h5

log = logging.getLogger(__name__)


def measure_split(x_path: Path, reference: StainReference, distribution: StainDistribution) -> InputMeasures:
    """The preprocess service's input measures of every raw patch of a split, in order."""
    normalizer = MacenkoNormalizer(reference)
    parts = []
    for batch in pcam_h5.iter_images(x_path):
        parts.append(measure(batch, normalizer.normalize(batch), normalizer, distribution))
    return InputMeasures(
        *(np.concatenate([getattr(p, field) for p in parts]) for field in InputMeasures.__dataclass_fields__)
    )


def fit_review(
    measures: InputMeasures,
    stain: StainDistribution,
    logits: Mapping[str, np.ndarray],
    feature_distances: Mapping[str, np.ndarray],
    tta_logits: Mapping[str, np.ndarray],
    temperatures: Mapping[str, float],
    weights: Mapping[str, float],
    ensemble_temperature: float,
    rate: float,
) -> ReviewRules:
    """Every flag's rule at `rate`, fitted on the validation split's measures and served outputs.

    logits and feature_distances: (N,) per member; tta_logits: (8, n) per member, the views of the
    first n validation patches. Members in manifest order.
    """
    names = list(logits)
    t = [temperatures[m] for m in names]
    w = [weights[m] for m in names]
    # An imported member's graph has no features the platform knows (NaN distances): the flag would
    # judge the others alone, so a release with one has no feature_outlier flag.
    without = [m for m in names if not np.isfinite(feature_distances[m]).any()]
    scales = {m: float(np.median(feature_distances[m])) for m in names if m not in without}
    if scales and min(scales.values()) <= 0:
        raise ValueError(f"feature distances must be positive; validation medians: {scales}")
    output = combine(np.stack([logits[m] for m in names], axis=1), t, w, ensemble_temperature)
    scores = input_scores(measures)  # a fresh dict: the model scores join it
    if without:
        log.info("flag %s left out: %s have no feature distance (imported graphs)", FEATURE_OUTLIER, without)
    else:
        scores[FEATURE_OUTLIER] = feature_score(
            np.stack([feature_distances[m] for m in names], axis=1), list(scales.values()), w
        )
    if len(names) > 1:  # one member cannot disagree with itself
        scores[MEMBER_DISAGREEMENT] = output.uncertainty
    rules: dict[str, FlagRule] = {
        name: fit_rule(score, rate, INPUT_FLAG_ABOVE.get(name, True)) for name, score in scores.items()
    }
    views = np.stack([tta_logits[m] for m in names], axis=-1)  # (V, n, M)
    spread = combine(views.reshape(-1, len(names)), t, w, ensemble_temperature).probability
    rules[TTA_INCONSISTENCY] = fit_rule(spread.reshape(len(views), -1).std(axis=0), rate)
    fired = np.zeros(len(output.probability), dtype=bool)
    for name, rule in rules.items():
        if name != TTA_INCONSISTENCY:
            fired |= fires(rule, scores[name])
    for name in (name for name in FLAGS if name in rules):
        log.info("flag %s: threshold %.4g, fires on %.2f %% of validation", name, rules[name].threshold, 100 * rules[name].validation_rate)  # fmt: skip
    log.info("review flags together fire on %.2f %% of validation patches", 100 * fired.mean())
    return ReviewRules(
        stain=stain,
        feature_scales=scales,
        flags=rules,
        validation_patches=len(fired),
        validation_flagged=float(fired.mean()),
    )
