"""The one inference path: from normalized patches to the ensemble's answer under a release.

`EnsembleModel` follows KServe's Model in spirit: `preprocess` builds the one batch every member gets
(the patches, or their 8 dihedral views with TTA, followed by the occluded copies with
explain=occlusion),
a `MemberRunner` turns it into logits (Triton in the ensemble service, onnxruntime in `pcam predict`),
and `postprocess` applies the serving rule and the operating point. The ensemble service and the
in-process `pcam predict` both call `predict`, so neither keeps a copy of TTA or of the rule.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Protocol

import numpy as np

from pcam_core.conformal import as_lists, prediction_sets
from pcam_core.contract import (
    ACTIVATION_MAP_NAME,
    FEATURE_DISTANCE_NAME,
    OUTPUT_NAME,
    OUTPUT_SHAPES,
    TTA_VIEWS,
)
from pcam_core.errors import InvalidRequest, MemberRefused, MemberUnavailable, Overloaded
from pcam_core.explain import (
    activation_explanation,
    ensemble_map,
    grid_shape,
    occluded_copies,
    occlusion_explanation,
    sensitivity,
)
from pcam_core.flags import FEATURE_OUTLIER, MEMBER_DISAGREEMENT, TTA_INCONSISTENCY
from pcam_core.release import Member, ReleaseManifest
from pcam_core.review import fires, flag_lists
from pcam_core.rule import EnsembleOutput, combine_release, combine_views, decide, feature_score, member_rule
from pcam_core.schemas import EnsemblePrediction, ExplainMethod, Explanation, InferResponse
from pcam_core.tta import dihedral_views

logger = logging.getLogger(__name__)


class MemberFailure(RuntimeError):
    """A member gave no usable answer; `transient` says whether trying again later may help."""

    transient: ClassVar[bool] = False
    overloaded: ClassVar[bool] = False
    """The model server refused the call for want of capacity: the request is refused as overloaded."""

    def __init__(self, member: str, detail: str) -> None:
        super().__init__(f"{member}: {detail}")
        self.member = member


@dataclass(frozen=True)
class MemberLogits:
    """The members' answers for one batch, both dicts in manifest order."""

    logits: dict[str, np.ndarray]
    """(B,) logits of every member that answered."""
    failures: dict[str, MemberFailure]
    """Why each failed member failed (members still running when the answer became impossible: absent)."""
    feature_distances: dict[str, np.ndarray] = field(default_factory=dict)
    """(B,) feature distance of every member that answered, when asked for (`features=True`)."""
    activation_maps: dict[str, np.ndarray] = field(default_factory=dict)
    """(B, 96, 96) activation map of every member that answered, when asked for (`maps=True`)."""


def requested_outputs(features: bool, maps: bool = False) -> tuple[str, ...]:
    """The member outputs a runner fetches: the logit, with features the feature distance, with maps
    the activation map."""
    return (OUTPUT_NAME,) + (FEATURE_DISTANCE_NAME,) * features + (ACTIVATION_MAP_NAME,) * maps


def per_patch(name: str, values: np.ndarray) -> np.ndarray:
    """A member output's batch as runners return it: (N,) for one value per patch, else (N, *shape)."""
    shape = OUTPUT_SHAPES[name]
    return values.reshape(-1) if shape == (1,) else values.reshape(len(values), *shape)


def member_logits(
    names: Sequence[str], outputs: dict[str, dict[str, np.ndarray]], failures: dict[str, MemberFailure]
) -> MemberLogits:
    """The MemberLogits of the members that answered: `outputs` maps member -> output name -> values."""

    def each(output: str) -> dict[str, np.ndarray]:
        return {m: outputs[m][output] for m in names if m in outputs and output in outputs[m]}

    return MemberLogits(each(OUTPUT_NAME), failures, each(FEATURE_DISTANCE_NAME), each(ACTIVATION_MAP_NAME))


class MemberRunner(Protocol):
    """Runs ensemble members on a batch of normalized patches (Triton, onnxruntime, a test's fake)."""

    async def try_logits(
        self,
        members: Sequence[Member],
        images: np.ndarray,
        required: int | None = None,
        features: bool = False,
        maps: bool = False,
    ) -> MemberLogits:
        """Each member's (B,) logits for uint8 (B, 96, 96, 3), with features its feature distances, with
        maps its activation maps too; may stop once `required` cannot answer."""
        ...


@dataclass(frozen=True)
class Occlusion:
    """The occluding window of explanations, in pixels."""

    window: int = 16
    stride: int = 8


@dataclass(frozen=True)
class MemberBatch:
    """What every member is sent for one request, and how to read its answer back."""

    images: np.ndarray
    """The request's normalized patches, uint8 (N, 96, 96, 3)."""
    batch: np.ndarray
    """The patches (or their views) followed by any occluded copies: one call per member."""
    views: int
    """1, or TTA_VIEWS with test-time augmentation."""
    explain: Occlusion | None
    """With explain=occlusion: the window of the copies after the patches."""
    maps: bool = False
    """With explain=cam: the members' activation maps are part of the answer."""


class EnsembleModel:
    """A release's serving path: preprocess (batch for the members), predict, postprocess (the rule)."""

    def __init__(
        self, release: ReleaseManifest, occlusion: Occlusion | None = None, retry_after_s: int = 5
    ) -> None:
        self.release = release
        self.occlusion = occlusion or Occlusion()
        self.retry_after_s = retry_after_s
        """What an answer made impossible by an unavailable model server tells the caller to wait."""

    def preprocess(
        self, images: np.ndarray, *, tta: bool = False, explain: ExplainMethod | None = None
    ) -> MemberBatch:
        """The one batch every member gets for uint8 (N, 96, 96, 3) patches."""
        views = TTA_VIEWS if tta else 1
        parts = [dihedral_views(images).reshape(-1, *images.shape[1:]) if tta else images]
        spec = self.occlusion if explain == "occlusion" else None
        if spec is not None:
            copies = occluded_copies(images, spec.window, spec.stride)
            parts.append(copies.reshape(-1, *images.shape[1:]))
        batch = np.concatenate(parts) if len(parts) > 1 else parts[0]
        return MemberBatch(images, batch, views, spec, maps=explain == "cam")

    def postprocess(
        self,
        batch: MemberBatch,
        logits: np.ndarray,
        operating_point: str,
        members: Sequence[str] | None = None,
        feature_distances: np.ndarray | None = None,
        abstain: bool = False,
        activation_maps: np.ndarray | None = None,
    ) -> InferResponse:
        """The answer for (B, K) logits (and feature distances, and (B, K, 96, 96) activation maps) of
        `batch`; `members` names the K columns (default: all)."""
        n, views = len(batch.images), batch.views
        base = logits[: views * n].reshape(views, n, -1)
        explanations = None
        if batch.explain is not None:
            explanations = self._explanations(batch, base[0], logits[views * n :], members)
        elif batch.maps:
            if activation_maps is None:
                raise ValueError("explain=cam needs the members' activation maps")
            # The unaugmented patches' maps (view 0 is the identity), as occlusion's baseline.
            explanations = self._map_explanations(batch, base[0], activation_maps[:n], members)
        return answer(
            base if views > 1 else base[0],
            self.release,
            operating_point,
            members=members,
            explanations=explanations,
            # The unaugmented patches' own: the feature_outlier rule was fitted on those.
            feature_distances=None if feature_distances is None else feature_distances[:n],
            abstain=abstain,
        )

    async def predict(
        self,
        runner: MemberRunner,
        images: np.ndarray,
        operating_point: str,
        *,
        tta: bool = False,
        explain: ExplainMethod | None = None,
        min_members: int | None = None,
        abstain: bool = False,
    ) -> InferResponse:
        """The answer for normalized uint8 (N, 96, 96, 3) patches at a canonical operating point.

        abstain: patches with model review flags get no label. explain: occlusion (extra copies of
        every patch in the members' batch) or cam (the activation maps the same call returns).

        min_members: None requires every member; k allows a degraded answer from any k that answered.
        Raises MemberUnavailable (the model server is down), Overloaded (its queue refused a call) or
        MemberRefused (a member broke the contract) when fewer answered.
        """
        if explain == "cam":
            check_maps(self.release)
        # Occluded copies and explanations are CPU work: off the event loop when explaining.
        if explain:
            batch = await asyncio.to_thread(self.preprocess, images, tta=tta, explain=explain)
        else:
            batch = self.preprocess(images, tta=tta)
        everyone = len(self.release.members)
        required = everyone if min_members is None else min(min_members, everyone)
        features = self.release.review is not None
        answers = await runner.try_logits(
            self.release.members, batch.batch, required, features=features, maps=batch.maps
        )
        if len(answers.logits) < required:
            raise self._not_enough(answers.failures, required)
        names = list(answers.logits)
        if answers.failures:
            logger.warning(
                "degraded answer: %d of %d members; missing %s",
                len(names),
                everyone,
                "; ".join(map(str, answers.failures.values())),
            )
        logits = np.stack(list(answers.logits.values()), axis=1)
        distances = (
            np.stack([answers.feature_distances[name] for name in names], axis=1) if features else None
        )
        maps = np.stack([answers.activation_maps[name] for name in names], axis=1) if batch.maps else None
        if explain:
            return await asyncio.to_thread(
                self.postprocess, batch, logits, operating_point, names, distances, abstain, maps
            )
        return self.postprocess(batch, logits, operating_point, names, distances, abstain)

    def _not_enough(
        self, failures: dict[str, MemberFailure], required: int
    ) -> MemberUnavailable | MemberRefused | Overloaded:
        everyone = len(self.release.members)
        reasons = "; ".join(map(str, failures.values()))
        detail = f"{required} of {everyone} members required, {len(failures)} failed: {reasons}"
        if any(f.overloaded for f in failures.values()):
            return Overloaded(f"Model server overloaded: {detail}", retry_after_s=self.retry_after_s)
        if not failures or any(f.transient for f in failures.values()):
            return MemberUnavailable(f"Model server unavailable: {detail}", retry_after_s=self.retry_after_s)
        # Not down: a member refused the call or answered outside the contract; a retry would not help.
        return MemberRefused(detail)

    def _explanations(
        self,
        batch: MemberBatch,
        logits: np.ndarray,
        occluded_logits: np.ndarray,
        members: Sequence[str] | None,
    ) -> list[Explanation]:
        """Per patch: baseline and occluded probabilities through the serving rule, grid and overlay.

        The baseline is the unaugmented patch's probability even with TTA: the occluded copies are not
        augmented (8x the work), and the grid must compare like with like.
        """
        assert batch.explain is not None
        spec, images = batch.explain, batch.images
        baseline = combine_release(logits, self.release, members).probability
        occluded = combine_release(occluded_logits, self.release, members).probability
        shape = grid_shape(images.shape[1], spec.window, spec.stride)
        grids = sensitivity(baseline, occluded.reshape(len(images), -1), shape)
        return [
            occlusion_explanation(image, float(p), grid, spec.window, spec.stride)
            for image, p, grid in zip(images, baseline, grids, strict=True)
        ]

    def _map_explanations(
        self,
        batch: MemberBatch,
        logits: np.ndarray,
        maps: np.ndarray,
        members: Sequence[str] | None,
    ) -> list[Explanation]:
        """Per patch: its probability, and the members' (N, K, 96, 96) maps as the ensemble's map."""
        baseline = combine_release(logits, self.release, members).probability
        temperatures, weights = member_rule(self.release, members)
        heat = ensemble_map(maps, temperatures, weights)
        names = [m.name for m in self.release.members] if members is None else list(members)
        kinds = {m.name: m.activation_map for m in self.release.members if m.name in names}
        return [
            activation_explanation(image, float(p), patch_heat, kinds)
            for image, p, patch_heat in zip(batch.images, baseline, heat, strict=True)
        ]


def check_maps(release: ReleaseManifest) -> None:
    """explain=cam needs every member's graph to carry an activation map."""
    missing = [m.name for m in release.members if m.activation_map is None]
    if missing:
        raise InvalidRequest(
            f"Release {release.release_id} has members without an activation map ({', '.join(missing)}): "
            "explain=cam is not available; use explain=occlusion.",
            kind="explain-unavailable",
            members=missing,
        )


def check_explainable(images: int, max_explain_images: int) -> None:
    """Occlusion costs a member call per occluding window: refuse requests over the limit."""
    if images > max_explain_images:
        raise InvalidRequest(
            f"Received {images} images with explain; at most {max_explain_images}.",
            kind="explain-batch-size",
            max_explain_images=max_explain_images,
        )


def answer(
    logits: np.ndarray,
    release: ReleaseManifest,
    operating_point: str,
    *,
    members: Sequence[str] | None = None,
    explanations: Sequence[Explanation] | None = None,
    feature_distances: np.ndarray | None = None,
    abstain: bool = False,
) -> InferResponse:
    """The response for (N, K) member logits, or (V, N, K) logits of V TTA views per patch.

    `members` names the K columns when some members did not answer (default: all, in manifest order);
    the answer is then marked degraded and lists the missing members. With the release's review
    rules, (N, K) feature distances let the feature_outlier flag fire; with abstain, a flagged
    patch gets no label.
    """
    point = release.ensemble.operating_points[operating_point]
    names = [m.name for m in release.members] if members is None else list(members)
    if logits.ndim == 3:
        views, output = len(logits), combine_views(logits, release, names)
    else:
        views, output = 1, combine_release(logits, release, names)
    flags = model_flags(release, names, logits, output, feature_distances)
    labels = decide(output.probability, point.threshold)
    explained = explanations or [None] * len(labels)
    missing = [m.name for m in release.members if m.name not in names]
    conformal = release.ensemble.conformal
    # The rule holds its coverage for the probability it was fitted on: every member, one view.
    sets: list[list[int] | None] = (
        as_lists(prediction_sets(output.probability, conformal.quantile))
        if conformal is not None and views == 1 and not missing
        else [None] * len(labels)
    )
    results = [
        EnsemblePrediction(
            probability=float(probability),
            label=None if abstain and patch_flags else int(label),
            uncertainty=float(uncertainty),
            members=dict(zip(names, map(float, member_probabilities), strict=True)),
            tta_views=views,
            explanation=explanation,
            prediction_set=labels_held,
            flags=patch_flags,
        )
        for probability, label, uncertainty, member_probabilities, explanation, labels_held, patch_flags in zip(
            output.probability,
            labels,
            output.uncertainty,
            output.member_probabilities,
            explained,
            sets,
            flags,
            strict=True,
        )
    ]
    return InferResponse(
        release=release.release_id,
        operating_point=operating_point,
        threshold=point.threshold,
        degraded=bool(missing),
        missing_members=missing,
        results=results,
    )


def model_flags(
    release: ReleaseManifest,
    names: Sequence[str],
    logits: np.ndarray,
    output: EnsembleOutput,
    feature_distances: np.ndarray | None,
) -> list[list[str]]:
    """Per patch, the model flags the release's review rules raise (none without rules).

    member_disagreement is judged on the unaugmented view, as it was fitted; tta_inconsistency only
    with TTA views; feature_outlier only given the members' feature distances.
    """
    n = len(output.probability)
    review = release.review
    if review is None:
        return [[] for _ in range(n)]
    rules, fired = review.flags, {}
    if feature_distances is not None and FEATURE_OUTLIER in rules:
        _, weights = member_rule(release, names)
        scales = [review.feature_scales[name] for name in names]
        fired[FEATURE_OUTLIER] = fires(
            rules[FEATURE_OUTLIER], feature_score(feature_distances, scales, weights)
        )
    if MEMBER_DISAGREEMENT in rules and len(names) > 1:
        unaugmented = combine_release(logits[0], release, names) if logits.ndim == 3 else output
        fired[MEMBER_DISAGREEMENT] = fires(rules[MEMBER_DISAGREEMENT], unaugmented.uncertainty)
    if output.view_spread is not None and TTA_INCONSISTENCY in rules:
        fired[TTA_INCONSISTENCY] = fires(rules[TTA_INCONSISTENCY], output.view_spread)
    return flag_lists(fired, n)
