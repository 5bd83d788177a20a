"""Dynamic micro-batching: concurrent requests share forward passes.

Requests wait in a bounded FIFO. One worker thread takes the texts at the head of the
queue, up to ``max_batch`` of them (``max_batch * sort_window`` when a backlog is
waiting, so that the encoder can group them by length), as soon as either as many texts
are queued as it expects back from its last batch's clients (at most ``max_batch``; see
``_expect_answered_back``) or ``max_wait`` has passed since it became free (since the
first text arrived, when none was waiting). A request larger than a batch is split
across consecutive batches and answered when its last slice is done. A full queue is
refused at once (ResourceExhausted), never buffered without bound.
"""

from __future__ import annotations

import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field

import numpy as np

from rectune.domain.errors import ResourceExhausted, Unavailable
from services.embedding.core.encoder import Vectors

EncodeFn = Callable[[list[str]], Vectors]


@dataclass
class _Request:
    texts: list[str]
    arrived: float
    future: Future[Vectors] = field(default_factory=Future)
    taken: int = 0  # texts already handed to a batch
    done: int = 0  # texts already encoded
    parts: dict[int, Vectors] = field(default_factory=dict)  # slice start -> vectors

    def deliver(self, start: int, vectors: Vectors) -> None:
        self.parts[start] = vectors
        self.done += len(vectors)
        if self.done == len(self.texts):
            self.future.set_result(np.concatenate([self.parts[k] for k in sorted(self.parts)]))


@dataclass(frozen=True)
class _Slice:
    request: _Request
    start: int
    end: int


class MicroBatcher:
    def __init__(
        self,
        encode: EncodeFn,
        max_batch: int = 32,
        max_wait_seconds: float = 0.002,
        max_queue_texts: int = 4096,
        sort_window: int = 4,
    ) -> None:
        self._encode = encode
        self.max_batch = max_batch
        self.max_wait_seconds = max_wait_seconds
        self.max_queue_texts = max_queue_texts
        self._take_limit = max_batch * sort_window
        self._queue: deque[_Request] = deque()
        self._queued_texts = 0
        self._closed = False
        self._condition = threading.Condition()
        self.batches = 0  # forward batches run, for tests and metrics
        self.batch_sizes: Counter[int] = Counter()  # texts per forward batch -> batches of that size
        self._expected_texts = 0  # texts the next batch waits for (see _expect_answered_back)
        self._worker = threading.Thread(target=self._run, name="embed-batcher", daemon=True)
        self._worker.start()

    def submit(self, texts: list[str]) -> Future[Vectors]:
        """Queue texts; the future resolves to their vectors in order."""
        request = _Request(texts, time.monotonic())
        if not texts:
            request.future.set_result(np.zeros((0, 0), dtype=np.float32))
            return request.future
        with self._condition:
            if self._closed:
                raise Unavailable("embedding: the batcher is shut down")
            if self._queued_texts + len(texts) > self.max_queue_texts:
                raise ResourceExhausted(
                    f"queue: {self._queued_texts} of {self.max_queue_texts} texts are waiting; "
                    f"{len(texts)} more do not fit, retry later"
                )
            self._queue.append(request)
            self._queued_texts += len(texts)
            self._condition.notify()
        return request.future

    @property
    def queued_texts(self) -> int:
        """Texts waiting for a forward batch now."""
        return self._queued_texts

    def batch_size_counts(self) -> dict[int, int]:
        """Texts per forward batch -> batches of that size, since start."""
        with self._condition:
            return dict(self.batch_sizes)

    def encode(self, texts: list[str], timeout: float | None = None) -> Vectors:
        return self.submit(texts).result(timeout)

    def close(self) -> None:
        """Finish what is queued, then stop the worker."""
        with self._condition:
            self._closed = True
            self._condition.notify()
        self._worker.join()

    def _next_batch(self) -> list[_Slice] | None:
        with self._condition:
            expected = self._expected_texts
            while not self._queue and not self._closed:
                self._condition.wait()
            if not self._queue:
                return None
            # The wait starts when the worker is free, not when the oldest text arrived:
            # texts that queued up during the previous forward pass would otherwise leave
            # at once in a small batch, and closed-loop clients would settle into several
            # half-full batches that alternate instead of sharing one.
            enough = min(self.max_batch, max(expected, 1))
            deadline = time.monotonic() + self.max_wait_seconds
            while self._queued_texts < enough and not self._closed:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._condition.wait(remaining)
            return self._take(self._take_limit if self._queued_texts > self.max_batch else self.max_batch)

    def _expect_answered_back(self, answering: int) -> None:
        """Before answering a batch: how many texts the next batch should wait for.

        Closed-loop clients come back in about the number this batch answers, on top of
        those already queued (answered earlier, back during the forward pass): the worker
        stops waiting once that many are queued instead of always waiting max_wait.
        Counting only this batch would let a batch that left short once stay short (its
        stragglers would fill the next one's count). The queue is counted now, before the
        answers go out: clients that come back while they are still being delivered are
        this batch's own, and counting them again would make the next batch wait for
        texts that never come.
        """
        with self._condition:
            self._expected_texts = self._queued_texts + answering

    def _take(self, limit: int) -> list[_Slice]:
        slices: list[_Slice] = []
        taken = 0
        while self._queue and taken < limit:
            request = self._queue[0]
            count = min(limit - taken, len(request.texts) - request.taken)
            slices.append(_Slice(request, request.taken, request.taken + count))
            request.taken += count
            taken += count
            if request.taken == len(request.texts):
                self._queue.popleft()
        self._queued_texts -= taken
        return slices

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            texts = [text for s in batch for text in s.request.texts[s.start : s.end]]
            try:
                vectors = self._encode(texts)
            except Exception as exc:  # the callers see the failure, the worker lives on
                self._expect_answered_back(len(texts))
                self._fail(batch, exc)
                continue
            self.batches += 1
            with self._condition:  # batch_size_counts copies them under the same lock
                self.batch_sizes[len(texts)] += 1
            self._expect_answered_back(len(texts))
            self._deliver(batch, vectors)

    @staticmethod
    def _fail(batch: list[_Slice], error: Exception) -> None:
        for s in batch:
            if not s.request.future.done():
                s.request.future.set_exception(error)

    @staticmethod
    def _deliver(batch: list[_Slice], vectors: Vectors) -> None:
        offset = 0
        for s in batch:
            count = s.end - s.start
            if not s.request.future.done():
                s.request.deliver(s.start, vectors[offset : offset + count])
            offset += count
