"""docs/reference/chart-values.md and the chart README's values table: every value of the Helm chart.

Types come from values.schema.json, defaults from values.yaml. Descriptions: the comment above the key
in values.yaml, which carries most of the text, else the key's `description` in the schema, else that of
the schema definition the key refers to (a generic text such as "A Kubernetes quantity").
"""

import json
import re
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from docgen.markdown import banner, cell, code, table

CHART = Path("helm/pcam")
VALUES = CHART / "values.yaml"
SCHEMA = CHART / "values.schema.json"
README = CHART / "README.md"
SOURCE = f"{VALUES} and {SCHEMA}"
MARKERS = ("<!-- values:start -->", "<!-- values:end -->")
KeyPath = tuple[str, ...]  # a key and the keys above it, from the top of values.yaml

# A `key:` line of values.yaml (list items, `- key: ...`, are values, never keys of the table).
_KEY = re.compile(r"^( *)([^\s#'\"-][^:]*):(?:\s|$)")


def dotted(path: KeyPath) -> str:
    """A key path as the table names it: `a.b.c`, with a key that holds a dot quoted."""
    return ".".join(f'"{key}"' if "." in key else key for key in path)


def yaml_text(value: Any) -> str:
    """A value as values.yaml would write it, on one line."""
    text = yaml.safe_dump(value, default_flow_style=True, width=2**31, sort_keys=False).strip()
    return text.removesuffix("...").strip()  # a lone scalar ends its document with "..."


def comment_blocks(text: str) -> dict[KeyPath, list[str]]:
    """The comment lines right above each key of values.yaml (no blank line between), by key path."""
    found: dict[KeyPath, list[str]] = {}
    stack: list[tuple[int, str]] = []
    block: list[str] = []
    for line in text.splitlines():
        if line.lstrip().startswith("#"):
            block.append(line.lstrip()[1:].removeprefix(" "))
            continue
        if key := _KEY.match(line):
            indent = len(key.group(1))
            stack = [(level, name) for level, name in stack if level < indent] + [(indent, key.group(2))]
            if block:
                found[tuple(name for _, name in stack)] = block
        block = []
    return found


def comment_markdown(lines: list[str]) -> str:
    """A comment block as one cell: prose joined; an indented snippet after `:` or `e.g.` as code lines."""
    lines = [lines[0].removeprefix("-- "), *lines[1:]]  # helm-docs marks descriptions with `# --`
    pieces: list[str] = []
    prose: list[str] = []
    in_code = False
    for line in lines:
        indented = line.startswith("  ")
        if indented and (in_code or (prose and prose[-1].rstrip().endswith((":", "e.g.")))):
            if prose:
                pieces.append(cell(" ".join(prose)))
                prose = []
            pieces.append(code(line.strip()))
            in_code = True
        else:
            prose.append(line)
            in_code = False
    if prose:
        pieces.append(cell(" ".join(prose)))
    return "<br>".join(pieces)


class Schema:
    """values.schema.json, looked up by key path with its `$ref`s and `allOf`s resolved."""

    def __init__(self, document: Mapping[str, Any]) -> None:
        self.document = document

    def resolve(self, node: Mapping[str, Any]) -> dict[str, Any]:
        """The node with its `$ref` followed and its `allOf` parts merged in (its own keys win)."""
        node = dict(node)
        while "$ref" in node:
            target = self.document["definitions"][node.pop("$ref").removeprefix("#/definitions/")]
            node = {**target, **node}
        for part in node.pop("allOf", []):
            node = {**self.resolve(part), **node}
        return node

    def node(self, path: KeyPath) -> dict[str, Any] | None:
        """The schema of a key as written (unresolved); None inside an object the schema leaves open."""
        node: Mapping[str, Any] = self.document
        for key in path:
            resolved = self.resolve(node)
            if key in resolved.get("properties", {}):
                node = resolved["properties"][key]
            elif isinstance(resolved.get("additionalProperties"), dict):
                node = resolved["additionalProperties"]
            else:
                return None
        return dict(node)

    def type_name(self, node: Mapping[str, Any]) -> str:
        """A node's type as Markdown: `string`, `integer or null`, one of its enum values, `array of ...`."""
        node = self.resolve(node)
        if "enum" in node:
            return "one of " + ", ".join(code(yaml_text(value)) for value in node["enum"])
        for key in ("anyOf", "oneOf"):
            if key in node:
                names = [self.type_name(part) for part in node[key]]
                return " or ".join(dict.fromkeys(names))  # each once, in order
        kinds = node.get("type", "any")
        if kinds == "array" and "items" in node:
            return f"array of {self.type_name(node['items'])}"
        return " or ".join(kinds) if isinstance(kinds, list) else kinds


def _yaml_type(value: Any) -> str:
    """The JSON-schema name of a value's type (for keys inside objects the schema leaves open)."""
    names = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}
    return names.get(type(value), "null")


class ValuesTable:
    """The rows of the values table, in values.yaml's order."""

    def __init__(self, root: Path) -> None:
        self.values = yaml.safe_load((root / VALUES).read_text())
        self.schema = Schema(json.loads((root / SCHEMA).read_text()))
        self.comments = comment_blocks((root / VALUES).read_text())

    def description(self, path: KeyPath) -> str:
        """The key's comment in values.yaml, else its schema description, else its definition's."""
        if path in self.comments:
            return comment_markdown(self.comments[path])
        node = self.schema.node(path) or {}
        return cell(node.get("description") or self.schema.resolve(node).get("description", ""))

    def row(self, path: KeyPath, value: Any, present: bool = True) -> list[str]:
        """One row: key, type, default (`unset` for a schema key values.yaml leaves out), description."""
        node = self.schema.node(path)
        kind = self.schema.type_name(node) if node is not None else _yaml_type(value)
        default = code(yaml_text(value)) if present else "unset"
        return [code(dotted(path)), kind, default, self.description(path)]

    def rows(self, mapping: Mapping[str, Any] | None = None, path: KeyPath = ()) -> Iterator[list[str]]:
        """A row per leaf, per described object (before its keys) and per schema key without a default."""
        mapping = self.values if mapping is None else mapping
        for key, value in mapping.items():
            if isinstance(value, dict) and value:
                if self.description(path + (key,)):
                    yield [code(dotted(path + (key,))), "object", "", self.description(path + (key,))]
                yield from self.rows(value, path + (key,))
            else:
                yield self.row(path + (key,), value)
        node = self.schema.node(path)
        for key in self.schema.resolve(node or {}).get("properties", {}):
            if key not in mapping:
                yield self.row(path + (key,), None, present=False)


def values_markdown(root: Path) -> str:
    """The values table with the sentence that explains its columns."""
    return (
        "Types come from `values.schema.json` (inside an object the schema leaves open, the default's "
        "type), defaults from `values.yaml`; `unset` marks a value the schema accepts that `values.yaml` "
        "leaves out, `object` a group of the keys below it.\n\n"
        + table(["Key", "Type", "Default", "Description"], ValuesTable(root).rows())
    )


def chart_values_markdown(root: Path) -> str:
    """The whole chart values page."""
    return banner(SOURCE) + "\n# Helm chart values\n\n" + values_markdown(root)


def readme_with_values(readme: str, root: Path) -> str:
    """The chart README with the generated table between its markers (the rest kept as it is)."""
    start, end = MARKERS
    before, found_start, rest = readme.partition(start)
    _, found_end, after = rest.partition(end)
    if not (found_start and found_end):
        raise ValueError(f"{README} lacks the markers {start} ... {end}")
    return f"{before}{start}\n{banner(SOURCE)}\n{values_markdown(root)}{end}{after}"
