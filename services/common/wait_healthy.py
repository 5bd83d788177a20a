"""Wait until services answer their health check SERVING.

Usage: ``python -m services.common.wait_healthy HOST:PORT...`` (used by ``make up``).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING


def health_status(address: str, timeout: float = 1.0, service: str = "") -> str:
    """The health status name of ``address`` ("SERVING", "NOT_SERVING", ...) or the RPC error code."""
    with grpc.insecure_channel(address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        try:
            response = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
        except grpc.RpcError as exc:
            return str(exc.code().name)
    return str(health_pb2.HealthCheckResponse.ServingStatus.Name(response.status))


def wait_serving(
    addresses: list[str], timeout_seconds: float, give_up: Callable[[], bool] | None = None
) -> dict[str, str]:
    """Poll until every address is SERVING, the time is up, or ``give_up()`` says so (a
    process that should answer has exited, say); returns the last status of each."""
    deadline = time.monotonic() + timeout_seconds
    status = dict.fromkeys(addresses, "UNKNOWN")
    while True:
        for address in addresses:
            if status[address] != "SERVING":
                status[address] = health_status(address)
        if all(s == "SERVING" for s in status.values()) or time.monotonic() > deadline:
            return status
        if give_up is not None and give_up():
            return status
        time.sleep(0.2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("addresses", nargs="+", help="host:port of each service")
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds to wait in all")
    args = parser.parse_args()
    status = wait_serving(args.addresses, args.timeout)
    for address, state in status.items():
        print(f"{address}: {state}")
    return 0 if all(s == "SERVING" for s in status.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
