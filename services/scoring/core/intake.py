"""Items and interactions from RPCs: checked, journaled (so that restarts and other replicas
see them), applied to the in-memory data, and items' texts embedded."""

from __future__ import annotations

from collections.abc import Sequence

from rectune.domain.errors import InvalidArgument, NotFound, Unavailable
from rectune.domain.events import Interaction, Item, check_item
from services.scoring.core.data import ScoringData
from services.scoring.core.journal import DataJournal
from services.scoring.core.vectors import ItemVectors


class DataIntake:
    def __init__(self, data: ScoringData, journal: DataJournal | None, vectors: ItemVectors | None) -> None:
        self.data = data
        self.journal = journal  # None: what RPCs add lives in memory only
        self.vectors = vectors  # None: no EmbeddingService

    def upsert_items(self, items: Sequence[Item], embed: bool = True) -> int:
        """Store items, then embed texts that have no vector yet; returns how many were embedded.

        Stored items stay stored when EmbeddingService is down: the call then answers
        UNAVAILABLE and the vectors are made at the next upsert or content fit."""
        if not items:
            raise InvalidArgument("items", "must not be empty")
        for index, item in enumerate(items):
            check_item(f"items[{index}]", item)
        if self.journal is None:
            self.data.upsert_items(items)
        else:  # written first, then applied like every journal row (see DataJournal)
            self.journal.record_items(items)
            self.journal.catch_up(self.data)
        if not embed or self.vectors is None:
            return 0
        try:
            return self.vectors.ensure()
        except Unavailable as exc:
            raise Unavailable(f"items: {len(items)} stored; their vectors are pending ({exc.message})") from None

    def add_interactions(self, interactions: Sequence[Interaction]) -> int:
        if not interactions:
            raise InvalidArgument("interactions", "must not be empty")
        try:
            self.data.check_interactions(interactions)  # refused ones are not journaled either
        except NotFound:
            if self.journal is None:
                raise
            self.journal.catch_up(self.data)  # another replica may have added the item just now
            self.data.check_interactions(interactions)
        if self.journal is None:
            return self.data.add_interactions(interactions)
        self.journal.record_interactions(interactions)
        self.journal.catch_up(self.data)
        return len(interactions)
