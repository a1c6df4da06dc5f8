"""api.md lists every route of the gateway's OpenAPI with its query parameters, every answer field, and
every problem type with what to do about it."""

from docgen.api import RESULT_SCHEMAS, schema_type
from pcam_core.problems import PROBLEM_TYPES
from services.gateway.app import create_app
from tests.unit.docgen.pages import page


def test_every_route_and_its_parameters_are_listed() -> None:
    text = page("api.md")
    for path, operations in create_app().openapi()["paths"].items():
        for method, operation in operations.items():
            assert f"| `{method.upper()}` | `{path}` |" in text
            for parameter in operation.get("parameters", []):
                assert f"| `{parameter['name']}` | {parameter['in']} |" in text, (path, parameter["name"])


def test_every_answer_field_is_listed() -> None:
    text, schemas = page("api.md"), create_app().openapi()["components"]["schemas"]
    for name in RESULT_SCHEMAS:
        section = text.split(f"### `{name}`", 1)[1].split("\n### ", 1)[0]
        assert all(f"| `{field}` |" in section for field in schemas[name]["properties"]), name


def test_every_problem_type_is_listed_with_its_status() -> None:
    text = page("api.md")
    for kind, spec in PROBLEM_TYPES.items():
        assert f"| `{kind}` | {spec.status} |" in text


def test_schema_types_read_as_words() -> None:
    assert schema_type({"anyOf": [{"type": "integer"}, {"type": "null"}]}) == "integer or null"
    assert (
        schema_type({"type": "array", "items": {"$ref": "#/components/schemas/Prediction"}})
        == "array of Prediction"
    )
    assert schema_type({"type": "object", "additionalProperties": {"type": "number"}}) == "object of number"
    assert schema_type({"enum": ["cam", "occlusion"]}) == "one of cam, occlusion"
