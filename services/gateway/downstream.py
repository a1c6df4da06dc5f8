"""HTTP clients of the gateway's dependencies: preprocess and ensemble."""

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import httpx
import numpy as np
from pydantic import ValidationError

from pcam_core import wire
from pcam_core.errors import BadGateway, DependencyUnavailable, Overloaded, PCamError
from pcam_core.problems import PROBLEM_MEDIA_TYPE, domain_error, problem_kind
from pcam_core.release import ReleaseSummary
from pcam_core.schemas import InferOptions, InferResponse
from services.common.request_id import REQUEST_ID_HEADER, current_request_id
from services.gateway.metrics import EXPECTED_FLAGGED

logger = logging.getLogger(__name__)
READINESS_TIMEOUT_S = 2.0
T = TypeVar("T")


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
        self._release_lock = asyncio.Lock()

    async def preprocess(self, uploads: list[bytes], release_id: str | None = None) -> wire.Batch:
        """Decode, validate and normalize uploads (with release_id's stain reference when preprocess
        still holds it: the one the ensemble serves, during a rolling release); one item per upload."""
        # The uploads frame, not multipart: nothing to build or parse per image.
        return await self._preprocess(
            wire.encode_uploads(uploads), wire.UPLOADS_MEDIA_TYPE, len(uploads), release_id
        )

    async def preprocess_pixels(self, images: np.ndarray, release_id: str | None = None) -> wire.Batch:
        """Normalize patches that arrived as pixels (the tensor input): nothing to decode."""
        return await self._preprocess(
            wire.encode(wire.Batch(images)), wire.MEDIA_TYPE, len(images), release_id
        )

    async def infer(self, images: np.ndarray, options: InferOptions, release_id: str) -> InferResponse:
        """Calibrated predictions for a batch normalized under `release_id` (the ensemble checks it),
        with the client's options forwarded as the same query parameters."""
        frame = wire.encode(wire.Batch(images=images, release=release_id))
        response = await self._call(
            "ensemble",
            "POST",
            f"{self.ensemble_url}/v1/infer",
            params={
                "operating_point": options.operating_point,
                "tta": str(options.tta).lower(),
                "explain": options.explain or "false",
            },
            content=frame,
            headers={"content-type": wire.MEDIA_TYPE},
        )
        answer = self._parse("ensemble", lambda: InferResponse.model_validate_json(response.content))
        if len(answer.results) != len(images):
            raise _bad_gateway("ensemble", f"{len(answer.results)} results for {len(images)} patches")
        return answer

    async def release(self) -> ReleaseSummary:
        """The serving release, re-read at most every `release_refresh_s`; the last known one if the
        ensemble cannot answer (cached results stay servable while it is down)."""
        if self._release is not None and not self._release_stale():
            return self._release
        async with self._release_lock:  # one refresh at a time, the others wait for it
            if self._release is None or self._release_stale():
                try:
                    response = await self._call(
                        "ensemble", "GET", f"{self.ensemble_url}/v1/release", timeout=READINESS_TIMEOUT_S
                    )
                    self._release = self._parse(
                        "ensemble", lambda: ReleaseSummary.model_validate_json(response.content)
                    )
                    review = self._release.review
                    EXPECTED_FLAGGED.set(review.validation_flagged if review is not None else 0.0)
                    self._release_fetched_at = time.monotonic()
                except PCamError:
                    if self._release is None:
                        raise
                    # Trusted for another period: the requests waiting on the lock (cache hits among
                    # them) answer with the known release instead of each waiting out its own refresh.
                    self._release_fetched_at = time.monotonic()
                    logger.warning("release refresh failed; keeping %s", self._release.release_id)
        return self._release

    def forget_release(self) -> None:
        """Re-read the release on next use (an answer came from another release)."""
        self._release_fetched_at = float("-inf")

    async def ready(self) -> dict[str, bool]:
        """Readiness of each dependency as it reports it, asked concurrently with a short timeout."""
        names = ("preprocess", "ensemble")
        states = await asyncio.gather(self._ready(self.preprocess_url), self._ready(self.ensemble_url))
        return dict(zip(names, states, strict=True))

    async def _ready(self, url: str) -> bool:
        try:
            response = await self.http.get(f"{url}/readyz", timeout=READINESS_TIMEOUT_S)
            return response.status_code == httpx.codes.OK
        except httpx.HTTPError:
            return False

    async def _preprocess(
        self, body: bytes, media_type: str, count: int, release_id: str | None
    ) -> wire.Batch:
        """Preprocess's batch for a body of `count` images, checked to hold one item per image."""
        response = await self._call(
            "preprocess",
            "POST",
            f"{self.preprocess_url}/v1/preprocess",
            content=body,
            headers={"content-type": media_type},
            params={"release": release_id} if release_id else None,
        )
        batch = self._parse("preprocess", lambda: wire.decode(response.content))
        if [item.index for item in batch.items] != list(range(count)):
            raise _bad_gateway("preprocess", f"{len(batch.items)} items for {count} images")
        return batch

    def _release_stale(self) -> bool:
        return time.monotonic() - self._release_fetched_at > self.release_refresh_s

    async def _call(self, service: str, method: str, url: str, **kwargs: Any) -> httpx.Response:
        headers = {REQUEST_ID_HEADER: current_request_id(), **kwargs.pop("headers", {})}
        try:
            try:
                response = await self.http.request(method, url, headers=headers, **kwargs)
            except (httpx.ConnectError, httpx.ConnectTimeout):
                # Not sent, or a pooled keep-alive connection the service closed (it restarts: a
                # rolling update) before reading the request: both calls are idempotent, so one more
                # try, on a fresh connection, before the client gets a 503.
                response = await self.http.request(method, url, headers=headers, **kwargs)
        except httpx.TransportError as exc:
            raise DependencyUnavailable(
                f"The {service} service is unavailable: {type(exc).__name__}",
                retry_after_s=self.retry_after_s,
            ) from exc
        if response.status_code == httpx.codes.OK:
            return response
        body = _problem_body(response)
        if (
            response.status_code == httpx.codes.SERVICE_UNAVAILABLE
            and problem_kind(str(body.get("type", ""))) == "overloaded"
        ):
            # Passed on with the dependency's own Retry-After, never retried here: a retry would add
            # load where there is too much.
            raise Overloaded(
                f"The {service} service is overloaded: {body.get('detail', '')}",
                retry_after_s=_retry_after(response) or self.retry_after_s,
            )
        if response.status_code == httpx.codes.SERVICE_UNAVAILABLE:
            raise DependencyUnavailable(
                f"The {service} service is unavailable: {body.get('detail', '')}",
                retry_after_s=self.retry_after_s,
            )
        if response.is_client_error and body:
            # The dependency judged the client's input: pass its problem through.
            raise domain_error(body)
        raise _bad_gateway(service, f"HTTP {response.status_code}: {body.get('detail', response.text[:200])}")

    @staticmethod
    def _parse(service: str, parse: Callable[[], T]) -> T:
        try:
            return parse()
        except (ValidationError, wire.WireFormatError, ValueError) as exc:
            raise _bad_gateway(service, f"unreadable answer: {exc}") from exc


def _bad_gateway(service: str, detail: str) -> BadGateway:
    return BadGateway(f"The {service} service answered unexpectedly: {detail}")


def _problem_body(response: httpx.Response) -> dict[str, Any]:
    """The problem+json body of an error response, or {} if it has none."""
    if response.headers.get("content-type", "").split(";")[0] != PROBLEM_MEDIA_TYPE:
        return {}
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) and isinstance(body.get("status"), int) and "title" in body else {}


def _retry_after(response: httpx.Response) -> int | None:
    """The Retry-After of an answer in whole seconds, or None when absent or not a number of seconds."""
    value = response.headers.get("retry-after", "")
    return int(value) if value.isdigit() else None
