"""Multi-fidelity screens: successive halving, so that expensive configurations are affordable.

Each proposal is first evaluated with a small share of its training budget (two_tower's
epochs, als's iterations); only those in the top ``1 / reduction_factor`` of their rung go on
to the next, larger share, and the survivors of the last rung are evaluated in full. The
promotion rule is Optuna's ``SuccessiveHalvingPruner``, one study per strategy, so that a
one-epoch two_tower competes with other one-epoch two_towers rather than with a fully fitted
item_knn. A strategy whose fit has no budget axis (ScoringService reports the share used as
1 at the first rung) is evaluated in full once and never pruned.

The studies live as long as the engine (a ``tuner run`` process, a bench seed, a study);
``remember`` replays earlier screens into them, so a restarted tuner prunes as before.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

import optuna

from rectune.domain.configuration import Configuration
from rectune.domain.fidelity import Fidelity
from tuner.screen import Screen

REDUCTION_FACTOR = 3
RUNGS = 3


@dataclass(frozen=True)
class Staged:
    """A proposal's screens, lowest fidelity first; the last one is what it reached."""

    configuration: Configuration
    stages: tuple[Screen, ...]

    @property
    def final(self) -> Screen:
        return self.stages[-1]

    @property
    def complete(self) -> bool:
        """Whether it was evaluated at its full training budget (not pruned on the way)."""
        return self.final.fidelity.training_budget >= 1.0

    @property
    def seconds(self) -> float:
        return sum(stage.seconds for stage in self.stages)

    def describe(self) -> str:
        steps = ", ".join(f"{s.ndcg:.4f} at {s.fidelity.training_budget:.0%}" for s in self.stages)
        verdict = "evaluated in full" if self.complete else "pruned (below the top of its rung)"
        return f"{verdict}: NDCG {steps} of its training budget"


class SuccessiveHalving:
    """Optuna's SuccessiveHalvingPruner over training-budget rungs, one study per strategy."""

    def __init__(self, reduction_factor: int = REDUCTION_FACTOR, rungs: int = RUNGS) -> None:
        if reduction_factor < 2 or rungs < 1:
            raise ValueError(f"reduction_factor must be >= 2 and rungs >= 1, got {reduction_factor} and {rungs}")
        self.reduction_factor = reduction_factor
        # Rung r is evaluated at step reduction_factor ** r, the full budget at the last one.
        self.steps = [reduction_factor**rung for rung in range(rungs)]
        self.studies: dict[str, optuna.Study] = {}
        self._studies_lock = threading.Lock()  # screens may run in parallel (--parallel-screens)

    @property
    def budgets(self) -> list[float]:
        """The share of the training budget at each rung, e.g. 1/9, 1/3, 1."""
        return [step / self.steps[-1] for step in self.steps]

    def screen(self, configuration: Configuration, evaluate: Callable[[Fidelity], Screen]) -> Staged:
        """Up the rungs until the pruner stops it or it has been evaluated in full."""
        study = self._study(configuration.strategy)
        trial = study.ask()
        stages: list[Screen] = []
        for step, budget in zip(self.steps, self.budgets, strict=True):
            if stages and stages[-1].fidelity.training_budget >= budget:
                # Rounded up to whole epochs, the last stage already covered this rung's share
                # (3 epochs: a ninth and a third are both one): its value stands for this rung.
                screen = stages[-1]
            else:
                screen = evaluate(Fidelity(training_budget=budget))
                stages.append(screen)
            if screen.fidelity.training_budget >= 1.0:
                # In full (the last rung, or a strategy without a budget axis): its value
                # counts in every rung it skipped, so later proposals compete with it there.
                trial.report(screen.ndcg, self.steps[-1])
                trial.should_prune()
                study.tell(trial, screen.ndcg)
                return Staged(configuration, tuple(stages))
            trial.report(screen.ndcg, step)
            if trial.should_prune():
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)
                return Staged(configuration, tuple(stages))
        raise AssertionError("the last rung is the full training budget")

    def remember(self, staged: Sequence[Staged]) -> None:
        """Replay screens made before (a restarted tuner), oldest first, into the studies."""
        for past in staged:
            study = self._study(past.configuration.strategy)
            trial = study.ask()
            stages = iter(past.stages)
            stage: Screen | None = None
            for step, budget in zip(self.steps, self.budgets, strict=True):
                if stage is None or stage.fidelity.training_budget < budget:  # as screen() moved on
                    stage = next(stages, None)
                    if stage is None:
                        break
                full = stage.fidelity.training_budget >= 1.0
                trial.report(stage.ndcg, self.steps[-1] if full else step)
                trial.should_prune()  # records the rung's value, as when it was screened
                if full:
                    break
            if past.complete:
                study.tell(trial, past.final.ndcg)
            else:
                study.tell(trial, state=optuna.trial.TrialState.PRUNED)

    def _study(self, strategy: str) -> optuna.Study:
        with self._studies_lock:
            return self._study_locked(strategy)

    def _study_locked(self, strategy: str) -> optuna.Study:
        if strategy not in self.studies:
            pruner = optuna.pruners.SuccessiveHalvingPruner(
                min_resource=1, reduction_factor=self.reduction_factor, min_early_stopping_rate=0
            )
            # The sampler is never asked for parameters: proposals come from the proposers.
            self.studies[strategy] = optuna.create_study(
                direction="maximize", pruner=pruner, sampler=optuna.samplers.RandomSampler(seed=0)
            )
        return self.studies[strategy]


class ScreenEngine(Protocol):
    """How proposals are screened: SuccessiveHalving, or FullFidelity."""

    def screen(self, configuration: Configuration, evaluate: Callable[[Fidelity], Screen]) -> Staged: ...

    def remember(self, staged: Sequence[Staged]) -> None: ...


class FullFidelity:
    """Every proposal evaluated in full at once: the baseline that multi-fidelity is measured against."""

    budgets = [1.0]

    def screen(self, configuration: Configuration, evaluate: Callable[[Fidelity], Screen]) -> Staged:
        return Staged(configuration, (evaluate(Fidelity()),))

    def remember(self, staged: Sequence[Staged]) -> None:
        """Nothing to remember: no rungs."""
