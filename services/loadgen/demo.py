"""``make demo``: run rectune locally.

What it does today: starts the four services on loopback (SQLite, default settings),
checks that each one answers its health check SERVING, shows their status, and stops
them all. The simulated traffic, the competing arms and the report with plots arrive
with the loadgen issue (#7); until then this is a smoke test of the suite, and it
says so.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from services.loadgen.suite import START_ORDER, LocalSuite

RUN_ROOT = Path(".run") / "demo"


def status_table(suite: LocalSuite, status: dict[str, str]) -> Table:
    table = Table(title="rectune services")
    for column in ("service", "address", "health", "log"):
        table.add_column(column)
    for name in START_ORDER:
        address = suite.address(name)
        table.add_row(name, address, status[address], str(suite.run_dir / f"{name}.log"))
    return table


def main() -> int:
    console = Console()
    suite = LocalSuite(RUN_ROOT / time.strftime("%Y%m%d-%H%M%S"))
    with suite:
        console.print("starting the services ...")
        status = suite.start()
        console.print(status_table(suite, status))
        healthy = all(s == "SERVING" for s in status.values())
        console.print(
            "The bandit loop (loadgen, arms, live view, report) is not built yet (issue #7): "
            "this demo only starts the suite and checks its health."
        )
    console.print("all services stopped")
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main())
