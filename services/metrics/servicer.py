"""gRPC glue of MetricsService.

Not implemented yet (issue #6): every RPC answers UNIMPLEMENTED, naming the method
and the issue.
"""

from __future__ import annotations

from rectune.v1 import metrics_pb2_grpc
from services.common.errors import pending_rpc

ISSUE = "issue #6"


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    """Each RPC answers UNIMPLEMENTED until issue #6 lands."""

    RecordEvents = pending_rpc("/rectune.v1.MetricsService/RecordEvents", ISSUE)
    StreamEvents = pending_rpc("/rectune.v1.MetricsService/StreamEvents", ISSUE)
    RecordDecisions = pending_rpc("/rectune.v1.MetricsService/RecordDecisions", ISSUE)
    GetArmStats = pending_rpc("/rectune.v1.MetricsService/GetArmStats", ISSUE)
    GetTimeSeries = pending_rpc("/rectune.v1.MetricsService/GetTimeSeries", ISSUE)
    WatchArmStats = pending_rpc("/rectune.v1.MetricsService/WatchArmStats", ISSUE)
    ExportDecisions = pending_rpc("/rectune.v1.MetricsService/ExportDecisions", ISSUE)
