"""The ``rectune`` command, run as the installed console script against real services.

The first test starts PolicyService, ScoringService and MetricsService on the ports that
`make up` uses (read from the Makefile) and runs the command with no address in its
environment: what a new operator types after `make up`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from rectune.v1 import policy_pb2
from tests.conftest import MOVIELENS, ROOT
from tests.heldout import movielens_popularity_reference

pytestmark = pytest.mark.integration

RECTUNE = str(Path(sys.executable).parent / "rectune")
SEARCH_SPACE = {"strategies": {"als": {"factors": {"low": 8, "high": 16}, "iterations": {"low": 2, "high": 3}}}}


def make_up_port(name: str) -> int:
    match = re.search(rf"^{name}_PORT \?= (\d+)$", (ROOT / "Makefile").read_text(), re.MULTILINE)
    assert match, f"{name}_PORT in the Makefile"
    return int(match.group(1))


def clean_environment(**extra: str) -> dict[str, str]:
    """This process's environment without any RECTUNE_* setting (no exported address)."""
    kept = {k: v for k, v in os.environ.items() if not k.startswith("RECTUNE_")}
    return {**kept, "COLUMNS": "200", **extra}


def rectune(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [RECTUNE, *args], cwd=cwd, env=clean_environment(**env), capture_output=True, text=True, timeout=300
    )


def states(policy) -> dict[str, int]:
    return {arm.arm_id: arm.state for arm in policy.stub.ListArms(policy_pb2.ListArmsRequest(), timeout=10).arms}


def on_make_up_port(start_service, name: str, **overrides: str):
    """The service on make up's fixed port. Those ports lie in Linux's ephemeral range
    (32768-60999), where another test's outgoing connection can hold one for a moment: a
    start that cannot listen is tried again for a while."""
    deadline = time.monotonic() + 30
    while True:
        try:
            return start_service(name, port=make_up_port(name.upper()), **overrides)
        except OSError as exc:
            if "cannot listen" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.fixture
def make_up_services(start_service):
    """The three services the command talks to, on make up's fixed ports."""
    scoring = on_make_up_port(start_service, "scoring", dataset=str(MOVIELENS))
    metrics = on_make_up_port(start_service, "metrics")
    return on_make_up_port(start_service, "policy", scoring_address=scoring.address, metrics_address=metrics.address)


def test_an_operator_drives_the_arms_and_the_tuner_without_exporting_an_address(make_up_services, tmp_path) -> None:
    policy = make_up_services
    space = tmp_path / "space.json"
    space.write_text(json.dumps(SEARCH_SPACE))
    tuner_flags = ("--proposer=random", "--seed=3", f"--search-space-file={space}", "--candidates-per-slot=1")

    empty = rectune(tmp_path, "arms", "list")
    assert empty.returncode == 0, empty.stderr
    assert "No arms yet" in empty.stdout and "rectune arms put control --champion" in empty.stdout

    plan = rectune(tmp_path, "tuner", "propose", "--dry-run", *tuner_flags)
    assert plan.returncode == 0, plan.stderr
    document = json.loads(plan.stdout)
    assert document["actions"] == [] and document["notes"][0].startswith("no champion:")

    put = rectune(tmp_path, "arms", "put", "control", "--champion", "--strategy", "popularity")
    assert put.returncode == 0, put.stderr
    assert "Registered control (popularity): the champion." in put.stdout
    put = rectune(tmp_path, "arms", "put", "als1", "--strategy", "als", "-p", "factors=16", "-p", "iterations=3")
    assert put.returncode == 0, put.stderr

    plan = rectune(tmp_path, "tuner", "propose", "--dry-run", *tuner_flags)
    assert plan.returncode == 0, plan.stderr
    document = json.loads(plan.stdout)
    assert document["dry_run"] is True
    # The champion's screen is popularity's NDCG@10 on the holdout, as computed independently.
    assert document["champion_screen"]["ndcg"] == pytest.approx(movielens_popularity_reference().ndcg, rel=1e-9)
    # The bar is the best serving arm offline: als1 scores above the champion. Two random ALS
    # draws (seed 3): one clears 0.8 x als1's NDCG and would be registered, the other (alpha 56,
    # regularisation 4e-4) does not and is listed with its reason.
    assert document["best_live_arm"]["arm_id"] == "als1"
    (action,) = document["actions"]
    assert (action["kind"], action["origin"], action["configuration"]["strategy"]) == (
        "register",
        "tuner-random",
        "als",
    )
    assert (
        "against 0.8 x the best live arm's (als1) 0.1714 (champion's 0.1007): clears it in 100% of 1000 paired "
        "resamples" in action["reason"]
    )
    (rejected,) = document["rejected"]
    assert rejected["configuration"]["strategy"] == "als" and "(needs 90%)" in rejected["reason"]
    assert document["notes"] == []
    assert set(states(policy)) == {"control", "als1"}  # a dry run changes nothing

    paused = rectune(tmp_path, "arms", "pause", "als1")
    assert paused.returncode == 0, paused.stderr
    assert "als1 paused: now paused" in paused.stdout
    assert states(policy)["als1"] == policy_pb2.ARM_STATE_PAUSED

    nothing = rectune(tmp_path, "arms", "rollback")
    assert nothing.returncode == 1
    assert "nothing to roll back" in nothing.stderr and "no promotion is recorded" in nothing.stderr

    for command in (("arms", "resume", "als1"), ("arms", "promote", "als1")):
        done = rectune(tmp_path, *command)
        assert done.returncode == 0, done.stderr
    assert states(policy) == {"control": policy_pb2.ARM_STATE_ACTIVE, "als1": policy_pb2.ARM_STATE_CHAMPION}
    rolled = rectune(tmp_path, "arms", "rollback")
    assert rolled.returncode == 0, rolled.stderr
    assert "control is the champion again; als1 is active" in rolled.stdout
    assert states(policy) == {"control": policy_pb2.ARM_STATE_CHAMPION, "als1": policy_pb2.ARM_STATE_ACTIVE}

    listed = rectune(tmp_path, "arms", "list", "--json")
    rows = {row["arm_id"]: row for row in json.loads(listed.stdout)}
    assert rows["control"]["state"] == "champion" and rows["control"]["state_reason"] == "rolled back from als1"
    assert rows["als1"]["freshness"]["interactions_at_fit"] > 0  # ScoringService's model, fitted at PutArm


def test_bad_input_gets_the_field_and_the_rule(make_up_services, tmp_path) -> None:
    rectune(tmp_path, "arms", "put", "control", "--champion", "--strategy", "popularity")
    refused = rectune(tmp_path, "arms", "put", "bad", "--strategy", "als", "-p", "factors=-3")
    assert refused.returncode == 1
    print("REFUSED", repr(refused.stderr))
    assert "INVALID_ARGUMENT: configuration.params['factors']: must be between" in refused.stderr
    unknown = rectune(tmp_path, "settings", "set", "no_such_setting=1")
    assert unknown.returncode == 2 and "unknown field 'no_such_setting'; known: algorithm" in unknown.stderr
    window = rectune(tmp_path, "stats", "--window", "soon")
    assert window.returncode == 2 and "--window: must be a positive span" in window.stderr
    changed = rectune(tmp_path, "settings", "set", "algorithm=ucb1", "guardrail.min_impressions=500")
    assert changed.returncode == 0, changed.stderr
    shown = json.loads(rectune(tmp_path, "settings", "show").stdout)
    assert shown["algorithm"] == "ucb1" and shown["guardrail"]["min_impressions"] == "500"


def test_changes_need_the_admin_token_when_the_policy_has_one(start_service, tmp_path) -> None:
    scoring = start_service("scoring", dataset=str(MOVIELENS))
    metrics = start_service("metrics")
    policy = start_service(
        "policy",
        scoring_address=scoring.address,
        metrics_address=metrics.address,
        auth_token="reader",
        admin_token="operator",
    )
    addresses = {
        "RECTUNE_POLICY_ADDRESS": policy.address,
        "RECTUNE_SCORING_ADDRESS": scoring.address,
        "RECTUNE_METRICS_ADDRESS": metrics.address,
    }
    refused = rectune(tmp_path, "arms", "put", "c", "--champion", "--strategy", "popularity", **addresses)
    assert (refused.returncode, refused.stderr) == (
        1,
        "rectune: PolicyService.PutArm: UNAUTHENTICATED: authorization: missing bearer token "
        "(metadata 'authorization: Bearer <token>')\n"
        "The services want a token: RECTUNE_CLIENT_TOKEN to read, the admin token to change.\n",
    )
    reader = rectune(
        tmp_path,
        "arms",
        "put",
        "c",
        "--champion",
        "--strategy",
        "popularity",
        RECTUNE_CLIENT_TOKEN="reader",
        **addresses,
    )
    assert (reader.returncode, reader.stderr) == (
        1,
        "rectune: PolicyService.PutArm: PERMISSION_DENIED: /rectune.v1.PolicyService/PutArm requires the admin token\n"
        "This call needs the admin token: --admin-token or RECTUNE_ADMIN_TOKEN.\n",
    )
    done = rectune(
        tmp_path, "--admin-token", "operator", "arms", "put", "c", "--champion", "--strategy", "popularity", **addresses
    )
    assert done.returncode == 0, done.stderr
    listed = rectune(tmp_path, "arms", "list", RECTUNE_CLIENT_TOKEN="reader", **addresses)
    assert listed.returncode == 0 and "champion" in listed.stdout
