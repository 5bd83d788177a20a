"""The hybrid proposer: TPE draws a pool of candidates, the language model picks one.

The classical optimiser stays in control (every candidate is one TPE would propose); the
model's role is bounded to ranking its pool, in the style of LLAMBO's candidate ranking.
The model reads the dataset's shape, the serving arms' click rates (when the controller
knows them), the strategies with their hyperparameters' ranges, the configurations screened
so far (best first), and the candidates, each under a letter; its probabilities of the
letters are read, never free text. Small models favour a position, so each pool is shown twice, in two orders, and a
candidate's probability is the mean of its two.

The rationale is evidence, computed: the pool TPE drew, what it was fitted to, the model's
probability of each candidate, and which was chosen.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection, Sequence
from typing import Protocol

from rectune.domain.arms import ArmOrigin
from rectune.domain.configuration import Configuration
from rectune.domain.space import SearchSpace
from tuner.lm_proposer import describe, rounded
from tuner.proposers import NO_BRIEFING, Briefing, Observation, Proposal, TpeProposer

SYSTEM = (
    "You tune a recommender system. A configuration is a strategy and its hyperparameters. "
    "Of the candidate configurations, choose the one most likely to reach the highest NDCG@{k}. "
    "Answer with its letter."
)
LETTERS = "ABCDEFGH"


class Chooser(Protocol):
    """What the pool proposer needs of a language model: tuner.language_model.LanguageModel
    (local) or tuner.endpoint.EndpointModel (an OpenAI-compatible endpoint)."""

    name: str

    def probabilities_each(self, system: str, users: list[str], options: list[str]) -> list[list[float]]:
        """For each user message, the model's probabilities of the options as its answer."""
        ...


class PoolProposer:
    origin = ArmOrigin.TUNER_LM

    def __init__(
        self,
        model: Chooser,
        seed: int | None = None,
        pool_size: int = 4,
        k: int = 10,
        share: float = 1.0,
    ) -> None:
        if not 2 <= pool_size <= len(LETTERS):
            raise ValueError(f"pool_size: must be between 2 and {len(LETTERS)}, got {pool_size}")
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"share: must be between 0 and 1, got {share}")
        # The share of proposals the model chooses (Centaur-style); the others are TPE's own pick.
        self.share = share
        self.model = model
        self.pool_size = pool_size
        self.k = k
        self._rng = random.Random(seed)
        self._tpe = TpeProposer(seed=self._rng.randrange(2**31))

    def propose(
        self,
        space: SearchSpace,
        count: int,
        taken: Collection[str],
        history: Sequence[Observation] = (),
        briefing: Briefing = NO_BRIEFING,
    ) -> list[Proposal]:
        pool = self._tpe.propose(space, self.pool_size * count, taken, history)
        basis = pool[0].rationale if pool else ""
        chosen = []
        for start in range(0, len(pool), self.pool_size):
            group = [p.configuration for p in pool[start : start + self.pool_size]]
            if len(group) == 1:
                chosen.append(Proposal(group[0], self.origin, f"{basis}; a pool of one: no choice"))
                continue
            if self._rng.random() >= self.share:
                own = f"{basis}; TPE's own pick (the model chooses {self.share:.0%} of proposals)"
                chosen.append(Proposal(group[0], self.origin, own))
                continue
            chances = self._chances(space, history, briefing, group)
            best = max(range(len(group)), key=chances.__getitem__)
            chosen.append(Proposal(group[best], self.origin, _evidence(basis, group, chances, best, self.model.name)))
        return chosen

    def _chances(
        self, space: SearchSpace, history: Sequence[Observation], briefing: Briefing, group: list[Configuration]
    ) -> list[float]:
        """Each candidate's probability of being picked, averaged over two orders of the pool."""
        orders = [list(range(len(group))), list(reversed(range(len(group))))]
        prompts = [prompt(space, history, briefing, [group[i] for i in order], self.k) for order in orders]
        answers = self.model.probabilities_each(SYSTEM.format(k=self.k), prompts, list(LETTERS[: len(group)]))
        totals = [0.0] * len(group)
        for order, shown in zip(orders, answers, strict=True):
            for position, candidate in enumerate(order):
                totals[candidate] += shown[position] / len(orders)
        return totals


def prompt(
    space: SearchSpace, history: Sequence[Observation], briefing: Briefing, shown: list[Configuration], k: int
) -> str:
    """The user message: the data's shape and the serving arms (when known), the space and the
    best screens (as the lm proposer shows them), then the candidates. What changes least comes
    first: the model reads again only what follows the part a prompt shares with the last one
    (LanguageModel). Strategy descriptions and a compact notation were measured and made the
    packaged model's choices worse (docs/benchmarks.md), so the prompt keeps this form."""
    lines = [f"Data: {briefing.data}"] if briefing.data else []
    if briefing.live_arms:
        lines.append("Serving now:")
        lines += [f"- {arm}" for arm in briefing.live_arms]
    lines.append(describe(space, history, k).rsplit("\n", 1)[0])  # without its closing request
    lines.append("Candidates:")
    lines += [f"{LETTERS[i]}: {json.dumps(rounded(c))}" for i, c in enumerate(shown)]
    lines.append("Which candidate will score highest? Answer with one letter.")
    return "\n".join(lines)


def _evidence(basis: str, group: list[Configuration], chances: list[float], best: int, model: str) -> str:
    candidates = "; ".join(f"{_short(c)} p={p:.2f}" for c, p in zip(group, chances, strict=True))
    return f"{basis}; pool of {len(group)}: {candidates}; {model} chose {_short(group[best])}"


def _short(configuration: Configuration) -> str:
    params = ", ".join(
        f"{name}={value:.4g}" if isinstance(value, float) else f"{name}={value}"
        for name, value in sorted(configuration.params.items())
    )
    return f"{configuration.strategy}({params})"
