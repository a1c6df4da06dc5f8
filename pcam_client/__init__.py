"""Typed Python client of the PCam gateway (research use only: not for diagnosis).

The response models are the gateway's own (pcam_core.schemas, pcam_core.release).
"""

from pcam_client.client import (
    API_KEY_HEADER,
    AsyncPCamClient,
    ImageInput,
    PCamClient,
    Readiness,
)
from pcam_client.errors import PCamAPIError, PCamConnectionError, PCamError
from pcam_client.tensor import PixelPredictions
from pcam_core.release import ReleaseSummary
from pcam_core.schemas import BatchResponse, ItemError, Prediction, Quality

__all__ = [
    "API_KEY_HEADER",
    "AsyncPCamClient",
    "BatchResponse",
    "ImageInput",
    "ItemError",
    "PCamAPIError",
    "PCamClient",
    "PCamConnectionError",
    "PCamError",
    "PixelPredictions",
    "Prediction",
    "Quality",
    "Readiness",
    "ReleaseSummary",
]
