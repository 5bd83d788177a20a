"""The controller's screens: several candidates per slot through the multi-fidelity engine,
the best serving arm as the bar, and a serving arm that cannot be screened.

``StandInBackend`` stands in for the services in this unit test of the controller around
it: a configuration's offline NDCG is its ``quality`` parameter (times 0.5 + 0.5 x the
training budget for the strategy ``tt``, which has a budget axis); the paired comparison
clears when the mean does."""

from __future__ import annotations

import threading
import time
from collections.abc import Collection, Sequence

from rectune.domain.arms import ArmOrigin, ArmState
from rectune.domain.configuration import Configuration
from rectune.domain.data import DataShape
from rectune.domain.fidelity import FULL, Fidelity
from rectune.domain.space import SearchSpace, StrategySpace
from tuner.controller import Action, ArmStats, ArmView, BackendError, Controller, TunerLimits
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal
from tuner.screen import Screen


class StandInBackend:
    """NOT the services (see the module's docstring)."""

    def __init__(self, arms: list[ArmView], failing: Collection[str] = ()) -> None:
        self._arms = arms
        self.failing = set(failing)
        self.calls: list[tuple[str, float, str | None]] = []

    def arms(self) -> list[ArmView]:
        return self._arms

    def stats_since(self, start: float) -> dict[str, ArmStats]:
        return {}

    def describe(self) -> tuple[SearchSpace, DataShape]:
        return SearchSpace((StrategySpace("tt"), StrategySpace("flat"))), DataShape(10, 10, 10, 1.0, 1)

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Screen:
        if configuration.key() in self.failing:
            raise BackendError("ScoringService.EvaluateConfiguration: UNAVAILABLE: EmbeddingService is down")
        used = fidelity.training_budget if configuration.strategy == "tt" else 1.0
        self.calls.append((configuration.key(), used, baseline.key() if baseline else None))
        ndcg = self.ndcg(configuration, used)
        clears = None if baseline is None else float(ndcg >= ratio * self.ndcg(baseline, 1.0))
        return Screen(configuration.key(), ndcg, 0.1, clears, Fidelity(used), 1.0)

    @staticmethod
    def ndcg(configuration: Configuration, budget: float) -> float:
        quality = float(configuration.params["quality"])
        return quality * (0.5 + 0.5 * budget) if configuration.strategy == "tt" else quality

    def register(self, action: Action) -> None: ...

    def set_state(self, arm_id: str, state: ArmState, reason: str) -> None: ...


class Listed:
    """A stand-in proposer: the given configurations, in order."""

    origin = ArmOrigin.TUNER_TPE

    def __init__(self, configurations: Sequence[Configuration]) -> None:
        self.configurations = list(configurations)

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        return [Proposal(c, self.origin, "listed", "tpe") for c in self.configurations[:count]]


def arm(arm_id: str, strategy: str, quality: float, state: ArmState, origin: ArmOrigin = ArmOrigin.MANUAL) -> ArmView:
    configuration = Configuration(strategy, {"quality": quality})
    return ArmView(arm_id, configuration, configuration.key(), origin, state)


def test_the_bar_is_the_best_serving_arm_and_the_screen_says_both_numbers() -> None:
    arms = [arm("control", "flat", 0.06, ArmState.CHAMPION), arm("knn", "flat", 0.18, ArmState.ACTIVE)]
    proposals = [Configuration("flat", {"quality": 0.12}), Configuration("flat", {"quality": 0.20})]
    backend = StandInBackend(arms)
    limits = TunerLimits(max_new_arms_per_cycle=2, candidates_per_slot=1)
    plan = Controller(backend, Listed(proposals), limits).plan()
    assert plan.best_live is not None and plan.best_live.arm_id == "knn"
    (registered,) = [a for a in plan.actions if a.configuration is not None]
    assert registered.configuration == proposals[1] and registered.source == "tpe"
    (rejected,) = plan.rejected
    assert rejected.reason == (
        "offline NDCG@10 0.1200 against 0.8 x the best live arm's (knn) 0.1800 (champion's 0.0600): clears it in 0% "
        "of 1000 paired resamples of the holdout users (needs 90%)"
    )
    # Each proposal was compared with the best serving arm, not with the champion.
    assert {baseline for _, _, baseline in backend.calls if baseline} == {arms[1].configuration.key()}


def test_a_serving_arm_that_cannot_be_screened_is_left_out_of_the_bar_with_a_note() -> None:
    arms = [arm("control", "flat", 0.06, ArmState.CHAMPION), arm("content", "flat", 0.18, ArmState.ACTIVE)]
    backend = StandInBackend(arms, failing={arms[1].configuration.key()})
    limits = TunerLimits(max_new_arms_per_cycle=1, candidates_per_slot=1)
    plan = Controller(backend, Listed([Configuration("flat", {"quality": 0.12})]), limits).plan()
    assert plan.best_live is None and len(plan.actions) == 1
    assert plan.notes == [
        "serving arm content left out of the bar: its screen failed (ScoringService.EvaluateConfiguration: "
        "UNAVAILABLE: EmbeddingService is down)"
    ]


def test_candidates_are_pruned_cheaply_and_the_best_that_pass_fill_the_slots() -> None:
    arms = [arm("control", "flat", 0.06, ArmState.CHAMPION)]
    proposals = [
        Configuration("tt", {"quality": 0.20}),  # the first of its strategy: climbs every rung
        Configuration("tt", {"quality": 0.10}),  # below it at the first rung: pruned there
        Configuration("tt", {"quality": 0.30}),  # above: climbs, and is the best
    ]
    backend = StandInBackend(arms)
    limits = TunerLimits(max_new_arms_per_cycle=1, candidates_per_slot=3)
    plan = Controller(backend, Listed(proposals), limits).plan()
    (registered,) = [a for a in plan.actions if a.configuration is not None]
    assert registered.configuration == proposals[2]
    reasons = {r.proposal.configuration.key(): r.reason for r in plan.rejected}
    assert reasons[proposals[1].key()] == (
        "pruned (below the top of its rung): NDCG 0.0556 at 11% of its training budget"
    )
    assert reasons[proposals[0].key()] == "passed, but 1 better proposals of this cycle took the free slots"
    budgets = [budget for key, budget, _ in backend.calls if key == proposals[1].key()]
    assert budgets == [1 / 9]  # the pruned one cost a ninth of a fit
    assert [s.fidelity.training_budget for s in plan.stages[proposals[2].key()].stages] == [1 / 9, 1 / 3, 1.0]


class SlowBackend(StandInBackend):
    """The stand-in, each screen taking a while; records how many ran at once."""

    def __init__(self, arms: list[ArmView]) -> None:
        super().__init__(arms)
        self.running = 0
        self.most_at_once = 0
        self.lock = threading.Lock()

    def evaluate(
        self,
        configuration: Configuration,
        k: int,
        baseline: Configuration | None = None,
        ratio: float = 1.0,
        fidelity: Fidelity = FULL,
    ) -> Screen:
        with self.lock:
            self.running += 1
            self.most_at_once = max(self.most_at_once, self.running)
        try:
            time.sleep(0.05)
            return super().evaluate(configuration, k, baseline, ratio, fidelity)
        finally:
            with self.lock:
                self.running -= 1


def test_parallel_screens_run_at_once_and_decide_as_one_at_a_time_does() -> None:
    arms = [arm("control", "flat", 0.06, ArmState.CHAMPION)]
    proposals = [Configuration("flat", {"quality": q}) for q in (0.10, 0.30, 0.05, 0.20)]
    plans = {}
    for parallel in (1, 4):
        backend = SlowBackend(arms)
        limits = TunerLimits(max_new_arms_per_cycle=2, candidates_per_slot=2, parallel_screens=parallel)
        plans[parallel] = (Controller(backend, Listed(proposals), limits).plan(), backend.most_at_once)
    (one, one_at_once), (four, four_at_once) = plans[1], plans[4]
    assert (one_at_once, four_at_once) == (1, 4)
    assert list(four.screens) == list(one.screens) == [p.key() for p in proposals]  # the proposals' order
    assert [a.configuration for a in four.actions] == [a.configuration for a in one.actions]
    assert [r.reason for r in four.rejected] == [r.reason for r in one.rejected]


def test_parallel_screens_are_bounded() -> None:
    assert TunerLimits(parallel_screens=0).problems() == ["parallel_screens: must be in 1..64, got 0"]
