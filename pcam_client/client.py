"""Sync and async clients of the gateway's public API (docs/architecture.md#public-api). Research use only.

Answers are parsed with the gateway's own response models (pcam_core.schemas,
pcam_core.release), so the client and the server share one definition of every field.
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
import os
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from pcam_client.errors import REQUEST_ID_HEADER, PCamAPIError, PCamConnectionError, PCamError
from pcam_client.tensor import PixelCall, PixelPredictions, tensor_parameters
from pcam_core.problems import PROBLEM_TYPES
from pcam_core.release import ReleaseSummary
from pcam_core.schemas import BatchResponse, ExplainMethod, ItemError, Prediction

if TYPE_CHECKING:
    import numpy as np  # annotations only: the client installs without numpy (predict_pixels loads it)

log = logging.getLogger("pcam_client")

ImageInput = bytes | str | os.PathLike[str]
"""An image's bytes, or the path of an image file."""
Part = tuple[str, bytes, str]

API_KEY_HEADER = "X-API-Key"
DEFAULT_TIMEOUT_S = 60.0
DEFAULT_MAX_BATCH = 256
"""The gateway's default images per batch request (PCAM_GATEWAY_MAX_IMAGES); it does not publish its own."""
DEFAULT_MAX_RETRIES = 2
DEFAULT_MAX_RETRY_WAIT_S = 10.0
RETRY_STATUSES = frozenset(PROBLEM_TYPES[kind].status for kind in ("rate-limited", "service-unavailable"))
FALLBACK_WAIT_S = 1.0
"""Wait before retrying a 429/503 that came without a usable Retry-After (doubled per attempt)."""
_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"II*\x00", "image/tiff"),
    (b"MM\x00*", "image/tiff"),
    (b"BM", "image/bmp"),
)

Model = TypeVar("Model", bound=BaseModel)


class Readiness(BaseModel):
    """`GET /readyz`: overall status plus one boolean per dependency (redis, preprocess, ensemble)."""

    model_config = ConfigDict(extra="allow")

    status: str

    @property
    def ready(self) -> bool:
        return self.status == "ready"


def _sleep(seconds: float) -> None:
    time.sleep(seconds)


async def _asleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


def image_part(image: ImageInput) -> Part:
    """(filename, bytes, content type) of one upload; bytes are named by their magic number."""
    if isinstance(image, bytes | bytearray | memoryview):
        data = bytes(image)
        media = next((media for magic, media in _MAGIC if data.startswith(magic)), None)
        if media is None:
            return "image", data, "application/octet-stream"
        # The gateway only takes parts with a filename as files, so name the bytes.
        return f"image{mimetypes.guess_extension(media) or ''}", data, media
    path = Path(image)
    return path.name, path.read_bytes(), mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def predict_params(
    operating_point: str | None,
    tta: bool,
    explain: bool | ExplainMethod,
    cache: bool,
    abstain: bool = False,
) -> dict[str, str]:
    """Query parameters of /v1/predict*; defaults are left out so the gateway's own defaults apply."""
    params: dict[str, str] = {}
    if operating_point is not None:
        params["operating_point"] = operating_point
    if tta:
        params["tta"] = "true"
    if explain:  # True keeps meaning occlusion, the method explain=true always asked for
        params["explain"] = "occlusion" if explain is True else explain
    if not cache:
        params["cache"] = "false"
    if abstain:
        params["abstain"] = "true"
    return params


def _chunks(items: Sequence[Part], size: int) -> Iterator[Sequence[Part]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _parse(model: type[Model], response: httpx.Response) -> Model:
    try:
        return model.model_validate_json(response.content)
    except ValidationError as exc:
        raise PCamError(
            f"{response.request.method} {response.request.url.path} answered a body that is not a "
            f"{model.__name__}: {exc.error_count()} validation errors (first: {exc.errors()[0]['msg']})"
        ) from exc


def _batch_results(response: httpx.Response, sent: int) -> list[Prediction | ItemError]:
    results = _parse(BatchResponse, response).results
    if len(results) != sent:
        raise PCamError(f"the gateway answered {len(results)} results for {sent} images")
    return results


class _Base:
    """Settings and the pure parts (requests, retry decisions) shared by the sync and async clients."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None,
        max_retries: int,
        max_retry_wait_s: float,
        max_batch: int,
    ) -> None:
        if max_retries < 0 or max_retry_wait_s < 0 or max_batch < 1:
            raise ValueError("max_retries and max_retry_wait_s must be >= 0, max_batch >= 1")
        self.base_url = base_url
        self.max_retries, self.max_retry_wait_s, self.max_batch = max_retries, max_retry_wait_s, max_batch
        self._headers = {API_KEY_HEADER: api_key} if api_key else {}

    @staticmethod
    def _request_headers(request_id: str | None) -> dict[str, str]:
        return {REQUEST_ID_HEADER: request_id} if request_id else {}

    def _retry_wait(self, response: httpx.Response, attempt: int) -> float | None:
        """Seconds to wait before retrying this answer, or None to hand it back as it is."""
        if response.status_code not in RETRY_STATUSES or attempt >= self.max_retries:
            return None
        error = PCamAPIError.from_response(response)
        wait = error.retry_after if error.retry_after is not None else FALLBACK_WAIT_S * 2**attempt
        # Asked to come back later than we are willing to wait: fail now rather than retry early
        # against a server that said it is not ready; the error carries retry_after for the caller.
        if wait > self.max_retry_wait_s:
            return None
        log.warning(
            "gateway answered %s (request %s); retry %d/%d in %.1f s",
            response.status_code,
            error.request_id,
            attempt + 1,
            self.max_retries,
            wait,
        )
        return wait

    def _connection_error(self, exc: httpx.TransportError) -> PCamConnectionError:
        return PCamConnectionError(f"no answer from the PCam gateway at {self.base_url}: {exc!r}")


class PCamClient(_Base):
    """Blocking client of the gateway; use it as a context manager (or call close()) to free connections."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.BaseTransport | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait_s, max_batch)
        self._http = httpx.Client(
            base_url=base_url, timeout=timeout, transport=transport, headers=self._headers
        )

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _send(
        self,
        method: str,
        path: str,
        *,
        retry: bool = True,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        """One call, retrying 429/503 within the limits; a 2xx (or, with retry=False, any) answer is returned."""
        headers = self._request_headers(request_id) | (headers or {})
        attempt = 0
        while True:
            try:
                response = self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                raise self._connection_error(exc) from exc
            wait = self._retry_wait(response, attempt) if retry else None
            if wait is None:
                break
            _sleep(wait)
            attempt += 1
        if retry and not response.is_success:
            raise PCamAPIError.from_response(response)
        return response

    def predict(
        self,
        image: ImageInput,
        *,
        operating_point: str | None = None,
        tta: bool = False,
        explain: bool | ExplainMethod = False,
        cache: bool = True,
        abstain: bool = False,
        request_id: str | None = None,
    ) -> Prediction:
        """Score one patch (POST /v1/predict); operating_point None means the gateway's default."""
        response = self._send(
            "POST",
            "/v1/predict",
            params=predict_params(operating_point, tta, explain, cache, abstain),
            files={"file": image_part(image)},
            request_id=request_id,
        )
        return _parse(Prediction, response)

    def predict_batch(
        self,
        images: Sequence[ImageInput],
        *,
        operating_point: str | None = None,
        tta: bool = False,
        explain: bool | ExplainMethod = False,
        cache: bool = True,
        abstain: bool = False,
        request_id: str | None = None,
    ) -> list[Prediction | ItemError]:
        """One result or ItemError per image, in order; sent in requests of at most max_batch images."""
        params = predict_params(operating_point, tta, explain, cache, abstain)
        results: list[Prediction | ItemError] = []
        for chunk in _chunks([image_part(image) for image in images], self.max_batch):
            response = self._send(
                "POST",
                "/v1/predict/batch",
                params=params,
                files=[("files", part) for part in chunk],
                request_id=request_id,
            )
            results += _batch_results(response, len(chunk))
        return results

    def predict_pixels(
        self,
        images: np.ndarray,
        *,
        operating_point: str | None = None,
        tta: bool = False,
        cache: bool = True,
        abstain: bool = False,
        request_id: str | None = None,
    ) -> PixelPredictions:
        """Score uint8 pixels (N, 96, 96, 3) through the tensor input, max_batch patches per request;
        needs numpy (the `tensor` extra)."""
        call = PixelCall(images, self.max_batch, tensor_parameters(operating_point, tta, cache, abstain))
        for request in call.requests():
            response = self._send(
                "POST", request.path, content=request.content, headers=request.headers, request_id=request_id
            )
            call.add(response.content, response.headers, request.count)
        return call.result()

    def models(self) -> ReleaseSummary:
        """The serving release (GET /v1/models): members, operating points, data source."""
        return _parse(ReleaseSummary, self._send("GET", "/v1/models"))

    def health(self) -> dict[str, Any]:
        """Liveness (GET /healthz); raises PCamAPIError if the process does not answer 2xx."""
        return self._send("GET", "/healthz").json()

    def ready(self) -> Readiness:
        """Readiness (GET /readyz) as reported, not-ready (503) included: no retry, no raise for 503."""
        response = self._send("GET", "/readyz", retry=False)
        if response.status_code not in (httpx.codes.OK, httpx.codes.SERVICE_UNAVAILABLE):
            raise PCamAPIError.from_response(response)
        return _parse(Readiness, response)


class AsyncPCamClient(_Base):
    """The same API as PCamClient for asyncio code: `async with AsyncPCamClient(url) as client: ...`."""

    def __init__(
        self,
        base_url: str,
        api_key: str | None = None,
        *,
        timeout: float | httpx.Timeout = DEFAULT_TIMEOUT_S,
        transport: httpx.AsyncBaseTransport | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
        max_batch: int = DEFAULT_MAX_BATCH,
    ) -> None:
        super().__init__(base_url, api_key, max_retries, max_retry_wait_s, max_batch)
        self._http = httpx.AsyncClient(
            base_url=base_url, timeout=timeout, transport=transport, headers=self._headers
        )

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _send(
        self,
        method: str,
        path: str,
        *,
        retry: bool = True,
        request_id: str | None = None,
        headers: dict[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        headers = self._request_headers(request_id) | (headers or {})
        attempt = 0
        while True:
            try:
                response = await self._http.request(method, path, headers=headers, **kwargs)
            except httpx.TransportError as exc:
                raise self._connection_error(exc) from exc
            wait = self._retry_wait(response, attempt) if retry else None
            if wait is None:
                break
            await _asleep(wait)
            attempt += 1
        if retry and not response.is_success:
            raise PCamAPIError.from_response(response)
        return response

    async def predict(
        self,
        image: ImageInput,
        *,
        operating_point: str | None = None,
        tta: bool = False,
        explain: bool | ExplainMethod = False,
        cache: bool = True,
        abstain: bool = False,
        request_id: str | None = None,
    ) -> Prediction:
        """Score one patch (POST /v1/predict)."""
        response = await self._send(
            "POST",
            "/v1/predict",
            params=predict_params(operating_point, tta, explain, cache, abstain),
            files={"file": image_part(image)},
            request_id=request_id,
        )
        return _parse(Prediction, response)

    async def predict_batch(
        self,
        images: Sequence[ImageInput],
        *,
        operating_point: str | None = None,
        tta: bool = False,
        explain: bool | ExplainMethod = False,
        cache: bool = True,
        abstain: bool = False,
        request_id: str | None = None,
    ) -> list[Prediction | ItemError]:
        """One result or ItemError per image, in order; chunks go one after another (order, back-pressure)."""
        params = predict_params(operating_point, tta, explain, cache, abstain)
        results: list[Prediction | ItemError] = []
        for chunk in _chunks([image_part(image) for image in images], self.max_batch):
            response = await self._send(
                "POST",
                "/v1/predict/batch",
                params=params,
                files=[("files", part) for part in chunk],
                request_id=request_id,
            )
            results += _batch_results(response, len(chunk))
        return results

    async def predict_pixels(
        self,
        images: np.ndarray,
        *,
        operating_point: str | None = None,
        tta: bool = False,
        cache: bool = True,
        abstain: bool = False,
        request_id: str | None = None,
    ) -> PixelPredictions:
        """Score uint8 pixels (N, 96, 96, 3) through the tensor input; chunks go one after another."""
        call = PixelCall(images, self.max_batch, tensor_parameters(operating_point, tta, cache, abstain))
        for request in call.requests():
            response = await self._send(
                "POST", request.path, content=request.content, headers=request.headers, request_id=request_id
            )
            call.add(response.content, response.headers, request.count)
        return call.result()

    async def models(self) -> ReleaseSummary:
        """The serving release (GET /v1/models)."""
        return _parse(ReleaseSummary, await self._send("GET", "/v1/models"))

    async def health(self) -> dict[str, Any]:
        """Liveness (GET /healthz)."""
        return (await self._send("GET", "/healthz")).json()

    async def ready(self) -> Readiness:
        """Readiness (GET /readyz) as reported, not-ready (503) included."""
        response = await self._send("GET", "/readyz", retry=False)
        if response.status_code not in (httpx.codes.OK, httpx.codes.SERVICE_UNAVAILABLE):
            raise PCamAPIError.from_response(response)
        return _parse(Readiness, response)
