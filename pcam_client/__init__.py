"""Typed Python client of the PCam gateway (research use only: not for diagnosis).

The response models are the gateway's own (services.gateway.schemas, services.common.release).
"""

from pcam_client.client import (
    API_KEY_HEADER,
    AsyncPCamClient,
    ImageInput,
    PCamClient,
    Readiness,
)
from pcam_client.errors import PCamAPIError, PCamConnectionError, PCamError
from services.common.release import ReleaseSummary
from services.gateway.schemas import BatchResponse, ItemError, Prediction, Quality

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
    "Prediction",
    "Quality",
    "Readiness",
    "ReleaseSummary",
]
