"""Request options parsed by the route itself: FastAPI's `Query()` model costs a tenth of a cache hit."""

from collections.abc import Mapping
from typing import Any, TypeVar

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ValidationError

M = TypeVar("M", bound=BaseModel)


def options_from(values: Mapping[str, Any], model: type[M], location: str) -> M:
    """The model from `values` (names it lacks are ignored); invalid values are the API's 422
    problem, each located at `location`.<name>."""
    try:
        return model.model_validate({name: values[name] for name in model.model_fields if name in values})
    except ValidationError as exc:
        raise RequestValidationError(
            [{**error, "loc": (location, *error["loc"])} for error in exc.errors(include_url=False)]
        ) from exc


def query_options(request: Request, model: type[M]) -> M:
    """The model from the query string, as FastAPI would build it (the last of repeated names wins,
    unknown names are ignored)."""
    return options_from(request.query_params, model, "query")
