"""rectune: one command for operators.

\b
    rectune arms list|show|put|pause|resume|retire|promote|rollback
    rectune settings show|set
    rectune stats [--window 1h]
    rectune models
    rectune tuner propose --dry-run | run | status      (the tuner's own command line)
    rectune study --items-csv F --interactions-csv F --minutes M --out F.json   (tune offline)
    rectune dashboard                                    (the web page)

Addresses default to where `make up` starts the services; RECTUNE_* variables and the global
flags (before the command) change them. Exit status: 0 done, 1 a service refused or could not
be reached, 2 bad input or settings.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.table import Table

from operators.client import ArmRow, OperatorClient, OperatorError, settings_paths
from operators.settings import OperatorSettings
from rectune.domain.arms import ArmState
from rectune.domain.configuration import Configuration
from services.common.config import SettingsError, load_settings

app = typer.Typer(help=__doc__, no_args_is_help=True, add_completion=False, rich_markup_mode=None)
arms_app = typer.Typer(help="The bandit's arms: list, register, pause, resume, retire, promote, roll back.")
settings_app = typer.Typer(help="PolicyService's settings (algorithm, guardrail, exposure caps, ...).")
app.add_typer(arms_app, name="arms", no_args_is_help=True)
app.add_typer(settings_app, name="settings", no_args_is_help=True)

# Piped output is not cut to 80 columns: tables stay whole for grep and for logs.
out = Console(soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, soft_wrap=True)

REGISTER_CHAMPION = "rectune arms put control --champion --strategy popularity"
DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
UNIT_SECONDS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}


class State:
    """The settings of this invocation (global flags over RECTUNE_* over the make-up defaults)."""

    settings: OperatorSettings | None = None


STATE = State()


@app.callback()
def main_options(
    policy_address: Annotated[str | None, typer.Option(help="host:port of PolicyService [127.0.0.1:50053]")] = None,
    scoring_address: Annotated[str | None, typer.Option(help="host:port of ScoringService [127.0.0.1:50052]")] = None,
    metrics_address: Annotated[str | None, typer.Option(help="host:port of MetricsService [127.0.0.1:50054]")] = None,
    database_url: Annotated[
        str | None, typer.Option(help="the tuner's audit table [sqlite:///rectune-tuner.db]")
    ] = None,
    admin_token: Annotated[
        str | None, typer.Option(help="sent on calls that change arms or settings [env RECTUNE_ADMIN_TOKEN]")
    ] = None,
) -> None:
    """Flags here, then RECTUNE_* variables, then where `make up` starts the services."""
    given = {
        "--policy-address": policy_address,
        "--scoring-address": scoring_address,
        "--metrics-address": metrics_address,
        "--database-url": database_url,
        "--admin-token": admin_token,
    }
    argv = [part for flag, value in given.items() if value is not None for part in (flag, value)]
    try:
        STATE.settings = load_settings(OperatorSettings, argv, prog="rectune")
    except SettingsError as exc:
        err.print(f"rectune: {exc}")
        raise typer.Exit(2) from None


def settings() -> OperatorSettings:
    assert STATE.settings is not None, "the callback reads the settings first"
    return STATE.settings


@contextmanager
def connected() -> Iterator[OperatorClient]:
    """A client for one command; a refused or failed call ends the command with status 1."""
    client = OperatorClient(settings())
    try:
        yield client
    except OperatorError as exc:
        err.print(f"rectune: {exc}")
        if exc.code == "UNAVAILABLE":
            err.print("Are the services running? `make up` starts them on this machine.")
        elif exc.code == "PERMISSION_DENIED":
            err.print("This call needs the admin token: --admin-token or RECTUNE_ADMIN_TOKEN.")
        elif exc.code == "UNAUTHENTICATED":
            err.print("The services want a token: RECTUNE_CLIENT_TOKEN to read, the admin token to change.")
        raise typer.Exit(1) from None
    finally:
        client.close()


def print_json(value: Any) -> None:
    out.print_json(json.dumps(value, default=str), indent=2)


# -- arms ------------------------------------------------------------------------------------------


@arms_app.command("list")
def arms_list(
    window: Annotated[str, typer.Option(help="statistics over this last span (30m, 2h, 7d) or 'all'")] = "all",
    as_json: Annotated[bool, typer.Option("--json", help="one JSON document instead of a table")] = False,
) -> None:
    """Every arm with its state, traffic share, CTR (95% interval), P(best) and model freshness."""
    window_seconds = parse_window(window)
    with connected() as client:
        rows = client.arms(window_seconds)
    if as_json:
        print_json([asdict(row) for row in rows])
        return
    if not rows:
        out.print(f"No arms yet. Register the control arm (the champion) first:\n  {REGISTER_CHAMPION}")
        return
    out.print(arms_table(rows, window))


def arms_table(rows: list[ArmRow], window: str) -> Table:
    table = Table(title=f"arms (statistics: {window})")
    for column in ("arm", "state", "origin", "configuration", "share", "impressions", "CTR [95%]", "P(best)", "model"):
        table.add_column(column)
    for row in rows:
        stats = row.stats
        table.add_row(
            row.arm_id,
            row.state,
            row.origin,
            describe_configuration(row.configuration),
            f"{stats.share:.1%}" if stats else "-",
            str(stats.impressions) if stats else "0",
            f"{stats.ctr:.4f} [{stats.ctr_low:.4f}, {stats.ctr_high:.4f}]" if stats else "-",
            f"{stats.probability_best:.3f}" if stats else "-",
            describe_freshness(row),
        )
    return table


def describe_configuration(configuration: dict[str, Any]) -> str:
    params = configuration["params"]
    if not params:
        return str(configuration["strategy"])
    return f"{configuration['strategy']} " + " ".join(f"{k}={v}" for k, v in params.items())


def describe_freshness(row: ArmRow) -> str:
    if row.freshness is None:
        return "not fitted yet"
    fresh = row.freshness
    return f"{format_age(fresh.age_seconds)} old, {fresh.interactions_since_fit} new interactions"


def format_age(age_seconds: float) -> str:
    for unit, length in (("d", 86400), ("h", 3600), ("m", 60)):
        if age_seconds >= length:
            return f"{age_seconds / length:.1f}{unit}"
    return f"{age_seconds:.0f}s"


@arms_app.command("show")
def arms_show(arm_id: str) -> None:
    """One arm, whole, as JSON."""
    with connected() as client:
        rows = client.arms()
    found = [row for row in rows if row.arm_id == arm_id]
    if not found:
        known = ", ".join(row.arm_id for row in rows) or f"none yet ({REGISTER_CHAMPION})"
        err.print(f"rectune: no arm {arm_id!r}; the arms are: {known}")
        raise typer.Exit(1)
    print_json(asdict(found[0]))


@arms_app.command("put")
def arms_put(
    arm_id: Annotated[str, typer.Argument(help="the new arm's id")],
    strategy: Annotated[str | None, typer.Option(help="popularity, content, als, item_knn, hybrid, two_tower")] = None,
    param: Annotated[
        list[str] | None, typer.Option("--param", "-p", help="a hyperparameter, name=value (repeat for more)")
    ] = None,
    configuration: Annotated[
        str | None, typer.Option(help='the whole configuration as JSON: {"strategy": ..., "params": {...}}')
    ] = None,
    champion: Annotated[bool, typer.Option("--champion", help="register it as the champion (the first arm)")] = False,
    exposure_cap: Annotated[float, typer.Option(help="largest traffic share; 0 = the policy's default")] = 0.0,
    reason: Annotated[str, typer.Option(help="kept with the arm's state")] = "",
) -> None:
    """Register an arm: a configuration competing for traffic (the first one is the champion)."""
    chosen = parse_configuration(strategy, param or [], configuration)
    with connected() as client:
        row = client.put_arm(arm_id, chosen, champion, exposure_cap, reason or "registered with rectune arms put")
    role = "the champion" if row.state == ArmState.CHAMPION.value else f"active, exposure cap {row.exposure_cap:g}"
    out.print(f"Registered {row.arm_id} ({describe_configuration(row.configuration)}): {role}.")
    if row.state == ArmState.CHAMPION.value:
        out.print("Next: `rectune tuner propose --dry-run` shows what the tuner would try against it.")


def parse_configuration(strategy: str | None, params: list[str], whole: str | None) -> Configuration:
    if whole is not None:
        if strategy or params:
            usage_error("--configuration: give either it or --strategy/--param, not both")
        try:
            document = json.loads(whole)
            return Configuration(str(document["strategy"]), dict(document.get("params", {})))
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            usage_error(f'--configuration: must be JSON like {{"strategy": "als", "params": {{}}}} ({exc})')
    if not strategy:
        usage_error("--strategy: required (or --configuration)")
    return Configuration(strategy, parse_assignments(params, "--param: must be name=value"))


def parse_assignments(items: list[str], rule: str) -> dict[str, Any]:
    """["factors=64", "alpha=2"] -> {"factors": 64, "alpha": 2}; ``rule`` heads the error."""
    parsed: dict[str, Any] = {}
    for item in items:
        name, sep, raw = item.partition("=")
        if not sep or not name:
            usage_error(f"{rule}, got {item[:40]!r}")
        parsed[name] = parse_value(raw)
    return parsed


def parse_value(raw: str) -> Any:
    """64 -> int, 0.01 -> float, true -> bool, anything else stays text."""
    try:
        value = json.loads(raw)
    except ValueError:
        return raw
    return value if isinstance(value, bool | int | float | str) else raw


def usage_error(message: str) -> NoReturn:
    err.print(f"rectune: {message}")
    raise typer.Exit(2)


def change_state(arm_id: str, state: ArmState, reason: str, done: str) -> None:
    with connected() as client:
        row = client.set_state(arm_id, state, reason)
    out.print(f"{row.arm_id} {done}: now {row.state} ({row.state_reason}).")


@arms_app.command("pause")
def arms_pause(arm_id: str, reason: Annotated[str, typer.Option()] = "paused with rectune") -> None:
    """Stop serving an arm (resume brings it back)."""
    change_state(arm_id, ArmState.PAUSED, reason, "paused")


@arms_app.command("resume")
def arms_resume(arm_id: str, reason: Annotated[str, typer.Option()] = "resumed with rectune") -> None:
    """Serve a paused arm again."""
    change_state(arm_id, ArmState.ACTIVE, reason, "resumed")


@arms_app.command("retire")
def arms_retire(
    arm_id: str,
    reason: Annotated[str, typer.Option()] = "retired with rectune",
    yes: Annotated[bool, typer.Option("--yes", "-y", help="do not ask (retiring is final)")] = False,
) -> None:
    """Stop serving an arm for good."""
    if not yes and not typer.confirm(f"Retire {arm_id}? It can never serve again.", default=False):
        raise typer.Exit(1)
    change_state(arm_id, ArmState.RETIRED, reason, "retired")


@arms_app.command("promote")
def arms_promote(arm_id: str, reason: Annotated[str, typer.Option()] = "promoted with rectune") -> None:
    """Make an arm the champion; the old champion becomes active (`rectune arms rollback` undoes it)."""
    change_state(arm_id, ArmState.CHAMPION, reason, "promoted")
    out.print("`rectune arms rollback` puts the previous champion back.")


@arms_app.command("rollback")
def arms_rollback(reason: Annotated[str, typer.Option()] = "") -> None:
    """Put back the champion that the last promotion replaced (again: one promotion further back)."""
    with connected() as client:
        try:
            row, replaced = client.rollback(reason)
        except OperatorError as exc:
            if exc.code != "FAILED_PRECONDITION":
                raise
            err.print(f"rectune: nothing to roll back: {exc.details}")
            err.print("A rollback undoes a promotion (`rectune arms promote ARM`); none is left to undo.")
            raise typer.Exit(1) from None
    out.print(f"Rolled back: {row.arm_id} is the champion again; {replaced} is active.")


# -- settings --------------------------------------------------------------------------------------


@settings_app.command("show")
def settings_show() -> None:
    """The policy's settings, as JSON."""
    with connected() as client:
        print_json(client.settings())


@settings_app.command("set")
def settings_set(
    assignments: Annotated[list[str], typer.Argument(help="field=value, e.g. algorithm=ucb1 guardrail.enabled=false")],
) -> None:
    """Change some settings; the rest keep their values."""
    changes = parse_assignments(assignments, "settings set: must be field=value (see `rectune settings show`)")
    with connected() as client:
        known = settings_paths(client.settings())
        unknown = [path for path in changes if path not in known]
        if unknown:
            usage_error(f"settings set: unknown field {unknown[0][:40]!r}; known: {', '.join(known)}")
        updated = client.update_settings(changes)
    out.print("Updated: " + ", ".join(changes))
    print_json(updated)


# -- statistics and models ------------------------------------------------------------------------


@app.command("stats")
def stats(
    window: Annotated[str, typer.Option(help="the last span (30m, 2h, 7d) or 'all'")] = "1h",
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Per-arm impressions, clicks, CTR with its 95% interval, traffic share and P(best)."""
    with connected() as client:
        by_arm = client.stats(parse_window(window))
    if as_json:
        print_json({arm_id: asdict(value) for arm_id, value in by_arm.items()})
        return
    if not by_arm:
        wider = "" if window == "all" else "Try --window all, or send"
        out.print(f"No impressions in the window ({window}). {wider or 'Send'} traffic (`make demo` does).")
        return
    table = Table(title=f"statistics over {window}")
    for column in ("arm", "share", "impressions", "clicks", "CTR [95%]", "P(best)"):
        table.add_column(column)
    for arm_id, value in sorted(by_arm.items(), key=lambda pair: -pair[1].impressions):
        table.add_row(
            arm_id,
            f"{value.share:.1%}",
            str(value.impressions),
            str(value.clicks),
            f"{value.ctr:.4f} [{value.ctr_low:.4f}, {value.ctr_high:.4f}]",
            f"{value.probability_best:.3f}",
        )
    out.print(table)


def parse_window(window: str) -> float | None:
    """'all' -> None (all time); '90s', '30m', '2h', '7d' -> seconds."""
    if window == "all":
        return None
    match = DURATION.match(window.strip())
    if not match or float(match.group(1)) <= 0:
        usage_error(f"--window: must be a positive span like 30m, 2h or 7d, or 'all'; got {window[:20]!r}")
    return float(match.group(1)) * UNIT_SECONDS[match.group(2)]


@app.command("models")
def models(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """ScoringService's fitted models: age and interactions since the fit."""
    with connected() as client:
        fresh = client.freshness()
    if as_json:
        print_json({key: asdict(value) for key, value in fresh.items()})
        return
    if not fresh:
        out.print("No fitted models yet (a model is fitted when an arm using it is registered or first ranks).")
        return
    table = Table(title="fitted models")
    for column in ("configuration hash", "strategy", "age", "interactions at fit", "since fit", "refits", "failed"):
        table.add_column(column)
    for key, value in fresh.items():
        table.add_row(
            key,
            value.strategy,
            format_age(value.age_seconds),
            str(value.interactions_at_fit),
            str(value.interactions_since_fit),
            str(value.refits),
            str(value.refit_failures),
        )
    out.print(table)


# -- the tuner and the dashboard ------------------------------------------------------------------


@app.command(
    "tuner",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def tuner(context: typer.Context) -> None:
    """The tuner's command line (propose --dry-run, run, status), with rectune's addresses."""
    from tuner.__main__ import main as tuner_main

    chosen = settings()
    for variable, value in (
        ("RECTUNE_POLICY_ADDRESS", chosen.policy_address),
        ("RECTUNE_SCORING_ADDRESS", chosen.scoring_address),
        ("RECTUNE_METRICS_ADDRESS", chosen.metrics_address),
        ("RECTUNE_DATABASE_URL", chosen.database_url),
        ("RECTUNE_CLIENT_TOKEN", chosen.admin_token or chosen.client_token),
    ):
        if value:
            os.environ[variable] = value
    raise typer.Exit(tuner_main(list(context.args)))


@app.command(
    "study",
    context_settings={"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []},
    add_help_option=False,
)
def study(context: typer.Context) -> None:
    """Tune offline on your own CSVs within a wall-clock budget (--items-csv, --interactions-csv,
    --minutes, --seed, --out); starts the services it needs. --help lists every flag."""
    from tuner.study_command import main as study_main

    raise typer.Exit(study_main(list(context.args)))


@app.command("dashboard")
def dashboard(
    host: Annotated[str | None, typer.Option(help="address to bind [127.0.0.1; env RECTUNE_DASHBOARD_HOST]")] = None,
    port: Annotated[int | None, typer.Option(help="port [8050; env RECTUNE_DASHBOARD_PORT]")] = None,
) -> None:
    """Serve the web dashboard (arms live, CTR over time, the tuner's cycles) until Ctrl-C."""
    from operators.dashboard import serve

    chosen = settings()
    serve(chosen, host or chosen.dashboard_host, chosen.dashboard_port if port is None else port)


def main() -> None:
    """The console script."""
    sys.exit(app())
