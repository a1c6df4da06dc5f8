"""The ensemble's routes: readiness, the serving release, and inference on a binary batch."""

from typing import Annotated

from fastapi import APIRouter, Query, Request
from fastapi.responses import JSONResponse

from pcam_core import wire
from pcam_core.errors import ReleaseMismatch
from pcam_core.release import ReleaseSummary, parse_operating_point, summarize
from pcam_core.schemas import InferOptions, InferResponse
from pcam_core.serving import EnsembleModel, check_explainable
from services.common.openapi import BINARY, problem_responses
from services.common.uploads import read_batch_frame
from services.ensemble.deps import CurrentRelease, Registry, Triton, Watcher
from services.ensemble.metrics import record_answer
from services.ensemble.settings import EnsembleSettings


def router(settings: EnsembleSettings) -> APIRouter:
    """The routes, their descriptions quoting the limits these settings set."""
    routes = APIRouter()

    @routes.get(
        "/readyz",
        tags=["operations"],
        summary="Ready: every member is ready on Triton.",
        responses={503: {"description": "A member is not ready on Triton (the body says which)."}},
    )
    async def readyz(manifest: CurrentRelease, members: Triton) -> JSONResponse:
        states = await members.ready(manifest.members)
        ready = all(states.values())
        body = {
            "status": "ready" if ready else "not ready",
            "release": manifest.release_id,
            "members": states,
        }
        return JSONResponse(body, status_code=200 if ready else 503)

    @routes.get("/v1/release", tags=["release"], summary="The serving release.")
    async def get_release(manifest: CurrentRelease) -> ReleaseSummary:
        return summarize(manifest)

    @routes.post(
        "/v1/infer",
        tags=["inference"],
        summary="Calibrated ensemble predictions for a binary batch.",
        description="Every member gets one batch per request (split at its max batch size): the patches, "
        "their 8 dihedral views with `tta`, and with `explain=occlusion` one copy per occluding window "
        f"({settings.occlusion_window} px, stride {settings.occlusion_stride}) filled with the patch's "
        f"mean colour (at most {settings.max_explain_images} patches); `explain=cam` asks the same call "
        "for the members' activation maps. A member that fails after retries "
        "fails the request (503 + Retry-After) unless `min_members` allows a degraded answer.",
        openapi_extra={"requestBody": {"content": {wire.MEDIA_TYPE: {"schema": BINARY}}, "required": True}},
        responses=problem_responses(400, 413, 422, 502, 503),
    )
    async def infer(
        request: Request,
        registry: Registry,
        watcher: Watcher,
        members: Triton,
        options: Annotated[InferOptions, Query()],
    ) -> InferResponse:
        point = parse_operating_point(options.operating_point)
        batch = await read_batch_frame(request, settings.max_images)
        # The release whose stain reference normalized the batch: current, previous, or just rolled in.
        release = await registry.resolve(batch.release or "", watcher.check)
        if release is None:
            raise ReleaseMismatch(
                f"Batch prepared for release {batch.release!r}; serving {registry.current.release_id!r}.",
                retry_after_s=1,
            )
        if options.explain == "occlusion":
            check_explainable(len(batch.images), settings.max_explain_images)
        model = EnsembleModel(release, settings.occlusion(), settings.retry_after_s)
        response = await model.predict(
            members,
            batch.images,
            point,
            tta=options.tta,
            explain=options.explain,
            min_members=settings.min_members,
            abstain=options.abstain,
        )
        record_answer(response)  # here, where the ensemble decides: cached answers are never counted
        return response

    return routes
