"""docs/reference/release-json.md: the fields of release.json, from its pydantic model."""

import inspect
import json
import types
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from docgen.markdown import banner, bounds, cell, table
from pcam_core.release import ReleaseManifest

SOURCE = "pcam_core/release.py (`ReleaseManifest` and the models it nests)"
_JSON_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", type(None): "null"}


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    """The models a field's type refers to (inside optionals, tuples, dicts...)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in get_args(annotation) for model in _models_in(arg)]


def nested_models(root: type[BaseModel] = ReleaseManifest) -> list[type[BaseModel]]:
    """The root model and every model under it, each once, in the order a reader meets them."""
    found = [root]
    for model in found:  # grows while it is walked: breadth first
        for field in model.model_fields.values():
            found += [nested for nested in _models_in(field.annotation) if nested not in found]
    return found


def json_type(annotation: Any) -> str:
    """A field's type as it looks in the JSON file, as Markdown (a nested model links to its table)."""
    origin, args = get_origin(annotation), get_args(annotation)
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return f"[`{annotation.__name__}`](#{annotation.__name__.lower()})"
    if origin in (Union, types.UnionType):
        return " or ".join(json_type(arg) for arg in args)
    if origin is Literal:
        return " or ".join(f"`{_json_literal(arg)}`" for arg in args)
    if origin in (tuple, list):
        if origin is tuple and args and args[-1] is not Ellipsis:  # fixed length: each item's type
            # Escaped brackets: `[a, b]` must not read as a Markdown link.
            return "\\[" + ", ".join(json_type(arg) for arg in args) + "\\]"
        return f"array of {json_type(args[0])}"
    if origin is dict:
        return f"object of {json_type(args[1])}"
    return _JSON_NAMES.get(annotation, getattr(annotation, "__name__", str(annotation)))


def _json_literal(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False)


def _required(field: FieldInfo) -> str:
    """`yes`, or `no` with the default a file without the field gets, as JSON."""
    if field.is_required():
        return "yes"
    default = field.default_factory() if field.default_factory is not None else field.default
    return "no" if default is PydanticUndefined else f"no (default `{_json_literal(default)}`)"


def model_table(model: type[BaseModel]) -> str:
    """The table of one model's fields: field, type (with its bounds), required, description."""
    rows = [
        [
            f"`{name}`",
            cell(", ".join([json_type(field.annotation), *bounds(field.metadata)])),
            _required(field),
            cell(field.description or ""),
        ]
        for name, field in model.model_fields.items()
    ]
    return table(["Field", "Type", "Required", "Description"], rows)


def release_fields_markdown(level: int = 2) -> str:
    """A section per model of the manifest, top level first, headings at `level` (for inclusion elsewhere)."""
    sections = []
    for model in nested_models():
        heading = "#" * level + f" `{model.__name__}`"
        # The class docstring's first paragraph says what the model is; pydantic's default one does not.
        doc = inspect.cleandoc(model.__doc__) if "__doc__" in vars(model) and model.__doc__ else ""
        intro = " ".join(doc.split("\n\n")[0].split()) + "\n\n" if doc else ""
        sections.append(f"{heading}\n\n{intro}{model_table(model)}")
    return "\n".join(sections)


def release_json_markdown() -> str:
    """The whole release.json page: one sentence, then the generated tables."""
    return (
        banner(SOURCE) + "\n# release.json fields\n\n"
        "Every field of `release.json`, the release manifest at the root of a model repository, "
        "as the services validate it: the top level is `ReleaseManifest`.\n\n" + release_fields_markdown()
    )
