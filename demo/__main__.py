"""``make demo``: the whole loop, locally, on MovieLens 100K.

Starts the four services on loopback (SQLite, default models), lets ScoringService see
only the earlier 80% of each user's ratings, registers a champion and four challengers
(one of them the BERT two-tower), and drives simulated users at them for ``DEMO_MINUTES``
(default 10) while a live table shows the arms. Then it writes ``reports/demo-<timestamp>/report.md`` with plots, from
MetricsService's numbers. Ctrl-C stops everything; no process outlives the demo.

While the traffic runs, the tuner (``tuner run``, its log in the run folder) proposes new
arms every DEMO_TUNER_INTERVAL seconds with the DEMO_TUNER proposer, screens them offline
against the champion and registers those that pass; it retires its own arms that lose.

Environment: DEMO_MINUTES (float), DEMO_RATE (requests per second, default 20), DEMO_SEED,
DEMO_TUNER (pool, lm, tpe, random or off; default pool), DEMO_TUNER_INTERVAL (seconds, default 60),
DEMO_SCENARIO (static, the default: users' later ratings are what they like; or moving: the
catalogue and the users move over the run, see demo.simulation.MovingWorld).
"""

from __future__ import annotations

import csv
import os
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType

import grpc
from google.protobuf import field_mask_pb2
from rich.console import Console
from rich.live import Live
from rich.table import Table

from demo import report
from demo.simulation import ClickModel, MovingWorld, SimulatedUsers
from demo.suite import START_ORDER, LocalSuite, port_or_free
from demo.traffic import MovingTraffic, Tally, Traffic
from rectune.datasets import MOVIELENS_100K, load_movielens_atomic
from rectune.domain.events import Interaction, Item
from rectune.v1 import (
    common_pb2,
    metrics_pb2,
    metrics_pb2_grpc,
    policy_pb2,
    policy_pb2_grpc,
    scoring_pb2,
    scoring_pb2_grpc,
)

DATA = MOVIELENS_100K
CHAMPION = common_pb2.Configuration(strategy="popularity")
CHALLENGERS = [("item-knn", "item_knn"), ("als", "als"), ("hybrid", "hybrid"), ("two-tower", "two_tower")]
# Room for the bandit to move traffic: each challenger may take up to 60%, the champion
# keeps at least 10%.
CHALLENGER_CAP = 0.6
CHAMPION_MIN_SHARE = 0.1
SCENARIOS = ("static", "moving")
TUNER_LIMITS = [
    "--max-live-arms=2",
    "--max-new-arms-per-cycle=1",
    "--exposure-cap=0.2",
    "--min-impressions=300",
]


def write_training_files(folder: Path, items: list[Item], train: list[Interaction]) -> tuple[Path, Path]:
    """What ScoringService may see: every item, and only the earlier part of each user's ratings."""
    folder.mkdir(parents=True, exist_ok=True)
    items_path, interactions_path = folder / "items.csv", folder / "train.csv"
    with items_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["item_id", "text"])
        writer.writerows((item.item_id, item.text) for item in items)
    with interactions_path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["user_id", "item_id", "rating", "timestamp"])
        writer.writerows((i.user_id, i.item_id, i.value, int(i.time)) for i in train)
    return items_path, interactions_path


def register_arms(policy: policy_pb2_grpc.PolicyServiceStub) -> None:
    policy.UpdatePolicySettings(
        policy_pb2.UpdatePolicySettingsRequest(
            settings=policy_pb2.PolicySettings(champion_min_share=CHAMPION_MIN_SHARE),
            update_mask=field_mask_pb2.FieldMask(paths=["champion_min_share"]),
        ),
        timeout=30,
    )
    policy.PutArm(
        policy_pb2.PutArmRequest(
            arm_id="champion",
            configuration=CHAMPION,
            origin=policy_pb2.ARM_ORIGIN_CONTROL,
            initial_state=policy_pb2.ARM_STATE_CHAMPION,
            reason="the control",
        ),
        timeout=600,
    )
    for arm_id, strategy in CHALLENGERS:
        policy.PutArm(
            policy_pb2.PutArmRequest(
                arm_id=arm_id,
                configuration=common_pb2.Configuration(strategy=strategy),
                origin=policy_pb2.ARM_ORIGIN_MANUAL,
                exposure_cap=CHALLENGER_CAP,
                reason="hand-written challenger",
            ),
            timeout=600,
        )


def start_tuner(suite: LocalSuite, proposer: str, interval: float, seed: int) -> None:
    """The tuner over the whole space in its default ranges (no search-space file): two_tower
    and content included, affordable through multi-fidelity screens."""
    flags = [f"--proposer={proposer}", f"--interval-seconds={interval}", f"--seed={seed}"]
    suite.start_tuner([*flags, *TUNER_LIMITS])


def model_freshness(scoring: scoring_pb2_grpc.ScoringServiceStub) -> dict[str, str]:
    """Configuration hash -> how fresh its model is, e.g. "42s +120 3r": its age, the
    interactions since its fit, its background refits (when any)."""
    try:
        models = scoring.ListModels(scoring_pb2.ListModelsRequest(), timeout=5).models
    except grpc.RpcError:
        return {}
    return {
        m.configuration_hash: f"{m.age.ToTimedelta().total_seconds():.0f}s +{m.interactions_since_fit}"
        + (f" {m.refits}r" if m.refits else "")
        for m in models
    }


def live_table(
    metrics: metrics_pb2_grpc.MetricsServiceStub,
    policy: policy_pb2_grpc.PolicyServiceStub,
    scoring: scoring_pb2_grpc.ScoringServiceStub,
    tally: Tally,
) -> Table:
    table = Table(
        title=f"rectune demo: {tally.requests} requests, {tally.clicks} clicks "
        f"(champion alone: {tally.counterfactual_clicks})"
    )
    for column in (
        "arm",
        "origin",
        "state",
        "share",
        "impressions",
        "CTR [95%]",
        "P(best)",
        "model",
    ):
        table.add_column(column)
    try:
        stats = metrics.GetArmStats(metrics_pb2.GetArmStatsRequest(posterior_samples=2000), timeout=5).stats
        arms = {a.arm_id: a for a in policy.ListArms(policy_pb2.ListArmsRequest(), timeout=5).arms}
    except grpc.RpcError as exc:
        table.caption = f"waiting for the services: {exc.code().name}"
        return table
    total = sum(s.impressions for s in stats) or 1
    freshness = model_freshness(scoring)
    for s in stats:
        table.add_row(
            s.arm_id,
            report.origin_name(arms, s.arm_id),
            report.state_name(arms, s.arm_id),
            f"{s.impressions / total:.1%}",
            str(s.impressions),
            f"{s.ctr:.3f} [{s.ctr_interval.lower:.3f}, {s.ctr_interval.upper:.3f}]",
            f"{s.probability_best:.2f}",
            freshness.get(arms[s.arm_id].configuration_hash, "") if s.arm_id in arms else "",
        )
    return table


class CtrlC:
    """Remembers a Ctrl-C even where a library call swallowed its KeyboardInterrupt (a blocking
    gRPC call can), and raises it as the default handler does."""

    def __init__(self) -> None:
        self.seen = False

    def handle(self, signum: int, frame: FrameType | None) -> None:
        self.seen = True
        raise KeyboardInterrupt

    def meanwhile(self, seconds: float = 1.0) -> bool:
        """Whether a Ctrl-C came, or arrives within ``seconds`` (its KeyboardInterrupt caught here)."""
        try:
            time.sleep(0 if self.seen else seconds)
        except KeyboardInterrupt:
            return True
        return self.seen


def main() -> int:
    minutes = float(os.environ.get("DEMO_MINUTES", "10"))
    rate = float(os.environ.get("DEMO_RATE", "20"))
    seed = int(os.environ.get("DEMO_SEED", "7"))
    tuner = os.environ.get("DEMO_TUNER", "sources")
    tuner_interval = float(os.environ.get("DEMO_TUNER_INTERVAL", "60"))
    console = Console()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = Path(".run") / "demo" / stamp
    scenario = os.environ.get("DEMO_SCENARIO", "static")
    if scenario not in SCENARIOS:
        console.print(f"[red]DEMO_SCENARIO: must be one of {', '.join(SCENARIOS)}, got {scenario!r}")
        return 2
    items, interactions = load_movielens_atomic(DATA)
    users = SimulatedUsers.split(interactions)
    world = MovingWorld.of(interactions, {item.item_id: item.text for item in items})
    if scenario == "moving":  # ScoringService starts with the first half of the timeline
        known = [item for item in items if item.item_id in world.initial_items]
        items_csv, train_csv = write_training_files(run_dir, known, world.initial)
    else:
        items_csv, train_csv = write_training_files(run_dir, items, users.train)
    suite = LocalSuite(run_dir, {"scoring": ["--items-csv", str(items_csv), "--interactions-csv", str(train_csv)]})
    ctrl_c = CtrlC()
    signal.signal(signal.SIGINT, ctrl_c.handle)
    stop = threading.Event()
    with suite:
        try:
            console.print(f"starting the services (logs in {run_dir}) ...")
            status = suite.start()
            if any(state != "SERVING" for state in status.values()):
                if ctrl_c.meanwhile():  # the services stopped because Ctrl-C reached them
                    console.print("interrupted: stopping the services ...")
                    return 130
                console.print(f"[red]services did not become healthy: {status}")
                return 1
            channels = {name: grpc.insecure_channel(suite.address(name)) for name in START_ORDER}
            policy = policy_pb2_grpc.PolicyServiceStub(channels["policy"])
            metrics = metrics_pb2_grpc.MetricsServiceStub(channels["metrics"])
            scoring = scoring_pb2_grpc.ScoringServiceStub(channels["scoring"])
            console.print("registering the champion (popularity) and four challengers (fitting them) ...")
            register_arms(policy)
            url = suite.start_dashboard(port_or_free(int(os.environ.get("DEMO_DASHBOARD_PORT", "8050"))))
            console.print(f"dashboard: {url} (open it in a browser while the demo runs)")
            if tuner != "off":
                console.print(f"starting the tuner ({tuner} proposer, a cycle every {tuner_interval:g} s) ...")
                start_tuner(suite, tuner, tuner_interval, seed)
            arguments = (policy, scoring, users, CHAMPION, ClickModel(), seed, rate)
            if scenario == "moving":
                steps = world.releases(max(1, int(minutes * 60 * rate)))
                traffic: Traffic = MovingTraffic(world, steps, *arguments)
            else:
                traffic = Traffic(*arguments)
            worker = threading.Thread(target=traffic.run, args=(minutes * 60, stop), name="traffic")
            worker.start()
            with Live(
                live_table(metrics, policy, scoring, traffic.tally), console=console, refresh_per_second=2
            ) as live:
                while worker.is_alive():
                    worker.join(1.0)
                    live.update(live_table(metrics, policy, scoring, traffic.tally))
            models = scoring.ListModels(scoring_pb2.ListModelsRequest(), timeout=30).models
            folder = Path("reports") / f"demo-{stamp}"
            # Imported here: the tuner's modules (optuna among them) load only for the report.
            from tuner.audit import AuditLog

            audit = AuditLog.open(suite.audit_url()) if tuner != "off" else None
            path = report.write(folder, metrics, policy, traffic.tally, minutes, models, scenario, audit)
            console.print(f"report: {path}")
        except KeyboardInterrupt:
            stop.set()
            console.print("interrupted: stopping the services ...")
            return 130
        except grpc.RpcError:
            # Ctrl-C reaches the services too (one process group): a call to one that already
            # stopped can fail before this process's own KeyboardInterrupt is raised.
            if not ctrl_c.meanwhile():
                raise
            stop.set()
            console.print("interrupted: stopping the services ...")
            return 130
        finally:
            stop.set()
    console.print("all services stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
