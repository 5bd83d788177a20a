"""Domain exceptions carry their status and a message naming the field and the rule."""

from __future__ import annotations

import grpc
import pytest

from rectune.domain import errors
from services.common.interceptors import grpc_code


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (errors.InvalidArgument("k", "must be >= 1, got 0"), grpc.StatusCode.INVALID_ARGUMENT),
        (errors.NotFound("arm_id", "no arm 'x'"), grpc.StatusCode.NOT_FOUND),
        (errors.AlreadyExists("configuration", "equals arm 'a1'"), grpc.StatusCode.ALREADY_EXISTS),
        (errors.FailedPrecondition("not fitted"), grpc.StatusCode.FAILED_PRECONDITION),
        (errors.ResourceExhausted("queue full"), grpc.StatusCode.RESOURCE_EXHAUSTED),
        (errors.Unavailable("model not loaded"), grpc.StatusCode.UNAVAILABLE),
    ],
)
def test_each_error_maps_to_its_status(error: errors.RectuneError, code: grpc.StatusCode) -> None:
    assert grpc_code(error) == code


def test_field_error_message_is_field_then_rule() -> None:
    error = errors.InvalidArgument("texts[3]", "is not valid UTF-8")
    assert error.message == "texts[3]: is not valid UTF-8"
    assert (error.field, error.rule) == ("texts[3]", "is not valid UTF-8")
