"""The problem type pages: `GET /problems` and `GET /problems/{kind}` (JSON, or HTML for a browser)."""

from fastapi import APIRouter, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.exceptions import HTTPException

from pcam_core.problems import PROBLEM_TYPES
from services.common.openapi import problem_responses
from services.gateway.problem_pages import ProblemPage, prefers_html, problem_page, problem_pages, render_html
from services.gateway.settings import GatewaySettings

VARY = {"Vary": "Accept"}  # one URL, two representations: caches must keep them apart
NOT_FOUND = PROBLEM_TYPES["not-found"].status


def _answer(request: Request, pages: list[ProblemPage], heading: str, json: object) -> Response:
    """The pages as HTML for a browser, else `json`."""
    if prefers_html(request.headers.get("accept")):
        return HTMLResponse(render_html(pages, heading), headers=VARY)
    return JSONResponse(json, headers=VARY)


def router(settings: GatewaySettings) -> APIRouter:
    """Pages for every kind in the table, under the configured problem type base; no key needed."""
    routes = APIRouter(prefix="/problems", tags=["problems"])
    base = settings.problem_type_base

    @routes.get(
        "",
        summary="Every problem type the API answers with: what happened and what to do.",
        response_model=list[ProblemPage],
    )
    async def every_problem(request: Request) -> Response:
        pages = problem_pages(base)
        return _answer(request, pages, "PCam API problem types", [page.model_dump() for page in pages])

    @routes.get(
        "/{kind}",
        summary="One problem type (the page its `type` URI names): what happened and what to do.",
        response_model=ProblemPage,
        responses=problem_responses(NOT_FOUND),
    )
    async def one_problem(kind: str, request: Request) -> Response:
        if kind not in PROBLEM_TYPES:
            raise HTTPException(NOT_FOUND, f"No problem type {kind!r}; GET /problems lists them.")
        page = problem_page(kind, base)
        return _answer(request, [page], f"{page.title} ({page.status})", page.model_dump())

    return routes
