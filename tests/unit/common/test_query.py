"""Query options parsed by the route: the same values, errors and API description as FastAPI's Query model."""

from typing import Annotated

import pytest
from fastapi import FastAPI, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.testclient import TestClient

from pcam_core.schemas import PredictOptions
from services.common.openapi import query_parameters
from services.common.query import query_options


def parsed(query: str) -> PredictOptions:
    scope = {"type": "http", "method": "GET", "path": "/", "query_string": query.encode(), "headers": []}
    return query_options(Request(scope), PredictOptions)


def test_values_defaults_repeats_and_unknown_names() -> None:
    assert parsed("") == PredictOptions()
    options = parsed("operating_point=screening&tta=1&explain=false&cache=no&other=x")
    assert options == PredictOptions(operating_point="screening", tta=True, explain=False, cache=False)
    assert parsed("tta=false&tta=true").tta is True  # the last of repeated names, as FastAPI reads it


@pytest.mark.parametrize(
    ("value", "method"),
    [("cam", "cam"), ("CAM", "cam"), ("occlusion", "occlusion"), ("true", "occlusion"), ("1", "occlusion"),
     ("false", None), ("", None)],
)  # fmt: skip
def test_explain_names_a_method_and_true_keeps_meaning_occlusion(value: str, method: str | None) -> None:
    assert parsed(f"explain={value}").explain == method


def test_an_unknown_explain_method_is_refused_naming_the_choices() -> None:
    with pytest.raises(RequestValidationError) as info:
        parsed("explain=gradcam")
    (error,) = info.value.errors()
    assert error["loc"][:2] == ("query", "explain") and "'occlusion' or 'cam'" in error["msg"]


def test_an_invalid_value_is_located_in_the_query() -> None:
    with pytest.raises(RequestValidationError) as info:
        parsed("tta=maybe")
    (error,) = info.value.errors()
    assert error["loc"] == ("query", "tta") and error["type"] == "bool_parsing"


def test_same_answers_and_description_as_a_fastapi_query_model() -> None:
    app = FastAPI()

    @app.get("/model")
    async def by_fastapi(options: Annotated[PredictOptions, Query()]) -> dict:
        return options.model_dump()

    @app.get("/own", openapi_extra={"parameters": query_parameters(PredictOptions)})
    async def by_route(request: Request) -> dict:
        return query_options(request, PredictOptions).model_dump()

    client = TestClient(app)
    for query in (
        "",
        "?operating_point=aggressive&tta=on",
        "?cache=0&cache=1",
        "?explain=maybe",
        "?explain=cam",
    ):
        fastapi, own = client.get("/model" + query), client.get("/own" + query)
        assert (own.status_code, own.json()) == (fastapi.status_code, fastapi.json()), query
    paths = app.openapi()["paths"]
    assert paths["/own"]["get"]["parameters"] == paths["/model"]["get"]["parameters"]
