"""Conversions between protobuf Timestamp/Duration and unix seconds, for the convert modules."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp


def seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def timestamp(unix_seconds: float) -> Timestamp:
    result = Timestamp()
    result.FromNanoseconds(round(unix_seconds * 1e9))
    return result


def duration(length_seconds: float) -> Duration:
    result = Duration()
    result.FromNanoseconds(round(length_seconds * 1e9))
    return result


def duration_seconds(value: Duration) -> float:
    return value.seconds + value.nanos / 1e9
