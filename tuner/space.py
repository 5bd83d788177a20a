"""The search space the tuner explores: ScoringService's declared hyperparameters, narrowed
by the operator's search-space file. No protobuf here (tuner/clients.py converts).

The operator's file (JSON; a ConfigMap in Kubernetes) names the strategies to explore and
may narrow a numeric range or a list of choices; it can never widen what ScoringService
declares, so every proposal stays valid for the service:

    {"strategies": {"als": {"factors": {"low": 16, "high": 128}}, "item_knn": {}}}
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

ParamValue = float | int | str | bool

FLOAT, INT, CATEGORICAL, BOOL = "float", "int", "categorical", "bool"


class SpaceError(ValueError):
    """The search-space file is wrong; the message names the field and the rule."""


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # FLOAT, INT, CATEGORICAL or BOOL
    default: ParamValue
    low: float = 0.0
    high: float = 0.0
    log_scale: bool = False
    choices: tuple[str, ...] = ()

    def contains(self, value: object) -> bool:
        """Whether ``value`` is a valid value of this parameter (type and range)."""
        if self.kind == BOOL:
            return isinstance(value, bool)
        if self.kind == CATEGORICAL:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        return self.low <= value <= self.high and (self.kind == FLOAT or float(value).is_integer())

    def json_schema(self) -> dict[str, Any]:
        if self.kind == BOOL:
            return {"type": "boolean"}
        if self.kind == CATEGORICAL:
            return {"type": "string", "enum": list(self.choices)}
        if self.kind == INT:
            return {"type": "integer", "minimum": math.ceil(self.low), "maximum": math.floor(self.high)}
        return {"type": "number", "minimum": self.low, "maximum": self.high}

    def sample(self, rng: random.Random) -> ParamValue:
        if self.kind == BOOL:
            return rng.random() < 0.5
        if self.kind == CATEGORICAL:
            return rng.choice(self.choices)
        if self.log_scale and self.low > 0:
            value = math.exp(rng.uniform(math.log(self.low), math.log(self.high)))
        else:
            value = rng.uniform(self.low, self.high)
        if self.kind == INT:
            return min(max(round(value), math.ceil(self.low)), math.floor(self.high))
        return value


@dataclass(frozen=True)
class StrategySpace:
    strategy: str
    params: tuple[Param, ...]


@dataclass(frozen=True)
class Configuration:
    """A strategy and values for (some of) its hyperparameters; the rest take their defaults."""

    strategy: str
    params: Mapping[str, ParamValue]

    def as_dict(self) -> dict[str, Any]:
        return {"strategy": self.strategy, "params": dict(sorted(self.params.items()))}

    def key(self) -> str:
        """Identity within one run of the tuner (ScoringService's hash is the lasting one)."""
        return json.dumps(self.as_dict(), sort_keys=True)


@dataclass(frozen=True)
class SearchSpace:
    strategies: tuple[StrategySpace, ...]

    def names(self) -> list[str]:
        return [s.strategy for s in self.strategies]

    def json_schema(self, extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """JSON Schema of one configuration of this space (one branch per strategy, every
        hyperparameter required), with ``extra`` properties (required too) in each branch."""
        branches = []
        for space in self.strategies:
            params = {
                "type": "object",
                "properties": {p.name: p.json_schema() for p in space.params},
                "required": [p.name for p in space.params],
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
        spaces = {s.strategy: s for s in self.strategies}
        strategy = answer.get("strategy")
        if strategy not in spaces:
            raise SpaceError(f"answer.strategy: must be one of {', '.join(spaces)}, got {strategy!r}")
        params: dict[str, ParamValue] = {}
        for param in spaces[strategy].params:
            value = answer["params"].get(param.name, param.default)
            if not param.contains(value):
                raise SpaceError(f"answer.params.{param.name}: {value!r} is outside {param.json_schema()}")
            params[param.name] = int(value) if param.kind == INT else value
        unknown = set(answer["params"]) - set(params)
        if unknown:
            raise SpaceError(f"answer.params: {', '.join(sorted(unknown))} not hyperparameters of {strategy}")
        return Configuration(strategy, params)

    def sample(self, rng: random.Random) -> Configuration:
        space = rng.choice(self.strategies)
        return Configuration(space.strategy, {p.name: p.sample(rng) for p in space.params})

    def narrowed(self, restriction: Mapping[str, Any], where: str = "search space") -> SearchSpace:
        """Only the strategies the restriction names, with its narrower ranges and choices."""
        strategies = restriction.get("strategies")
        if not isinstance(strategies, dict) or not strategies:
            raise SpaceError(f"{where}: 'strategies' must be a non-empty object of strategy -> parameters")
        declared = {s.strategy: s for s in self.strategies}
        narrowed = []
        for name, overrides in strategies.items():
            field = f"{where}: strategies.{name}"
            if name not in declared:
                raise SpaceError(f"{field}: not a strategy of ScoringService (known: {', '.join(declared)})")
            if not isinstance(overrides, dict):
                raise SpaceError(f"{field}: must be an object of parameter -> bounds")
            narrowed.append(_narrow_strategy(declared[name], overrides, field))
        return SearchSpace(tuple(narrowed))


def _narrow_strategy(space: StrategySpace, overrides: Mapping[str, Any], field: str) -> StrategySpace:
    params = {p.name: p for p in space.params}
    for name, bounds in overrides.items():
        if name not in params:
            raise SpaceError(f"{field}.{name}: not a hyperparameter of {space.strategy} (known: {', '.join(params)})")
        if not isinstance(bounds, dict):
            raise SpaceError(f"{field}.{name}: must be an object with low/high or choices")
        params[name] = _narrow_param(params[name], bounds, f"{field}.{name}")
    return StrategySpace(space.strategy, tuple(params.values()))


def _narrow_param(param: Param, bounds: Mapping[str, Any], field: str) -> Param:
    if param.kind in (FLOAT, INT):
        unknown = set(bounds) - {"low", "high"}
        if unknown:
            raise SpaceError(f"{field}: only low and high narrow a {param.kind}, got {', '.join(sorted(unknown))}")
        low, high = bounds.get("low", param.low), bounds.get("high", param.high)
        for key, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpaceError(f"{field}.{key}: must be a number, got {value!r}")
        if not param.low <= low <= high <= param.high:
            raise SpaceError(
                f"{field}: must satisfy {param.low:g} <= low <= high <= {param.high:g} "
                f"(the declared range), got low={low:g} high={high:g}"
            )
        if param.kind == INT and math.ceil(low) > math.floor(high):
            raise SpaceError(f"{field}: no integer lies between low={low:g} and high={high:g}")
        return replace(param, low=float(low), high=float(high))
    if param.kind == CATEGORICAL:
        choices = bounds.get("choices")
        if set(bounds) != {"choices"} or not isinstance(choices, list) or not choices:
            raise SpaceError(f"{field}: a categorical is narrowed by a non-empty 'choices' list only")
        outside = [c for c in choices if c not in param.choices]
        if outside:
            raise SpaceError(f"{field}.choices: {outside!r} not among {list(param.choices)!r}")
        return replace(param, choices=tuple(choices))
    raise SpaceError(f"{field}: a bool cannot be narrowed (leave it out or fix it in code)")


def load_restriction(path: str) -> dict[str, Any]:
    """The operator's search-space file, parsed; an empty path means no restriction."""
    try:
        loaded = json.loads(Path(path).read_text())
    except OSError as exc:
        raise SpaceError(f"search space file {path!r}: cannot be read ({exc.strerror})") from None
    except json.JSONDecodeError as exc:
        raise SpaceError(f"search space file {path!r}: not JSON ({exc.msg} at line {exc.lineno})") from None
    if not isinstance(loaded, dict):
        raise SpaceError(f"search space file {path!r}: must hold a JSON object")
    return loaded
