"""The catalogue and the interactions, and the immutable training snapshots taken from them.

Interactions only grow (from dataset loaders and live feedback). A ``TrainingData``
snapshot freezes them into index arrays and a user x item matrix for fitting; live
scoring reads the current per-user history, so new interactions count at once where a
strategy uses history at ranking time.
"""

from __future__ import annotations

import itertools
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

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


class Column:
    """An append-only numpy column that doubles its buffer when full: 4 or 8 bytes a row
    instead of a Python object per row, and a snapshot is a copy of a slice."""

    __slots__ = ("_buffer", "size")  # one per user too: no per-instance dict

    def __init__(self, dtype: type[np.generic], capacity: int = 1024) -> None:
        self._buffer = np.zeros(capacity, dtype=dtype)
        self.size = 0

    def extend(self, values: Sequence[float] | Sequence[int]) -> None:
        needed = self._reserve(len(values))
        self._buffer[self.size : needed] = values
        self.size = needed

    def append(self, value: float) -> None:
        self.size = self._reserve(1)  # first: it may replace the buffer
        self._buffer[self.size - 1] = value

    def _reserve(self, count: int) -> int:
        """Room for ``count`` more rows (the buffer at least doubles); the size they make."""
        needed = self.size + count
        if needed > len(self._buffer):
            grown = np.zeros(max(needed, 2 * len(self._buffer)), dtype=self._buffer.dtype)
            grown[: self.size] = self._buffer[: self.size]
            self._buffer = grown
        return needed

    def view(self, start: int = 0, stop: int | None = None) -> npt.NDArray[Any]:
        """Rows start..stop as a view: valid until the next append grows the buffer, so
        callers copy (or use it) under the store's lock."""
        return self._buffer[start : self.size if stop is None else stop]

    @property
    def nbytes(self) -> int:
        return int(self._buffer.nbytes)


# What a user's row column costs besides its rows: the Column and its ndarray objects.
ROW_COLUMN_OVERHEAD = 160  # 48 (the Column, with slots) + 112 (the ndarray header)
LONG_HISTORY_ROWS = 10_000  # a history this long is kept once gathered (24 bytes a row)
LONG_HISTORY_ROWS_KEPT = 4_000_000  # rows of all kept histories together: 96 MB at most


class ScoringData:
    """Thread-safe, append-only store of items and interactions, with a version number.
    Interactions are kept in numpy columns (user row and item position as int32, value and
    time as float64: 24 bytes) and, per user, a numpy column of their row numbers (4 bytes a
    row): about 28 bytes an interaction plus the columns' growth room (bench/scale.py
    measures it), and no Python object per row."""

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self.items: list[Item] = []
        self.item_index: dict[str, int] = {}
        self.user_index: dict[str, int] = {}
        self.user_ids: list[str] = []
        self._users = Column(np.int32)
        self._items = Column(np.int32)
        self._values = Column(np.float64)
        self._times = Column(np.float64)
        self._rows_of_user: list[Column] = []  # by user row: that user's interaction rows
        # The histories of the heaviest users asked for lately, until they change: gathering
        # 10^5 rows from the columns costs milliseconds, on every one of their many requests.
        self._long_histories: OrderedDict[int, History] = OrderedDict()
        self._long_history_rows = 0
        self.version = 0

    @property
    def n_items(self) -> int:
        return len(self.items)

    @property
    def n_interactions(self) -> int:
        return self._users.size

    def interaction_bytes(self) -> int:
        """Memory held by the interactions (columns, and the per-user row columns with their
        objects' overhead)."""
        with self._lock:
            columns = self._users.nbytes + self._items.nbytes + self._values.nbytes + self._times.nbytes
            rows = sum(rows.nbytes + ROW_COLUMN_OVERHEAD for rows in self._rows_of_user)
        return columns + rows

    def shape(self) -> DataShape:
        with self._lock:
            return DataShape.of([rows.size for rows in self._rows_of_user], len(self.items))

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
            users = []
            first_row = self._users.size
            for offset, interaction in enumerate(interactions):
                user = self.user_index.get(interaction.user_id)
                if user is None:
                    user = self.user_index[interaction.user_id] = len(self.user_ids)
                    self.user_ids.append(interaction.user_id)
                    self._rows_of_user.append(Column(np.int32, capacity=4))
                self._rows_of_user[user].append(first_row + offset)
                users.append(user)
            positions = [self.item_index[i.item_id] for i in interactions]
            self._users.extend(users)
            self._items.extend(positions)
            self._values.extend([i.value for i in interactions])
            self._times.extend([i.time for i in interactions])
            self._extend_long_histories(users, positions, interactions)
            self.version += 1
            return len(interactions)

    def _extend_long_histories(
        self, users: list[int], positions: list[int], interactions: Sequence[Interaction]
    ) -> None:
        """Kept histories take their users' new interactions (a copy of 10^5 rows costs far
        less than gathering them again from the columns)."""
        added: dict[int, list[int]] = {}
        for offset, user in enumerate(users):
            if user in self._long_histories:
                added.setdefault(user, []).append(offset)
        for user, offsets in added.items():
            kept = self._long_histories.pop(user)
            self._long_history_rows -= len(kept.items)
            self._keep_history(
                user,
                by_time(
                    np.concatenate([kept.items, np.array([positions[o] for o in offsets], dtype=np.int64)]),
                    np.concatenate([kept.values, np.array([interactions[o].value for o in offsets], dtype=np.float64)]),
                    np.concatenate([kept.times, np.array([interactions[o].time for o in offsets], dtype=np.float64)]),
                ),
            )

    def interactions_since(self, start: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64], int]:
        """Item positions and times of the interactions added after the first ``start``, and
        the count to pass next time (interactions are only ever appended)."""
        with self._lock:
            end = self._items.size
            items = self._items.view(start, end).astype(np.int64)
            times = self._times.view(start, end).copy()
        return items, times, end

    def snapshot(self) -> TrainingData:
        with self._lock:
            return TrainingData(
                item_ids=tuple(item.item_id for item in self.items),
                user_ids=tuple(self.user_ids),
                users=self._users.view().astype(np.int64),
                items=self._items.view().astype(np.int64),
                values=self._values.view().copy(),
                times=self._times.view().copy(),
            )

    def history(self, user_id: str) -> History:
        """The user's current history, by time (empty for an unknown user). Its arrays are
        read-only: a long one is kept for the next request."""
        with self._lock:
            user = self.user_index.get(user_id)
            if user is None:
                return History.empty()
            kept = self._long_histories.get(user)
            if kept is not None:
                self._long_histories.move_to_end(user)
                return kept
            rows = self._rows_of_user[user].view()
            items = self._items.view()[rows].astype(np.int64)
            values = self._values.view()[rows]
            times = self._times.view()[rows]
            history = by_time(items, values, times)
            if LONG_HISTORY_ROWS <= len(rows) <= LONG_HISTORY_ROWS_KEPT:
                self._keep_history(user, history)
        return history

    def _keep_history(self, user: int, history: History) -> None:
        """Keep it, the least recently asked for going first past LONG_HISTORY_ROWS_KEPT rows."""
        self._long_histories[user] = history
        self._long_history_rows += len(history.items)
        while self._long_history_rows > LONG_HISTORY_ROWS_KEPT:
            _, dropped = self._long_histories.popitem(last=False)
            self._long_history_rows -= len(dropped.items)


def by_time(items: npt.NDArray[np.int64], values: npt.NDArray[np.float64], times: npt.NDArray[np.float64]) -> History:
    """A read-only History ordered by time (rows are nearly always appended in time order:
    then nothing is sorted)."""
    if not np.all(times[1:] >= times[:-1]):
        order = np.argsort(times, kind="stable")
        items, values, times = items[order], values[order], times[order]
    for column in (items, values, times):
        column.flags.writeable = False
    return History(items, values, times)


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
