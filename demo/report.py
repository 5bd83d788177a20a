"""The demo's report: numbers recomputed from MetricsService, plots, and a summary in Markdown."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt

from demo.traffic import Tally

if TYPE_CHECKING:  # the tuner's modules load only when a report is written
    from tuner.audit import AuditEntry, AuditLog
from rectune.v1 import metrics_pb2, metrics_pb2_grpc, policy_pb2, policy_pb2_grpc, scoring_pb2

BUCKET_SECONDS = 10


def fetch(metrics: metrics_pb2_grpc.MetricsServiceStub) -> tuple[list[Any], list[Any]]:
    stats = metrics.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=30).stats
    request = metrics_pb2.GetTimeSeriesRequest()
    request.bucket.FromSeconds(BUCKET_SECONDS)
    series = metrics.GetTimeSeries(request, timeout=30).series
    return list(stats), list(series)


def plot_ctr(series: list[Any], origin: float, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4))
    for arm in series:
        axes.plot([b.start.seconds - origin for b in arm.buckets], [b.ctr for b in arm.buckets], label=arm.arm_id)
    axes.set(title=f"CTR per arm ({BUCKET_SECONDS} s buckets)", xlabel="seconds", ylabel="clicks / impressions")
    axes.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_share(series: list[Any], origin: float, path: Path) -> None:
    starts = sorted({b.start.seconds for arm in series for b in arm.buckets})
    totals = {s: sum(b.impressions for arm in series for b in arm.buckets if b.start.seconds == s) for s in starts}
    figure, axes = plt.subplots(figsize=(8, 4))
    for arm in series:
        by_start = {b.start.seconds: b.impressions for b in arm.buckets}
        shares = [by_start.get(s, 0) / totals[s] if totals[s] else 0 for s in starts]
        axes.plot([s - origin for s in starts], shares, label=arm.arm_id)
    axes.set(title="Traffic share per arm", xlabel="seconds", ylabel="share of impressions", ylim=(0, 1))
    axes.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def plot_cumulative(tally: Tally, origin: float, path: Path) -> None:
    figure, axes = plt.subplots(figsize=(8, 4))
    times = [t - origin for t, _, _ in tally.timeline]
    axes.plot(times, [c for _, c, _ in tally.timeline], label="bandit (served)")
    axes.plot(times, [c for _, _, c in tally.timeline], label="champion alone (counterfactual)")
    axes.set(title="Cumulative clicks", xlabel="seconds", ylabel="clicks")
    axes.legend()
    figure.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(figure)


def state_name(arms: dict[str, Any], arm_id: str) -> str:
    if arm_id not in arms:
        return "?"
    return str(policy_pb2.ArmState.Name(arms[arm_id].state)).removeprefix("ARM_STATE_")


def origin_name(arms: dict[str, Any], arm_id: str) -> str:
    if arm_id not in arms:
        return "?"
    return str(policy_pb2.ArmOrigin.Name(arms[arm_id].origin)).removeprefix("ARM_ORIGIN_").lower().replace("_", "-")


def tuner_arms_section(arms: dict[str, Any]) -> str:
    """The arms the tuner registered, with their configuration and why they stand where they do."""
    tuned = [a for a in arms.values() if origin_name(arms, a.arm_id).startswith("tuner")]
    if not tuned:
        return "The tuner registered no arm in this run."
    rows = "\n".join(
        f"| {a.arm_id} | {origin_name(arms, a.arm_id)} | {state_name(arms, a.arm_id)} | {a.configuration.strategy} "
        f"| {', '.join(f'{k}={_param(v)}' for k, v in sorted(a.configuration.params.items()))} "
        f"| {a.state_reason.replace('|', '/')} |"
        for a in sorted(tuned, key=lambda a: a.created_at.seconds)
    )
    return f"""| arm | origin | state | strategy | parameters | reason (latest) |
|---|---|---|---|---|---|
{rows}"""


def tuner_screens_section(audit: AuditLog | None) -> str:
    """What the tuner screened, by strategy: proposals, how many were pruned at a low
    fidelity, and the best offline NDCG@10 fitted in full (from its audit table)."""
    if audit is None:
        return "The tuner did not run."
    entries = [e for e in audit.recent(limit=10_000) if e.configuration and e.ndcg is not None]
    if not entries:
        return "The tuner screened nothing in this run."
    by_strategy: dict[str, list[AuditEntry]] = {}
    for entry in entries:
        by_strategy.setdefault(json.loads(entry.configuration)["strategy"], []).append(entry)
    rows = []
    for strategy, screened in sorted(by_strategy.items()):
        complete = [e.ndcg for e in screened if e.budget >= 1.0 and e.ndcg is not None]
        best = f"{max(complete):.4f}" if complete else "-"
        rows.append(f"| {strategy} | {len(screened)} | {len(screened) - len(complete)} | {best} |")
    header = "| strategy | screened | pruned at low fidelity | best offline NDCG@10 in full |\n|---|---|---|---|"
    return header + "\n" + "\n".join(rows)


def tuner_against_hand_written(stats: Sequence[Any], arms: dict[str, Any]) -> str:
    """The tuner's best arm by live CTR next to the best hand-written challenger's."""
    tuned = [s for s in stats if origin_name(arms, s.arm_id).startswith("tuner")]
    manual = [s for s in stats if origin_name(arms, s.arm_id) == "manual"]
    if not tuned or not manual:
        return "No tuner arm and hand-written arm both served traffic in this run."
    best_tuned, best_manual = max(tuned, key=lambda s: s.ctr), max(manual, key=lambda s: s.ctr)
    return "| | arm | impressions | CTR [95% Wilson] | P(best) |\n|---|---|---|---|---|\n" + "\n".join(
        f"| {label} | {s.arm_id} | {s.impressions} | {s.ctr:.4f} [{s.ctr_interval.lower:.4f}, "
        f"{s.ctr_interval.upper:.4f}] | {s.probability_best:.3f} |"
        for label, s in (("the tuner's best", best_tuned), ("best hand-written", best_manual))
    )


def _param(value: Any) -> str:
    kind = value.WhichOneof("kind")
    raw = getattr(value, kind) if kind else ""
    return f"{raw:.4g}" if isinstance(raw, float) else str(raw)


def wait_until_counted(metrics: metrics_pb2_grpc.MetricsServiceStub, tally: Tally, timeout: float = 60.0) -> None:
    """The policy forwards events through its outbox: wait until MetricsService has them all."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = metrics.GetArmStats(metrics_pb2.GetArmStatsRequest(), timeout=30).stats
        if (sum(s.impressions for s in stats), sum(s.clicks for s in stats)) == (tally.requests, tally.clicks):
            return
        time.sleep(0.5)


def freshness_section(arms: dict[str, policy_pb2.Arm], models: Sequence[scoring_pb2.ModelFreshness]) -> str:
    """Each arm's model: its age, the interactions it was fitted on and those since, refits."""
    by_hash = {model.configuration_hash: model for model in models}
    rows = []
    for arm_id, arm in sorted(arms.items()):
        model = by_hash.get(arm.configuration_hash)
        if model is None:
            continue
        age = model.age.ToTimedelta().total_seconds()
        rows.append(
            f"| {arm_id} | {model.strategy} | {age:.0f} s | {model.interactions_at_fit} "
            f"| {model.interactions_since_fit} | {model.refits} | {model.refit_failures} |"
        )
    if not rows:
        return "ScoringService listed no fitted model for the arms."
    header = (
        "| arm | strategy | model age | fitted on | new since | refits | failed refits |\n|---|---|---|---|---|---|---|"
    )
    return header + "\n" + "\n".join(rows)


def write(
    folder: Path,
    metrics: metrics_pb2_grpc.MetricsServiceStub,
    policy: policy_pb2_grpc.PolicyServiceStub,
    tally: Tally,
    minutes: float,
    models: Sequence[scoring_pb2.ModelFreshness] = (),
    scenario: str = "static",
    audit: AuditLog | None = None,
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    wait_until_counted(metrics, tally)
    stats, series = fetch(metrics)
    arms = {a.arm_id: a for a in policy.ListArms(policy_pb2.ListArmsRequest(), timeout=30).arms}
    origin = tally.timeline[0][0] if tally.timeline else 0.0
    plot_ctr(series, origin, folder / "ctr.png")
    plot_share(series, origin, folder / "share.png")
    plot_cumulative(tally, origin, folder / "cumulative.png")
    impressions = sum(s.impressions for s in stats)
    served_clicks = sum(s.clicks for s in stats)
    baseline = tally.counterfactual_clicks
    lift = (served_clicks - baseline) / baseline if baseline else 0.0
    rows = "\n".join(
        f"| {s.arm_id} | {origin_name(arms, s.arm_id)} | {state_name(arms, s.arm_id)} "
        f"| {s.impressions} | {s.impressions / impressions:.1%} | {s.clicks} | {s.ctr:.4f} "
        f"[{s.ctr_interval.lower:.4f}, {s.ctr_interval.upper:.4f}] | {s.probability_best:.3f} |"
        for s in stats
    )
    agree = "agree" if (impressions, served_clicks) == (tally.requests, tally.clicks) else "DISAGREE"
    text = f"""# rectune demo report

{minutes:g} minutes of simulated traffic on MovieLens 100K ({scenario} world): {tally.requests} requests
({tally.degraded} degraded), arms competing under Thompson sampling.

## Arms (from MetricsService)

| arm | origin | state | impressions | share | clicks | CTR [95% Wilson] | P(best) |
|---|---|---|---|---|---|---|---|
{rows}

## How fresh each arm's model was at the end (ScoringService)

{freshness_section(arms, models)}

## Arms the tuner added

{tuner_arms_section(arms)}

### What the tuner screened (its audit table)

{tuner_screens_section(audit)}

### The tuner's best arm against the hand-written ones (live traffic)

{tuner_against_hand_written(stats, arms)}

## The bandit against serving the champion alone

Every request was also answered by the champion's configuration directly (ScoringService)
and scored with the same random draws: that is what serving the champion alone would
have earned from the same simulated users.

| | clicks |
|---|---|
| bandit (MetricsService) | {served_clicks} |
| champion alone (counterfactual, simulator) | {tally.counterfactual_clicks} |
| difference | {served_clicks - tally.counterfactual_clicks:+d} ({lift:+.1%}) |

MetricsService counted {impressions} impressions and {served_clicks} clicks; the simulator
counted {tally.requests} requests and {tally.clicks} clicks: they {agree}.

![CTR per arm](ctr.png)

![Traffic share per arm](share.png)

![Cumulative clicks](cumulative.png)
"""
    report = folder / "report.md"
    report.write_text(text)
    return report
