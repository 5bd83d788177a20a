"""Proposers: where new configurations come from. Found by name in ``PROPOSERS``.

Built so far: ``random`` (uniform over the search space, log-uniform where a parameter is
marked log scale). The language-model and Optuna TPE proposers of the design are not built
yet; the controller takes any object with this interface.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Protocol

from tuner.space import Configuration, SearchSpace

# A proposer that keeps drawing configurations that exist already gives up after this
# many draws per wanted proposal (a tiny space can be exhausted).
DRAWS_PER_PROPOSAL = 20


@dataclass(frozen=True)
class Proposal:
    configuration: Configuration
    origin: str  # the arm origin: "tuner-random", "tuner-tpe", "tuner-lm"
    rationale: str  # why this configuration, kept in the audit table


class Proposer(Protocol):
    origin: str

    def propose(self, space: SearchSpace, count: int, taken: Collection[str]) -> list[Proposal]:
        """Up to ``count`` configurations whose ``key()`` is not in ``taken``."""
        ...


class RandomProposer:
    origin = "tuner-random"

    def __init__(self, seed: int | None = None) -> None:
        self._rng = random.Random(seed)

    def propose(self, space: SearchSpace, count: int, taken: Collection[str]) -> list[Proposal]:
        proposals: list[Proposal] = []
        seen = set(taken)
        for _ in range(count * DRAWS_PER_PROPOSAL):
            if len(proposals) == count:
                break
            configuration = space.sample(self._rng)
            if configuration.key() in seen:
                continue
            seen.add(configuration.key())
            rationale = f"uniform random draw from the {configuration.strategy} space"
            proposals.append(Proposal(configuration, self.origin, rationale))
        return proposals


PROPOSERS: dict[str, Callable[[int | None], Proposer]] = {"random": RandomProposer}
