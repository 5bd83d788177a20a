"""Hyperparameter spaces: typed, bounded, with defaults; validation, canonical form, JSON Schema.

A configuration is a strategy name plus hyperparameters. ``canonical`` checks it against
the strategy's declared space, fills in defaults and returns a plain dict whose stable
hash identifies the configuration (for the fitted-model cache and for arms).
"""

from __future__ import annotations

import enum
import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from services.common.errors import InvalidArgument

ParamValue = float | int | str | bool


class ParamType(enum.Enum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"
    BOOL = "bool"


@dataclass(frozen=True)
class Hyperparameter:
    name: str
    type: ParamType
    default: ParamValue
    description: str
    low: float = 0.0
    high: float = 0.0
    log_scale: bool = False
    choices: tuple[str, ...] = ()

    def check(self, where: str, value: ParamValue) -> ParamValue:
        """The value in its canonical type, or InvalidArgument naming the field and the rule."""
        if self.type is ParamType.BOOL:
            if not isinstance(value, bool):
                raise InvalidArgument(where, f"must be a bool, got {_type_name(value)}")
            return value
        if self.type is ParamType.CATEGORICAL:
            if not isinstance(value, str) or value not in self.choices:
                raise InvalidArgument(where, f"must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise InvalidArgument(where, f"must be a number ({self.type.value}), got {_type_name(value)}")
        if self.type is ParamType.INT:
            if isinstance(value, float) and not value.is_integer():
                raise InvalidArgument(where, f"must be an integer, got {value}")
            value = int(value)
        else:
            value = float(value)
        if not math.isfinite(value) or not self.low <= value <= self.high:
            raise InvalidArgument(where, f"must be between {_fmt(self.low)} and {_fmt(self.high)}, got {_fmt(value)}")
        return value

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"description": self.description, "default": self.default}
        if self.type is ParamType.BOOL:
            schema["type"] = "boolean"
        elif self.type is ParamType.CATEGORICAL:
            schema.update(type="string", enum=list(self.choices))
        else:
            schema.update(
                type="integer" if self.type is ParamType.INT else "number",
                minimum=int(self.low) if self.type is ParamType.INT else self.low,
                maximum=int(self.high) if self.type is ParamType.INT else self.high,
            )
            if self.log_scale:
                schema["x-log-scale"] = True
        return schema


def _type_name(value: object) -> str:
    return type(value).__name__


def _fmt(number: float) -> str:
    return f"{number:g}"


@dataclass(frozen=True)
class StrategySpace:
    strategy: str
    description: str
    hyperparameters: tuple[Hyperparameter, ...] = field(default_factory=tuple)

    def by_name(self) -> dict[str, Hyperparameter]:
        return {h.name: h for h in self.hyperparameters}

    def canonical(
        self, params: Mapping[str, ParamValue], field_prefix: str = "configuration.params"
    ) -> dict[str, ParamValue]:
        declared = self.by_name()
        for name in params:
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise InvalidArgument(
                    f"{field_prefix}[{name!r}]", f"is not a hyperparameter of {self.strategy!r} (known: {known})"
                )
        return {
            name: spec.check(f"{field_prefix}[{name!r}]", params[name]) if name in params else spec.default
            for name, spec in declared.items()
        }

    def json_schema(self) -> dict[str, Any]:
        return {
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": f"{self.strategy} hyperparameters",
            "description": self.description,
            "type": "object",
            "properties": {h.name: h.json_schema() for h in self.hyperparameters},
            "additionalProperties": False,
        }


def configuration_schema(spaces: Sequence[StrategySpace]) -> dict[str, Any]:
    """JSON Schema of a whole configuration: one branch per strategy (what the tuner's LM is bound to)."""
    branches = []
    for space in spaces:
        params = space.json_schema()
        params.pop("$schema")
        branches.append(
            {
                "type": "object",
                "properties": {"strategy": {"const": space.strategy}, "params": params},
                "required": ["strategy", "params"],
                "additionalProperties": False,
            }
        )
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "rectune configuration",
        "oneOf": branches,
    }


def configuration_hash(strategy: str, canonical_params: Mapping[str, ParamValue]) -> str:
    """Stable id of a canonical configuration: the same strategy and values give the same hash."""
    payload = json.dumps({"strategy": strategy, "params": dict(sorted(canonical_params.items()))}, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()[:16]
