"""Ensemble-specific metrics (HTTP metrics are shared: services.common.metrics).

Names, types and labels are declared in services.common.metric_names. Probabilities and decisions are
recorded here, where the ensemble decides, and nowhere else: each computed answer counts once, and
answers the gateway serves from its cache are not counted again.
"""

import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc
from tritonclient.utils import InferenceServerException

from pcam_core.schemas import InferResponse
from services.common.metric_names import counter, histogram
from services.common.metrics import ReleaseInfo

TRITON_LATENCY = histogram(
    "pcam_ensemble_triton_call_duration_seconds",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
TRITON_ERRORS = counter("pcam_ensemble_triton_errors_total")
PROBABILITY = histogram(
    "pcam_ensemble_prediction_probability",
    buckets=(0.01, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0),
)
UNCERTAINTY = histogram(
    "pcam_ensemble_prediction_uncertainty",
    buckets=(0.005, 0.01, 0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5),
)
DECISIONS = counter("pcam_ensemble_decisions_total")
RELEASE = ReleaseInfo("ensemble")
T = TypeVar("T")

# tritonclient reports str(grpc.StatusCode.X) ("StatusCode.X"); anything else is UNKNOWN (bounded labels).
_CODES = {str(code): code.name for code in grpc.StatusCode} | {
    code.name: code.name for code in grpc.StatusCode
}


def grpc_code(error: InferenceServerException) -> str:
    """The gRPC status code's name of a Triton error; UNKNOWN when it carries none we know."""
    return _CODES.get(error.status() or "", grpc.StatusCode.UNKNOWN.name)


@contextmanager
def triton_call(member: str, call: str) -> Iterator[None]:
    """Time one attempt of a Triton call and count it if it fails. An attempt cancelled because its
    answer became moot is neither timed nor counted: its duration says nothing about Triton."""
    start = time.perf_counter()
    try:
        yield
    except InferenceServerException as error:
        TRITON_LATENCY.labels(member, call).observe(time.perf_counter() - start)
        TRITON_ERRORS.labels(member, call, grpc_code(error)).inc()
        raise
    TRITON_LATENCY.labels(member, call).observe(time.perf_counter() - start)


def timed_attempts(
    member: str, call: str, attempt: Callable[[float], Awaitable[T]]
) -> Callable[[float], Awaitable[T]]:
    """`attempt` (one try of a retried call, given its deadline) with each try recorded by triton_call."""

    async def timed(timeout_s: float) -> T:
        with triton_call(member, call):
            return await attempt(timeout_s)

    return timed


def record_answer(response: InferResponse) -> None:
    """Each patch's calibrated probability, uncertainty and decision at the response's operating point."""
    for result in response.results:
        PROBABILITY.observe(result.probability)
        UNCERTAINTY.labels(str(result.tta_views > 1).lower()).observe(result.uncertainty)
        DECISIONS.labels(
            response.operating_point, "abstained" if result.label is None else str(result.label)
        ).inc()
