"""Public models of the gateway (the API description users read), with their OpenAPI examples."""

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from services.common.inference import Explanation, InferOptions
from services.common.release import DEFAULT_OPERATING_POINT, OPERATING_POINT_ALIASES, OPERATING_POINTS


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
        return InferOptions(operating_point=operating_point, tta=self.tta, explain=self.explain)


class Quality(BaseModel):
    tissue_fraction: float = Field(ge=0, le=1, description="Share of pixels classified as tissue.")
    stain_normalized: bool = Field(description="Whether Macenko normalization was applied.")
    stain_skip_reason: str | None = Field(description="Why normalization was skipped, if it was.")


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
    "quality": {"tissue_fraction": 0.83, "stain_normalized": True, "stain_skip_reason": None},
    "release": "pcam-2024-06-01",
    "sha256": "9f2c" + "0" * 60,
    "cached": False,
    "request_id": "3f1d2c9a7b6e4e0f9a8b7c6d5e4f3a2b",
}


class Prediction(BaseModel):
    """One patch's result. Research use only: not for diagnosis."""

    model_config = ConfigDict(json_schema_extra={"examples": [PREDICTION_EXAMPLE]})

    probability: float = Field(
        ge=0, le=1, description="Calibrated ensemble probability of tumor in the center 32x32."
    )
    label: int = Field(ge=0, le=1, description="1 iff probability >= threshold.")
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
    explanation: Explanation | None = Field(
        None, description="With explain=true: the occlusion-sensitivity heat map."
    )
    quality: Quality
    release: str = Field(description="The release that produced this result.")
    sha256: str = Field(description="sha256 of the uploaded bytes.")
    cached: bool = Field(
        description="True when read from the result cache; false when computed for this request "
        "(also when shared with identical concurrent requests)."
    )
    request_id: str


class ItemError(BaseModel):
    """A problem (RFC 9457) for one image of a batch."""

    type: str
    title: str
    status: int
    detail: str


class BatchResponse(BaseModel):
    results: list[Prediction | ItemError] = Field(description="One entry per uploaded file, in order.")
    request_id: str
