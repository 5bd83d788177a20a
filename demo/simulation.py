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


@dataclass(frozen=True)
class Release:
    """What happens in the moving world before one request: items released (first seen in
    the data since the last request) and the users' own interactions since then."""

    items: list[str]
    interactions: list[Interaction]
    asker: Interaction  # the next real interaction: its user asks now, and it happens after the request

    @property
    def user_id(self) -> str:
        return self.asker.user_id


@dataclass(frozen=True)
class MovingWorld:
    """A world where the catalogue and the users move (issue #18's scenario).

    The interactions, by time, are cut at ``start_share``: before the cut is what the service
    knows at start (items first seen before it make the catalogue); after it, the timeline
    unfolds over the run: items are released in the order the data first saw them, users'
    real interactions arrive as they happened, and each request comes from the user of the
    next real interaction, interested in what that user rated later (``interest``). A model
    frozen at the start cannot know the newest items."""

    initial: list[Interaction]
    initial_items: set[str]
    timeline: list[Interaction]  # after the cut, by time
    first_seen: dict[str, float]  # item -> time of its first interaction
    by_user: dict[str, list[Interaction]]  # every interaction, by time
    texts: dict[str, str]  # item -> its text, for releasing it

    @staticmethod
    def of(interactions: Sequence[Interaction], texts: dict[str, str], start_share: float = 0.5) -> MovingWorld:
        ordered = sorted(interactions, key=lambda row: (row.time, row.user_id, row.item_id))
        cut = int(len(ordered) * start_share)
        first_seen: dict[str, float] = {}
        by_user: dict[str, list[Interaction]] = defaultdict(list)
        for row in ordered:
            first_seen.setdefault(row.item_id, row.time)
            by_user[row.user_id].append(row)
        initial = ordered[:cut]
        initial_items = {row.item_id for row in initial}
        return MovingWorld(initial, initial_items, ordered[cut:], first_seen, dict(by_user), texts)

    def releases(self, requests: int) -> list[Release]:
        """The timeline cut into ``requests`` steps, each ending at the request's user."""
        released = set(self.initial_items)
        steps = []
        per_step = len(self.timeline) / requests
        start = 0
        for step in range(requests):
            end = min(len(self.timeline), max(start + 1, round((step + 1) * per_step)))
            chunk = self.timeline[start:end]
            new_items = []
            for row in chunk:
                if row.item_id not in released:
                    released.add(row.item_id)
                    new_items.append(row.item_id)
            steps.append(Release(new_items, chunk[:-1], chunk[-1]))
            start = end
        return steps

    def interest(self, user_id: str, after: float) -> dict[str, float]:
        """The user's later ratings: what they would like to be shown now."""
        return {row.item_id: row.value for row in self.by_user.get(user_id, []) if row.time >= after}
