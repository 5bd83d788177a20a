"""Conversions between protobuf Timestamp/Duration and unix seconds, for the convert modules."""

from __future__ import annotations

from google.protobuf.duration_pb2 import Duration
from google.protobuf.timestamp_pb2 import Timestamp

from rectune.domain.errors import InvalidArgument

# What a Timestamp may hold (protobuf's rule): 0001-01-01T00:00:00Z to 9999-12-31T23:59:59.999999999Z.
MIN_TIMESTAMP_SECONDS = -62_135_596_800
MAX_TIMESTAMP_SECONDS = 253_402_300_799


def seconds(timestamp: Timestamp) -> float:
    return timestamp.seconds + timestamp.nanos / 1e9


def checked_seconds(timestamp: Timestamp, field: str) -> float:
    """The timestamp in unix seconds, or InvalidArgument when it is not a valid Timestamp."""
    if not MIN_TIMESTAMP_SECONDS <= timestamp.seconds <= MAX_TIMESTAMP_SECONDS or not 0 <= timestamp.nanos < 10**9:
        raise InvalidArgument(
            field, f"must be a timestamp between 0001-01-01 and 9999-12-31, got {timestamp.seconds} s"
        )
    return seconds(timestamp)


def timestamp(unix_seconds: float) -> Timestamp:
    """Clamped to the representable range: a float near either end can round past it."""
    nanos = round(unix_seconds * 1e9)
    nanos = min(max(nanos, MIN_TIMESTAMP_SECONDS * 10**9), MAX_TIMESTAMP_SECONDS * 10**9 + 999_999_999)
    result = Timestamp()
    result.FromNanoseconds(nanos)
    return result


def duration(length_seconds: float) -> Duration:
    result = Duration()
    result.FromNanoseconds(round(length_seconds * 1e9))
    return result


def duration_seconds(value: Duration) -> float:
    return value.seconds + value.nanos / 1e9
