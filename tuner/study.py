"""A search within a wall-clock budget: the defaults first, then proposals screened through a
multi-fidelity engine until the budget is spent. The loop behind ``rectune study`` and
bench/tuner.py; free of gRPC (``evaluate`` is ScoringService's EvaluateConfiguration, or the
bench's in-process evaluator).

The clock counts what a user waits for: the proposers' time and the screens' own seconds
(as ScoringService reports them). A screen that starts before the budget is spent runs to
its end, so a search may overrun by one screen; the record says how long it took.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rectune.domain.configuration import Configuration
from rectune.domain.fidelity import Fidelity
from rectune.domain.space import SearchSpace
from tuner.fidelity import ScreenEngine, Staged
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposer
from tuner.screen import Screen

Evaluate = Callable[[Configuration, Fidelity], Screen]


@dataclass(frozen=True)
class Trial:
    """One configuration the search screened: where it came from and each stage's screen."""

    staged: Staged
    source: str  # "default", or the proposal source (tuner.sources), or the proposer's origin
    proposing_seconds: float = 0.0

    def observation(self) -> Observation:
        final = self.staged.final
        return Observation(
            self.staged.configuration,
            final.ndcg,
            final.fidelity.training_budget,
            "" if self.is_default else self.source,
        )

    @property
    def is_default(self) -> bool:
        return self.source == "default"

    def as_dict(self) -> dict[str, Any]:
        return {
            "configuration": self.staged.configuration.as_dict(),
            "source": self.source,
            "complete": self.staged.complete,
            "stages": [
                {
                    "training_budget": round(s.fidelity.training_budget, 4),
                    "user_fraction": round(s.fidelity.user_fraction, 4),
                    "ndcg": round(s.ndcg, 6),
                    "seconds": round(s.seconds, 3),
                }
                for s in self.staged.stages
            ],
            "proposing_seconds": round(self.proposing_seconds, 3),
        }


@dataclass
class StudyRecord:
    trials: list[Trial] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(t.staged.seconds + t.proposing_seconds for t in self.trials)

    @property
    def full_fidelity_seconds(self) -> float:
        return sum(s.seconds for t in self.trials for s in t.staged.stages if s.fidelity.training_budget >= 1.0)

    def screens(self) -> int:
        return sum(len(t.staged.stages) for t in self.trials)

    def history(self) -> list[Observation]:
        return [t.observation() for t in self.trials]

    def complete(self) -> list[Trial]:
        return [t for t in self.trials if t.staged.complete]

    def summary(self) -> dict[str, Any]:
        seconds = self.seconds
        return {
            "trials": len(self.trials),
            "screens": self.screens(),
            "complete": len(self.complete()),
            "seconds": round(seconds, 1),
            "screens_per_hour": round(self.screens() * 3600 / seconds, 1) if seconds else 0.0,
            "full_fidelity_share_of_seconds": round(self.full_fidelity_seconds / seconds, 3) if seconds else 0.0,
        }


def run_study(
    proposer: Proposer,
    engine: ScreenEngine,
    space: SearchSpace,
    evaluate: Evaluate,
    defaults: Sequence[Configuration],
    budget_seconds: float,
    briefing: Briefing = NO_BRIEFING,
    canonical: Callable[[Configuration], Configuration] = lambda c: c,
) -> StudyRecord:
    """Screen the defaults, then one proposal at a time until ``budget_seconds`` are spent."""
    record = StudyRecord()
    for default in defaults:
        record.trials.append(Trial(engine.screen(default, _bound(evaluate, default)), "default"))
    taken = {canonical(c).key() for c in defaults}
    while record.seconds < budget_seconds:
        started = time.perf_counter()
        proposals = proposer.propose(space, 1, taken, record.history(), briefing)
        proposing = time.perf_counter() - started
        if not proposals:
            break
        configuration = canonical(proposals[0].configuration)
        taken.add(configuration.key())
        source = proposals[0].source or proposals[0].origin.value
        staged = engine.screen(configuration, _bound(evaluate, configuration))
        record.trials.append(Trial(staged, source, proposing))
    return record


def _bound(evaluate: Evaluate, configuration: Configuration) -> Callable[[Fidelity], Screen]:
    return lambda fidelity: evaluate(configuration, fidelity)
