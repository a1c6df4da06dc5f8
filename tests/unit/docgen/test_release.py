"""release-json.md has a table per model of the manifest listing every field."""

import pytest

import pcam_core.release
from docgen.release import json_type, nested_models, release_fields_markdown
from pcam_core.release import ReleaseManifest
from tests.unit.docgen.pages import first_column, page, sections

SCHEMA = ReleaseManifest.model_json_schema()
MODELS = {"ReleaseManifest": SCHEMA, **SCHEMA["$defs"]}


def test_every_model_of_the_json_schema_has_a_section() -> None:
    assert set(sections(page("release-json.md"))) == {f"`{name}`" for name in MODELS}


@pytest.mark.parametrize("model", sorted(MODELS))
def test_every_field_is_listed_in_its_models_table(model: str) -> None:
    fields = first_column(sections(page("release-json.md"))[f"`{model}`"])
    assert {f"`{name}`" for name in MODELS[model]["properties"]} <= fields


def test_every_field_of_the_manifests_own_models_has_a_description() -> None:
    own = [model for model in nested_models() if model.__module__ == pcam_core.release.__name__]
    missing = [f"{m.__name__}.{name}" for m in own for name, f in m.model_fields.items() if not f.description]
    assert missing == []


def test_the_tables_can_be_included_under_another_heading_level() -> None:
    assert release_fields_markdown(level=3).startswith("### `ReleaseManifest`\n")


def test_json_types() -> None:
    assert json_type(tuple[float, float]) == "\\[number, number\\]"
    assert json_type(tuple[int, ...]) == "array of integer"
    assert json_type(dict[str, float]) == "object of number"
    assert json_type(ReleaseManifest | None) == "[`ReleaseManifest`](#releasemanifest) or null"
