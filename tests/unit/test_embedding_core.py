"""EmbeddingService domain pieces without gRPC or a model: batching, cache, validation, users.

The encode function given to the batcher here is a stand-in (texts are numbers, each
vector is [number, 1]) so that batch boundaries can be controlled and observed.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import threading
from concurrent.futures import Future

import numpy as np
import pytest

from rectune.domain.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.embedding.core.batching import MicroBatcher
from services.embedding.core.cache import VectorCache, entry_bytes
from services.embedding.core.service import EmbeddingCore, EmbeddingLimits, decode_texts
from services.embedding.core.users import (
    HistoryEntry,
    check_history,
    entries_within_budget,
    history_weights,
    most_recent_first,
    weighted_mean,
)


class StandInEncode:
    """Records each batch; blocks the first one until released, to let requests pile up."""

    def __init__(self, block_first: bool = False) -> None:
        self.batches: list[list[str]] = []
        self.release = threading.Event()
        self.started = threading.Event()
        if not block_first:
            self.release.set()

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.started.set()
        self.release.wait(10)
        self.batches.append(list(texts))
        if "fail" in texts:
            raise RuntimeError("encoder broke")
        return np.array([[float(t), 1.0] for t in texts], dtype=np.float32)


def test_concurrent_requests_share_one_batch_and_keep_their_order() -> None:
    encode = StandInEncode(block_first=True)
    batcher = MicroBatcher(encode, max_batch=8, max_wait_seconds=0.05, max_queue_texts=100)
    first = batcher.submit(["0"])
    assert encode.started.wait(5)
    waiting = [batcher.submit([str(i), str(i + 100)]) for i in range(1, 4)]
    encode.release.set()
    assert first.result(5)[:, 0].tolist() == [0.0]
    for i, future in enumerate(waiting, start=1):
        assert future.result(5)[:, 0].tolist() == [i, i + 100]
    assert encode.batches[1] == ["1", "101", "2", "102", "3", "103"]
    batcher.close()


def test_a_request_larger_than_a_batch_is_split_and_reassembled() -> None:
    encode = StandInEncode()
    batcher = MicroBatcher(encode, max_batch=4, max_wait_seconds=0.0, max_queue_texts=100, sort_window=1)
    texts = [str(i) for i in range(10)]
    assert batcher.encode(texts, timeout=5)[:, 0].tolist() == list(range(10))
    assert [len(batch) for batch in encode.batches] == [4, 4, 2]
    batcher.close()


def test_a_full_queue_is_refused_with_resource_exhausted() -> None:
    encode = StandInEncode(block_first=True)
    batcher = MicroBatcher(encode, max_batch=2, max_wait_seconds=0.0, max_queue_texts=3)
    batcher.submit(["1"])
    assert encode.started.wait(5)
    batcher.submit(["2", "3"])
    with pytest.raises(ResourceExhausted) as error:
        batcher.submit(["4", "5"])
    assert error.value.message == "queue: 2 of 3 texts are waiting; 2 more do not fit, retry later"
    encode.release.set()
    batcher.close()


def test_an_encoder_failure_reaches_the_callers_and_the_worker_lives_on() -> None:
    batcher = MicroBatcher(StandInEncode(), max_batch=4, max_wait_seconds=0.0)
    with pytest.raises(RuntimeError, match="encoder broke"):
        batcher.encode(["fail"], timeout=5)
    assert batcher.encode(["7"], timeout=5)[0, 0] == 7.0
    batcher.close()


def test_close_finishes_queued_work_then_refuses() -> None:
    encode = StandInEncode(block_first=True)
    batcher = MicroBatcher(encode, max_batch=2, max_wait_seconds=0.0)
    futures = [batcher.submit([str(i)]) for i in range(5)]
    encode.release.set()
    batcher.close()
    assert [f.result(0)[0, 0] for f in futures] == [0, 1, 2, 3, 4]
    with pytest.raises(Unavailable):
        batcher.submit(["9"])


def vector(*values: float) -> np.ndarray:
    return np.array(values, dtype=np.float32)


def test_cache_evicts_least_recently_used_by_bytes() -> None:
    one = entry_bytes(("m", "a"), vector(1, 2))
    cache = VectorCache(max_bytes=2 * one)
    cache.put(("m", "a"), vector(1, 2))
    cache.put(("m", "b"), vector(3, 4))
    assert cache.get(("m", "a")) is not None  # a is now the most recent
    cache.put(("m", "c"), vector(5, 6))
    assert cache.get(("m", "b")) is None
    assert cache.get(("m", "a")) is not None and cache.get(("m", "c")) is not None
    assert cache.bytes <= cache.max_bytes
    assert (cache.hits, cache.misses) == (3, 1)


def test_cache_keys_include_the_model_and_zero_bytes_disables_it() -> None:
    cache = VectorCache(max_bytes=10_000)
    cache.put(("model-a", "text"), vector(1))
    assert cache.get(("model-b", "text")) is None
    disabled = VectorCache(max_bytes=0)
    disabled.put(("m", "t"), vector(1))
    assert len(disabled) == 0


LIMITS = EmbeddingLimits(max_texts_per_request=3, max_text_bytes=8, max_request_bytes=20)


@pytest.mark.parametrize(
    ("texts", "message"),
    [
        ([], "texts: must not be empty"),
        ([b"a", b"b", b"c", b"d"], "texts: at most 3 texts per request, got 4"),
        ([b"ok", b"123456789"], "texts[1]: at most 8 bytes, got 9"),
        ([b"ok", b"ok", b"\xff\xfe"], "texts[2]: is not valid UTF-8 (byte 0)"),
        (
            [b"12345678", b"12345678", b"12345678"],
            "texts: at most 20 bytes of text in all per request (max_request_bytes), got 24",
        ),
    ],
)
def test_bad_texts_are_refused_naming_the_index(texts: list[bytes], message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        decode_texts(texts, LIMITS)
    assert error.value.message == message


def test_decoding_keeps_unicode() -> None:
    assert decode_texts(["Amélie".encode()], LIMITS) == ["Amélie"]


def test_core_is_unavailable_until_a_model_is_attached() -> None:
    core = EmbeddingCore(EmbeddingLimits())
    with pytest.raises(Unavailable) as error:
        core.embed([b"hello"])
    assert error.value.message == "model: not loaded yet (health answers NOT_SERVING until it is)"


def entry(value: float, time: float | None, text: str = "t") -> HistoryEntry:
    return HistoryEntry("i", text, value, time)


def test_weights_combine_rating_and_recency_half_life() -> None:
    history = [entry(4.0, 1000.0), entry(2.0, 900.0), entry(0.0, 1000.0)]
    # Only the ratios matter (the mean is normalised): the largest weight is scaled to 1.
    weights = history_weights(history, half_life_seconds=100.0, as_of=None)
    assert weights == pytest.approx([1.0, 2.0 * 0.5 / 4.0, 1.0 / 4.0])
    assert history_weights(history, 0.0, None) == [1.0, 0.5, 0.25]
    assert history_weights(history, 100.0, as_of=1200.0) == pytest.approx([1.0, 0.25, 0.25])


def test_weights_never_all_underflow_so_the_vector_is_never_nan() -> None:
    """Issue #20, item 6: values 1 and 1e-300, a one-day half-life and as_of in year 9999
    gave weights that all underflowed to 0, and a NaN vector."""
    history = [entry(1.0, 1.0e9), entry(1e-300, 1.0e9 + 60)]
    weights = history_weights(history, half_life_seconds=86400.0, as_of=253402300799.0)
    assert max(weights) == 1.0 and all(np.isfinite(weights))
    mean = weighted_mean(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), weights)
    assert np.all(np.isfinite(mean)) and float(np.linalg.norm(mean)) == pytest.approx(1.0)


def test_weighted_mean_is_normalised() -> None:
    mean = weighted_mean(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32), [3.0, 1.0])
    assert mean.tolist() == pytest.approx([3 / math.sqrt(10), 1 / math.sqrt(10)])


@pytest.mark.parametrize(
    ("history", "half_life", "message"),
    [
        ([], 0.0, "history: must not be empty"),
        ([entry(1, 1)], -1.0, "half_life_seconds: must be a finite number >= 0, got -1.0"),
        ([entry(1, 1), entry(-2, 1)], 0.0, "history[1].value: must be a finite number >= 0, got -2"),
        ([entry(1, None)], 10.0, "history[0].time: is required when half_life_seconds > 0"),
        ([entry(1, 1)] * 4, 0.0, "history: at most 3 entries, got 4"),
    ],
)
def test_bad_histories_are_refused_naming_the_field(history, half_life: float, message: str) -> None:
    with pytest.raises(InvalidArgument) as error:
        check_history(history, half_life, max_entries=3)
    assert error.value.message == message


def test_history_text_order_and_budget() -> None:
    ordered = most_recent_first([entry(1, 10, "old"), entry(1, None, "undated"), entry(1, 30, "new")])
    assert [e.text for e in ordered] == ["new", "old", "undated"]
    assert entries_within_budget([5, 5, 5], separator_tokens=1, budget=11) == 2
    assert entries_within_budget([5, 5, 5], separator_tokens=1, budget=100) == 3


def test_the_batcher_stops_waiting_once_as_many_texts_as_last_time_are_queued() -> None:
    # max_wait is far beyond the result timeout: each call can only return in time if the
    # batcher dispatches as soon as the previous batch's count (here 1, then 2) is queued.
    batcher = MicroBatcher(StandInEncode(), max_batch=32, max_wait_seconds=60.0)
    assert batcher.encode(["1"], timeout=5)[0, 0] == 1.0
    assert batcher.encode(["2", "3"], timeout=5)[:, 0].tolist() == [2.0, 3.0]
    assert batcher.encode(["4", "5"], timeout=5)[:, 0].tolist() == [4.0, 5.0]
    batcher.close()


def test_texts_queued_during_a_forward_pass_do_not_keep_the_next_batch_short() -> None:
    # "1" is encoded alone while "2" arrives; the client answered with "1" comes back with
    # "3". Both should share the next batch: waiting only for as many texts as the last
    # batch held (1) would send "2" alone and leave "3" for the batch after.
    encode = StandInEncode(block_first=True)
    batcher = MicroBatcher(encode, max_batch=32, max_wait_seconds=60.0)
    first = batcher.submit(["1"])
    assert encode.started.wait(5)
    straggler = batcher.submit(["2"])
    encode.release.set()
    assert first.result(5)[0, 0] == 1.0
    returning = batcher.submit(["3"])
    assert straggler.result(5)[0, 0] == 2.0 and returning.result(5)[0, 0] == 3.0
    assert encode.batches == [["1"], ["2", "3"]]
    batcher.close()


@pytest.mark.parametrize(("operator_value", "expected"), [(None, "20000"), ("7", "7")])
def test_the_package_sets_the_openmp_spin_count_before_torch_loads(operator_value, expected) -> None:
    env = {key: value for key, value in os.environ.items() if key != "GOMP_SPINCOUNT"}
    if operator_value is not None:
        env["GOMP_SPINCOUNT"] = operator_value
    probe = "import os, sys, services.embedding; print(os.environ['GOMP_SPINCOUNT'], 'torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, check=True)
    assert result.stdout.split() == [expected, "False"]


def test_clients_back_while_their_answers_go_out_are_not_counted_twice() -> None:
    # Two clients share a batch and come back while the batcher is still delivering their
    # answers (here from the future's callback, in the worker thread itself, before it
    # looks at the queue again). The next batch must leave once those two are queued:
    # counting them both as queued and as "answered, coming back" would have it wait for
    # four texts, that is max_wait, far beyond the result timeout.
    encode = StandInEncode(block_first=True)  # so that the callback is attached before the answer
    batcher = MicroBatcher(encode, max_batch=32, max_wait_seconds=60.0)
    returning: list[Future[np.ndarray]] = []
    first = batcher.submit(["1", "2"])
    first.add_done_callback(lambda _: returning.extend([batcher.submit(["3"]), batcher.submit(["4"])]))
    encode.release.set()
    assert first.result(5)[:, 0].tolist() == [1.0, 2.0]
    assert [future.result(5)[0, 0] for future in returning] == [3.0, 4.0]
    assert encode.batches == [["1", "2"], ["3", "4"]]
    batcher.close()
