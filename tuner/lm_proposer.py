"""The language-model proposer: the model reads the search space and the screened history
and picks each part of a new configuration among the values the space allows.

Decoding is bound to the configuration's schema by construction: the proposer writes the
JSON's structure itself and the model only chooses, at each slot, among allowed texts (a
strategy name; for a hyperparameter its choices, or a grid over its range plus the value
of the best configuration screened so far). The answer always parses and always lies in
the space. After the JSON, the model is asked for one line of rationale, which is kept in
the audit table as it is.
"""

from __future__ import annotations

import json
import math
import random
from collections.abc import Collection, Sequence
from typing import Any

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.space import Hyperparameter, ParamType, SearchSpace, StrategySpace
from tuner.language_model import Context, LanguageModel
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal

SYSTEM = (
    "You tune a recommender system. A configuration is a strategy and its hyperparameters. "
    "Propose a configuration likely to reach a higher NDCG@{k} than those tried so far. "
    "Answer with one JSON object."
)
GRID_POINTS = 7  # values offered across a numeric range (plus the best value seen so far)
HISTORY_SHOWN = 8  # best screened configurations shown in the prompt

Slots = list[tuple[str, list[ParamValue]]]  # each hyperparameter and the values offered for it


class LanguageModelProposer:
    origin = ArmOrigin.TUNER_LM

    def __init__(
        self,
        model: LanguageModel,
        seed: int | None = None,
        temperature: float = 1.0,
        rationale_tokens: int = 0,
        k: int = 10,
    ) -> None:
        self.model = model
        self.k = k  # the k of the NDCG@k the screen measures (the tuner's evaluation_k)
        self.temperature = temperature
        # > 0: the model is also asked for a sentence, kept labelled as its words (costs ~2.5 s).
        self.rationale_tokens = rationale_tokens
        self._rng = random.Random(seed)

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        prompt = describe(space, history, self.k)
        proposals: list[Proposal] = []
        # Read once per call: the configurations taken so far (this call's own proposals join
        # them) and the values offered at each strategy's slots.
        taken_configurations = [json.loads(key) for key in set(taken)]
        slots = {s.strategy: _slots(s, best_params(s.strategy, history)) for s in space.strategies}
        while len(proposals) < count:
            made = self._configuration(space, slots, prompt, taken_configurations)
            if made is None:
                break  # every configuration the model may write here is taken
            configuration, context = made
            taken_configurations.append(configuration.as_dict())
            evidence = lm_evidence(self.model.name, history)
            words = self._rationale(context)
            if words:
                evidence += f"; the model's words: {words}"
            proposals.append(Proposal(configuration, self.origin, evidence))
        return proposals

    def _configuration(
        self, space: SearchSpace, slots: dict[str, Slots], prompt: str, taken: list[dict[str, Any]]
    ) -> tuple[Configuration, Context] | None:
        """A configuration not in ``taken``, chosen slot by slot; None when none is left.

        The model likes to copy what scored well, and it can only write the values offered:
        each slot offers only the options under which a new configuration is still possible.
        """
        open_strategies = [s for s in space.strategies if not _exhausted(s.strategy, {}, slots[s.strategy], taken)]
        if not open_strategies:
            return None
        context = self.model.start(SYSTEM.format(k=self.k), prompt)
        self.model.extend(context, '{"strategy": "')
        strategy = open_strategies[self._choose(context, [f'{s.strategy}"' for s in open_strategies])].strategy
        self.model.extend(context, ', "params": {')
        params: dict[str, ParamValue] = {}
        remaining = slots[strategy]
        while remaining:
            (name, values), remaining = remaining[0], remaining[1:]
            self.model.extend(context, f'"{name}": ')
            allowed = [v for v in values if not _exhausted(strategy, {**params, name: v}, remaining, taken)]
            params[name] = allowed[self._choose(context, [json.dumps(v) for v in allowed])]
            self.model.extend(context, ", " if remaining else "")
        self.model.extend(context, "}}")
        return Configuration(strategy, params), context

    def _rationale(self, context: Context) -> str:
        if self.rationale_tokens == 0:
            return ""
        self.model.ask(context, "In one sentence, why this configuration?")
        return self.model.generate(context, self.rationale_tokens)

    def _choose(self, context: Context, options: list[str]) -> int:
        return self.model.choose(context, options, self.temperature, self._rng)


def lm_evidence(model: str, history: Sequence[Observation]) -> str:
    """What a configuration the model wrote came from, computed (not the model's words)."""
    history = [o for o in history if o.complete]
    if not history:
        return f"{model} wrote it among the values the space allows, with nothing screened yet"
    best = max(o.value for o in history)
    shown = min(len(history), HISTORY_SHOWN)
    return (
        f"{model} wrote it among the values the space allows, shown the {shown} best of {len(history)} "
        f"screened configurations (best NDCG {best:.4f})"
    )


def _slots(strategy: StrategySpace, best: dict[str, ParamValue]) -> Slots:
    return [(p.name, candidate_values(p, best.get(p.name))) for p in strategy.hyperparameters]


def _exhausted(strategy: str, chosen: dict[str, ParamValue], remaining: Slots, taken: list[dict[str, Any]]) -> bool:
    """Whether every configuration that starts with ``chosen`` and takes offered values for
    the remaining slots is taken already."""
    possible = math.prod(len(values) for _, values in remaining)
    matching = set()
    for configuration in taken:
        params = configuration["params"]
        if configuration["strategy"] != strategy or any(params.get(k) != v for k, v in chosen.items()):
            continue
        if all(params.get(name) in values for name, values in remaining):
            matching.add(tuple(json.dumps(params.get(name)) for name, _ in remaining))
    return len(matching) >= possible


def describe(space: SearchSpace, history: Sequence[Observation], k: int = 10) -> str:
    """The user message: the space, then the best configurations screened so far (in full:
    a pruned screen's low-fidelity score would read as a poor configuration)."""
    history = [o for o in history if o.complete]
    lines = ["Strategies and their hyperparameters:"]
    lines += [f"- {s.strategy}: " + "; ".join(_describe_param(p) for p in s.hyperparameters) for s in space.strategies]
    if history:
        lines.append(f"Tried so far, best first (NDCG@{k}, higher is better):")
        ranked = sorted(history, key=lambda o: o.value, reverse=True)[:HISTORY_SHOWN]
        lines += [f"{json.dumps(rounded(o.configuration))} scored {o.value:.4f}" for o in ranked]
    else:
        lines.append("Nothing has been tried yet.")
    lines.append("Propose one new configuration as JSON.")
    return "\n".join(lines)


def _describe_param(param: Hyperparameter) -> str:
    if param.type is ParamType.BOOL:
        return f"{param.name} (true or false)"
    if param.type is ParamType.CATEGORICAL:
        return f"{param.name} (one of {', '.join(param.choices)})"
    kind = "integer" if param.type is ParamType.INT else "number"
    scale = ", log scale" if param.log_scale else ""
    return f"{param.name} ({kind} from {_short(param.low)} to {_short(param.high)}{scale})"


def _short(value: float) -> str:
    return f"{value:.3g}"


def rounded(configuration: Configuration) -> dict[str, object]:
    """The configuration as the prompt shows it: floats to 3 significant digits (fewer tokens)."""
    params = {k: float(_short(v)) if isinstance(v, float) else v for k, v in configuration.params.items()}
    return {"strategy": configuration.strategy, "params": params}


def best_params(strategy: str, history: Sequence[Observation]) -> dict[str, ParamValue]:
    """The hyperparameters of the best screened configuration of this strategy, if any."""
    same = [o for o in history if o.configuration.strategy == strategy and o.complete]
    return dict(max(same, key=lambda o: o.value).configuration.params) if same else {}


def candidate_values(param: Hyperparameter, best: ParamValue | None) -> list[ParamValue]:
    """What the model may choose for one hyperparameter: its choices, or a grid over its
    range (log-spaced on a log scale) plus the best value seen so far."""
    if param.type is ParamType.BOOL:
        return [False, True]
    if param.type is ParamType.CATEGORICAL:
        return list(param.choices)
    grid = _grid(param)
    if best is not None and not isinstance(best, bool | str) and param.low <= best <= param.high:
        grid.append(best)
    values: list[ParamValue] = []
    for raw in sorted(grid):
        value: ParamValue = round(raw) if param.type is ParamType.INT else float(_short(raw))
        value = min(max(value, param.low), param.high) if param.type is ParamType.FLOAT else value
        if value not in values:
            values.append(value)
    return values


def _grid(param: Hyperparameter) -> list[float]:
    low, high = (
        (math.ceil(param.low), math.floor(param.high)) if param.type is ParamType.INT else (param.low, param.high)
    )
    if param.log_scale and low > 0:
        step = (math.log(high) - math.log(low)) / (GRID_POINTS - 1)
        return [math.exp(math.log(low) + i * step) for i in range(GRID_POINTS)]
    return [low + i * (high - low) / (GRID_POINTS - 1) for i in range(GRID_POINTS)]
