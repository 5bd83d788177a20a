"""Simulated users built from real interactions, and the click model that decides what they do.

Each user's interactions are split by time: the earlier part is what ScoringService sees;
the later part is a ground truth that no arm has seen. Shown a list, a user clicks an
item with probability examination(rank) x interest(item) x noise, where interest is high
for items the user rated 4 or 5 later, low for items rated lower, and a small base rate
for the rest. Random numbers are drawn per position, so the same draws can score a
second, counterfactual list for the same request (common random numbers).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from rectune.domain.events import Interaction


@dataclass(frozen=True)
class ClickModel:
    liked: float = 0.5  # held-out rating >= 4
    disliked: float = 0.1  # held-out rating < 4
    base: float = 0.01  # not rated later
    noise: float = 0.2  # interest is scaled by a factor drawn from [1 - noise, 1 + noise]

    @staticmethod
    def examination(rank: int) -> float:
        """Position bias: the chance that a user looks at the item at this (1-based) rank."""
        return 1.0 / math.log2(rank + 1)

    def interest(self, rating: float | None) -> float:
        if rating is None:
            return self.base
        return self.liked if rating >= 4 else self.disliked


@dataclass(frozen=True)
class SimulatedUsers:
    train: list[Interaction]
    truth: dict[str, dict[str, float]]  # user -> item -> later rating
    user_ids: list[str]
    weights: np.ndarray  # choice probability of each user, by activity

    @staticmethod
    def split(interactions: Sequence[Interaction], holdout_fraction: float = 0.2) -> SimulatedUsers:
        by_user: dict[str, list[Interaction]] = defaultdict(list)
        for interaction in interactions:
            by_user[interaction.user_id].append(interaction)
        train: list[Interaction] = []
        truth: dict[str, dict[str, float]] = {}
        for user, rows in by_user.items():
            rows.sort(key=lambda row: row.time)
            cut = len(rows) - max(1, int(len(rows) * holdout_fraction)) if len(rows) >= 2 else len(rows)
            train.extend(rows[:cut])
            truth[user] = {row.item_id: row.value for row in rows[cut:]}
        user_ids = sorted(by_user)
        activity = np.array([len(by_user[u]) for u in user_ids], dtype=np.float64)
        return SimulatedUsers(train, truth, user_ids, activity / activity.sum())

    def pick(self, rng: np.random.Generator) -> str:
        return self.user_ids[int(rng.choice(len(self.user_ids), p=self.weights))]


def clicks(
    model: ClickModel, truth: dict[str, float], items: Sequence[str], uniforms: np.ndarray, noise: np.ndarray
) -> list[bool]:
    """Which items of the list are clicked, from per-position uniforms and noise factors."""
    return [
        bool(uniforms[rank] < model.examination(rank + 1) * model.interest(truth.get(item)) * noise[rank])
        for rank, item in enumerate(items)
    ]
