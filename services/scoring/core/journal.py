"""Items and interactions that arrived by RPC, kept in SQL so that a restart keeps them.

The dataset files are the seed and are read again at every start; what came later
(UpsertItems, AddInteractions, clicks forwarded by PolicyService) is written here before the
call is acknowledged, and replayed on top of the seed at start-up, in arrival order.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from sqlalchemy import Engine, insert, select

from services.scoring.core.data import Interaction, Item, ScoringData
from services.scoring.core.tables import journal_interactions, journal_items


class DataJournal:
    """The journal tables in a SQLite file or PostgreSQL (migrated: services.scoring.core.tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

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

    def replay(self, data: ScoringData) -> tuple[int, int]:
        """Apply the journal to ``data`` (items first: interactions may name them); returns the
        numbers of items and interactions replayed."""
        with self.engine.connect() as connection:
            items = [
                Item(row.item_id, row.text, json.loads(row.attributes))
                for row in connection.execute(select(journal_items).order_by(journal_items.c.id))
            ]
            interactions = [
                Interaction(row.user_id, row.item_id, row.value, row.time)
                for row in connection.execute(select(journal_interactions).order_by(journal_interactions.c.id))
            ]
        if items:
            data.upsert_items(items)
        if interactions:
            data.add_interactions(interactions)
        return len(items), len(interactions)
