"""settings.md lists every field of every service's settings class under the variable that sets it."""

from pathlib import Path

import pytest
from pydantic import Field

from docgen.pages import ROOT
from docgen.settings import default_text, env_names, service_settings, type_name
from services.common.settings import ServiceSettings, agreed_fields, field_set_by
from tests.unit.docgen.pages import first_column, page, sections

SERVICES = service_settings()


def test_every_service_with_a_settings_module_is_found() -> None:
    packages = {path.parent.name for path in (ROOT / "services").glob("*/settings.py")} - {"common"}
    assert set(SERVICES) == packages
    assert set(sections(page("settings.md"))) == packages


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_field_is_listed_with_its_variables(service: str) -> None:
    settings_cls = SERVICES[service]
    variables = first_column(sections(page("settings.md"))[service])
    prefix = settings_cls.model_config["env_prefix"]
    for name in settings_cls.model_fields:
        own = f"`{(prefix + name).upper()}`"
        if name in agreed_fields(settings_cls):
            assert f"{own}<br>shared: `PCAM_{name.upper()}`" in variables
        else:
            assert own in variables


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_the_listed_variables_are_the_ones_the_settings_read(service: str) -> None:
    settings_cls = SERVICES[service]
    for name, field in settings_cls.model_fields.items():
        for variable in env_names(settings_cls, name, field):
            assert field_set_by(settings_cls, variable) == name


@pytest.mark.parametrize("service", sorted(SERVICES))
def test_every_field_has_a_description(service: str) -> None:
    settings_cls = SERVICES[service]
    assert [name for name, field in settings_cls.model_fields.items() if not field.description] == []


def test_an_alias_is_the_variable_itself() -> None:
    class Aliased(ServiceSettings):
        token: str = Field("", validation_alias="MY_TOKEN")

    assert env_names(Aliased, "token", Aliased.model_fields["token"]) == ["MY_TOKEN"]


def test_types_and_defaults_read_as_in_code() -> None:
    assert type_name(int | None) == "`int` or `None`"
    assert type_name(list[str]) == "`list[str]`"
    assert type_name(Path) == "`Path`"
    assert default_text(Field(Path("model_repository"))) == "`model_repository`"
    assert default_text(Field("")) == '`""`'
    assert default_text(Field(default_factory=list)) == "`[]`"
    assert default_text(Field(None)) == "`None`"
