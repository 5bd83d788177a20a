"""The blend source: weighted blends of the best configurations the search has screened.

Blends of strong models are the usual way to gain the last few per cent. ScoringService's
``blend`` strategy holds tuned members (``w_<member>`` and ``<member>.<parameter>``); this
source proposes one from the screened history: the best configuration evaluated in full of
each of the best ``MEMBERS`` strategies (composites, blend and hybrid, are not members), with
the best member's weight 1 and the others' weights drawn by Optuna TPE fitted to the blends
of the same members screened before (only the weights' ratios matter; the first blend of a
set of members gives the others a quarter of the best's weight). The weights are thus tuned
on the same validation scores as everything else. ScoringService remembers its frozen fits, so screening
a blend of screened members costs little more than scoring it.

Blends are proposed by this source only: the other proposers search the space without
``blend`` (``Unblended``), since sampling a blend's members at random would search every
strategy at once.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Collection, Sequence

import optuna

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration, ParamValue
from rectune.domain.space import SearchSpace, StrategySpace
from tuner.proposers import (
    NO_BRIEFING,
    Briefing,
    Observation,
    Proposal,
    Proposer,
    distinct_proposals,
)

BLEND = "blend"
COMPOSITES = (BLEND, "hybrid")
MEMBERS = 3  # the best strategies blended
# The other members' weight in the first blend of a set of members. Chosen on MovieLens
# 100K's validation split: at 0.5 a blend of a much stronger member with weaker ones fell below
# the stronger alone; at 0.25 each blend of two_tower with item_knn, ease or als beat it.
FIRST_WEIGHT = 0.25
STARTUP_TRIALS = 3  # random weights before TPE models them


def best_per_strategy(history: Sequence[Observation], members: Collection[str]) -> list[Observation]:
    """The best complete observation of each member strategy, best first."""
    best: dict[str, Observation] = {}
    for observation in history:
        name = observation.configuration.strategy
        if observation.complete and name in members and (name not in best or observation.value > best[name].value):
            best[name] = observation
    return sorted(best.values(), key=lambda o: o.value, reverse=True)


def weight(member: str) -> str:
    return f"w_{member}"


def member_names(blend: StrategySpace) -> list[str]:
    """The strategies a blend may hold: those it declares a weight for."""
    return [h.name[2:] for h in blend.hyperparameters if h.name.startswith("w_") and h.name[2:] not in COMPOSITES]


def blended_params(members: Sequence[Configuration], blend: StrategySpace) -> dict[str, ParamValue]:
    """The members' own hyperparameters under their blend names, every weight 0."""
    declared = blend.by_name()
    params: dict[str, ParamValue] = {name: 0.0 for name in declared if name.startswith("w_")}
    for member in members:
        for name, value in member.params.items():
            blend_name = f"{member.strategy}.{name}"
            if blend_name in declared:
                params[blend_name] = value
    return params


def same_members(configuration: Configuration, members: dict[str, ParamValue]) -> bool:
    """Whether a screened blend holds exactly these members at these settings."""
    params = configuration.params
    return configuration.strategy == BLEND and all(params.get(name) == value for name, value in members.items())


class BlendProposer:
    origin = ArmOrigin.TUNER_TPE

    def __init__(self, seed: int | None = None, members: int = MEMBERS) -> None:
        self._rng = random.Random(seed)
        self.members = members

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        """Blends of the best screened members; none until two strategies were screened in full."""
        blend = space.by_strategy().get(BLEND)
        if blend is None:
            return []
        chosen = best_per_strategy(history, member_names(blend))[: self.members]
        if len(chosen) < 2:
            return []
        tuned = [weight(o.configuration.strategy) for o in chosen[1:]]
        # Everything but the tuned weights: the members' settings, the best member's weight 1,
        # and 0 for every strategy not in the blend.
        fixed = blended_params([o.configuration for o in chosen], blend)
        for name in tuned:
            fixed.pop(name)
        fixed[weight(chosen[0].configuration.strategy)] = 1.0
        earlier = [o for o in history if same_members(o.configuration, fixed)]
        study = self._study(earlier, tuned)
        described = ", ".join(f"{o.configuration.strategy} ({o.value:.4f})" for o in chosen)
        draws = itertools.count()

        def draw() -> Proposal:
            first = not earlier and next(draws) == 0
            weights = dict.fromkeys(tuned, FIRST_WEIGHT) if first else self._weights(study, tuned)
            how = f"TPE fitted to {len(earlier)} blends of these members" if earlier else "a first blend of these"
            rationale = f"blend of the best screened {described}; weights: {how}"
            return Proposal(Configuration(BLEND, {**fixed, **weights}), self.origin, rationale)

        return distinct_proposals(draw, count, taken)

    def _study(self, earlier: Sequence[Observation], tuned: Sequence[str]) -> optuna.Study:
        sampler = optuna.samplers.TPESampler(seed=self._rng.randrange(2**31), n_startup_trials=STARTUP_TRIALS)
        study = optuna.create_study(direction="maximize", sampler=sampler)
        distributions: dict[str, optuna.distributions.BaseDistribution] = {
            name: optuna.distributions.FloatDistribution(0.0, 1.0) for name in tuned
        }
        for observation in earlier:
            params = {name: float(observation.configuration.params[name]) for name in tuned}
            if observation.complete:  # a blend has no budget axis: screened blends are complete
                study.add_trial(
                    optuna.trial.create_trial(params=params, distributions=distributions, value=observation.value)
                )
        return study

    @staticmethod
    def _weights(study: optuna.Study, tuned: Sequence[str]) -> dict[str, ParamValue]:
        trial = study.ask()
        return {name: trial.suggest_float(name, 0.0, 1.0) for name in tuned}


class Unblended:
    """A proposer that searches the space without blends (the blend source makes those)."""

    def __init__(self, proposer: Proposer) -> None:
        self.proposer = proposer
        self.origin = proposer.origin

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        return self.proposer.propose(space.without(BLEND), count, taken, history, briefing)
