"""EmbeddingService behaviour: validation, cache, micro-batching, user encoding. No protobuf."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass

import numpy as np

from rectune.domain.errors import InvalidArgument, Unavailable
from services.embedding.core.batching import MicroBatcher
from services.embedding.core.cache import VectorCache
from services.embedding.core.encoder import Encoder, Vectors
from services.embedding.core.users import (
    HISTORY_SEPARATOR,
    HistoryEntry,
    UserEncodingMode,
    check_history,
    entries_within_budget,
    history_weights,
    most_recent_first,
    weighted_mean,
)


@dataclass(frozen=True)
class EmbeddingLimits:
    max_texts_per_request: int = 1024
    max_text_bytes: int = 16384
    # Texts x bytes: each limit alone allows 16 MiB in one request, which the work and the
    # copies of a request should not grow to (gRPC's default message is 4 MiB).
    max_request_bytes: int = 4 * 1024 * 1024
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_queue_texts: int = 4096
    cache_bytes: int = 64 * 1024 * 1024
    # Chunks of one EmbedBulk stream encoded ahead of the one being sent.
    bulk_window: int = 4


@dataclass(frozen=True)
class ModelInfo:
    model_name: str
    dimension: int
    device: str
    dtype: str
    max_length: int
    limits: EmbeddingLimits


@dataclass(frozen=True)
class UserVector:
    vector: Vectors
    mode: UserEncodingMode
    entries_used: int


def decode_texts(raw_texts: Sequence[bytes], limits: EmbeddingLimits, field: str = "texts") -> list[str]:
    """Check a request's texts and decode them; errors name the index and the rule."""
    if not raw_texts:
        raise InvalidArgument(field, "must not be empty")
    if len(raw_texts) > limits.max_texts_per_request:
        raise InvalidArgument(field, f"at most {limits.max_texts_per_request} texts per request, got {len(raw_texts)}")
    total = sum(len(raw) for raw in raw_texts)
    if total > limits.max_request_bytes:
        raise InvalidArgument(
            field,
            f"at most {limits.max_request_bytes:,} bytes of text in all per request (max_request_bytes), got {total:,}",
        )
    texts = []
    for index, raw in enumerate(raw_texts):
        if len(raw) > limits.max_text_bytes:
            raise InvalidArgument(f"{field}[{index}]", f"at most {limits.max_text_bytes} bytes, got {len(raw)}")
        try:
            texts.append(raw.decode("utf-8"))
        except UnicodeDecodeError as exc:
            raise InvalidArgument(f"{field}[{index}]", f"is not valid UTF-8 (byte {exc.start})") from None
    return texts


@dataclass(frozen=True)
class QueueState:
    queued_texts: int
    max_queue_texts: int
    batch_sizes: dict[int, int]  # texts in a forward batch -> batches of that size


class EmbeddingCore:
    """Everything the servicer calls. Answers UNAVAILABLE until the encoder is attached."""

    def __init__(self, limits: EmbeddingLimits) -> None:
        self.limits = limits
        self.cache = VectorCache(limits.cache_bytes)
        self._encoder: Encoder | None = None
        self._batcher: MicroBatcher | None = None
        self._closed = False
        self._lock = threading.Lock()

    def attach(self, encoder: Encoder) -> bool:
        """Start serving with a loaded encoder; False when the service closed meanwhile."""
        batcher = MicroBatcher(
            lambda texts: encoder.encode(texts, forward_batch=self.limits.max_batch),
            max_batch=self.limits.max_batch,
            max_wait_seconds=self.limits.max_wait_ms / 1000.0,
            max_queue_texts=self.limits.max_queue_texts,
        )
        with self._lock:
            if self._closed:
                batcher.close()
                return False
            self._encoder, self._batcher = encoder, batcher
            return True

    def close(self) -> None:
        with self._lock:
            self._closed = True
            batcher = self._batcher
        if batcher is not None:
            batcher.close()

    def queue_state(self) -> QueueState:
        """The batcher's queue and its batch sizes so far (all zero before the model is loaded)."""
        batcher = self._batcher
        if batcher is None:
            return QueueState(0, self.limits.max_queue_texts, {})
        return QueueState(batcher.queued_texts, batcher.max_queue_texts, batcher.batch_size_counts())

    def _ready(self) -> tuple[Encoder, MicroBatcher]:
        encoder, batcher = self._encoder, self._batcher
        if encoder is None or batcher is None:
            raise Unavailable("model: not loaded yet (health answers NOT_SERVING until it is)")
        return encoder, batcher

    def model_info(self) -> ModelInfo:
        encoder, _ = self._ready()
        return ModelInfo(
            encoder.model_name,
            encoder.dimension,
            str(encoder.device),
            encoder.dtype_name,
            encoder.max_length,
            self.limits,
        )

    def submit(self, texts: list[str]) -> Future[Vectors]:
        """Vectors for texts: cached ones at once, the rest through the micro-batcher."""
        encoder, batcher = self._ready()
        vectors = np.empty((len(texts), encoder.dimension), dtype=np.float32)
        missing: dict[str, list[int]] = {}
        for index, text in enumerate(texts):
            cached = self.cache.get((encoder.model_name, text))
            if cached is None:
                missing.setdefault(text, []).append(index)
            else:
                vectors[index] = cached
        result: Future[Vectors] = Future()
        if not missing:
            result.set_result(vectors)
            return result
        unique = list(missing)
        pending = batcher.submit(unique)

        def fill(done: Future[Vectors]) -> None:
            if (error := done.exception()) is not None:
                result.set_exception(error)
                return
            for text, vector in zip(unique, done.result(), strict=True):
                self.cache.put((encoder.model_name, text), vector)
                vectors[missing[text]] = vector
            result.set_result(vectors)

        pending.add_done_callback(fill)
        return result

    def embed(self, raw_texts: Sequence[bytes]) -> Vectors:
        return self.submit(decode_texts(raw_texts, self.limits)).result()

    def embed_stream(self, chunks: Iterable[tuple[int, Sequence[bytes]]]) -> Iterator[tuple[int, Vectors]]:
        """Ordered results of a stream of chunks, at most ``bulk_window`` chunks in flight.

        The next chunk is read from the client only when the window has room, so a fast
        client is held back by gRPC flow control instead of being buffered here.
        """
        in_flight: deque[tuple[int, Future[Vectors]]] = deque()
        for position, (sequence, raw_texts) in enumerate(chunks):
            texts = decode_texts(raw_texts, self.limits, field=f"requests[{position}].texts")
            in_flight.append((sequence, self.submit(texts)))
            if len(in_flight) >= self.limits.bulk_window:
                done_sequence, future = in_flight.popleft()
                yield done_sequence, future.result()
        while in_flight:
            done_sequence, future = in_flight.popleft()
            yield done_sequence, future.result()

    def encode_user(
        self,
        history: Sequence[HistoryEntry],
        mode: UserEncodingMode,
        half_life_seconds: float,
        as_of: float | None,
    ) -> UserVector:
        check_history(history, half_life_seconds, self.limits.max_texts_per_request, as_of)
        for index, entry in enumerate(history):
            if len(entry.text.encode("utf-8")) > self.limits.max_text_bytes:
                raise InvalidArgument(f"history[{index}].text", f"at most {self.limits.max_text_bytes} bytes")
        if mode is UserEncodingMode.HISTORY_TEXT:
            return self._encode_history_text(history)
        vectors = self.submit([entry.text for entry in history]).result()
        weights = history_weights(history, half_life_seconds, as_of)
        return UserVector(weighted_mean(vectors, weights), mode, len(history))

    def _encode_history_text(self, history: Sequence[HistoryEntry]) -> UserVector:
        encoder, _ = self._ready()
        ordered = most_recent_first(history)
        text = HISTORY_SEPARATOR.join(entry.text for entry in ordered)
        vector = self.submit([text]).result()[0]
        counts = encoder.token_counts([entry.text for entry in ordered])
        separator_tokens = encoder.token_counts([HISTORY_SEPARATOR.strip()])[0]
        used = entries_within_budget(counts, separator_tokens, encoder.max_length - 2)
        return UserVector(vector, UserEncodingMode.HISTORY_TEXT, used)
