"""The gateway's routes: readiness, and the public /v1 API (models, predict, predict/batch)."""

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from pcam_core.problems import ItemError, domain_error, rebased
from pcam_core.release import MODELS_EXAMPLE, ReleaseSummary, parse_operating_point
from pcam_core.schemas import BATCH_EXAMPLE, PREDICTION_EXAMPLE, BatchResponse, Prediction, PredictOptions
from pcam_core.serving import check_explainable
from services.common.openapi import ok_response, problem_responses, query_parameters, upload_request_body
from services.common.query import query_options
from services.common.request_id import current_request_id
from services.common.uploads import media_type, read_body, read_files
from services.gateway.auth import ApiKeys
from services.gateway.deadline import deadline
from services.gateway.deps import Cache, Services, guard, guarded_statuses, predictor
from services.gateway.predict import Outcome
from services.gateway.settings import GatewaySettings

RAW_IMAGE_TYPES = ("image/png", "image/jpeg", "image/tiff", "image/bmp")
READYZ_EXAMPLES = {
    200: ("Preprocess and ensemble are ready (Redis is reported, not required).", True),
    503: ("A dependency on the model path is not ready.", False),
}


def routers(settings: GatewaySettings, keys: ApiKeys) -> tuple[APIRouter, APIRouter]:
    """The operations routes and the /v1 API; which problems they document depends on whether keys and
    rate limits are on."""
    routes = APIRouter()
    guarded = guarded_statuses(settings, keys)
    predict_problems = problem_responses(400, *guarded, 408, 413, 415, 422, 502, 503, 504)
    v1 = APIRouter(prefix="/v1", dependencies=[Depends(guard(keys))])

    @routes.get(
        "/readyz",
        tags=["operations"],
        summary="Ready: Redis, preprocess and ensemble answer.",
        responses={
            status: {
                "description": description,
                "content": {
                    "application/json": {
                        "example": {
                            "status": "ready" if ensemble else "not ready",
                            "redis": True,
                            "preprocess": True,
                            "ensemble": ensemble,
                        }
                    }
                },
            }
            for status, (description, ensemble) in READYZ_EXAMPLES.items()
        },
    )
    async def readyz(results: Cache, services: Services) -> JSONResponse:
        states = {"redis": await results.ping(), **await services.ready()}
        # Redis is optional for correctness (cache misses), so only the model path gates readiness.
        ready = states["preprocess"] and states["ensemble"]
        return JSONResponse(
            {"status": "ready" if ready else "not ready", **states}, status_code=200 if ready else 503
        )

    @v1.get(
        "/models",
        tags=["models"],
        summary="The serving release: members, operating points, data.",
        responses={
            **ok_response("The serving release.", MODELS_EXAMPLE),
            **problem_responses(*guarded, 502, 503),
        },
    )
    async def models(services: Services) -> ReleaseSummary:
        return await services.release()

    @v1.post(
        "/predict",
        tags=["predict"],
        summary="Predict one patch: multipart field `file`, or the image as the raw body.",
        response_model=Prediction,
        responses={**ok_response("The patch's result.", PREDICTION_EXAMPLE), **predict_problems},
        openapi_extra={
            "parameters": query_parameters(PredictOptions),
            **upload_request_body("file", many=False, raw_media_types=RAW_IMAGE_TYPES),
        },
    )
    async def predict(request: Request) -> Response:
        options = query_options(request, PredictOptions)
        point = parse_operating_point(options.operating_point)  # refused before any upload is read
        async with deadline(settings.request_timeout_s, settings.retry_after_s) as budget:
            with budget.upload():
                if media_type(request) in RAW_IMAGE_TYPES:
                    upload = await read_body(request, settings.max_image_bytes)
                else:
                    (upload,) = await read_files(request, "file", 1, settings.max_image_bytes)
            (outcome,), (hit,) = await predictor(request).predict(
                [upload], options.infer_options(point), read_cache=options.cache
            )
        entry = _entry(outcome, hit, current_request_id(), settings.problem_type_base)
        if isinstance(entry, ItemError):
            raise domain_error(entry)  # the upload's own problem is the answer
        return _json(entry)

    @v1.post(
        "/predict/batch",
        tags=["predict"],
        summary="Predict 1..N patches (multipart field `files`); a bad image gets its own error entry.",
        responses={
            **ok_response("One entry per file, in order: a result or that file's problem.", BATCH_EXAMPLE),
            **predict_problems,
        },
        response_model=BatchResponse,
        openapi_extra={
            "parameters": query_parameters(PredictOptions),
            **upload_request_body("files", many=True, max_items=settings.max_images),
        },
    )
    async def predict_batch(request: Request) -> Response:
        options = query_options(request, PredictOptions)
        point = parse_operating_point(options.operating_point)
        async with deadline(settings.request_timeout_s, settings.retry_after_s) as budget:
            with budget.upload():
                uploads = await read_files(request, "files", settings.max_images, settings.max_image_bytes)
            if options.explain == "occlusion":
                check_explainable(len(uploads), settings.max_explain_images)
            outcomes, hits = await predictor(request).predict(
                uploads, options.infer_options(point), read_cache=options.cache
            )
        request_id = current_request_id()
        base = settings.problem_type_base
        entries = [_entry(o, hit, request_id, base) for o, hit in zip(outcomes, hits, strict=True)]
        return _json(BatchResponse.model_construct(results=entries, request_id=request_id))

    return routes, v1  # included side by side: a router nested in another costs a matching level per request


def _json(answer: BaseModel) -> Response:
    """An answer built from results already validated (computed, or read from the cache), serialized
    once: returned as a Response, it skips FastAPI's validation of the route's response model (the
    model still documents the route)."""
    return Response(answer.model_dump_json(), media_type="application/json")


def _entry(outcome: Outcome, hit: bool, request_id: str, problem_base: str) -> Prediction | ItemError:
    """A result as this request got it (cached or not), or the upload's problem under the gateway's
    problem type base."""
    if isinstance(outcome, ItemError):
        return rebased(outcome, problem_base)
    return Prediction.model_construct(**dict(outcome), cached=hit, request_id=request_id)
