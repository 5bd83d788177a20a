"""Item vectors from the encoder, kept in memory by catalogue position and stored in SQL so
that a restart does not re-embed: rows are keyed by encoder model and item, and reused
only while the item's text is unchanged."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt
from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from services.scoring.core.data import ScoringData
from services.scoring.core.tables import item_vectors

Vectors = npt.NDArray[np.float32]
EMBED_BATCH = 256
# Texts per EmbedTexts request are bounded by bytes too: gRPC refuses messages over 4 MiB.
EMBED_BATCH_BYTES = 1024 * 1024


class TextEncoder(Protocol):
    """What scoring needs from EmbeddingService (the gRPC adapter implements it)."""

    def model_name(self) -> str: ...

    def embed(self, texts: list[str]) -> Vectors: ...

    def encode_user(
        self, texts: list[str], values: list[float], times: list[float], mode: str, half_life: float
    ) -> Vectors: ...


def text_sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


class VectorStore:
    """item_vectors rows in a SQLite file or PostgreSQL (migrated: services.scoring.core.tables)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._insert = postgresql.insert if engine.dialect.name == "postgresql" else sqlite.insert

    def load(self, model: str, item_ids: Sequence[str]) -> dict[str, tuple[str, Vectors]]:
        """item_id -> (text hash, vector) of the stored rows of this model."""
        wanted = set(item_ids)
        query = select(item_vectors.c.item_id, item_vectors.c.text_sha, item_vectors.c.vector).where(
            item_vectors.c.model == model
        )
        with self.engine.connect() as connection:
            return {
                item_id: (sha, np.frombuffer(blob, dtype=np.float32))
                for item_id, sha, blob in connection.execute(query)
                if item_id in wanted
            }

    def save(self, model: str, rows: list[tuple[str, str, Vectors]]) -> None:
        if not rows:
            return
        values = [
            {
                "model": model,
                "item_id": item_id,
                "text_sha": sha,
                "dimension": len(v),
                "vector": v.astype(np.float32).tobytes(),
            }
            for item_id, sha, v in rows
        ]
        statement = self._insert(item_vectors)
        statement = statement.on_conflict_do_update(
            index_elements=["model", "item_id"],
            set_={
                "text_sha": statement.excluded.text_sha,
                "dimension": statement.excluded.dimension,
                "vector": statement.excluded.vector,
            },
        )
        with self.engine.begin() as connection:
            connection.execute(statement, values)


class ItemVectors:
    """The catalogue's vectors by position; ``ensure`` fills in what is missing."""

    def __init__(self, data: ScoringData, encoder: TextEncoder, store: VectorStore) -> None:
        self.data = data
        self.encoder = encoder
        self.store = store
        self._vectors: dict[str, tuple[str, Vectors]] = {}  # item_id -> (text hash, vector)
        self._lock = threading.Lock()

    def ensure(self) -> int:
        """Vectors for every item whose text has none yet: from the store, else from the
        encoder (in batches). Returns how many texts were embedded now."""
        with self._lock:
            items = list(self.data.items)
            missing = [i for i in items if self._vectors.get(i.item_id, ("", None))[0] != text_sha(i.text)]
            if not missing:
                return 0
            model = self.encoder.model_name()
            stored = self.store.load(model, [i.item_id for i in missing])
            to_embed = []
            for item in missing:
                sha = text_sha(item.text)
                if item.item_id in stored and stored[item.item_id][0] == sha:
                    self._vectors[item.item_id] = stored[item.item_id]
                else:
                    to_embed.append((item.item_id, sha, item.text))
            for batch in _batches(to_embed):
                vectors = self.encoder.embed([text for _, _, text in batch])
                rows = [(item_id, sha, vector) for (item_id, sha, _), vector in zip(batch, vectors, strict=True)]
                self.store.save(model, rows)
                for item_id, sha, vector in rows:
                    self._vectors[item_id] = (sha, vector)
            return len(to_embed)

    def model_name(self) -> str:
        """The encoder EmbeddingService serves (two_tower fine-tunes the same one)."""
        return self.encoder.model_name()

    def texts(self, n_items: int) -> list[str]:
        """The first ``n_items`` items' texts in catalogue order."""
        by_id = {item.item_id: item.text for item in self.data.items}
        return [by_id[item_id] for item_id in self.data.item_ids(range(n_items))]

    def matrix(self, n_items: int) -> Vectors:
        """(n_items, dimension) in catalogue order; call ``ensure`` first."""
        self.ensure()
        item_ids = self.data.item_ids(range(n_items))
        return np.stack([self._vectors[item_id][1] for item_id in item_ids]).astype(np.float32)


def _batches(to_embed: list[tuple[str, str, str]]) -> Iterator[list[tuple[str, str, str]]]:
    """(item id, text sha, text) in requests of at most EMBED_BATCH texts and EMBED_BATCH_BYTES."""
    batch: list[tuple[str, str, str]] = []
    size = 0
    for entry in to_embed:
        length = len(entry[2].encode("utf-8"))
        if batch and (len(batch) == EMBED_BATCH or size + length > EMBED_BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(entry)
        size += length
    if batch:
        yield batch
