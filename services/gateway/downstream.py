"""HTTP clients of the gateway's dependencies: preprocess and ensemble."""

import time
from typing import Any

import httpx
import numpy as np

from services.common import wire
from services.common.inference import InferResponse
from services.common.problems import Problem
from services.common.release import ReleaseSummary
from services.common.request_id import REQUEST_ID_HEADER, current_request_id


class DependencyUnavailable(Problem):
    """A dependency is down or timing out: the client should retry later."""

    def __init__(self, service: str, detail: str, retry_after_s: int) -> None:
        super().__init__(
            503,
            "dependency-unavailable",
            "Service temporarily unavailable",
            f"The {service} service is unavailable: {detail}",
            headers={"Retry-After": str(retry_after_s)},
        )


class Downstream:
    """Preprocess and ensemble behind one pooled httpx client (created in the app lifespan)."""

    def __init__(
        self,
        http: httpx.AsyncClient,
        preprocess_url: str,
        ensemble_url: str,
        release_refresh_s: float,
        retry_after_s: int,
    ) -> None:
        self.http = http
        self.preprocess_url, self.ensemble_url = preprocess_url.rstrip("/"), ensemble_url.rstrip("/")
        self.release_refresh_s, self.retry_after_s = release_refresh_s, retry_after_s
        self._release: ReleaseSummary | None = None
        self._release_fetched_at = float("-inf")

    async def preprocess(self, uploads: list[bytes]) -> wire.Batch:
        """Decode, validate and normalize uploads; the batch carries one item per upload."""
        files = [
            ("files", (f"upload-{i}", data, "application/octet-stream")) for i, data in enumerate(uploads)
        ]
        response = await self._call("preprocess", "POST", f"{self.preprocess_url}/v1/preprocess", files=files)
        try:
            return wire.decode(response.content)
        except wire.WireFormatError as exc:
            raise self._bad_gateway("preprocess", str(exc)) from exc

    async def infer(self, images: np.ndarray, operating_point: str) -> InferResponse:
        """Calibrated ensemble predictions for a normalized batch."""
        response = await self._call(
            "ensemble",
            "POST",
            f"{self.ensemble_url}/v1/infer",
            params={"operating_point": operating_point},
            content=wire.encode(wire.Batch(images=images)),
            headers={"content-type": wire.MEDIA_TYPE},
        )
        return InferResponse.model_validate_json(response.content)

    async def release(self) -> ReleaseSummary:
        """The serving release, re-read from the ensemble at most every `release_refresh_s`."""
        now = time.monotonic()
        if self._release is None or now - self._release_fetched_at > self.release_refresh_s:
            response = await self._call("ensemble", "GET", f"{self.ensemble_url}/v1/release")
            self._release = ReleaseSummary.model_validate_json(response.content)
            self._release_fetched_at = now
        return self._release

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency as it reports it."""
        states = {}
        for name, url in (("preprocess", self.preprocess_url), ("ensemble", self.ensemble_url)):
            try:
                states[name] = (await self.http.get(f"{url}/readyz")).status_code == 200
            except httpx.HTTPError:
                states[name] = False
        return states

    async def _call(self, service: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            response = await self.http.request(
                method,
                url,
                headers={REQUEST_ID_HEADER: current_request_id(), **kwargs.pop("headers", {})},
                **kwargs,
            )
        except httpx.TransportError as exc:
            raise DependencyUnavailable(service, type(exc).__name__, self.retry_after_s) from exc
        if response.status_code == 503:
            raise DependencyUnavailable(service, _problem_detail(response), self.retry_after_s)
        if response.status_code != 200:
            raise self._bad_gateway(service, f"HTTP {response.status_code}: {_problem_detail(response)}")
        return response

    @staticmethod
    def _bad_gateway(service: str, detail: str) -> Problem:
        return Problem(
            502, "bad-gateway", "Bad gateway", f"The {service} service answered unexpectedly: {detail}"
        )


def _problem_detail(response: httpx.Response) -> str:
    try:
        return str(response.json().get("detail", ""))
    except ValueError:
        return response.text[:200]
