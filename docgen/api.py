"""docs/reference/api.md: the gateway's HTTP API from its own OpenAPI description, and every problem
type from the one problem table."""

import json
from typing import Any

from docgen.markdown import banner, cell, code, table
from pcam_core.problems import PROBLEM_TYPES
from services.gateway.app import create_app

SOURCE = "the gateway's OpenAPI description (services/gateway/app.py) and pcam_core/problems.py"
RESULT_SCHEMAS = ("Prediction", "Quality", "Explanation", "ItemError", "BatchResponse")
"""The answer bodies a client reads, field by field."""


def schema_type(schema: dict[str, Any]) -> str:
    """A JSON schema's type in a few words: `string`, `one of a, b`, `integer or null`, `Prediction`."""
    if "$ref" in schema:
        return schema["$ref"].rsplit("/", 1)[1]
    if "enum" in schema:
        return "one of " + ", ".join(str(value) for value in schema["enum"])
    if "anyOf" in schema:
        return " or ".join(schema_type(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"array of {schema_type(schema.get('items', {}))}"
    if schema.get("type") == "object" and "additionalProperties" in schema:
        return f"object of {schema_type(schema['additionalProperties'])}"
    return str(schema.get("type", "any"))


def _routes(spec: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method.upper(), path, op) for path, ops in spec["paths"].items() for method, op in ops.items()]


def routes_markdown(spec: dict[str, Any]) -> str:
    """The route table, then each route's query parameters and request body types."""
    rows = [
        [code(method), code(path), cell(op.get("summary", "")), ", ".join(sorted(op.get("responses", {})))]
        for method, path, op in _routes(spec)
    ]
    text = "## Routes\n\n" + table(["Method", "Path", "What it does", "Statuses"], rows)
    for method, path, op in _routes(spec):
        parameters, body = op.get("parameters", []), op.get("requestBody", {}).get("content", {})
        if not parameters and not body:
            continue
        text += f"\n### {code(method + ' ' + path)}\n\n"
        if body:
            text += "Request body: " + ", ".join(code(kind) for kind in body) + ".\n\n"
        if parameters:
            text += table(
                ["Parameter", "In", "Type", "Default", "Description"],
                [
                    [
                        code(p["name"]),
                        p["in"],
                        cell(schema_type(p["schema"])),
                        code(json.dumps(p["schema"]["default"])) if "default" in p["schema"] else "",
                        cell(p.get("description", "")),
                    ]  # fmt: skip
                    for p in parameters
                ],
            )
    return text


def results_markdown(spec: dict[str, Any]) -> str:
    """The fields of each answer body a client reads."""
    schemas, text = spec["components"]["schemas"], "## Answers\n"
    for name in RESULT_SCHEMAS:
        schema = schemas[name]
        required = set(schema.get("required", ()))
        rows = [
            [
                code(field),
                cell(schema_type(prop)),
                "yes" if field in required else "no",
                cell(prop.get("description", "")),
            ]
            for field, prop in schema["properties"].items()
        ]
        text += f"\n### {code(name)}\n\n" + cell(schema.get("description", "")) + "\n\n"
        text += table(["Field", "Type", "Always there", "Description"], rows)
    return text


def problems_markdown() -> str:
    """Every problem type: its kind (the last part of `type`), status, title, cause and remedy."""
    rows = [
        [code(kind), str(spec.status), cell(spec.title), cell(spec.about), cell(spec.action)]
        for kind, spec in PROBLEM_TYPES.items()
    ]
    return (
        "## Problem types\n\n"
        "Every error is `application/problem+json` (RFC 9457) with `type`, `title`, `status`, `detail` "
        "and `request_id`. `type` ends in the kind below and resolves to a page the gateway serves "
        "(`GET /problems/{kind}`, JSON or HTML).\n\n"
        + table(["Kind", "Status", "Title", "What happened", "What to do"], rows)
    )


def api_markdown() -> str:
    """The whole API page."""
    spec = create_app().openapi()
    return (
        banner(SOURCE) + "\n# HTTP API\n\n"
        f"The gateway's public API, {code(spec['info']['title'])} {spec['info']['version']}. A running "
        "gateway serves the same description interactively at `/docs` and as JSON at `/openapi.json`. "
        "How to read an answer: [Reading the answers](../reading-answers.md). Research use only: no "
        "answer is a diagnosis.\n\n"
        + routes_markdown(spec)
        + "\n"
        + results_markdown(spec)
        + "\n"
        + problems_markdown()
    )
