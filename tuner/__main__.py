"""``python -m tuner <command>``: the tuner's command line.

    tuner propose --dry-run   plan one cycle and print it as JSON; change nothing (the plan
                              is still written to the audit table, marked dry run)
    tuner propose             plan one cycle and carry it out
    tuner run [--once]        a cycle every --interval-seconds until SIGTERM or Ctrl-C
    tuner status [--json]     the arms with their live statistics, and the latest audit entries
                              (tables, or one JSON document for scripts)

Settings (addresses, limits, proposer) come from flags or RECTUNE_* variables: see
``tuner <command> --help``. Exit status: 0 done, 1 a service failed, 2 bad settings or
search-space file.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import optuna
import structlog
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from rectune.domain.space import SpaceError
from services.common.clients import client_options_from
from services.common.config import SettingsError, load_settings
from services.common.logging import configure_logging
from services.common.observability import serve_registry
from services.common.server import HealthState, serve_health_only
from tuner.audit import AuditLog
from tuner.clients import GrpcBackend
from tuner.controller import Action, Controller, Plan
from tuner.errors import TunerError
from tuner.factory import make_engine, make_proposer
from tuner.settings import TunerSettings
from tuner.signals import TunerSignals
from tuner.space import load_restriction

log = structlog.get_logger("tuner")

# The name under which the health port reports the loop (besides the overall "").
TUNER_HEALTH_NAME = "rectune.tuner"


def build_controller(settings: TunerSettings, backend: GrpcBackend, audit: AuditLog) -> Controller:
    restriction = load_restriction(settings.search_space_file) if settings.search_space_file else None
    engine = make_engine(settings)
    # A restarted tuner prunes as before: its rungs hold the screens it made.
    engine.remember(audit.staged())
    return Controller(
        backend,
        make_proposer(settings, settings.evaluation_k),
        settings.limits(),
        restriction,
        audit.observations,
        engine,
    )


def cycle(controller: Controller, audit: AuditLog, dry_run: bool) -> dict[str, object]:
    """Plan, record and (unless a dry run) apply one cycle; the plan and outcomes as a dict."""
    plan, outcomes = run_cycle(controller, audit, dry_run)
    result = plan.to_dict()
    result["dry_run"] = dry_run
    if not dry_run:
        result["outcomes"] = [{"kind": a.kind, "arm_id": a.arm_id, "outcome": o} for a, o in outcomes]
    return result


def run_cycle(controller: Controller, audit: AuditLog, dry_run: bool) -> tuple[Plan, list[tuple[Action, str]]]:
    """Plan, record and (unless a dry run) apply one cycle; the plan and each action's outcome."""
    plan: Plan = controller.plan()
    outcomes = [] if dry_run else controller.apply(plan)
    audit.record(plan, dry_run, outcomes)
    log.info(
        "cycle",
        cycle_id=plan.cycle_id,
        dry_run=dry_run,
        actions=len(plan.actions),
        rejected=len(plan.rejected),
        failed=sum(1 for _, o in outcomes if o != "applied"),
    )
    return plan, outcomes


def run_forever(controller: Controller, audit: AuditLog, settings: TunerSettings) -> None:
    """A cycle every interval until SIGTERM or SIGINT; a failed cycle is logged and retried next
    time. With a health port, grpc.health.v1 answers SERVING while the loop runs."""
    stop = threading.Event()
    health = HealthState([TUNER_HEALTH_NAME])
    stop_health = serve_health_only(health, settings.host, settings.health_port) if settings.health_port else None
    signals = TunerSignals(settings.interval_seconds)
    stop_metrics = (
        serve_registry(signals.registry, settings.host, settings.prometheus_port) if settings.prometheus_port else None
    )

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        log.info("stopping", signal=signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    health.set_serving()
    try:
        while not stop.is_set():
            try:
                _, outcomes = run_cycle(controller, audit, dry_run=False)
            except (TunerError, SpaceError, SQLAlchemyError) as exc:  # the next cycle tries again
                signals.cycle_failed()
                log.warning("cycle_failed", error=str(exc))
            else:
                signals.cycle_succeeded([action.kind for action, outcome in outcomes if outcome == "applied"])
            stop.wait(settings.interval_seconds)
    finally:
        health.shutdown()
        for stopper in (stop_health, stop_metrics):
            if stopper is not None:
                stopper()


def status_document(backend: GrpcBackend, audit: AuditLog) -> dict[str, object]:
    """What ``tuner status --json`` prints: the arms and the latest audit entries, newest first."""
    # Each record's own fields, with its configuration as the JSON object the plans print.
    arms = [
        {
            **vars(arm),
            "origin": arm.origin.value,
            "state": arm.state.value,
            "stats": vars(arm.stats),
            "configuration": arm.configuration.as_dict(),
        }
        for arm in backend.arms()
    ]
    entries = [
        {
            **vars(entry),
            "configuration": json.loads(entry.configuration) if entry.configuration else None,
            "stages": json.loads(entry.stages),
        }
        for entry in audit.recent()
    ]
    return {"arms": arms, "audit": entries}


def print_status(backend: GrpcBackend, audit: AuditLog) -> None:
    console = Console()
    arms = Table(title="arms")
    for column in ("arm", "origin", "state", "impressions", "CTR", "P(best)", "configuration"):
        arms.add_column(column)
    for arm in backend.arms():
        arms.add_row(
            arm.arm_id,
            arm.origin.value,
            arm.state.value,
            str(arm.stats.impressions),
            f"{arm.stats.ctr:.4f}",
            f"{arm.stats.probability_best:.3f}",
            json.dumps(arm.configuration.as_dict()["params"])
            if arm.configuration.params
            else arm.configuration.strategy,
        )
    console.print(arms)
    entries = Table(title="latest audit entries")
    for column in ("cycle", "dry run", "kind", "arm", "outcome", "rationale"):
        entries.add_column(column)
    for entry in audit.recent():
        entries.add_row(
            entry.cycle_id, "yes" if entry.dry_run else "", entry.kind, entry.arm_id, entry.outcome, entry.rationale
        )
    console.print(entries)


def main(argv: Sequence[str] | None = None, configure_logs: bool = True) -> int:
    """The command line; ``configure_logs=False`` keeps the caller's logging (tests)."""
    parser = argparse.ArgumentParser(
        prog="tuner", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, add_help=False
    )
    parser.add_argument("command", choices=("propose", "run", "status"))
    parser.add_argument("--dry-run", action="store_true", help="propose: plan and print, change nothing")
    parser.add_argument("--once", action="store_true", help="run: one cycle, then exit")
    parser.add_argument("--json", action="store_true", help="status: one JSON document instead of tables")
    if argv is None:
        argv = sys.argv[1:]
    if not argv or argv[0] in ("-h", "--help"):
        parser.print_help()
        return 0 if argv else 2
    args, rest = parser.parse_known_args(argv)
    for flag, command in (("--dry-run", "propose"), ("--once", "run"), ("--json", "status")):
        if getattr(args, flag[2:].replace("-", "_")) and args.command != command:
            print(f"tuner: {flag} applies to `tuner {command}` only", file=sys.stderr)
            return 2
    try:
        settings = load_settings(TunerSettings, rest, prog=f"tuner {args.command}")
    except SettingsError as exc:
        print(f"tuner: {exc}", file=sys.stderr)
        return 2
    if configure_logs:
        configure_logging(settings.log_format, settings.log_level, sys.stderr)
        optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per study otherwise
    backend = GrpcBackend(
        settings.policy_address, settings.scoring_address, settings.metrics_address, client_options_from(settings)
    )
    try:
        audit = AuditLog.open(settings.database_url)
        if args.command == "status" and args.json:
            print(json.dumps(status_document(backend, audit), indent=2))
            return 0
        if args.command == "status":
            print_status(backend, audit)
            return 0
        controller = build_controller(settings, backend, audit)
        if args.command == "run" and not args.once:
            run_forever(controller, audit, settings)
            return 0
        print(json.dumps(cycle(controller, audit, dry_run=args.dry_run), indent=2))
        return 0
    except SpaceError as exc:
        print(f"tuner: {exc}", file=sys.stderr)
        return 2
    except TunerError as exc:  # a service failed, or the language model could not be loaded
        print(f"tuner: {exc}", file=sys.stderr)
        return 1
    finally:
        backend.close()


if __name__ == "__main__":
    sys.exit(main())
