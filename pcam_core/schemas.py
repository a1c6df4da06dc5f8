"""The public result schemas: request options, the ensemble's answer, the gateway's results.

The ensemble writes `InferResponse` on the internal hop and the gateway reads it; the gateway answers
`Prediction` and `BatchResponse`, which the Python client parses with these same models. The options
are query parameters of the gateway's /v1/predict* and of the ensemble's /v1/infer alike. Each model's
OpenAPI example sits beside it.
"""

from typing import Annotated, Any, Literal, get_args

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from pcam_core.contract import TTA_VIEWS
from pcam_core.errors import ImageRejected
from pcam_core.flags import FLAG_DESCRIPTIONS, FLAGS
from pcam_core.problems import ItemError, problem_body
from pcam_core.release import (
    DEFAULT_OPERATING_POINT,
    OPERATING_POINT_ALIASES,
    OPERATING_POINTS,
    ActivationMapKind,
)

__all__ = [
    "PREDICTION_EXAMPLE",
    "BatchResponse",
    "EXPLAIN_METHODS",
    "EnsemblePrediction",
    "ExplainMethod",
    "Explanation",
    "InferOptions",
    "InferResponse",
    "ItemError",
    "PatchResult",
    "Prediction",
    "PredictOptions",
    "Quality",
]


PREDICTION_SET_DESCRIPTION = (
    "Split-conformal prediction set: the labels that cannot be ruled out at the release's coverage (95 % "
    "by default): [0], [1] or [0, 1]. None when the release has no conformal rule, and with tta or a "
    "degraded answer, which the rule was not fitted for."
)


ExplainMethod = Literal["occlusion", "cam"]
EXPLAIN_METHODS: tuple[ExplainMethod, ...] = get_args(ExplainMethod)
_TRUE, _FALSE = ("true", "1", "yes", "on"), ("false", "0", "no", "off", "")


def _explain_method(value: Any) -> Any:
    """explain=true keeps its meaning from before there was a choice (occlusion); false means none."""
    if isinstance(value, bool):
        return "occlusion" if value else None
    if isinstance(value, str):
        word = value.strip().lower()
        return "occlusion" if word in _TRUE else None if word in _FALSE else word
    return value


class InferOptions(BaseModel):
    """Per-request options: query parameters of the gateway's /v1/predict* and the ensemble's /v1/infer."""

    operating_point: str = Field(
        DEFAULT_OPERATING_POINT,
        description=f"One of {', '.join(OPERATING_POINTS)} (aliases: {', '.join(OPERATING_POINT_ALIASES)}).",
    )
    tta: bool = Field(
        False, description=f"Test-time augmentation: the mean over the {TTA_VIEWS} dihedral views."
    )
    explain: Annotated[ExplainMethod | None, BeforeValidator(_explain_method)] = Field(
        None,
        description="Add a heat map to each result. cam: the members' activation maps (CNN class "
        "activation maps, ViT attention rollout) from the same model call, no extra passes; occlusion "
        "(or true): the probability's drop as a window covers each part, one extra pass per window.",
    )
    abstain: bool = Field(
        False,
        description="Withhold the label of every patch with a review flag: its label is null and its "
        "flags say why (the probability is still given).",
    )


class Explanation(BaseModel):
    """Where the evidence for tumor lies: occlusion sensitivity (Zeiler & Fergus 2014) or the members'
    activation maps (docs/architecture.md#explanations)."""

    # Defaulted: answers from before there was a choice were all occlusion.
    method: ExplainMethod = Field("occlusion", description="How the map was made.")
    baseline: float = Field(ge=0, le=1, description="Probability of the patch as sent (no TTA views).")
    grid: list[list[float]] = Field(
        description="occlusion: rows x columns of (baseline - probability with that window covered); row "
        "r, column c covers pixels [r*stride, r*stride+window) x [c*stride, c*stride+window). cam: 96 x 96, "
        "one value per pixel: the members' maps in calibrated-logit units, averaged with the members' "
        "weights. Both: positive where the evidence for tumor is."
    )
    window: int | None = Field(None, description="occlusion: side of the covering square, in pixels.")
    stride: int | None = Field(None, description="occlusion: step between window positions, in pixels.")
    members: dict[str, ActivationMapKind] | None = Field(
        None, description="cam: each member's kind of map (cam for a CNN, attention_rollout for a ViT)."
    )
    overlay_png: str = Field(description="Base64 PNG: the patch with the heat map blended over it.")


LABEL_DESCRIPTION = (
    "1 iff probability >= the operating point's threshold; null when the request asked to abstain and "
    "the patch has review flags."
)
FLAGS_DESCRIPTION = (
    "Review flags that fired, in this order (each fitted on the release's validation split to fire on "
    "under 1 % of it; [] without flags or review rules): "
    + "; ".join(f"{name}: {FLAG_DESCRIPTIONS[name]}" for name in FLAGS)
)


class EnsemblePrediction(BaseModel):
    probability: float = Field(ge=0, le=1, description="Calibrated ensemble probability of tumor.")
    label: int | None = Field(ge=0, le=1, description=LABEL_DESCRIPTION)
    uncertainty: float = Field(
        ge=0,
        description="Standard deviation of the member probabilities (with TTA: across members and views).",
    )
    members: dict[str, float] = Field(
        description="Calibrated probability per member (with TTA: mean over views)."
    )
    tta_views: int = Field(1, description=f"1, or {TTA_VIEWS} with TTA.")
    explanation: Explanation | None = Field(None, description="With explain: the heat map.")
    prediction_set: list[int] | None = Field(None, description=PREDICTION_SET_DESCRIPTION)
    flags: list[str] = Field(default_factory=list, description="The model review flags that fired.")


class InferResponse(BaseModel):
    release: str
    operating_point: str
    threshold: float
    degraded: bool = Field(
        False, description="True when some members failed and the answer uses the rest (opt-in min_members)."
    )
    missing_members: list[str] = Field(
        default_factory=list, description="Members left out of a degraded answer."
    )
    results: list[EnsemblePrediction]


class PredictOptions(InferOptions):
    """Query parameters of /v1/predict and /v1/predict/batch."""

    # The accepted names as an enum in the API description (a plain string there let clients and
    # generated tests send anything); still a str here, so an unknown name is the route's
    # `unknown-operating-point` problem naming what was sent, not a generic validation error.
    operating_point: str = Field(
        DEFAULT_OPERATING_POINT,
        description=InferOptions.model_fields["operating_point"].description,
        json_schema_extra={"enum": [*OPERATING_POINTS, *OPERATING_POINT_ALIASES]},
    )
    cache: bool = Field(
        True,
        description="false: do not read the result cache for this request (a fresh answer is still "
        "stored for later requests).",
    )

    def infer_options(self, operating_point: str) -> InferOptions:
        """The options the ensemble gets, with the operating point made canonical."""
        return InferOptions(
            operating_point=operating_point, tta=self.tta, explain=self.explain, abstain=self.abstain
        )


class Quality(BaseModel):
    tissue_fraction: float = Field(ge=0, le=1, description="Share of pixels classified as tissue.")
    stain_normalized: bool = Field(description="Whether Macenko normalization was applied.")
    stain_skip_reason: str | None = Field(description="Why normalization was skipped, if it was.")
    # Defaulted: results cached or computed before these measures existed do not carry them.
    stain_distance: float | None = Field(
        None,
        ge=0,
        description="Mahalanobis distance of the patch's own Macenko stain estimate from the training "
        "patches' (the stain_outlier flag's score); None without an estimate or a release that fits it.",
    )
    off_stain_colour: float | None = Field(
        None,
        ge=0,
        le=1,
        description="How far the most foreign 5 % of the tissue pixels lie from any mix of the release's "
        "two stains, relative to their optical density (0: pure H&E; the off_stain_colour flag's score).",
    )
    sharpness: float | None = Field(
        None, ge=0, description="Mean absolute Laplacian of the grey patch (the blurred flag's score)."
    )


PREDICTION_EXAMPLE: dict[str, Any] = {
    "probability": 0.912,
    "label": 1,
    "operating_point": "balanced",
    "threshold": 0.47,
    "uncertainty": 0.031,
    "members": {"seresnet50": 0.94, "efficientnet_b3": 0.90, "vit_base": 0.87},
    "tta": False,
    "degraded": False,
    "missing_members": [],
    "explanation": None,
    "prediction_set": [1],
    "flags": [],
    "needs_review": False,
    "quality": {
        "tissue_fraction": 0.83,
        "stain_normalized": True,
        "stain_skip_reason": None,
        "stain_distance": 3.1,
        "off_stain_colour": 0.06,
        "sharpness": 21.4,
    },
    "release": "pcam-2024-06-01",
    "sha256": "9f2c" + "0" * 60,
    "cached": False,
    "request_id": "3f1d2c9a7b6e4e0f9a8b7c6d5e4f3a2b",
}


class PatchResult(BaseModel):
    """One patch's result as computed and cached: a Prediction without how this request got it."""

    probability: float = Field(
        ge=0, le=1, description="Calibrated ensemble probability of tumor in the center 32x32."
    )
    label: int | None = Field(ge=0, le=1, description=LABEL_DESCRIPTION)
    operating_point: str = Field(description="Canonical name of the operating point used.")
    threshold: float
    uncertainty: float = Field(
        ge=0, description="Spread (std) of the member probabilities; with TTA across views too."
    )
    members: dict[str, float] = Field(description="Calibrated probability per ensemble member.")
    tta: bool = Field(False, description="Whether test-time augmentation (8 dihedral views) was applied.")
    degraded: bool = Field(
        False, description="True when some members failed and the answer comes from the rest."
    )
    missing_members: list[str] = Field(
        default_factory=list, description="Members left out of a degraded answer."
    )
    explanation: Explanation | None = Field(None, description="With explain: the heat map.")
    prediction_set: list[int] | None = Field(None, description=PREDICTION_SET_DESCRIPTION)
    flags: list[str] = Field(default_factory=list, description=FLAGS_DESCRIPTION)
    needs_review: bool = Field(
        False, description="True when any flag fired: look at the patch before trusting the answer."
    )
    quality: Quality
    release: str = Field(description="The release that produced this result.")
    sha256: str = Field(description="sha256 of the uploaded bytes.")


class Prediction(PatchResult):
    """One patch's result. Research use only: not for diagnosis."""

    model_config = ConfigDict(json_schema_extra={"examples": [PREDICTION_EXAMPLE]})

    cached: bool = Field(
        description="True when read from the result cache; false when computed for this request "
        "(also when shared with identical concurrent requests)."
    )
    request_id: str


BATCH_EXAMPLE: dict[str, Any] = {
    "results": [
        PREDICTION_EXAMPLE,
        problem_body(ImageRejected("Received 128x64; 96x96 is required.", kind="wrong-size")),
    ],
    "request_id": PREDICTION_EXAMPLE["request_id"],
}


class BatchResponse(BaseModel):
    results: list[Prediction | ItemError] = Field(description="One entry per uploaded file, in order.")
    request_id: str
