"""Proposers: where new configurations come from. Found by name in ``PROPOSERS``.

- ``random``: uniform over the search space, log-uniform where a parameter is marked log scale.
- ``tpe``: Optuna's Tree-structured Parzen Estimator, fitted each cycle to every configuration
  screened so far (their offline NDCG, from the audit table), so proposals move towards
  what scored well.
- ``lm``: a language model bound to the space (tuner.lm_proposer, or tuner.endpoint_proposer
  for an OpenAI-compatible endpoint); built apart, since it loads a model.
The controller takes any object with this interface.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass
from typing import Protocol

import optuna

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.space import Hyperparameter, ParamType, SearchSpace

# A proposer that keeps drawing configurations that exist already gives up after this
# many draws per wanted proposal (a tiny space can be exhausted).
DRAWS_PER_PROPOSAL = 20
# A pruned screen's share of its training budget as an Optuna step (steps are integers).
PRUNED_STEPS = 1000


@dataclass(frozen=True)
class Proposal:
    configuration: Configuration
    origin: ArmOrigin  # TUNER_RANDOM, TUNER_TPE or TUNER_LM
    rationale: str  # why this configuration, kept in the audit table
    # Which proposal source of tuner.sources made it ("tpe", "lm-pick", "lm-zero-shot");
    # empty for a proposer used alone.
    source: str = ""


@dataclass(frozen=True)
class Observation:
    """A configuration screened before, and its offline score (NDCG@k)."""

    configuration: Configuration
    value: float
    # The share of its training budget the score was measured at: below 1 when the
    # multi-fidelity screen pruned it (its value then understates a full fit).
    budget: float = 1.0
    source: str = ""  # the proposal source that made it (tuner.sources); empty for the defaults

    @property
    def complete(self) -> bool:
        return self.budget >= 1.0


@dataclass(frozen=True)
class Briefing:
    """What a person tuning the recommender reads besides the screened scores; the
    language-model proposers show it to the model, the others need none of it."""

    data: str = ""  # the data's shape, one line (DataShape.summary)
    live_arms: tuple[str, ...] = ()  # each serving arm, its configuration and click rate, one line each


NO_BRIEFING = Briefing()


class Proposer(Protocol):
    origin: ArmOrigin

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        """Up to ``count`` configurations whose ``key()`` is not in ``taken``."""
        ...


def distinct_proposals(draw: Callable[[], Proposal | None], count: int, taken: Collection[str]) -> list[Proposal]:
    """Up to ``count`` proposals from ``draw`` whose configurations are new (not in ``taken``,
    no repeats), in at most ``count * DRAWS_PER_PROPOSAL`` draws; a draw may give nothing (None)."""
    drawn: list[Proposal] = []
    seen = set(taken)
    for _ in range(count * DRAWS_PER_PROPOSAL):
        if len(drawn) == count:
            break
        proposal = draw()
        if proposal is not None and proposal.configuration.key() not in seen:
            seen.add(proposal.configuration.key())
            drawn.append(proposal)
    return drawn


class RandomProposer:
    origin = ArmOrigin.TUNER_RANDOM

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        def draw() -> Proposal:
            configuration = space.sample(self._rng)
            return Proposal(configuration, self.origin, f"uniform random draw from the {configuration.strategy} space")

        return distinct_proposals(draw, count, taken)


class TpeProposer:
    """Optuna TPE over the whole space: the strategy is a categorical parameter and each
    strategy's hyperparameters are conditional on it (named ``strategy.param``)."""

    origin = ArmOrigin.TUNER_TPE

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        # constant_liar: trials asked in one cycle count as pending, so they spread out.
        sampler = optuna.samplers.TPESampler(seed=self._rng.randrange(2**31), constant_liar=True)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        known = [trial for trial in (_as_trial(space, o) for o in history) if trial is not None]
        study.add_trials(known)
        best = max((o.value for o in history), default=None)
        basis = f"{len(known)} screened configurations" + (f", best NDCG {best:.4f}" if best is not None else "")
        return distinct_proposals(
            lambda: Proposal(_ask(study, space), self.origin, f"TPE fitted to {basis}"), count, taken
        )


def _distribution(param: Hyperparameter) -> optuna.distributions.BaseDistribution:
    if param.type is ParamType.BOOL:
        return optuna.distributions.CategoricalDistribution([False, True])
    if param.type is ParamType.CATEGORICAL:
        return optuna.distributions.CategoricalDistribution(list(param.choices))
    log = param.log_scale and param.low > 0
    if param.type is ParamType.FLOAT:
        return optuna.distributions.FloatDistribution(param.low, param.high, log=log)
    return optuna.distributions.IntDistribution(math.ceil(param.low), math.floor(param.high), log=log)


def _ask(study: optuna.Study, space: SearchSpace) -> Configuration:
    trial = study.ask()
    strategy = trial.suggest_categorical("strategy", space.names())
    chosen = next(s for s in space.strategies if s.strategy == strategy)
    return Configuration(strategy, {p.name: _suggest(trial, f"{strategy}.{p.name}", p) for p in chosen.hyperparameters})


def _suggest(trial: optuna.Trial, name: str, param: Hyperparameter) -> ParamValue:
    if param.type is ParamType.BOOL:
        return bool(trial.suggest_categorical(name, [False, True]))
    if param.type is ParamType.CATEGORICAL:
        return str(trial.suggest_categorical(name, list(param.choices)))
    log = param.log_scale and param.low > 0
    if param.type is ParamType.FLOAT:
        return trial.suggest_float(name, param.low, param.high, log=log)
    return trial.suggest_int(name, math.ceil(param.low), math.floor(param.high), log=log)


def _as_trial(space: SearchSpace, observation: Observation) -> optuna.trial.FrozenTrial | None:
    """A finished trial for TPE, or None when the configuration lies outside today's space
    (the operator may have narrowed it since)."""
    strategy = observation.configuration.strategy
    spaces = {s.strategy: s for s in space.strategies}
    if strategy not in spaces:
        return None
    params: dict[str, ParamValue] = {"strategy": strategy}
    distributions: dict[str, optuna.distributions.BaseDistribution] = {
        "strategy": optuna.distributions.CategoricalDistribution(space.names())
    }
    for param in spaces[strategy].hyperparameters:
        value = observation.configuration.params.get(param.name)
        if not param.contains(value):
            return None
        assert value is not None
        params[f"{strategy}.{param.name}"], distributions[f"{strategy}.{param.name}"] = value, _distribution(param)
    if observation.complete:
        return optuna.trial.create_trial(params=params, distributions=distributions, value=observation.value)
    # Pruned by the multi-fidelity screen: TPE ranks pruned trials below complete ones, by
    # how far they got and then by their value there.
    step = max(1, round(observation.budget * PRUNED_STEPS))
    return optuna.trial.create_trial(
        params=params,
        distributions=distributions,
        state=optuna.trial.TrialState.PRUNED,
        intermediate_values={step: observation.value},
    )


PROPOSERS: dict[str, Callable[[int | None], Proposer]] = {"random": RandomProposer, "tpe": TpeProposer}
