"""GroupCommit: concurrent writes committed together, each caller answered with its own outcome."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from services.common.group_commit import GroupCommit, GroupCommitClosed


class RecordingWriter:
    """Records each group; the first group is held until released, so that others queue meanwhile."""

    def __init__(self) -> None:
        self.groups: list[list[int]] = []
        self.first_started = threading.Event()
        self.release_first = threading.Event()

    def __call__(self, items: Sequence[int]) -> list[int | Exception]:
        if not self.groups:
            self.first_started.set()
            assert self.release_first.wait(10)
        self.groups.append(list(items))
        return [ValueError(f"item {item} refused") if item < 0 else item * 10 for item in items]


def submit_while_first_group_is_held(committer: GroupCommit[int, int], writer: RecordingWriter, items: list[int]):
    """Submit 0 alone (held in the writer), then ``items`` concurrently; returns each call's future."""
    pool = ThreadPoolExecutor(max_workers=len(items) + 1)
    first = pool.submit(committer.submit, 0)
    assert writer.first_started.wait(10)
    futures = [pool.submit(committer.submit, item) for item in items]
    while committer._queue.qsize() < len(items):  # every write queued behind the held group
        threading.Event().wait(0.01)
    writer.release_first.set()
    pool.shutdown(wait=True)
    return first, futures


def test_writes_that_arrive_during_a_commit_go_together_in_the_next_group() -> None:
    writer = RecordingWriter()
    committer: GroupCommit[int, int] = GroupCommit(writer, "test")
    first, futures = submit_while_first_group_is_held(committer, writer, [1, 2, 3, 4, 5])
    assert first.result() == 0
    assert [future.result() for future in futures] == [10, 20, 30, 40, 50]
    assert writer.groups[0] == [0]
    assert sorted(writer.groups[1]) == [1, 2, 3, 4, 5]  # one commit for all five
    committer.close()


def test_an_item_refused_alone_fails_only_its_own_caller() -> None:
    writer = RecordingWriter()
    committer: GroupCommit[int, int] = GroupCommit(writer, "test")
    _, futures = submit_while_first_group_is_held(committer, writer, [1, -2, 3])
    assert futures[0].result() == 10 and futures[2].result() == 30
    with pytest.raises(ValueError, match="item -2 refused"):
        futures[1].result()
    committer.close()


def test_a_failed_group_fails_every_caller_in_it_and_the_writer_goes_on() -> None:
    calls: list[list[str]] = []

    def write(items: Sequence[str]) -> list[str | Exception]:
        calls.append(list(items))
        if "bad" in items:
            raise ConnectionError("database is down")
        return list(items)

    committer: GroupCommit[str, str] = GroupCommit(write, "test")
    with pytest.raises(ConnectionError, match="database is down"):
        committer.submit("bad")
    assert committer.submit("good") == "good"
    committer.close()


def test_a_writer_returning_the_wrong_number_of_outcomes_is_an_error_for_its_callers() -> None:
    committer: GroupCommit[int, int] = GroupCommit(lambda items: [], "test")
    with pytest.raises(RuntimeError, match="write_group returned 0 outcomes for 1 items"):
        committer.submit(1)
    committer.close()


def test_groups_never_exceed_max_group() -> None:
    writer = RecordingWriter()
    committer: GroupCommit[int, int] = GroupCommit(writer, "test", max_group=2)
    _, futures = submit_while_first_group_is_held(committer, writer, [1, 2, 3, 4, 5])
    assert sorted(future.result() for future in futures) == [10, 20, 30, 40, 50]
    assert max(len(group) for group in writer.groups) == 2
    committer.close()


def test_a_lone_write_after_a_large_group_waits_at_most_max_wait() -> None:
    writer = RecordingWriter()
    committer: GroupCommit[int, int] = GroupCommit(writer, "test", max_wait_seconds=0.05)
    submit_while_first_group_is_held(committer, writer, [1, 2, 3])
    assert committer.submit(7) == 70  # expected a group of 3, got 1: answered after the wait
    assert writer.groups[-1] == [7]
    committer.close()


def test_close_writes_what_is_queued_then_refuses_new_writes() -> None:
    writer = RecordingWriter()
    writer.release_first.set()
    committer: GroupCommit[int, int] = GroupCommit(writer, "test")
    assert committer.submit(1) == 10
    committer.close()
    with pytest.raises(GroupCommitClosed, match="the writer is closed"):
        committer.submit(2)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="max_group must be >= 1, got 0"):
        GroupCommit(lambda items: list(items), "test", max_group=0)
    with pytest.raises(ValueError, match="max_wait_seconds must be >= 0, got -1"):
        GroupCommit(lambda items: list(items), "test", max_wait_seconds=-1)
