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

from services.common.errors import InvalidArgument
from services.scoring.core.space import Hyperparameter, ParamType, ParamValue

# The hyperparameters are ScoringService's own type (services.scoring.core.space), as
# DescribeSearchSpace returns them: one definition of their kinds, checks and schema.
FLOAT, INT, CATEGORICAL, BOOL = ParamType.FLOAT, ParamType.INT, ParamType.CATEGORICAL, ParamType.BOOL


class SpaceError(ValueError):
    """The search-space file is wrong; the message names the field and the rule."""


def contains(param: Hyperparameter, value: object) -> bool:
    """Whether ``value`` is a valid value of the hyperparameter (ScoringService's own check)."""
    try:
        param.check(param.name, value)  # type: ignore[arg-type]
    except InvalidArgument:
        return False
    return True


def value_schema(param: Hyperparameter) -> dict[str, Any]:
    """The JSON Schema of one value: ScoringService's, without its annotations (description,
    default, x-log-scale), which a strict json_schema response format may refuse."""
    return {k: v for k, v in param.json_schema().items() if k in ("type", "enum", "minimum", "maximum")}


def sample_value(param: Hyperparameter, rng: random.Random) -> ParamValue:
    """Uniform over the range (log-uniform on a log scale), or over the choices."""
    if param.type is BOOL:
        return rng.random() < 0.5
    if param.type is CATEGORICAL:
        return rng.choice(param.choices)
    if param.log_scale and param.low > 0:
        value = math.exp(rng.uniform(math.log(param.low), math.log(param.high)))
    else:
        value = rng.uniform(param.low, param.high)
    if param.type is INT:
        return min(max(round(value), math.ceil(param.low)), math.floor(param.high))
    return value


@dataclass(frozen=True)
class StrategySpace:
    strategy: str
    params: tuple[Hyperparameter, ...]


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
                "properties": {p.name: value_schema(p) for p in space.params},
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
            if not contains(param, value):
                raise SpaceError(f"answer.params.{param.name}: {value!r} is outside {value_schema(param)}")
            params[param.name] = int(value) if param.type is INT else value
        unknown = set(answer["params"]) - set(params)
        if unknown:
            raise SpaceError(f"answer.params: {', '.join(sorted(unknown))} not hyperparameters of {strategy}")
        return Configuration(strategy, params)

    def sample(self, rng: random.Random) -> Configuration:
        space = rng.choice(self.strategies)
        return Configuration(space.strategy, {p.name: sample_value(p, rng) for p in space.params})

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


def _narrow_param(param: Hyperparameter, bounds: Mapping[str, Any], field: str) -> Hyperparameter:
    if param.type in (FLOAT, INT):
        unknown = set(bounds) - {"low", "high"}
        if unknown:
            raise SpaceError(
                f"{field}: only low and high narrow a {param.type.value}, got {', '.join(sorted(unknown))}"
            )
        low, high = bounds.get("low", param.low), bounds.get("high", param.high)
        for key, value in (("low", low), ("high", high)):
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise SpaceError(f"{field}.{key}: must be a number, got {value!r}")
        if not param.low <= low <= high <= param.high:
            raise SpaceError(
                f"{field}: must satisfy {param.low:g} <= low <= high <= {param.high:g} "
                f"(the declared range), got low={low:g} high={high:g}"
            )
        if param.type is INT and math.ceil(low) > math.floor(high):
            raise SpaceError(f"{field}: no integer lies between low={low:g} and high={high:g}")
        return replace(param, low=float(low), high=float(high))
    if param.type is CATEGORICAL:
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
