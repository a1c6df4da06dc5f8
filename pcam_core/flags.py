"""Review flags: the reasons a patch's answer should not be trusted without a person looking at it.

Each flag compares one per-patch score with a threshold fitted on the release's validation split so
that it fires on a chosen share of in-distribution patches (`pcam_core.review.fit_rule`), frozen in
release.json (`pcam_core.release.ReviewRules`). The preprocess service scores what it sees in the pixels (input
flags), the ensemble what the members say (model flags); the gateway joins them into `flags` and
`needs_review` (docs/architecture.md#review-flags). Names and rules only, no numpy (the client imports
them); the arithmetic is in pcam_core.review.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from pydantic import BaseModel, ConfigDict, Field

LOW_TISSUE: Final = "low_tissue"
STAIN_OUTLIER: Final = "stain_outlier"
OFF_STAIN_COLOUR: Final = "off_stain_colour"
BLURRED: Final = "blurred"
FEATURE_OUTLIER: Final = "feature_outlier"
MEMBER_DISAGREEMENT: Final = "member_disagreement"
TTA_INCONSISTENCY: Final = "tta_inconsistency"

INPUT_FLAGS: Final = (LOW_TISSUE, STAIN_OUTLIER, OFF_STAIN_COLOUR, BLURRED)
"""Scored by the preprocess service on the submitted pixels, before normalization."""
MODEL_FLAGS: Final = (FEATURE_OUTLIER, MEMBER_DISAGREEMENT, TTA_INCONSISTENCY)
"""Scored by the ensemble from the members' outputs (tta_inconsistency only with tta)."""
FLAGS: Final = (*INPUT_FLAGS, *MODEL_FLAGS)
"""Every flag, in the order results list them."""

FLAG_DESCRIPTIONS: Final[Mapping[str, str]] = {
    LOW_TISSUE: "Less tissue than nearly every validation patch (background, fat, glass).",
    STAIN_OUTLIER: "The patch's Macenko stain vectors and concentrations lie far from those of the "
    "training patches, or no H&E stain could be estimated at all (not H&E, IHC, noise).",
    OFF_STAIN_COLOUR: "Some of the tissue has a colour no mix of the release's hematoxylin and eosin "
    "makes (pen ink, DAB, other dyes, photographs).",
    BLURRED: "Less fine detail than nearly every validation patch (out of focus, compression, upscaling).",
    FEATURE_OUTLIER: "The members' penultimate features lie far from those of the training patches "
    "(Mahalanobis distance, computed in the members' graphs).",
    MEMBER_DISAGREEMENT: "The members disagree more than on nearly every validation patch.",
    TTA_INCONSISTENCY: "The 8 dihedral views get more different answers than on nearly every "
    "validation patch (tta only).",
}


class FlagRule(BaseModel):
    """One flag: fires when its score is above (or below) the threshold; NaN scores never fire."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    threshold: float = Field(description="The fitted score threshold the flag compares against (see above).")
    above: bool = Field(description="True: fires when the score exceeds the threshold; False: when below.")
    target_rate: float = Field(ge=0, le=1, description="Share of validation patches it was fitted to flag.")
    validation_rate: float = Field(ge=0, le=1, description="Share of validation patches it flags.")


def ordered(flags: Iterable[str]) -> list[str]:
    """Flag names in FLAGS order (a union of input and model flags, say), each once."""
    chosen = set(flags)
    return [name for name in FLAGS if name in chosen]
