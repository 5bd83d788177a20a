"""Group commit: the writes of concurrent callers go to the database together.

A database commits one transaction at a time, and in Python the statements and the commit
cost far more than the rows in them. When many request threads each need their rows durable
before they answer, one writer thread takes every write queued so far and commits them in
one transaction while the callers wait; whatever arrives during that commit goes in the next
group, so groups grow with the load and a lone caller waits for nothing but its own write.

A group waits (at most ``max_wait_seconds``) until as many writes as the previous group held
are queued: under steady concurrent load the callers then finish together, send their next
requests together, and keep arriving as one group, instead of being cut into a group of one
and a remainder. When load falls the wait times out once and the expected size follows it down.

Callers and the writer meet through a C-level queue and one lock per write: no condition
variable is shared, so finishing a group wakes exactly its own callers (waking every waiting
thread under the GIL costs more than the commit saves).
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

Item = TypeVar("Item")
Outcome = TypeVar("Outcome")

# What the write function returns for each item: its result, or the exception for it alone.
WriteGroup = Callable[[Sequence[Item]], Sequence[Outcome | Exception]]


class _Ticket(Generic[Item, Outcome]):
    __slots__ = ("done", "item", "outcome")

    def __init__(self, item: Item) -> None:
        self.item = item
        self.outcome: Outcome | Exception | None = None
        self.done = threading.Lock()
        self.done.acquire()  # released by the writer once the outcome is set


class GroupCommitClosed(RuntimeError):
    """A write submitted after close()."""


_STOP = object()


class GroupCommit(Generic[Item, Outcome]):
    def __init__(
        self, write_group: WriteGroup[Item, Outcome], name: str, max_group: int = 256, max_wait_seconds: float = 0.0
    ) -> None:
        if max_group < 1:
            raise ValueError(f"max_group must be >= 1, got {max_group}")
        if max_wait_seconds < 0:
            raise ValueError(f"max_wait_seconds must be >= 0, got {max_wait_seconds}")
        self._write_group = write_group
        self._max_group = max_group
        self._max_wait = max_wait_seconds
        self._expected = 1  # the size of the previous group
        self._queue: queue.SimpleQueue[_Ticket[Item, Outcome] | object] = queue.SimpleQueue()
        self._closed = False
        self._writer = threading.Thread(target=self._run, name=f"group-commit-{name}", daemon=True)
        self._writer.start()

    def submit(self, item: Item) -> Outcome:
        """Write the item with whatever else is queued; returns once it is committed (or raises)."""
        if self._closed:
            raise GroupCommitClosed("the writer is closed: the service is shutting down")
        ticket: _Ticket[Item, Outcome] = _Ticket(item)
        self._queue.put(ticket)
        while not ticket.done.acquire(timeout=1.0):
            if not self._writer.is_alive() and not ticket.done.acquire(blocking=False):
                raise GroupCommitClosed("the writer stopped before this write: the service is shutting down")
        if isinstance(ticket.outcome, Exception):
            raise ticket.outcome
        return ticket.outcome  # type: ignore[return-value]  # set and not an exception: an Outcome

    def close(self, timeout: float = 10.0) -> None:
        """Write what is queued, then stop the writer."""
        self._closed = True
        self._queue.put(_STOP)
        self._writer.join(timeout)

    def _run(self) -> None:
        stopping = False
        while not stopping:
            group, stopping = self._next_group()
            if group:
                self._finish(group)
                self._expected = len(group)
        self._fail_leftovers()

    def _next_group(self) -> tuple[list[_Ticket[Item, Outcome]], bool]:
        """The writes to commit together, and whether close() was called."""
        group: list[_Ticket[Item, Outcome]] = []
        entry = self._queue.get()
        deadline = time.monotonic() + self._max_wait
        while entry is not _STOP:
            group.append(entry)  # type: ignore[arg-type]  # not the sentinel: a ticket
            if len(group) >= self._max_group:
                return group, False
            try:
                if len(group) < self._expected:
                    entry = self._queue.get(timeout=max(deadline - time.monotonic(), 0.0))
                else:
                    entry = self._queue.get_nowait()
            except queue.Empty:
                return group, False
        return group, True

    def _finish(self, group: list[_Ticket[Item, Outcome]]) -> None:
        try:
            outcomes: Sequence[Outcome | Exception] = self._write_group([ticket.item for ticket in group])
            if len(outcomes) != len(group):
                raise RuntimeError(f"write_group returned {len(outcomes)} outcomes for {len(group)} items")
        except Exception as exc:  # the whole group failed: every caller in it gets the error
            outcomes = [exc] * len(group)
        for ticket, outcome in zip(group, outcomes, strict=True):
            ticket.outcome = outcome
            ticket.done.release()

    def _fail_leftovers(self) -> None:
        """Answer writes that raced close() (submitted after the stop marker) instead of hanging them."""
        while True:
            try:
                entry = self._queue.get_nowait()
            except queue.Empty:
                return
            if isinstance(entry, _Ticket):
                entry.outcome = GroupCommitClosed("the writer is closed: the service is shutting down")
                entry.done.release()
