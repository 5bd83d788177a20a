"""The tuner's command line against real ScoringService, MetricsService and PolicyService
servers on loopback (MovieLens 100K), with its audit table in a real SQLite file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest

from rectune.v1 import common_pb2, metrics_pb2, policy_pb2
from services.common.clients import ClientOptions
from services.common.prototime import timestamp
from services.common.wait_healthy import wait_serving
from tests.conftest import MOVIELENS, ROOT
from tests.integration.test_policy_service import arms_by_id, put
from tuner.__main__ import main
from tuner.clients import GrpcBackend
from tuner.controller import Controller, TunerLimits
from tuner.proposers import RandomProposer

pytestmark = pytest.mark.integration

# Strategies that need no EmbeddingService (none runs here), with a narrowed ALS range.
SEARCH_SPACE = {
    "strategies": {
        "item_knn": {"neighbours": {"low": 20, "high": 60}},
        "als": {"factors": {"low": 8, "high": 16}, "iterations": {"low": 2, "high": 4}},
    }
}


@pytest.fixture
def tuner(start_service, tmp_path, capsys):
    """Runs ``tuner <command>`` in-process against the services; returns (exit code, stdout, stderr)."""
    scoring = start_service("scoring", dataset=str(MOVIELENS))
    metrics = start_service("metrics")
    policy = start_service("policy", scoring_address=scoring.address, metrics_address=metrics.address)
    put(policy.stub, "champion", "popularity", state=policy_pb2.ARM_STATE_CHAMPION)
    space_file = tmp_path / "space.json"
    space_file.write_text(json.dumps(SEARCH_SPACE))
    common = [
        f"--policy-address={policy.address}",
        f"--scoring-address={scoring.address}",
        f"--metrics-address={metrics.address}",
        f"--database-url=sqlite:///{tmp_path / 'tuner.db'}",
        f"--search-space-file={space_file}",
        "--seed=5",
        "--proposer=random",  # tests of the controller; the language-model proposers' tests name theirs
        "--candidates-per-slot=1",  # one screen per slot; the multi-fidelity test asks for more
    ]

    def run(command: str, *flags: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([command, *common, *flags], configure_logs=False)  # later flags win
        captured = capsys.readouterr()
        # The test session's own log lines share stdout (the command logs to stderr).
        out = captured.out[captured.out.find("{\n") :] if "{\n" in captured.out else captured.out
        return code, out, captured.err

    return Harness(run, policy, metrics, common)


@dataclass
class Harness:
    run: Callable[..., tuple[int, str, str]]  # run("propose", "--dry-run") -> (code, stdout, stderr)
    policy: Any
    metrics: Any
    flags: list[str]  # the addresses, audit database, search space and seed every command gets


def record_impressions(metrics, arm_id: str, impressions: int, clicks: int, seconds_ago: float = 0.0) -> None:
    kinds = [common_pb2.EVENT_KIND_IMPRESSION] * impressions + [common_pb2.EVENT_KIND_CLICK] * clicks
    when = timestamp(time.time() - seconds_ago)
    tag = f"{arm_id}-{seconds_ago:g}"
    events = [
        common_pb2.Event(event_id=f"{tag}-{n}", decision_id=f"d-{tag}-{n}", arm_id=arm_id, kind=kind, time=when)
        for n, kind in enumerate(kinds)
    ]
    metrics.stub.RecordEvents(metrics_pb2.RecordEventsRequest(events=events), timeout=30)


def test_dry_run_plans_screened_arms_and_changes_nothing(tuner) -> None:
    run, policy = tuner.run, tuner.policy
    code, out, _ = run("propose", "--dry-run", "--screen-min-ndcg-ratio=0")
    assert code == 0
    plan = json.loads(out)
    assert plan["dry_run"] is True
    registers = [a for a in plan["actions"] if a["kind"] == "register"]
    assert len(registers) == 2  # max_new_arms_per_cycle
    for action in registers:
        configuration = action["configuration"]
        assert configuration["strategy"] in SEARCH_SPACE["strategies"]
        if configuration["strategy"] == "als":
            assert 8 <= configuration["params"]["factors"] <= 16
        else:
            assert 20 <= configuration["params"]["neighbours"] <= 60
        assert action["origin"] == "tuner-random" and action["exposure_cap"] == 0.2
        assert "offline NDCG@10" in action["reason"]
    assert plan["champion_screen"]["ndcg"] > 0
    assert list(arms_by_id(policy.stub)) == ["champion"]

    code, out, _ = run("status")
    assert code == 0
    assert "champion" in out and "planned" in out  # the audit table kept the dry run
    code, out, _ = run("status", "--json")
    assert code == 0
    status = json.loads(out)
    assert [(arm["arm_id"], arm["state"], arm["configuration"]["strategy"]) for arm in status["arms"]] == [
        ("champion", "champion", "popularity")
    ]
    # No traffic yet; the only arm is the best one for sure.
    assert status["arms"][0]["stats"] == {"impressions": 0, "ctr": 0.0, "probability_best": 1.0}
    planned = [entry for entry in status["audit"] if entry["kind"] == "register"]
    assert len(planned) == 2 and all(entry["dry_run"] and entry["outcome"] == "planned" for entry in planned)
    assert {entry["configuration"]["strategy"] for entry in planned} <= set(SEARCH_SPACE["strategies"])


def test_propose_registers_arms_and_a_losing_arm_is_retired_later(tuner) -> None:
    run, policy, metrics = tuner.run, tuner.policy, tuner.metrics
    code, out, _ = run("propose", "--screen-min-ndcg-ratio=0", "--max-new-arms-per-cycle=1")
    assert code == 0
    outcome = json.loads(out)["outcomes"]
    assert [o["outcome"] for o in outcome] == ["applied"]
    arm_id = outcome[0]["arm_id"]
    arm = arms_by_id(policy.stub)[arm_id]
    assert arm.origin == policy_pb2.ARM_ORIGIN_TUNER_RANDOM
    assert arm.state == policy_pb2.ARM_STATE_ACTIVE and arm.exposure_cap == pytest.approx(0.2)
    assert "offline NDCG@10" in arm.state_reason

    record_impressions(metrics, "champion", 300, 60)
    record_impressions(metrics, arm_id, 300, 0)
    code, out, _ = run("propose", "--screen-min-ndcg-ratio=0", "--max-new-arms-per-cycle=1", "--min-impressions=200")
    assert code == 0
    actions = {o["kind"]: o for o in json.loads(out)["outcomes"]}
    assert actions["retire"]["arm_id"] == arm_id and actions["retire"]["outcome"] == "applied"
    assert "register" in actions  # the freed slot is filled in the same cycle
    arms = arms_by_id(policy.stub)
    assert arms[arm_id].state == policy_pb2.ARM_STATE_RETIRED
    assert arms[arm_id].state_reason.startswith("P(best) 0.000 < 0.02 over its 300 impressions since it went live")


def test_an_arm_is_judged_against_its_rivals_traffic_since_it_went_live(tuner) -> None:
    # The champion did well an hour ago and as well as the new arm since: over all time the
    # arm would look like a loser, over the time they shared it does not.
    run, policy, metrics = tuner.run, tuner.policy, tuner.metrics
    record_impressions(metrics, "champion", 300, 120, seconds_ago=3600)
    code, out, _ = run("propose", "--screen-min-ndcg-ratio=0", "--max-new-arms-per-cycle=1")
    assert code == 0
    arm_id = json.loads(out)["outcomes"][0]["arm_id"]
    record_impressions(metrics, "champion", 300, 30)
    record_impressions(metrics, arm_id, 300, 30)
    code, out, _ = run("propose", "--screen-min-ndcg-ratio=0", "--max-new-arms-per-cycle=1", "--min-impressions=200")
    assert code == 0
    assert [o["kind"] for o in json.loads(out)["outcomes"]] == ["register"]  # a free slot, no retirement
    assert arms_by_id(policy.stub)[arm_id].state == policy_pb2.ARM_STATE_ACTIVE


def test_a_proposal_below_the_offline_bar_is_rejected_with_the_numbers(tuner) -> None:
    run, policy = tuner.run, tuner.policy
    code, out, _ = run("propose", "--screen-min-ndcg-ratio=10")
    assert code == 0
    plan = json.loads(out)
    assert plan["actions"] == [] and len(plan["rejected"]) == 2
    for rejected in plan["rejected"]:  # screened against the champion on the same users, paired
        assert " against 10 x champion's " in rejected["reason"]
        assert rejected["reason"].endswith(" of 1000 paired resamples of the holdout users (needs 90%)")
    assert list(arms_by_id(policy.stub)) == ["champion"]


def test_several_candidates_per_slot_are_screened_at_rising_fidelity_and_the_best_fill_the_slots(tuner) -> None:
    flags = ("--candidates-per-slot=3", "--screen-min-ndcg-ratio=0", "--max-new-arms-per-cycle=1")
    code, out, _ = tuner.run("propose", "--dry-run", *flags)
    assert code == 0
    plan = json.loads(out)
    (action,) = [a for a in plan["actions"] if a["kind"] == "register"]
    assert len(plan["rejected"]) == 2
    for rejected in plan["rejected"]:
        stages = rejected["stages"]
        budgets = [stage["fidelity"]["training_budget"] for stage in stages]
        if rejected["configuration"]["strategy"] == "item_knn":  # no budget axis: one full screen
            assert budgets == [1.0]
        else:  # als: 2-4 sweeps, the first rung a ninth of them (one sweep)
            assert budgets[0] == 1 / rejected["configuration"]["params"]["iterations"]
        if budgets[-1] < 1.0:
            assert "pruned (below the top of its rung)" in rejected["reason"]
        else:
            assert "passed, but 1 better proposals of this cycle took the free slots" in rejected["reason"]
    code, out, _ = tuner.run("status", "--json")
    entries = json.loads(out)["audit"]
    assert len(entries) == 3 and all(entry["stages"] for entry in entries)
    planned = [*plan["rejected"], action]
    assert sorted(e["stages"][-1]["ndcg"] for e in entries) == sorted(p["stages"][-1]["ndcg"] for p in planned)


def test_a_bad_search_space_file_is_refused_naming_the_field(tuner, tmp_path) -> None:
    run = tuner.run
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"strategies": {"als": {"factors": {"low": 1, "high": 16}}}}))
    code, _, err = run("propose", "--dry-run", f"--search-space-file={bad}")
    assert code == 2
    assert "strategies.als.factors: must satisfy 8 <= low <= high <= 512" in err


def test_run_loops_with_a_health_port_and_stops_on_sigterm(tuner, tmp_path, free_tcp_port) -> None:
    policy = tuner.policy
    command = [
        sys.executable,
        "-m",
        "tuner",
        "run",
        *tuner.flags,
        f"--database-url=sqlite:///{tmp_path / 'run.db'}",
        "--screen-min-ndcg-ratio=0",
        "--max-new-arms-per-cycle=1",
        "--interval-seconds=0.5",
        f"--health-port={free_tcp_port}",
        "--log-format=json",
    ]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        health_address = f"127.0.0.1:{free_tcp_port}"
        assert wait_serving([health_address], 60)[health_address] == "SERVING"
        deadline = time.monotonic() + 120
        while len(arms_by_id(policy.stub)) < 4 and time.monotonic() < deadline:  # 3 live tuner arms at most
            time.sleep(0.2)
        origins = sorted(a.origin for a in arms_by_id(policy.stub).values())
        assert origins == [policy_pb2.ARM_ORIGIN_CONTROL] + [policy_pb2.ARM_ORIGIN_TUNER_RANDOM] * 3
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0, stderr
    events = [json.loads(line)["event"] for line in stderr.splitlines()]
    assert events.count("cycle") >= 3 and events[-1] == "stopping"


def test_the_tpe_proposer_learns_from_the_screens_in_the_audit_table(tuner) -> None:
    code, out, _ = tuner.run("propose", "--dry-run", "--proposer=tpe", "--screen-min-ndcg-ratio=0")
    assert code == 0
    first = json.loads(out)["actions"]
    assert [a["origin"] for a in first] == ["tuner-tpe"] * 2
    assert all(a["reason"].startswith("TPE fitted to 0 screened configurations") for a in first)
    code, out, _ = tuner.run("propose", "--dry-run", "--proposer=tpe", "--screen-min-ndcg-ratio=0")
    assert code == 0
    reasons = [a["reason"] for a in json.loads(out)["actions"]]
    assert all(r.startswith("TPE fitted to 2 screened configurations, best NDCG 0.") for r in reasons)


def test_the_language_model_proposer_through_the_command_line(tuner, lm_cache_dir) -> None:
    flags = ["--proposer=lm", f"--lm-cache-dir={lm_cache_dir}", "--screen-min-ndcg-ratio=0"]
    code, out, _ = tuner.run("propose", *flags)
    assert code == 0
    outcomes = json.loads(out)["outcomes"]
    assert [o["outcome"] for o in outcomes] == ["applied", "applied"]
    for outcome in outcomes:
        arm = arms_by_id(tuner.policy.stub)[outcome["arm_id"]]
        assert arm.origin == policy_pb2.ARM_ORIGIN_TUNER_LM
        assert arm.configuration.strategy in SEARCH_SPACE["strategies"]
        assert arm.state_reason.startswith("SmolLM2-135M-Instruct wrote it among the values the space allows")
        assert "the model's words" not in arm.state_reason  # only kept when configured


def test_the_pool_proposer_audits_evidence_that_names_its_own_choice(tuner, lm_cache_dir) -> None:
    """Every rationale the audit table keeps names the proposal's own strategy, and its numbers
    are ones that exist: the best screened NDCG in the history TPE was fitted to."""
    flags = ["--proposer=pool", f"--lm-cache-dir={lm_cache_dir}", "--screen-min-ndcg-ratio=0"]
    assert tuner.run("propose", *flags)[0] == 0
    assert tuner.run("propose", *flags)[0] == 0
    audit = json.loads(tuner.run("status", "--json")[1])["audit"]
    screened = [entry["ndcg"] for entry in audit if entry["ndcg"] is not None]
    registered = [entry for entry in audit if entry["kind"] == "register"]
    assert len(registered) == 3  # two in the first cycle, then the one free slot of --max-live-arms 3
    for entry in registered:
        strategy = entry["configuration"]["strategy"]
        assert (
            f"SmolLM2-135M-Instruct chose {strategy}(" in entry["rationale"] or "TPE's own pick" in entry["rationale"]
        )
        assert entry["origin"] == "tuner-lm"
    second_cycle = [e for e in registered if "TPE fitted to 0 " not in e["rationale"]]
    assert second_cycle, "the second cycle's TPE was fitted to the first cycle's screens"
    for entry in second_cycle:
        best = entry["rationale"].split("best NDCG ")[1][:6]
        assert any(f"{ndcg:.4f}" == best for ndcg in screened)


def test_a_language_model_that_cannot_be_loaded_is_a_clear_error(tuner, tmp_path) -> None:
    code, _, err = tuner.run("propose", "--dry-run", "--proposer=lm", f"--lm-model={tmp_path / 'no-such-model'}")
    assert code == 1
    assert f"cannot load language model '{tmp_path / 'no-such-model'}'" in err


def test_flags_of_another_command_and_an_unreachable_audit_database_are_refused(tuner) -> None:
    code, _, err = tuner.run("status", "--dry-run")
    assert (code, err.strip()) == (2, "tuner: --dry-run applies to `tuner propose` only")
    code, _, err = tuner.run("propose", "--json")
    assert (code, err.strip()) == (2, "tuner: --json applies to `tuner status` only")
    unreachable = "--database-url=postgresql+psycopg://tuner:secret@127.0.0.1:9/audit"
    code, _, err = tuner.run("propose", "--dry-run", unreachable)
    assert code == 1
    assert "tuner: audit database postgresql+psycopg://tuner:***@127.0.0.1:9/audit: OperationalError" in err
    assert "secret" not in err


def test_the_briefing_gives_the_data_shape_and_the_serving_arms_click_rates(tuner) -> None:
    record_impressions(tuner.metrics, "champion", impressions=40, clicks=3)
    addresses = {flag.split("=", 1)[0]: flag.split("=", 1)[1] for flag in tuner.flags if "-address=" in flag}
    backend = GrpcBackend(
        addresses["--policy-address"], addresses["--scoring-address"], addresses["--metrics-address"], ClientOptions()
    )
    try:
        _space, shape = backend.describe()
        briefing = Controller(backend, RandomProposer(1), TunerLimits()).briefing(backend.arms(), shape)
    finally:
        backend.close()
    # MovieLens 100K as ScoringService holds it: every user has at least 20 ratings.
    assert briefing.data.startswith("943 users, 1682 items, 100000 interactions (density 0.063); ")
    assert briefing.live_arms == ("champion (champion): popularity, click rate 0.0750 over 40 impressions",)
