"""The catalogue and the interactions, and the immutable training snapshots taken from them.

Interactions only grow (from dataset loaders and live feedback). A ``TrainingData``
snapshot freezes them into index arrays and a user x item matrix for fitting; live
scoring reads the current per-user history, so new interactions count at once where a
strategy uses history at ranking time.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import scipy.sparse as sp

from rectune.domain.data import DataShape
from rectune.domain.errors import NotFound, quoted
from rectune.domain.events import Interaction, Item, check_interaction, edge_rules


@dataclass(frozen=True)
class History:
    """One user's interactions as item indices, newest last."""

    items: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    times: npt.NDArray[np.float64]

    @staticmethod
    def empty() -> History:
        return History(np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.float64))


@dataclass(frozen=True)
class TrainingData:
    """A frozen view for fitting: users and items by index, and a CSR user x item matrix."""

    item_ids: tuple[str, ...]
    user_ids: tuple[str, ...]
    users: npt.NDArray[np.int64]
    items: npt.NDArray[np.int64]
    values: npt.NDArray[np.float64]
    times: npt.NDArray[np.float64]

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    def user_item_matrix(self) -> sp.csr_matrix:
        """Interaction strengths; repeated (user, item) pairs add up."""
        matrix = sp.csr_matrix(
            (self.values.astype(np.float32), (self.users, self.items)), shape=(self.n_users, self.n_items)
        )
        matrix.sum_duplicates()
        return matrix

    def subset(self, keep: npt.NDArray[np.bool_]) -> TrainingData:
        return TrainingData(
            self.item_ids, self.user_ids, self.users[keep], self.items[keep], self.values[keep], self.times[keep]
        )

    def histories(self) -> list[History]:
        """Every user's history, ordered by time."""
        order = np.lexsort((self.times, self.users))
        users, items, values, times = self.users[order], self.items[order], self.values[order], self.times[order]
        bounds = np.searchsorted(users, np.arange(self.n_users + 1))
        return [History(items[a:b], values[a:b], times[a:b]) for a, b in itertools.pairwise(bounds)]


class ScoringData:
    """Thread-safe, append-only store of items and interactions, with a version number."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.items: list[Item] = []
        self.item_index: dict[str, int] = {}
        self.user_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self._users: list[int] = []
        self._items: list[int] = []
        self._values: list[float] = []
        self._times: list[float] = []
        self._by_user: dict[int, list[int]] = {}
        self.version = 0

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return len(self._users)

    def shape(self) -> DataShape:
        with self._lock:
            return DataShape.of([len(rows) for rows in self._by_user.values()], len(self.items))

    def item_ids(self, positions: Sequence[int]) -> list[str]:
        with self._lock:
            return [self.items[position].item_id for position in positions]

    def upsert_items(self, items: Sequence[Item]) -> None:
        with self._lock:
            for item in items:
                index = self.item_index.get(item.item_id)
                if index is None:
                    self.item_index[item.item_id] = len(self.items)
                    self.items.append(item)
                else:
                    self.items[index] = item
            self.version += 1

    def item_position(self, item_id: str, where: str) -> int:
        index = self.item_index.get(item_id)
        if index is None:
            raise NotFound(where, f"no item {quoted(item_id)} in the catalogue")
        return index

    def check_interactions(
        self, interactions: Sequence[Interaction], field_name: str = "interactions", user_required: bool = True
    ) -> None:
        """All or nothing: every interaction is checked before any is added, by the shared rules
        (ids, a finite value, a time between 1970 and a few minutes from now) and against the
        catalogue."""
        rules = edge_rules()
        for index, interaction in enumerate(interactions):
            where = f"{field_name}[{index}]"
            check_interaction(where, interaction, rules, user_required)
            self.item_position(interaction.item_id, f"{where}.item_id")

    def add_interactions(self, interactions: Sequence[Interaction]) -> int:
        with self._lock:
            self.check_interactions(interactions)
            for interaction in interactions:
                user = self.user_index.get(interaction.user_id)
                if user is None:
                    user = self.user_index[interaction.user_id] = len(self.user_ids)
                    self.user_ids.append(interaction.user_id)
                self._by_user.setdefault(user, []).append(len(self._users))
                self._users.append(user)
                self._items.append(self.item_index[interaction.item_id])
                self._values.append(interaction.value)
                self._times.append(interaction.time)
            self.version += 1
            return len(interactions)

    def interactions_since(self, start: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
        """Item positions and times of the interactions added after the first ``start``, and
        the count to pass next time (interactions are only ever appended)."""
        with self._lock:
            end = len(self._items)
            items = np.array(self._items[start:end], dtype=np.int64)
            times = np.array(self._times[start:end], dtype=np.float64)
        return items, times, end

    def snapshot(self) -> TrainingData:
        with self._lock:
            return TrainingData(
                item_ids=tuple(item.item_id for item in self.items),
                user_ids=tuple(self.user_ids),
                users=np.array(self._users, dtype=np.int64),
                items=np.array(self._items, dtype=np.int64),
                values=np.array(self._values, dtype=np.float64),
                times=np.array(self._times, dtype=np.float64),
            )

    def history(self, user_id: str) -> History:
        """The user's current history, by time (empty for an unknown user)."""
        with self._lock:
            user = self.user_index.get(user_id)
            rows = self._by_user.get(user, []) if user is not None else []
            items = np.array([self._items[r] for r in rows], dtype=np.int64)
            values = np.array([self._values[r] for r in rows], dtype=np.float64)
            times = np.array([self._times[r] for r in rows], dtype=np.float64)
        order = np.argsort(times, kind="stable")
        return History(items[order], values[order], times[order])


def shifted_to_end_at(interactions: Sequence[Interaction], end: float) -> tuple[list[Interaction], float]:
    """The interactions moved forward in time so that the newest is at ``end``, and by how
    many seconds. A dataset recorded long ago (MovieLens ends in 1998) is history up to the
    moment live data begins: unshifted, one click today would outweigh decades of decayed
    interactions in every recency-weighted strategy. Never moved backwards."""
    if not interactions:
        return [], 0.0
    offset = max(0.0, end - max(i.time for i in interactions))
    if offset == 0.0:
        return list(interactions), 0.0
    return [Interaction(i.user_id, i.item_id, i.value, i.time + offset) for i in interactions], offset
