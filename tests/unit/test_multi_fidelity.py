"""The tuner's multi-fidelity screens (tuner.fidelity), its proposal sources (tuner.sources)
and its wall-clock search (tuner.study).

``ladder`` and ``flat`` below are stand-ins for ScoringService's EvaluateConfiguration in
these unit tests of the code around it: a score per configuration that grows with the
training budget (ladder) or a strategy without a budget axis (flat)."""

from __future__ import annotations

import random
from collections.abc import Callable, Collection, Sequence

import optuna
import pytest

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration
from rectune.domain.fidelity import Fidelity
from rectune.domain.space import Hyperparameter, ParamType, SearchSpace, StrategySpace
from tuner.fidelity import FullFidelity, Staged, SuccessiveHalving
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal, TpeProposer, _as_trial
from tuner.screen import Screen
from tuner.sources import LM_ZERO_SHOT, TPE, Record, SourceBandit, records
from tuner.study import run_study

optuna.logging.set_verbosity(optuna.logging.WARNING)


def tower(quality: float) -> Configuration:
    return Configuration("two_tower", {"quality": quality})


Calls = list[tuple[float, float]]  # (quality, training budget) of each stand-in evaluation


def ladder(calls: Calls) -> Callable[[Configuration, Fidelity], Screen]:
    """A stand-in evaluation: NDCG = quality x (0.5 + 0.5 x budget), 10 s per full fit."""

    def evaluate(configuration: Configuration, fidelity: Fidelity) -> Screen:
        quality = float(configuration.params["quality"])
        calls.append((quality, fidelity.training_budget))
        ndcg = quality * (0.5 + 0.5 * fidelity.training_budget)
        return Screen(configuration.key(), ndcg, 0.0, None, fidelity, 10.0 * fidelity.training_budget)

    return evaluate


def flat(configuration: Configuration, fidelity: Fidelity) -> Screen:
    """A stand-in evaluation of a strategy without a budget axis: always fitted in full."""
    return Screen(configuration.key(), float(configuration.params["quality"]), 0.0, None, Fidelity(), 1.0)


def screened(
    engine: SuccessiveHalving, evaluate: Callable[[Configuration, Fidelity], Screen], quality: float
) -> Staged:
    configuration = tower(quality)
    return engine.screen(configuration, lambda fidelity: evaluate(configuration, fidelity))


def test_the_rungs_are_a_ninth_a_third_and_all_of_the_budget() -> None:
    assert SuccessiveHalving().budgets == [1 / 9, 1 / 3, 1.0]
    with pytest.raises(ValueError, match="reduction_factor must be >= 2"):
        SuccessiveHalving(reduction_factor=1)


def test_the_first_proposal_climbs_every_rung_and_a_worse_one_stops_at_the_first() -> None:
    engine, calls = SuccessiveHalving(), Calls()
    evaluate = ladder(calls)
    first = screened(engine, evaluate, 0.30)
    assert [s.fidelity.training_budget for s in first.stages] == [1 / 9, 1 / 3, 1.0] and first.complete
    worse = screened(engine, evaluate, 0.20)
    assert [s.fidelity.training_budget for s in worse.stages] == [1 / 9] and not worse.complete
    assert worse.describe() == "pruned (below the top of its rung): NDCG 0.1111 at 11% of its training budget"
    better = screened(engine, evaluate, 0.40)
    assert better.complete and better.final.ndcg == pytest.approx(0.40)
    # Full fits only for the two that were best when they were screened: 2 of 3 full budgets.
    assert sum(1 for _, budget in calls if budget == 1.0) == 2


def test_rungs_compare_like_with_like_one_study_per_strategy() -> None:
    engine, calls = SuccessiveHalving(), Calls()
    screened(engine, ladder(calls), 0.50)
    # A worse als is the first of its strategy: it climbs, unaffected by the better two_tower.
    als = Configuration("als", {"quality": 0.10})
    staged = engine.screen(als, lambda fidelity: ladder(calls)(als, fidelity))
    assert staged.complete and len(staged.stages) == 3


def test_a_strategy_without_a_budget_axis_is_screened_once_and_counts_in_every_rung() -> None:
    engine = SuccessiveHalving()
    knn = Configuration("two_tower", {"quality": 0.35})
    staged = engine.screen(knn, lambda fidelity: flat(knn, fidelity))
    assert len(staged.stages) == 1 and staged.complete
    # A later proposal of the strategy must beat 0.35 at each rung to climb.
    assert not screened(engine, ladder(Calls()), 0.34).complete


def three_epochs(calls: Calls) -> Callable[[Configuration, Fidelity], Screen]:
    """The stand-in evaluation of a configuration trained for 3 epochs: budgets round to thirds."""

    def evaluate(configuration: Configuration, fidelity: Fidelity) -> Screen:
        return ladder(calls)(configuration, Fidelity(max(1, round(3 * fidelity.training_budget)) / 3))

    return evaluate


def test_a_restarted_engine_prunes_as_the_first_one_did() -> None:
    first, calls = SuccessiveHalving(), Calls()
    history = [screened(first, ladder(calls), q) for q in (0.30, 0.25, 0.35, 0.32)]
    history += [screened(first, three_epochs(calls), q) for q in (0.36, 0.31)]
    restarted = SuccessiveHalving()
    restarted.remember(history)
    for quality in (0.33, 0.20, 0.36):
        assert screened(restarted, ladder(Calls()), quality).stages == screened(first, ladder(Calls()), quality).stages


def test_full_fidelity_fits_every_proposal_in_full() -> None:
    staged = FullFidelity().screen(tower(0.1), lambda fidelity: ladder(Calls())(tower(0.1), fidelity))
    assert [s.fidelity.training_budget for s in staged.stages] == [1.0]


def test_tpe_reads_a_pruned_screen_as_pruned_at_its_share_of_the_budget() -> None:
    space = SearchSpace(
        (StrategySpace("als", hyperparameters=(Hyperparameter("factors", ParamType.INT, 64, "", 8, 512),)),)
    )
    complete = _as_trial(space, Observation(Configuration("als", {"factors": 16}), 0.2))
    pruned = _as_trial(space, Observation(Configuration("als", {"factors": 32}), 0.1, budget=1 / 9))
    assert complete is not None and complete.state is optuna.trial.TrialState.COMPLETE and complete.value == 0.2
    assert pruned is not None and pruned.state is optuna.trial.TrialState.PRUNED
    assert pruned.intermediate_values == {111: 0.1} and pruned.value is None
    proposals = TpeProposer(1).propose(
        space, 3, set(), [Observation(c, v) for c, v in ((Configuration("als", {"factors": 16}), 0.2),)]
    )
    assert len(proposals) == 3


def observation(value: float, source: str, budget: float = 1.0) -> Observation:
    return Observation(Configuration("als", {"factors": int(value * 1000)}), value, budget, source)


def test_a_source_wins_when_its_proposal_beats_everything_screened_before() -> None:
    history = [
        observation(0.10, ""),  # a default
        observation(0.12, "tpe"),  # beats 0.10: a win
        observation(0.11, "lm-pick"),  # below 0.12: a loss
        observation(0.30, "lm-pick", budget=1 / 9),  # pruned: a loss, and not the best so far
        observation(0.13, "lm-pick"),  # beats 0.12: a win
        observation(0.13, "tpe"),  # ties: a loss
    ]
    assert records(history, ["tpe", "lm-pick", "lm-zero-shot"]) == {
        "tpe": Record(wins=1, losses=1),
        "lm-pick": Record(wins=1, losses=2),
        "lm-zero-shot": Record(),
    }


class Constant:
    """A stand-in proposer: always a new configuration of one strategy, labelled by its name."""

    origin = ArmOrigin.TUNER_TPE

    def __init__(self, name: str) -> None:
        self.name = name
        self.drawn = 0

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        self.drawn += 1
        return [Proposal(Configuration(self.name, {"n": self.drawn}), self.origin, self.name)]


def test_the_warm_start_comes_first_then_a_losing_source_fades() -> None:
    sources = {TPE: Constant("tpe"), LM_ZERO_SHOT: Constant("zero")}
    bandit = SourceBandit(sources, seed=4, warm_start=2)
    space = SearchSpace(())
    first = bandit.propose(space, 2, set(), [])
    assert [p.source for p in first] == [LM_ZERO_SHOT, LM_ZERO_SHOT]
    assert "the warm start (the first 2 proposals)" in first[0].rationale
    # TPE's proposals keep improving, the zero-shot ones never do.
    history: list[Observation] = []
    best, rng = 0.1, random.Random(0)
    for _ in range(300):
        (proposal,) = bandit.propose(space, 1, set(), history)
        if proposal.source == TPE and rng.random() < 0.3:
            best += 0.001
            history.append(Observation(proposal.configuration, best, 1.0, TPE))
        else:
            history.append(Observation(proposal.configuration, 0.0, 1.0, proposal.source))
    last = [o.source for o in history[-100:]]
    assert last.count(TPE) > 85


def test_a_study_screens_the_defaults_then_proposals_until_its_budget_is_spent() -> None:
    space = SearchSpace(())
    calls = Calls()
    qualities = iter([0.2, 0.5, 0.1, 0.6, 0.3, 0.7, 0.05, 0.8])

    class Draws:
        origin = ArmOrigin.TUNER_RANDOM

        def propose(
            self,
            space: SearchSpace,
            count: int,
            taken: Collection[str],
            history: Sequence[Observation] = (),
            briefing: Briefing = NO_BRIEFING,
        ) -> list[Proposal]:
            return [Proposal(tower(next(qualities)), self.origin, "draw")]

    record = run_study(Draws(), SuccessiveHalving(), space, ladder(calls), [tower(0.4)], budget_seconds=40.0)
    assert record.trials[0].is_default and record.trials[0].staged.complete
    # The default climbs (1.1 + 3.3 + 10 s); the proposals then run until 40 s are spent.
    assert record.seconds >= 40.0 and record.seconds - record.trials[-1].staged.seconds < 40.0
    summary = record.summary()
    assert summary["trials"] == len(record.trials) and summary["screens"] == len(calls)
    full = sum(10.0 for _, budget in calls if budget == 1.0)
    assert summary["full_fidelity_share_of_seconds"] == pytest.approx(full / record.seconds, abs=1e-3)
    assert [t.source for t in record.trials[1:]] == ["tuner-random"] * (len(record.trials) - 1)


def test_a_rung_the_rounded_budget_already_covered_is_not_fitted_again() -> None:
    """Three epochs: a ninth and a third of them are both one epoch (a third of the budget)."""
    engine, calls = SuccessiveHalving(), Calls()
    staged = screened(engine, three_epochs(calls), 0.3)
    assert [budget for _, budget in calls] == [1 / 3, 1.0]
    assert [s.fidelity.training_budget for s in staged.stages] == [1 / 3, 1.0] and staged.complete
