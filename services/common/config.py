"""Settings: environment variables and command-line flags read once into a frozen object.

Each setting is a dataclass field declared with ``option(env=..., help=...)``. The flag
is derived from the field name (``scoring_address`` -> ``--scoring-address``). A flag
beats the environment, which beats the default. A setting marked ``required`` that has
no value fails at start-up with a message naming both the flag and the variable.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import types
import typing
from collections.abc import Mapping, Sequence
from typing import Any, TypeVar

SettingsT = TypeVar("SettingsT")

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


class SettingsError(ValueError):
    """A setting is missing or malformed. The message names the flag and the variable."""


def option(*, env: str, help: str, default: Any = None, required: bool = False) -> Any:
    """Declare one setting. ``required`` settings have no usable default."""
    return dataclasses.field(default=default, metadata={"env": env, "help": help, "required": required})


def _flag(field: dataclasses.Field[Any]) -> str:
    return "--" + field.name.replace("_", "-")


def _base_type(annotation: Any) -> type:
    """``int | None`` -> int; plain types unchanged."""
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        return typing.cast(type, members[0])
    return typing.cast(type, annotation)


def _parse(raw: str, target: type, where: str) -> Any:
    if target is bool:
        lowered = raw.strip().lower()
        if lowered in _TRUE:
            return True
        if lowered in _FALSE:
            return False
        raise SettingsError(f"{where}: must be a boolean (true/false), got {raw!r}")
    try:
        return target(raw)
    except ValueError:
        raise SettingsError(f"{where}: must be {target.__name__}, got {raw!r}") from None


def describe(settings_class: type) -> list[tuple[str, str, str, Any, bool]]:
    """(field, flag, env var, default, required) of every setting: for docs and manifests."""
    return [
        (f.name, _flag(f), f.metadata["env"], f.default, f.metadata["required"])
        for f in dataclasses.fields(settings_class)
    ]


def env_names(settings_class: type) -> set[str]:
    return {f.metadata["env"] for f in dataclasses.fields(settings_class)}


def load_settings(
    settings_class: type[SettingsT],
    argv: Sequence[str] | None = None,
    environ: Mapping[str, str] | None = None,
    prog: str | None = None,
) -> SettingsT:
    """Build the frozen settings object from flags, then environment, then defaults."""
    environ = os.environ if environ is None else environ
    fields = dataclasses.fields(settings_class)  # type: ignore[arg-type]
    hints = typing.get_type_hints(settings_class)
    parser = argparse.ArgumentParser(prog=prog, description=settings_class.__doc__)
    for field in fields:
        parser.add_argument(
            _flag(field),
            dest=field.name,
            default=None,
            help=f"{field.metadata['help']} [env {field.metadata['env']}; default {field.default!r}]",
        )
    flags = parser.parse_args(argv)
    values: dict[str, Any] = {}
    for field in fields:
        env = field.metadata["env"]
        raw, where = getattr(flags, field.name), _flag(field)
        if raw is None and env in environ:
            raw, where = environ[env], env
        if raw is None or (raw == "" and field.metadata["required"]):
            if field.metadata["required"] and not field.default:
                raise SettingsError(f"{_flag(field)} (env {env}) is required: {field.metadata['help']}")
            continue
        values[field.name] = _parse(raw, _base_type(hints[field.name]), where)
    return settings_class(**values)
