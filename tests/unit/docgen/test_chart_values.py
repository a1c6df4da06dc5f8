"""chart-values.md and the chart README list every value of values.yaml, typed by the schema."""

import json
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from docgen.chart_values import (
    SCHEMA,
    VALUES,
    Schema,
    ValuesTable,
    comment_blocks,
    comment_markdown,
    dotted,
    yaml_text,
)
from docgen.pages import ROOT
from tests.unit.docgen.pages import first_column, page, readme_table


def leaves(values: dict[str, Any], path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every leaf of values.yaml: a value that is not a mapping with keys ({} and [] are leaves)."""
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaves(value, (*path, key))
        else:
            yield (*path, key)


LEAVES = list(leaves(yaml.safe_load((ROOT / VALUES).read_text())))


def test_the_walk_finds_the_values_the_old_readme_left_out() -> None:
    for path in ("triton.extraArgs", "triton.shmSize", "ingress.className", "ingress.tls"):
        assert tuple(path.split(".")) in LEAVES
    assert ("triton", "gpu", "nodeSelector", "nvidia.com/gpu.present") in LEAVES


@pytest.mark.parametrize("text", [page("chart-values.md"), readme_table()], ids=["page", "readme"])
def test_every_leaf_of_values_yaml_is_listed(text: str) -> None:
    listed = first_column(text)
    assert [dotted(path) for path in LEAVES if f"`{dotted(path)}`" not in listed] == []


def test_the_readme_table_is_the_pages() -> None:
    assert readme_table().split("\n\n", 1)[1] in page("chart-values.md")


def test_every_value_the_schema_names_has_a_description() -> None:
    """Keys inside open objects (a security context) or maps (a nodeSelector's labels) are exempt."""
    table = ValuesTable(ROOT)
    schema = Schema(json.loads((ROOT / SCHEMA).read_text()))

    def named(path: tuple[str, ...]) -> bool:
        return path[-1] in schema.resolve(schema.node(path[:-1]) or {}).get("properties", {})

    assert [dotted(path) for path in LEAVES if named(path) and not table.description(path)] == []


def test_keys_with_a_dot_are_quoted() -> None:
    assert dotted(("triton", "gpu", "nodeSelector", "nvidia.com/gpu.present")) == (
        'triton.gpu.nodeSelector."nvidia.com/gpu.present"'
    )


def test_defaults_read_as_in_values_yaml() -> None:
    assert [yaml_text(v) for v in ("", "1", "pvc", None, [], {}, ["ALL"], 0.1)] == [
        "''",
        "'1'",
        "pvc",
        "null",
        "[]",
        "{}",
        "[ALL]",
        "0.1",
    ]


def test_comments_belong_to_the_key_right_below_them() -> None:
    text = (
        "# Top of file.\n\n"
        "a:\n"
        "  # -- About b,\n"
        "  # on two lines.\n"
        "  b: 1\n"
        "  c:\n"
        "    - key: x  # a list item is no key\n"
        "  # About d.\n\n"
        "  d: 2\n"
    )
    assert comment_blocks(text) == {("a", "b"): ["-- About b,", "on two lines."]}


def test_a_snippet_after_a_colon_stays_code() -> None:
    lines = ["-- Needs a rule:", "  - seriesQuery: 'x{a!=\"\"}'", "    name: {as: y}", "Then <more>."]
    assert comment_markdown(lines) == (
        "Needs a rule:<br>`- seriesQuery: 'x{a!=\"\"}'`<br>`name: {as: y}`<br>Then &lt;more>."
    )


def test_a_hanging_indent_stays_prose() -> None:
    assert comment_markdown(["pvc: hot reload (a", "     b)."]) == "pvc: hot reload (a b)."


def test_schema_types() -> None:
    schema = Schema(json.loads((ROOT / SCHEMA).read_text()))
    assert schema.type_name(schema.node(("shared", "maxImages"))) == "integer or null"
    assert (
        schema.type_name(schema.node(("image", "pullPolicy"))) == "one of `Always`, `IfNotPresent`, `Never`"
    )
    assert schema.type_name(schema.node(("gateway", "resources", "limits", "cpu"))) == "string or number"
    assert schema.node(("podSecurityContext", "runAsUser")) is None  # an object the schema leaves open
