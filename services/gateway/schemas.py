"""Public response models of the gateway (the API description users read)."""

from typing import Any

from pydantic import BaseModel, Field

BINARY = {"type": "string", "format": "binary"}


class Quality(BaseModel):
    tissue_fraction: float = Field(ge=0, le=1, description="Share of pixels classified as tissue.")
    stain_normalized: bool = Field(description="Whether Macenko normalization was applied.")
    stain_skip_reason: str | None = Field(description="Why normalization was skipped, if it was.")


class Prediction(BaseModel):
    """One patch's result. Research use only: not for diagnosis."""

    probability: float = Field(
        ge=0, le=1, description="Calibrated ensemble probability of tumor in the center 32x32."
    )
    label: int = Field(ge=0, le=1, description="1 iff probability >= threshold.")
    operating_point: str
    threshold: float
    uncertainty: float = Field(ge=0, description="Spread of the member probabilities (std).")
    members: dict[str, float] = Field(description="Calibrated probability per ensemble member.")
    quality: Quality
    release: str = Field(description="The release that produced this result.")
    sha256: str = Field(description="sha256 of the uploaded bytes.")
    cached: bool
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


def upload_request_body(field: str, many: bool, raw_media_types: tuple[str, ...] = ()) -> dict[str, Any]:
    """OpenAPI requestBody for multipart image uploads (routes read the body themselves, within limits)."""
    schema = {"type": "array", "items": BINARY} if many else BINARY
    content: dict[str, Any] = {
        "multipart/form-data": {
            "schema": {"type": "object", "properties": {field: schema}, "required": [field]}
        },
        **{media: {"schema": BINARY} for media in raw_media_types},
    }
    return {"requestBody": {"content": content, "required": True}}
