"""MetricsService behaviour: validation, storage, statistics, watching, retention. No protobuf."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field

from rectune.domain.errors import InvalidArgument, ResourceExhausted
from rectune.domain.events import MAX_FUTURE_SECONDS, Decision, FeedbackEvent, TimeRules, check_decisions, check_events
from services.metrics.core.records import Bucket, LoggedDecision, Window, WriteResult
from services.metrics.core.stats import ArmStats, RewardWeights, arm_stats
from services.metrics.core.store import MetricsStore

MAX_BUCKETS = 10_000
# Buckets of all arms in one GetTimeSeries answer (buckets x arms): about 3 MB of answer.
MAX_SERIES_POINTS = 100_000
MAX_BUCKET_SECONDS = 100 * 365 * 86400.0
MAX_PAGE_SIZE = 10_000
# A page of ExportDecisions ends before its decisions' stored text passes this (10,000
# decisions of 1,000 items each would be gigabytes): under gRPC's default 4 MiB message.
MAX_PAGE_BYTES = 3 * 1024 * 1024
DEFAULT_PAGE_SIZE = 1_000
MIN_WATCH_INTERVAL = 0.1
MAX_WATCH_INTERVAL = 3600.0  # a stream that pushes less often than hourly is better served by GetArmStats
MAX_WATCH_WINDOW = 10 * 365 * 86400.0
WATCH_POLL_SECONDS = 0.2
# Posterior draws of one GetArmStats (arms x samples, float64): each limit alone is accepted,
# so their product is bounded too (160 MB of draws at most, not a process-sized allocation).
MAX_POSTERIOR_DRAWS = 20_000_000
# Other replicas may compact; re-read the horizon this often.
HORIZON_CACHE_SECONDS = 30.0


@dataclass(frozen=True)
class MetricsConfig:
    reward: RewardWeights = field(default_factory=RewardWeights)
    posterior_samples: int = 10_000
    max_posterior_samples: int = 1_000_000
    seed: int = 0
    max_future_seconds: float = MAX_FUTURE_SECONDS
    max_events_per_batch: int = 10_000
    max_page_bytes: int = MAX_PAGE_BYTES
    # Raw events (and finer roll-ups) older than this are dropped, the hourly roll-ups kept; 0 keeps them.
    retention_hours: float = 168.0
    # Each open stream (WatchArmStats, StreamEvents) holds a server thread: beyond this many,
    # a new one is refused, so unary calls and health always find a thread.
    max_streams: int = 4


def check_window(window: Window) -> None:
    if window.start is not None and window.end is not None and window.start >= window.end:
        raise InvalidArgument("window", f"start ({window.start}) must be before end ({window.end})")


def check_arm_ids(arm_ids: Sequence[str]) -> None:
    for index, arm_id in enumerate(arm_ids):
        if not arm_id:
            raise InvalidArgument(f"arm_ids[{index}]", "must not be empty")


class MetricsCore:
    def __init__(self, store: MetricsStore, config: MetricsConfig, clock: Callable[[], float] = time.time) -> None:
        self.store = store
        self.config = config
        self.clock = clock
        self._horizon: tuple[float, float | None] = (float("-inf"), None)  # (read at, value)
        self._lock = threading.Lock()
        self._streams = 0
        self._stopping = threading.Event()  # set on shutdown: every stream ends at once

    def _compacted_before(self) -> float | None:
        read_at, value = self._horizon
        now = time.monotonic()
        if now - read_at > HORIZON_CACHE_SECONDS:
            value = self.store.compacted_before()
            self._horizon = (now, value)
        return value

    def _time_rules(self) -> TimeRules:
        return TimeRules(self.clock(), self.config.max_future_seconds, self._compacted_before())

    def record_events(self, events: Sequence[FeedbackEvent], field_name: str = "events") -> WriteResult:
        if len(events) > self.config.max_events_per_batch:
            raise InvalidArgument(
                field_name, f"at most {self.config.max_events_per_batch} events per batch, got {len(events)}"
            )
        rules = self._time_rules()
        check_events(events, rules, field_name)
        return self.store.record_events(events, received_at=rules.now)

    def record_decisions(self, decisions: Sequence[Decision]) -> WriteResult:
        if len(decisions) > self.config.max_events_per_batch:
            raise InvalidArgument(
                "decisions", f"at most {self.config.max_events_per_batch} per batch, got {len(decisions)}"
            )
        rules = self._time_rules()
        check_decisions(decisions, rules)
        return self.store.record_decisions(decisions, received_at=rules.now)

    def _check_samples(self, requested: int) -> None:
        if requested < 0 or requested > self.config.max_posterior_samples:
            raise InvalidArgument(
                "posterior_samples", f"must be between 0 and {self.config.max_posterior_samples}, got {requested}"
            )

    def _samples(self, requested: int, arms: int) -> int:
        """The samples to draw for ``arms`` arms: as asked (refused past the bound on draws), or
        the default, lowered to stay within the bound (the answer says how many were drawn)."""
        if requested == 0:
            return max(1, min(self.config.posterior_samples, MAX_POSTERIOR_DRAWS // max(1, arms)))
        if requested * arms > MAX_POSTERIOR_DRAWS:
            raise InvalidArgument(
                "posterior_samples",
                f"times the {arms} arms must be at most {MAX_POSTERIOR_DRAWS:,} draws, got {requested * arms:,} "
                f"(ask for at most {MAX_POSTERIOR_DRAWS // arms:,} samples, or for fewer arms)",
            )
        return requested

    def arm_stats(
        self, window: Window, arm_ids: Sequence[str], posterior_samples: int = 0
    ) -> tuple[list[ArmStats], int]:
        check_window(window)
        check_arm_ids(arm_ids)
        self._check_samples(posterior_samples)  # before any query
        counts = self.store.arm_counts(window, arm_ids)
        samples = self._samples(posterior_samples, len(counts))
        return arm_stats(counts, self.config.reward, samples, self.config.seed), samples

    def time_series(self, window: Window, bucket_seconds: float, arm_ids: Sequence[str]) -> dict[str, list[Bucket]]:
        check_window(window)
        check_arm_ids(arm_ids)
        if not 1 <= bucket_seconds <= MAX_BUCKET_SECONDS:
            raise InvalidArgument(
                "bucket", f"must be between 1 s and {MAX_BUCKET_SECONDS:.0f} s (100 years), got {bucket_seconds:g}"
            )
        start = window.start
        end = window.end if window.end is not None else self.clock()
        if start is not None and (end - start) / bucket_seconds > MAX_BUCKETS:
            raise InvalidArgument("bucket", f"window / bucket gives more than {MAX_BUCKETS} buckets; widen the bucket")
        buckets = None if start is None else math.ceil((end - start) / bucket_seconds)
        if buckets is not None and arm_ids and buckets * len(arm_ids) > MAX_SERIES_POINTS:
            raise InvalidArgument(
                "arm_ids",
                f"buckets x arms must be at most {MAX_SERIES_POINTS:,}, got {buckets:,} x {len(arm_ids):,}; "
                "widen the bucket or ask for fewer arms",
            )
        weights = self.config.reward
        series = self.store.time_series(
            window, bucket_seconds, arm_ids, weights.click, weights.conversion, MAX_SERIES_POINTS
        )
        if series is None:
            raise ResourceExhausted(
                f"GetTimeSeries: more than {MAX_SERIES_POINTS:,} buckets of all arms together (MAX_SERIES_POINTS); "
                "widen the bucket, narrow the window or ask for fewer arms"
            )
        return series

    def watch(
        self, window_seconds: float, arm_ids: Sequence[str], min_interval: float, is_active: Callable[[], bool]
    ) -> Iterator[tuple[float, list[ArmStats]]]:
        """Stats over the sliding window, pushed when the counts change, at most once per min_interval."""
        check_arm_ids(arm_ids)
        if not 0 <= window_seconds <= MAX_WATCH_WINDOW:
            raise InvalidArgument(
                "window", f"must be between 0 and {MAX_WATCH_WINDOW:g} s (10 years), got {window_seconds:g}"
            )
        if not 0 <= min_interval <= MAX_WATCH_INTERVAL:
            raise InvalidArgument(
                "min_interval", f"must be between 0 and {MAX_WATCH_INTERVAL:g} s, got {min_interval:g}"
            )
        interval = max(min_interval, MIN_WATCH_INTERVAL)
        self._open_stream("WatchArmStats", "poll GetArmStats")
        try:
            last: list[tuple[str, int, int, int]] | None = None
            while is_active() and not self._stopping.is_set():
                now = self.clock()
                window = Window(now - window_seconds if window_seconds else None, None)
                stats, _ = self.arm_stats(window, arm_ids)
                fingerprint = [
                    (s.counts.arm_id, s.counts.impressions, s.counts.clicks, s.counts.conversions) for s in stats
                ]
                if fingerprint != last:
                    last = fingerprint
                    yield now, stats
                self._pause(interval, is_active)
        finally:
            self._close_stream()

    def record_event_stream(self, batches: Iterable[tuple[str, Sequence[FeedbackEvent]]]) -> tuple[int, int, int]:
        """StreamEvents: each (field name, events) batch recorded as it arrives; returns the
        events accepted, the duplicates and the batches. The stream holds a slot meanwhile."""
        self._open_stream("StreamEvents", "send batches with RecordEvents")
        accepted = duplicates = count = 0
        try:
            for field_name, events in batches:
                result = self.record_events(events, field_name=field_name)
                accepted, duplicates, count = accepted + result.accepted, duplicates + result.duplicates, count + 1
        finally:
            self._close_stream()
        return accepted, duplicates, count

    def _open_stream(self, rpc: str, instead: str) -> None:
        with self._lock:
            if self._streams >= self.config.max_streams:
                raise ResourceExhausted(
                    f"{rpc}: {self._streams} streams are open, the most this server keeps "
                    f"(max_streams); retry later or {instead}"
                )
            self._streams += 1

    def _close_stream(self) -> None:
        with self._lock:
            self._streams -= 1

    def _pause(self, seconds: float, is_active: Callable[[], bool]) -> None:
        """Sleep, waking early on shutdown, and noticing a cancelled stream within WATCH_POLL_SECONDS."""
        deadline = time.monotonic() + seconds
        while is_active() and not self._stopping.is_set():
            left = deadline - time.monotonic()
            if left <= 0:
                return
            self._stopping.wait(min(left, WATCH_POLL_SECONDS))

    def stop_streams(self) -> None:
        """End every open stream now (at shutdown, before the grace period starts counting)."""
        self._stopping.set()

    def export_decisions(
        self, window: Window, arm_ids: Sequence[str], page_size: int, page_token: str
    ) -> tuple[list[LoggedDecision], str]:
        check_window(window)
        check_arm_ids(arm_ids)
        if page_size < 0 or page_size > MAX_PAGE_SIZE:
            raise InvalidArgument("page_size", f"must be between 0 and {MAX_PAGE_SIZE}, got {page_size}")
        return self.store.export_decisions(
            window, arm_ids, page_size or DEFAULT_PAGE_SIZE, page_token, self.config.max_page_bytes
        )

    def reward_of(self, logged: LoggedDecision) -> float:
        return self.config.reward.click * logged.clicks + self.config.reward.conversion * logged.conversions

    def compact(self) -> int:
        """Compact what is older than the retention horizon; 0 when retention is off."""
        if self.config.retention_hours <= 0:
            return 0
        folded = self.store.compact(self.clock() - self.config.retention_hours * 3600)
        self._horizon = (float("-inf"), None)
        return folded
