"""The monitoring component, validated offline: the alerting rules and every query of the
Grafana dashboard pass `promtool check rules` (Debian's prometheus package, which `make test`
installs), the rules carry what an on-call needs, and the prod overlay renders them for the
Prometheus Operator. That the metrics they name exist is checked against running services in
tests/integration/test_monitoring_names.py."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.unit.test_deploy import ROOT, of_kind, render

MONITORING = ROOT / "deploy/k8s/components/monitoring"
# What the issue asks alerts for: a guardrail pause, INTERNAL errors, an old outbox backlog, a
# stalled tuner, an embedding queue near full.
REQUIRED_ALERTS = {
    "RectuneArmPausedByGuardrail",
    "RectuneInternalErrors",
    "RectuneOutboxBacklogOld",
    "RectuneTunerStalled",
    "RectuneEmbeddingQueueNearFull",
}
METRIC_NAME = re.compile(r"\brectune_[a-z0-9_]+\b")


def rule_groups() -> list[dict[str, Any]]:
    document = yaml.safe_load((MONITORING / "prometheus-rule.yaml").read_text())
    assert document["kind"] == "PrometheusRule" and document["apiVersion"] == "monitoring.coreos.com/v1"
    return list(document["spec"]["groups"])


def alerts() -> list[dict[str, Any]]:
    return [rule for group in rule_groups() for rule in group["rules"]]


def dashboard() -> dict[str, Any]:
    return dict(json.loads((MONITORING / "rectune-dashboard.json").read_text()))


def dashboard_queries() -> list[str]:
    return [target["expr"] for panel in dashboard()["panels"] for target in panel.get("targets", [])]


def alert_and_dashboard_metric_names() -> set[str]:
    """Every rectune metric the alerts and the dashboard's queries name."""
    texts = [rule["expr"] for rule in alerts()] + dashboard_queries()
    return {name for text in texts for name in METRIC_NAME.findall(text)}


def promtool_check(groups: list[dict[str, Any]], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    promtool = shutil.which("promtool")
    assert promtool, "promtool (Debian's prometheus package) is needed; `make test` installs it"
    rules = tmp_path / "rules.yaml"
    rules.write_text(yaml.safe_dump({"groups": groups}))
    return subprocess.run([promtool, "check", "rules", str(rules)], capture_output=True, text=True)


def test_the_alerting_rules_pass_promtool(tmp_path) -> None:
    checked = promtool_check(rule_groups(), tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alerts())} rules found" in checked.stdout


def test_promtool_refuses_a_broken_expression(tmp_path) -> None:
    """The check above can fail: a malformed query does not pass."""
    broken = [{"name": "broken", "rules": [{"alert": "Broken", "expr": "max by (arm_id (rectune_arm_ctr)"}]}]
    assert promtool_check(broken, tmp_path).returncode != 0


def test_every_alert_says_what_to_do_and_the_required_ones_exist() -> None:
    names = {rule["alert"] for rule in alerts()}
    assert names >= REQUIRED_ALERTS
    for rule in alerts():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]


def test_every_dashboard_query_passes_promtool(tmp_path) -> None:
    queries = dashboard_queries()
    assert len(queries) >= 15
    recording = [{"record": f"rectune:dashboard_query_{n}", "expr": expr} for n, expr in enumerate(queries)]
    checked = promtool_check([{"name": "dashboard", "rules": recording}], tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr


def test_the_dashboard_is_well_formed_for_grafana() -> None:
    board = dashboard()
    assert board["uid"] == "rectune" and board["templating"]["list"][0]["type"] == "datasource"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] != "row":
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
            assert all(target["datasource"] == panel["datasource"] for target in panel["targets"])


def test_the_dashboard_covers_the_production_signals() -> None:
    named = alert_and_dashboard_metric_names()
    for signal in (
        "rectune_policy_outbox_backlog",
        "rectune_policy_outbox_oldest_age_seconds",
        "rectune_policy_degraded_decisions_total",
        "rectune_embedding_queue_texts",
        "rectune_embedding_batch_size_texts_bucket",
        "rectune_scoring_model_age_seconds",
        "rectune_scoring_model_interactions_since_fit",
        "rectune_tuner_last_successful_cycle_timestamp_seconds",
        "rectune_arm_ctr",
    ):
        assert signal in named, signal


@pytest.mark.parametrize("kind", ["PrometheusRule", "PodMonitor"])
def test_prod_renders_the_operator_objects(kind: str) -> None:
    (rendered,) = of_kind(render("prod"), kind)
    assert rendered["metadata"]["namespace"] == "rectune"
    assert rendered["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_prod_ships_the_dashboard_to_grafanas_sidecar() -> None:
    (config_map,) = [
        c for c in of_kind(render("prod"), "ConfigMap") if c["metadata"]["name"] == "rectune-grafana-dashboard"
    ]
    assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert json.loads(config_map["data"]["rectune-dashboard.json"]) == dashboard()


def test_the_pod_monitor_scrapes_the_port_every_scraped_pod_serves() -> None:
    objects = render("prod")
    (monitor,) = of_kind(objects, "PodMonitor")
    port = monitor["spec"]["podMetricsEndpoints"][0]["port"]
    scraped = [
        d
        for d in of_kind(objects, "Deployment")
        if d["spec"]["template"]["metadata"].get("annotations", {}).get("prometheus.io/scrape") == "true"
    ]
    assert {d["metadata"]["name"] for d in scraped} == {
        "embedding",
        "scoring",
        "scoring-train",
        "policy",
        "metrics",
        "tuner",
    }
    for deployment in scraped:
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        annotations = deployment["spec"]["template"]["metadata"]["annotations"]
        assert ports[port] == int(annotations["prometheus.io/port"]), deployment["metadata"]["name"]
