"""gRPC glue of MetricsService.

Not implemented yet (issue #6): every RPC answers UNIMPLEMENTED through the error
interceptor, which names the method.
"""

from __future__ import annotations

from rectune.v1 import metrics_pb2_grpc


class MetricsServicer(metrics_pb2_grpc.MetricsServiceServicer):
    """Inherits the generated methods, which raise NotImplementedError -> UNIMPLEMENTED."""
