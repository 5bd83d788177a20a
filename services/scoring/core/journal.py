"""Items and interactions that arrived by RPC, kept in SQL so that a restart keeps them and
replicas sharing one database see each other's.

The dataset files are the seed and are read again at every start; what came later
(UpsertItems, AddInteractions, clicks forwarded by PolicyService) is written here before the
call is acknowledged. Rows reach the in-memory data only through ``catch_up``, which applies
every row this replica has not applied yet, in id order: at start-up (the whole journal),
right after this replica writes (so its own writes count at once), and every few seconds
(the other replicas' writes).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine, Row, Table, func, insert, select

from rectune.domain.errors import RectuneError
from rectune.domain.events import Interaction, Item
from services.scoring.core.data import ScoringData
from services.scoring.core.tables import journal_interactions, journal_items

log = structlog.get_logger(__name__)

# On PostgreSQL ids come from a sequence in the order transactions start, not commit: a lower
# id can become visible after a higher one. A missing id is waited for this long, then taken
# for a rolled-back transaction's and skipped.
GAP_SECONDS = 30.0


@dataclass
class _Cursor:
    """The rows of one journal table this replica has applied: every id up to ``settled``,
    and those in ``applied`` above it."""

    settled: int = 0
    applied: set[int] = field(default_factory=set)
    missing_since: dict[int, float] = field(default_factory=dict)

    def settle(self, now: float) -> None:
        """Move ``settled`` up over applied ids and over gaps older than GAP_SECONDS."""
        highest = max(self.applied, default=self.settled)
        while self.settled < highest:
            following = self.settled + 1
            if following in self.applied:
                self.applied.discard(following)
            elif now - self.missing_since.setdefault(following, now) >= GAP_SECONDS:
                log.warning("journal_gap_skipped", id=following)
            else:
                return
            self.missing_since.pop(following, None)
            self.settled = following


class DataJournal:
    """The journal tables in a SQLite file or PostgreSQL (migrated: services.scoring.core.tables)."""

    def __init__(self, engine: Engine, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self._clock = clock
        self._items = _Cursor()
        self._interactions = _Cursor()
        self._lock = threading.Lock()  # one catch-up at a time: a row is applied once

    def record_items(self, items: Sequence[Item]) -> None:
        rows = [
            {"item_id": item.item_id, "text": item.text, "attributes": json.dumps(item.attributes, sort_keys=True)}
            for item in items
        ]
        with self.engine.begin() as connection:
            connection.execute(insert(journal_items), rows)

    def record_interactions(self, interactions: Sequence[Interaction]) -> None:
        rows = [{"user_id": i.user_id, "item_id": i.item_id, "value": i.value, "time": i.time} for i in interactions]
        with self.engine.begin() as connection:
            connection.execute(insert(journal_interactions), rows)

    def earliest_interaction_time(self) -> float | None:
        """When the journaled (live) interactions begin; None while there are none."""
        with self.engine.connect() as connection:
            value = connection.execute(select(func.min(journal_interactions.c.time))).scalar()
        return None if value is None else float(value)

    def catch_up(self, data: ScoringData) -> tuple[int, int]:
        """Apply the rows not applied yet; returns how many items and interactions that was."""
        with self._lock:
            # Interactions are read before items: an interaction is written after its item,
            # so every item a visible interaction names is visible to the second read.
            interaction_rows = self._unapplied(journal_interactions, self._interactions)
            item_rows = self._unapplied(journal_items, self._items)
            if item_rows:
                data.upsert_items([Item(row.item_id, row.text, json.loads(row.attributes)) for row in item_rows])
            self._apply_interactions(data, interaction_rows)
            now = self._clock()
            for cursor, rows in ((self._items, item_rows), (self._interactions, interaction_rows)):
                cursor.applied.update(row.id for row in rows)
                cursor.settle(now)
        return len(item_rows), len(interaction_rows)

    def _unapplied(self, table: Table, cursor: _Cursor) -> list[Row[Any]]:
        with self.engine.connect() as connection:
            rows = connection.execute(select(table).where(table.c.id > cursor.settled).order_by(table.c.id))
            return [row for row in rows if row.id not in cursor.applied]

    @staticmethod
    def _apply_interactions(data: ScoringData, rows: Sequence[Row[Any]]) -> None:
        interactions = [Interaction(row.user_id, row.item_id, row.value, row.time) for row in rows]
        if not interactions:
            return
        try:
            data.add_interactions(interactions)
        except RectuneError:
            # Checked before they were journaled, so this should not happen; one bad row must
            # not keep every later row out, so the rest go in one by one and the bad are logged.
            for interaction in interactions:
                try:
                    data.add_interactions([interaction])
                except RectuneError as exc:
                    log.error("journal_row_refused", interaction=interaction, error=exc.message)
