"""docs/reference/settings.md: every service's environment variables, from its pydantic-settings class."""

import importlib
import importlib.util
import pkgutil
import types
from enum import Enum
from pathlib import PurePath
from typing import Any, Literal, Union, get_args, get_origin

from pydantic import AliasChoices, BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined
from pydantic_settings import NoDecode

import services
from docgen.markdown import banner, bounds, cell, code, table
from services.common.settings import AGREED_ENV_PREFIX, ServiceSettings, agreed_fields

SOURCE = "services/*/settings.py and services/common/settings.py"


def service_settings() -> dict[str, type[ServiceSettings]]:
    """Service name -> its settings class: the ServiceSettings subclass its `settings` module defines."""
    found = {}
    for package in pkgutil.iter_modules(services.__path__):
        name = f"services.{package.name}.settings"
        if not package.ispkg or importlib.util.find_spec(name) is None:
            continue  # a module, or a package without settings
        module = importlib.import_module(name)
        for value in vars(module).values():
            if (
                isinstance(value, type)
                and issubclass(value, ServiceSettings)
                and value is not ServiceSettings  # the shared base, not a service
                and value.__module__ == module.__name__
            ):
                found[package.name] = value
    return dict(sorted(found.items()))


def env_names(settings_cls: type[ServiceSettings], name: str, field: FieldInfo) -> list[str]:
    """The variables that set a field, as pydantic-settings reads them (case-insensitively)."""
    alias = field.validation_alias or field.alias
    if isinstance(alias, str):  # an alias is read as is, without the prefix
        names = [alias]
    elif isinstance(alias, AliasChoices):
        names = [choice for choice in alias.choices if isinstance(choice, str)]
    else:
        names = [settings_cls.model_config.get("env_prefix", "") + name]
    if name in agreed_fields(settings_cls):
        names.append(AGREED_ENV_PREFIX + name)
    return [variable.upper() for variable in names]


def type_name(annotation: Any) -> str:
    """A field's type as Markdown: `int`, `Path` or `None`, `list[str]`..."""
    origin, args = get_origin(annotation), get_args(annotation)
    if annotation is type(None):
        return "`None`"
    if origin in (Union, types.UnionType):
        return " or ".join(type_name(arg) for arg in args)
    if origin is Literal:
        return " or ".join(f"`{arg!r}`" for arg in args)
    if origin is not None:
        return f"`{annotation!s}`".replace("typing.", "").replace("pathlib.", "")
    return f"`{annotation.__name__}`"


def _is_complex(annotation: Any) -> bool:
    # pydantic-settings reads these as JSON from one variable (unless the field asks for NoDecode).
    origin = get_origin(annotation) or annotation
    return origin in (list, dict, set, tuple, frozenset) or (
        isinstance(origin, type) and issubclass(origin, BaseModel)
    )


def default_text(field: FieldInfo) -> str:
    """The default as code shows it: a string or path bare (`""` if empty), anything else as its repr."""
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if isinstance(value, Enum):
        value = value.value
    if isinstance(value, SecretStr):
        return "(secret)"
    if isinstance(value, str | PurePath):
        return code(str(value)) if str(value) else '`""`'
    return code(repr(value))


def field_row(settings_cls: type[ServiceSettings], name: str, field: FieldInfo) -> list[str]:
    """One table row: variables, type, default, description."""
    names = env_names(settings_cls, name, field)
    variables = code(names[0]) + "".join(f"<br>shared: {code(other)}" for other in names[1:])
    kind = type_name(field.annotation)
    if _is_complex(field.annotation) and NoDecode not in field.metadata:
        kind += ", as JSON"
    kind = ", ".join([kind, *bounds(field.metadata)])
    return [variables, cell(kind), default_text(field), cell(field.description or "")]


def service_section(service: str, settings_cls: type[ServiceSettings]) -> str:
    """The section of one service: where its class is, then a row per field."""
    prefix = settings_cls.model_config.get("env_prefix", "")
    rows = [field_row(settings_cls, name, field) for name, field in settings_cls.model_fields.items()]
    path = settings_cls.__module__.replace(".", "/") + ".py"
    return f"## {service}\n\n`{settings_cls.__name__}` in `{path}`: variables `{prefix}*`.\n\n" + table(
        ["Variable", "Type", "Default", "Description"], rows
    )


def settings_markdown() -> str:
    """The whole settings page."""
    sections = [service_section(service, cls) for service, cls in service_settings().items()]
    return (
        banner(SOURCE) + "\n# Service settings\n\n"
        "Each service reads its settings from environment variables: its prefix and the field's name, "
        "in capitals here (the names are case-insensitive). A setting with a `shared:` name is one that "
        f"several services must agree on: `{AGREED_ENV_PREFIX}<FIELD>` sets it in every service that "
        "has it, and the service's own variable wins over it.\n\n" + "\n".join(sections)
    )
