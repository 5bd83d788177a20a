"""Protobuf <-> domain types for MetricsService. Nothing else."""

from __future__ import annotations

from collections.abc import Iterable

from rectune.domain.events import FeedbackEvent
from rectune.v1 import common_pb2, metrics_pb2
from services.common import convert as shared
from services.common.prototime import checked_seconds, timestamp
from services.metrics.core.records import Bucket, LoggedDecision, Window
from services.metrics.core.stats import ArmStats, Interval


def window(message: common_pb2.TimeWindow, present: bool) -> Window:
    if not present:
        return Window()
    return Window(
        checked_seconds(message.start, "window.start") if message.HasField("start") else None,
        checked_seconds(message.end, "window.end") if message.HasField("end") else None,
    )


def window_message(value: Window) -> common_pb2.TimeWindow:
    message = common_pb2.TimeWindow()
    if value.start is not None:
        message.start.CopyFrom(timestamp(value.start))
    if value.end is not None:
        message.end.CopyFrom(timestamp(value.end))
    return message


def events(messages: Iterable[common_pb2.Event]) -> list[FeedbackEvent]:
    return [shared.event(m) for m in messages]


def interval(value: Interval) -> common_pb2.Interval:
    return common_pb2.Interval(lower=value.lower, upper=value.upper, confidence=value.confidence)


def arm_stats_message(value: ArmStats) -> metrics_pb2.ArmStats:
    return metrics_pb2.ArmStats(
        arm_id=value.counts.arm_id,
        impressions=value.counts.impressions,
        clicks=value.counts.clicks,
        conversions=value.counts.conversions,
        ctr=value.ctr,
        ctr_interval=interval(value.ctr_interval),
        conversion_rate=value.conversion_rate,
        conversion_rate_interval=interval(value.conversion_rate_interval),
        reward_mean=value.reward_mean,
        reward_variance=value.reward_variance,
        probability_best=value.probability_best,
    )


def series_message(arm_id: str, buckets: list[Bucket]) -> metrics_pb2.ArmSeries:
    return metrics_pb2.ArmSeries(
        arm_id=arm_id,
        buckets=[
            metrics_pb2.TimeBucket(
                start=timestamp(b.start),
                impressions=b.impressions,
                clicks=b.clicks,
                conversions=b.conversions,
                ctr=b.clicks / b.impressions if b.impressions else 0.0,
                reward_sum=b.reward_sum,
            )
            for b in buckets
        ],
    )


def logged_decision_message(value: LoggedDecision, reward: float) -> metrics_pb2.LoggedDecision:
    return metrics_pb2.LoggedDecision(
        decision=shared.decision_message(value.decision),
        clicks=value.clicks,
        conversions=value.conversions,
        reward=reward,
    )
