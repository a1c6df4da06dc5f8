"""The ensemble's answer on the internal hop: written by the ensemble, read by the gateway."""

from pydantic import BaseModel, Field

from services.common.problems import Problem
from services.common.release import OPERATING_POINT_ALIASES, OPERATING_POINTS, resolve_operating_point


class EnsemblePrediction(BaseModel):
    probability: float = Field(ge=0, le=1, description="Calibrated ensemble probability of tumor.")
    label: int = Field(ge=0, le=1, description="1 iff probability >= the operating point's threshold.")
    uncertainty: float = Field(ge=0, description="Standard deviation of the member probabilities.")
    members: dict[str, float] = Field(description="Calibrated probability per member.")


class InferResponse(BaseModel):
    release: str
    operating_point: str
    threshold: float
    results: list[EnsemblePrediction]


def parse_operating_point(name: str) -> str:
    """The canonical operating point for a name or alias; a 422 problem if unknown."""
    try:
        return resolve_operating_point(name)
    except KeyError:
        raise Problem(
            422,
            "unknown-operating-point",
            "Unknown operating point",
            f"Received {name!r}; expected one of {', '.join((*OPERATING_POINTS, *OPERATING_POINT_ALIASES))}.",
        ) from None
