"""The tensor input: the Open Inference Protocol (KServe v2) for high-volume clients (pcam_core.oip).

Patches arrive as pixels, so nothing is encoded by the client or decoded by the platform; each one is
validated, normalized, cached (keyed by its pixels) and answered as an upload would be. Errors are the
API's problem+json, with the `error` member KServe v2 clients (tritonclient) read
(services.common.problems).
"""

import numpy as np
from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response

from pcam_core import oip
from pcam_core.contract import PATCH_BYTES
from pcam_core.errors import InvalidRequest
from pcam_core.problems import domain_error
from pcam_core.release import parse_operating_point
from pcam_core.schemas import ItemError, PatchResult, PredictOptions
from services.common.openapi import BINARY, problem_responses
from services.common.query import options_from
from services.common.uploads import read_body
from services.gateway.auth import ApiKeys
from services.gateway.deadline import deadline
from services.gateway.deps import Services, guard, guarded_statuses, predictor
from services.gateway.settings import GatewaySettings

HEADER_ALLOWANCE = 64 * 1024
"""Room for the JSON header of a request beside its pixels."""
SERVER = {"name": "pcam-gateway", "version": "0.1.0", "extensions": ["binary_tensor_data"]}


def router(settings: GatewaySettings, keys: ApiKeys) -> APIRouter:
    """`/v2`: server and model metadata, health, and `POST /v2/models/pcam/infer`."""
    v2 = APIRouter(prefix="/v2", tags=["tensor input (KServe v2)"])
    model = f"/models/{oip.MODEL_NAME}"
    guarded = guarded_statuses(settings, keys)

    @v2.get("", summary="Server metadata.")
    async def server() -> dict:
        return SERVER

    @v2.get("/health/live", summary="Live: the process is up.")
    async def live() -> dict:
        return {"live": True}

    @v2.get(
        "/health/ready",
        summary="Ready: preprocess and ensemble are.",
        responses={503: {"description": "Not ready."}},
    )
    async def ready(services: Services) -> JSONResponse:
        states = await services.ready()
        up = all(states.values())
        return JSONResponse({"ready": up}, status_code=200 if up else 503)

    @v2.get(
        f"{model}/ready",
        summary="The model is ready: preprocess and ensemble are.",
        responses={503: {"description": "Not ready."}},
    )
    async def model_ready(services: Services) -> JSONResponse:
        return await ready(services)

    @v2.get(
        model,
        summary="The model's tensors; its version is the serving release.",
        dependencies=[Depends(guard(keys))],
        responses=problem_responses(*guarded, 502, 503),
    )
    async def metadata(services: Services) -> dict:
        return oip.model_metadata((await services.release()).release_id)

    @v2.post(
        f"{model}/infer",
        summary="Calibrated predictions for uint8 patches [N, 96, 96, 3] (JSON or the binary extension).",
        dependencies=[Depends(guard(keys))],
        responses={
            200: {
                "description": "probability, label (-1: withheld with abstain), uncertainty and "
                "needs_review per patch; the operating point, "
                "threshold and release (one for every patch) as parameters.",
                "content": {"application/json": {}, "application/octet-stream": {"schema": BINARY}},
            },
            **problem_responses(400, *guarded, 408, 413, 422, 502, 503, 504),
        },
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {}, "application/octet-stream": {"schema": BINARY}},
            }
        },
    )
    async def infer(request: Request) -> Response:
        async with deadline(settings.request_timeout_s, settings.retry_after_s) as budget:
            with budget.upload():
                body = await read_body(request, settings.max_images * PATCH_BYTES + HEADER_ALLOWANCE)
            header = request.headers.get(oip.HEADER_LENGTH)
            if header is not None and not (header.isascii() and header.isdigit()):
                raise InvalidRequest(f"{oip.HEADER_LENGTH} is {header!r}.", kind="invalid-request")
            call, images = oip.read_request(
                body, None if header is None else int(header), settings.max_images
            )
            options = _options(call.parameters)
            point = parse_operating_point(options.operating_point)
            patches = [patch.tobytes() for patch in images]
            outcomes, hits = await predictor(request).predict_from_one_release(
                patches, options.infer_options(point), read_cache=options.cache, pixels=True
            )
            results = [_result(outcome) for outcome in outcomes]
            first = results[0]  # one release answered every patch: its threshold is theirs
            answer, header_length = oip.write_response(
                call,
                {
                    "probability": np.array([r.probability for r in results]),
                    "label": np.array([oip.ABSTAINED_LABEL if r.label is None else r.label for r in results]),
                    "uncertainty": np.array([r.uncertainty for r in results]),
                    "needs_review": np.array([r.needs_review for r in results]),
                },
                first.release,
                {
                    "operating_point": first.operating_point,
                    "threshold": first.threshold,
                    "release": first.release,
                    "degraded": any(r.degraded for r in results),
                    "cached": sum(hits),
                },
            )
        headers = {} if header_length is None else {oip.HEADER_LENGTH: str(header_length)}
        media = "application/json" if header_length is None else "application/octet-stream"
        return Response(answer, media_type=media, headers=headers)

    return v2


def _options(parameters: dict) -> PredictOptions:
    """The request's parameters as the /v1 query options (explain has no tensor output here)."""
    options = options_from(parameters, PredictOptions, "parameters")
    if options.explain:
        raise InvalidRequest(
            "explain has no output in the tensor input; use /v1/predict.", kind="invalid-request"
        )
    return options


def _result(outcome: PatchResult | ItemError) -> PatchResult:
    if isinstance(outcome, ItemError):  # pixels are never rejected; were one, its problem is the answer
        raise domain_error(outcome)
    return outcome
