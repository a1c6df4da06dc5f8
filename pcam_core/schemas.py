"""The ensemble's answer on the internal hop: written by the ensemble, read by the gateway.

Also the options a client can set per request; the gateway forwards them to the ensemble as the same
query parameters, so both services and the Python client share these names.
"""

from pydantic import BaseModel, Field

from services.common.release import (
    DEFAULT_OPERATING_POINT,
    OPERATING_POINT_ALIASES,
    OPERATING_POINTS,
    resolve_operating_point,
)

TTA_VIEWS = 8
"""The 8 dihedral transforms (rotations by 90 degrees, with and without a flip): the center 32x32
region maps onto itself under each, so the label is unchanged (DESIGN.md section 5)."""


class InferOptions(BaseModel):
    """Per-request options: query parameters of the gateway's /v1/predict* and the ensemble's /v1/infer."""

    operating_point: str = Field(
        DEFAULT_OPERATING_POINT,
        description=f"One of {', '.join(OPERATING_POINTS)} (aliases: {', '.join(OPERATING_POINT_ALIASES)}).",
    )
    tta: bool = Field(
        False, description=f"Test-time augmentation: the mean over the {TTA_VIEWS} dihedral views."
    )
    explain: bool = Field(False, description="Add an occlusion-sensitivity heat map to each result.")


class Explanation(BaseModel):
    """Occlusion sensitivity (Zeiler & Fergus 2014): the drop in probability when a window is covered."""

    window: int = Field(description="Side of the occluding square, in pixels.")
    stride: int = Field(description="Step between window positions, in pixels.")
    baseline: float = Field(ge=0, le=1, description="Probability of the unoccluded patch.")
    grid: list[list[float]] = Field(
        description="Rows x columns of (baseline - probability with that window occluded); positive: evidence "
        "for tumor. Row r, column c covers pixels [r*stride, r*stride+window) x [c*stride, c*stride+window)."
    )
    overlay_png: str = Field(description="Base64 PNG: the patch with the heat map blended over it.")


class EnsemblePrediction(BaseModel):
    probability: float = Field(ge=0, le=1, description="Calibrated ensemble probability of tumor.")
    label: int = Field(ge=0, le=1, description="1 iff probability >= the operating point's threshold.")
    uncertainty: float = Field(
        ge=0,
        description="Standard deviation of the member probabilities (with TTA: across members and views).",
    )
    members: dict[str, float] = Field(
        description="Calibrated probability per member (with TTA: mean over views)."
    )
    tta_views: int = Field(1, description=f"1, or {TTA_VIEWS} with TTA.")
    explanation: Explanation | None = Field(None, description="With explain: the occlusion heat map.")


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


def parse_operating_point(name: str) -> str:
    """The canonical operating point for a name or alias; a 422 problem if unknown."""
    from services.common.problems import Problem  # the web stack: not for the Python client's imports

    try:
        return resolve_operating_point(name)
    except KeyError:
        raise Problem(
            422,
            "unknown-operating-point",
            "Unknown operating point",
            f"Received {name!r}; expected one of {', '.join((*OPERATING_POINTS, *OPERATING_POINT_ALIASES))}.",
        ) from None
