"""The search space the tuner explores: ScoringService's declared hyperparameters, narrowed
by the operator's search-space file. The space itself (SearchSpace, StrategySpace,
Hyperparameter) is rectune.domain's; this module reads and applies the operator's file.

The operator's file (JSON; a ConfigMap in Kubernetes) names the strategies to explore and
may narrow a numeric range or a list of choices; it can never widen what ScoringService
declares, so every proposal stays valid for the service:

    {"strategies": {"als": {"factors": {"low": 16, "high": 128}}, "item_knn": {}}}
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from rectune.domain.space import Hyperparameter, ParamType, SearchSpace, SpaceError, StrategySpace


def narrowed(space: SearchSpace, restriction: Mapping[str, Any], where: str = "search space") -> SearchSpace:
    """Only the strategies the restriction names, with its narrower ranges and choices."""
    strategies = restriction.get("strategies")
    if not isinstance(strategies, dict) or not strategies:
        raise SpaceError(f"{where}: 'strategies' must be a non-empty object of strategy -> parameters")
    declared = space.by_strategy()
    kept = []
    for name, overrides in strategies.items():
        field = f"{where}: strategies.{name}"
        if name not in declared:
            raise SpaceError(f"{field}: not a strategy of ScoringService (known: {', '.join(declared)})")
        if not isinstance(overrides, dict):
            raise SpaceError(f"{field}: must be an object of parameter -> bounds")
        kept.append(_narrow_strategy(declared[name], overrides, field))
    return SearchSpace(tuple(kept))


def _narrow_strategy(space: StrategySpace, overrides: Mapping[str, Any], field: str) -> StrategySpace:
    params = space.by_name()
    for name, bounds in overrides.items():
        if name not in params:
            raise SpaceError(f"{field}.{name}: not a hyperparameter of {space.strategy} (known: {', '.join(params)})")
        if not isinstance(bounds, dict):
            raise SpaceError(f"{field}.{name}: must be an object with low/high or choices")
        params[name] = _narrow_param(params[name], bounds, f"{field}.{name}")
    return replace(space, hyperparameters=tuple(params.values()))


def _narrow_param(param: Hyperparameter, bounds: Mapping[str, Any], field: str) -> Hyperparameter:
    if param.type in (ParamType.FLOAT, ParamType.INT):
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
        if param.type is ParamType.INT and math.ceil(low) > math.floor(high):
            raise SpaceError(f"{field}: no integer lies between low={low:g} and high={high:g}")
        return replace(param, low=float(low), high=float(high))
    if param.type is ParamType.CATEGORICAL:
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


# The tuner's default ranges where no search-space file is given: ScoringService declares
# wider ones, within which one fit can take hours (two_tower at 100 epochs of batch 16);
# these bound one fit's cost on a few cores. Chosen for cost, not for any dataset's scores.
DEFAULT_RANGES: dict[str, dict[str, dict[str, float]]] = {
    "als": {"factors": {"low": 8, "high": 256}, "iterations": {"low": 2, "high": 50}},
    "two_tower": {
        "epochs": {"low": 2, "high": 20},
        "batch_size": {"low": 128, "high": 1024},
        "dimension": {"low": 16, "high": 128},
        "hidden_size": {"low": 16, "high": 256},
        "history_length": {"low": 10, "high": 100},
        "negatives": {"low": 64, "high": 2048},
        # Each fine-tuned layer passes the catalogue's texts through a transformer layer
        # three times per epoch: two at most by default.
        "finetune_layers": {"low": 0, "high": 2},
    },
}
# Hybrid's weights of components that need an EmbeddingService.
VECTOR_COMPONENTS = ("content", "two_tower")


def default_space(space: SearchSpace) -> SearchSpace:
    """Every strategy ScoringService declares, in the default ranges (hybrid's weights of
    components the service lacks held at 0)."""
    names = space.names()
    ranges: dict[str, dict[str, Any]] = {name: dict(DEFAULT_RANGES.get(name, {})) for name in names}
    if "hybrid" in ranges:
        for component in VECTOR_COMPONENTS:
            if component not in names:
                ranges["hybrid"][f"w_{component}"] = {"low": 0.0, "high": 0.0}
    return narrowed(space, {"strategies": ranges})
