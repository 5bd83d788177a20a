"""A bounded LRU cache of text -> vector, keyed by model and text, bounded in bytes."""

from __future__ import annotations

import sys
import threading
from collections import OrderedDict

from services.embedding.core.encoder import Vectors

Key = tuple[str, str]  # (model name, text)


def entry_bytes(key: Key, vector: Vectors) -> int:
    """What one entry costs: the vector's buffer plus the text (an estimate of the key)."""
    return int(vector.nbytes) + sys.getsizeof(key[1]) + sys.getsizeof(key[0])


class VectorCache:
    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.hits = 0
        self.misses = 0
        self._entries: OrderedDict[Key, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> Vectors | None:
        with self._lock:
            vector = self._entries.get(key)
            if vector is None:
                self.misses += 1
                return None
            self._entries.move_to_end(key)
            self.hits += 1
            return vector

    def put(self, key: Key, vector: Vectors) -> None:
        size = entry_bytes(key, vector)
        if size > self.max_bytes:
            return  # would evict everything and still not fit
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self.bytes -= entry_bytes(key, previous)
            self._entries[key] = vector
            self.bytes += size
            while self.bytes > self.max_bytes:
                old_key, old_vector = self._entries.popitem(last=False)
                self.bytes -= entry_bytes(old_key, old_vector)
