"""Hyperparameter spaces: typed, bounded, with defaults; validation, canonical form, JSON Schema.

A strategy declares its hyperparameters (ScoringService's registry); a search space is the
strategies a search explores, possibly narrowed by an operator (see ``narrowing``). Every
check here is the one every service and the tuner apply, so a value one of them accepts
is accepted by all.
"""

from __future__ import annotations

import enum
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.errors import InvalidArgument, quoted


class ParamType(enum.Enum):
    FLOAT = "float"
    INT = "int"
    CATEGORICAL = "categorical"
    BOOL = "bool"


class SpaceError(ValueError):
    """A configuration or a search-space file does not fit the space; the message names the
    field and the rule."""


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
    # Added to its space after configurations of it were first hashed: left at its default,
    # it is left out of the hash, so that hashes stored with arms stay what they were.
    added_later: bool = False

    def check(self, where: str, value: ParamValue) -> ParamValue:
        """The value in its canonical type, or InvalidArgument naming the field and the rule."""
        if self.type is ParamType.BOOL:
            if not isinstance(value, bool):
                raise InvalidArgument(where, f"must be a bool, got {_type_name(value)}")
            return value
        if self.type is ParamType.CATEGORICAL:
            if not isinstance(value, str) or value not in self.choices:
                raise InvalidArgument(where, f"must be one of {', '.join(self.choices)}, got {_quoted(value)}")
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

    def contains(self, value: object) -> bool:
        """Whether ``value`` is a valid value of this hyperparameter (the same check)."""
        try:
            self.check(self.name, value)  # type: ignore[arg-type]
        except InvalidArgument:
            return False
        return True

    def json_schema(self) -> dict[str, Any]:
        schema: dict[str, Any] = {"description": self.description, "default": self.default}
        schema.update(self.value_schema())
        if self.log_scale:
            schema["x-log-scale"] = True
        return schema

    def value_schema(self) -> dict[str, Any]:
        """The JSON Schema of one value without annotations (description, default,
        x-log-scale), which a strict json_schema response format may refuse."""
        if self.type is ParamType.BOOL:
            return {"type": "boolean"}
        if self.type is ParamType.CATEGORICAL:
            return {"type": "string", "enum": list(self.choices)}
        integer = self.type is ParamType.INT
        return {
            "type": "integer" if integer else "number",
            "minimum": int(self.low) if integer else self.low,
            "maximum": int(self.high) if integer else self.high,
        }

    def sample(self, rng: random.Random) -> ParamValue:
        """Uniform over the range (log-uniform on a log scale), or over the choices."""
        if self.type is ParamType.BOOL:
            return rng.random() < 0.5
        if self.type is ParamType.CATEGORICAL:
            return rng.choice(self.choices)
        if self.log_scale and self.low > 0:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.type is ParamType.INT:
            return min(max(round(value), math.ceil(self.low)), math.floor(self.high))
        return value


def _type_name(value: object) -> str:
    return type(value).__name__


def _quoted(value: object) -> str:
    return quoted(value) if isinstance(value, str) else quoted(repr(value))[1:-1]


def _fmt(number: float) -> str:
    return f"{number:g}"


@dataclass(frozen=True)
class StrategySpace:
    strategy: str
    description: str = ""
    hyperparameters: tuple[Hyperparameter, ...] = field(default_factory=tuple)

    def by_name(self) -> dict[str, Hyperparameter]:
        return {h.name: h for h in self.hyperparameters}

    def canonical(
        self, params: Mapping[str, ParamValue], field_prefix: str = "configuration.params"
    ) -> dict[str, ParamValue]:
        """Every hyperparameter in its canonical type, defaults filled in; InvalidArgument
        names the first value that does not fit."""
        declared = self.by_name()
        for name in params:
            if name not in declared:
                known = ", ".join(declared) or "none"
                raise InvalidArgument(
                    f"{field_prefix}[{_quoted(name)}]", f"is not a hyperparameter of {self.strategy!r} (known: {known})"
                )
        return {
            name: spec.check(f"{field_prefix}[{name!r}]", params[name]) if name in params else spec.default
            for name, spec in declared.items()
        }

    def hash_exempt(self, canonical: Mapping[str, ParamValue]) -> tuple[str, ...]:
        """The hyperparameters added later that ``canonical`` leaves at their defaults."""
        return tuple(h.name for h in self.hyperparameters if h.added_later and canonical.get(h.name) == h.default)

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
    """JSON Schema of a whole configuration, annotated: one branch per strategy."""
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


@dataclass(frozen=True)
class SearchSpace:
    """The strategies a search explores, each with its (possibly narrowed) hyperparameters."""

    strategies: tuple[StrategySpace, ...]

    def names(self) -> list[str]:
        return [s.strategy for s in self.strategies]

    def by_strategy(self) -> dict[str, StrategySpace]:
        return {s.strategy: s for s in self.strategies}

    def without(self, name: str) -> SearchSpace:
        """This space less one strategy (unchanged when it holds no such strategy)."""
        return SearchSpace(tuple(s for s in self.strategies if s.strategy != name))

    def json_schema(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Strict JSON Schema of one configuration of this space (one branch per strategy, every
        hyperparameter required, no annotations), with ``extra`` properties (required too) in
        each branch: what a language model's decoding is bound to."""
        branches = []
        for space in self.strategies:
            params = {
                "type": "object",
                "properties": {p.name: p.value_schema() for p in space.hyperparameters},
                "required": [p.name for p in space.hyperparameters],
                "additionalProperties": False,
            }
            properties = {"strategy": {"const": space.strategy}, "params": params, **(extra or {})}
            branch = {"type": "object", "properties": properties, "required": list(properties)}
            branches.append({**branch, "additionalProperties": False})
        return {"oneOf": branches}

    def parse(self, answer: Any) -> Configuration:
        """A configuration from a decoded JSON answer, checked against this space."""
        if not isinstance(answer, dict) or not isinstance(answer.get("params"), dict):
            raise SpaceError("answer: must be an object with 'strategy' and 'params'")
        spaces = self.by_strategy()
        strategy = answer.get("strategy")
        if strategy not in spaces:
            raise SpaceError(f"answer.strategy: must be one of {', '.join(spaces)}, got {_quoted(strategy)}")
        params: dict[str, ParamValue] = {}
        for param in spaces[strategy].hyperparameters:
            value = answer["params"].get(param.name, param.default)
            if not param.contains(value):
                raise SpaceError(f"answer.params.{param.name}: {_quoted(value)} is outside {param.value_schema()}")
            params[param.name] = int(value) if param.type is ParamType.INT else value
        unknown = set(answer["params"]) - set(params)
        if unknown:
            raise SpaceError(f"answer.params: {', '.join(sorted(unknown))} not hyperparameters of {strategy}")
        return Configuration(strategy, params)

    def sample(self, rng: random.Random) -> Configuration:
        space = rng.choice(self.strategies)
        return Configuration(space.strategy, {p.name: p.sample(rng) for p in space.hyperparameters})
