"""The Kubernetes manifests: every overlay renders, validates offline, and matches the services.

Needs `kubectl` (with its built-in kustomize) on PATH, as on every machine of this
project; without it these tests fail and say so.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import shutil
import subprocess
import sys
import zipfile
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rectune.domain.space import SearchSpace
from services.scoring.core.strategies.content import SPACE as CONTENT_SPACE
from services.scoring.core.strategies.registry import default_registry
from services.scoring.core.strategies.two_tower import SPACE as TWO_TOWER_SPACE
from tuner.space import default_space, narrowed

ROOT = Path(__file__).resolve().parents[2]
OVERLAYS = sorted(p.name for p in (ROOT / "deploy/k8s/overlays").iterdir() if p.is_dir())
KUBERNETES_VERSION = "1.32.0"
SETTINGS = {
    "embedding": ("services.embedding.__main__", "EmbeddingSettings"),
    "scoring": ("services.scoring.__main__", "ScoringSettings"),
    "scoring-train": ("services.scoring.__main__", "ScoringSettings"),
    "policy": ("services.policy.__main__", "PolicyServerSettings"),
    "metrics": ("services.metrics.__main__", "MetricsSettings"),
    "tuner": ("tuner.settings", "TunerSettings"),
    "dashboard": ("operators.settings", "OperatorSettings"),
}
# The Deployments that serve RPCs (each with a Service); the tuner only calls out.
SERVICES = ("embedding", "scoring", "scoring-train", "policy", "metrics")


@cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl is needed to render the kustomize overlays and is not on PATH"
    result = subprocess.run(
        [kubectl, "kustomize", str(ROOT / "deploy/k8s/overlays" / overlay)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    return tuple(doc for doc in yaml.safe_load_all(result.stdout) if doc)


def of_kind(objects: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def settings_fields(service: str) -> list[dataclasses.Field[Any]]:
    module, name = SETTINGS[service]
    return list(dataclasses.fields(getattr(importlib.import_module(module), name)))


def container_env(objects: tuple[dict[str, Any], ...], container: dict[str, Any]) -> dict[str, str | None]:
    """Every variable a container gets: ``env`` (secret refs as None) plus its ConfigMaps."""
    config_maps = {c["metadata"]["name"]: c.get("data", {}) for c in of_kind(objects, "ConfigMap")}
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]])
    for variable in container.get("env", []):
        env[variable["name"]] = variable.get("value")
    return env


def test_there_are_dev_and_prod_overlays() -> None:
    assert {"dev", "prod"} <= set(OVERLAYS)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_object_validates_against_the_kubernetes_schemas(overlay: str) -> None:
    for manifest in render(overlay):
        # The Prometheus Operator's kinds have no schema here: tests/unit/test_monitoring.py checks them.
        if manifest["apiVersion"].startswith("monitoring.coreos.com/"):
            continue
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_each_service_has_its_objects(overlay: str) -> None:
    objects = render(overlay)
    assert {o["metadata"]["name"] for o in of_kind(objects, "Deployment")} == set(SETTINGS)
    for kind in ("ServiceAccount", "PodDisruptionBudget"):
        assert set(SETTINGS) <= {o["metadata"]["name"] for o in of_kind(objects, kind)}, kind
    services = {o["metadata"]["name"] for o in of_kind(objects, "Service")}
    assert set(SERVICES) <= services and "tuner" not in services
    assert {h["spec"]["scaleTargetRef"]["name"] for h in of_kind(objects, "HorizontalPodAutoscaler")} == {
        "policy",
        "scoring",
        "scoring-train",
    }


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_env_vars_are_exactly_settings_the_service_reads(overlay: str) -> None:
    objects = render(overlay)
    for deployment in of_kind(objects, "Deployment"):
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        service = container["args"][0]
        fields = settings_fields(service)
        read = {f.metadata["env"] for f in fields}
        required = {f.metadata["env"] for f in fields if f.metadata["required"]}
        env = container_env(objects, container)
        assert set(env) - read == set(), f"{service} is given variables it does not read"
        assert required - set(env) == set(), f"{service} lacks required variables"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_and_probes_match_the_service_settings(overlay: str) -> None:
    objects = render(overlay)
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for deployment in of_kind(objects, "Deployment"):
        if deployment["metadata"]["name"] not in SERVICES:
            continue
        template = deployment["spec"]["template"]
        (container,) = template["spec"]["containers"]
        env = container_env(objects, container)
        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports["grpc"] == int(env["PORT"] or 0)
        assert ports["grpc-health"] == int(env["RECTUNE_HEALTH_PORT"] or 0)
        assert ports["http-metrics"] == int(env["RECTUNE_PROMETHEUS_PORT"] or 0)
        assert template["metadata"]["annotations"]["prometheus.io/port"] == env["RECTUNE_PROMETHEUS_PORT"]
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"]["port"] == ports["grpc-health"], probe
        service = services[deployment["metadata"]["name"]]
        grpc_port = next(p for p in service["spec"]["ports"] if p["name"] == "grpc")
        assert (grpc_port["port"], grpc_port["targetPort"]) == (ports["grpc"], "grpc")


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_peer_addresses_name_headless_services_every_replica_of_which_clients_balance_over(overlay: str) -> None:
    objects = render(overlay)
    services = {s["metadata"]["name"]: s for s in of_kind(objects, "Service")}
    for deployment in of_kind(objects, "Deployment"):
        env = container_env(objects, deployment["spec"]["template"]["spec"]["containers"][0])
        for variable, value in env.items():
            if variable.endswith("_ADDRESS"):
                assert (value or "").startswith("dns:///"), variable  # every pod, not one connection's
                host, port = (value or "").removeprefix("dns:///").split(":")
                grpc_port = next(p["port"] for p in services[host]["spec"]["ports"] if p["name"] == "grpc")
                assert grpc_port == int(port), variable
                assert services[host]["spec"]["clusterIP"] == "None", f"{host} is not headless"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_scoring_serves_and_trains_in_two_deployments_of_one_image(overlay: str) -> None:
    objects = render(overlay)
    containers = {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]["containers"][0] for d in of_kind(objects, "Deployment")
    }
    roles = {
        name: container_env(objects, containers[name])["RECTUNE_SCORING_ROLE"] for name in ("scoring", "scoring-train")
    }
    assert roles == {"scoring": "serve", "scoring-train": "train"}
    assert containers["scoring"]["image"] == containers["scoring-train"]["image"]
    assert containers["scoring"]["args"] == containers["scoring-train"]["args"] == ["scoring"]
    policy = container_env(objects, containers["policy"])
    assert (policy["RECTUNE_SCORING_ADDRESS"], policy["RECTUNE_SCORING_TRAIN_ADDRESS"]) == (
        "dns:///scoring:50052",
        "dns:///scoring-train:50052",
    )
    assert container_env(objects, containers["tuner"])["RECTUNE_SCORING_ADDRESS"] == "dns:///scoring-train:50052"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_pods_are_hardened_and_bounded(overlay: str) -> None:
    for deployment in of_kind(render(overlay), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["automountServiceAccountToken"] is False
        assert pod["serviceAccountName"] == deployment["metadata"]["name"]
        (container,) = pod["containers"]
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert {"cpu", "memory"} <= set(container["resources"]["requests"])
        assert "memory" in container["resources"]["limits"]


def pod_spec(objects: tuple[dict[str, Any], ...], name: str) -> dict[str, Any]:
    (deployment,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == name]
    return dict(deployment["spec"]["template"]["spec"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_replicas_spread_over_nodes_and_zones_without_ever_waiting_for_them(overlay: str) -> None:
    objects = render(overlay)
    for name in SERVICES:
        constraints = pod_spec(objects, name)["topologySpreadConstraints"]
        keys = {c["topologyKey"] for c in constraints}
        assert keys == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}, name
        for constraint in constraints:
            assert constraint["labelSelector"]["matchLabels"] == {"app.kubernetes.io/name": name}
            assert constraint["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-node cluster still runs it
            assert constraint["matchLabelKeys"] == ["pod-template-hash"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_serving_and_training_replicas_prefer_different_nodes(overlay: str) -> None:
    objects = render(overlay)
    for name, other in (("scoring", "scoring-train"), ("scoring-train", "scoring")):
        (preference,) = pod_spec(objects, name)["affinity"]["podAntiAffinity"][
            "preferredDuringSchedulingIgnoredDuringExecution"
        ]
        term = preference["podAffinityTerm"]
        assert (term["topologyKey"], term["labelSelector"]["matchLabels"]) == (
            "kubernetes.io/hostname",
            {"app.kubernetes.io/name": other},
        )


def test_prod_gives_serving_and_training_whole_cores_of_their_own() -> None:
    """Guaranteed QoS with whole CPUs: the static CPU manager's condition for exclusive cores."""
    prod = render("prod")
    for name in ("scoring", "scoring-train"):
        (container,) = pod_spec(prod, name)["containers"]
        resources = container["resources"]
        assert resources["requests"] == resources["limits"], name
        assert str(resources["limits"]["cpu"]).isdigit(), name
    (trainer,) = pod_spec(prod, "scoring-train")["containers"]
    fit_threads = container_env(prod, trainer)["RECTUNE_SCORING_FIT_THREADS"]
    assert fit_threads == trainer["resources"]["limits"]["cpu"]  # a fit uses the cores it owns


def allowed_sources(objects: tuple[dict[str, Any], ...], target: str, port: str) -> list[dict[str, Any]]:
    sources = []
    for policy in of_kind(objects, "NetworkPolicy"):
        selector = policy["spec"]["podSelector"].get("matchLabels", {})
        if selector and selector.get("app.kubernetes.io/name") not in (None, target):
            continue
        for rule in policy["spec"].get("ingress", []):
            if any(p["port"] == port for p in rule.get("ports", [])):
                sources.extend(rule["from"])
    return sources


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_network_policies_let_apps_reach_only_the_policy_service(overlay: str) -> None:
    objects = render(overlay)
    assert any(p["spec"]["podSelector"] == {} and "ingress" not in p["spec"] for p in of_kind(objects, "NetworkPolicy"))
    assert allowed_sources(objects, "policy", "grpc") == [{"namespaceSelector": {}}]
    from_policy_tuner_and_dashboard = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}} for name in ("policy", "tuner", "dashboard")
    ]
    assert allowed_sources(objects, "scoring", "grpc") == from_policy_tuner_and_dashboard
    assert allowed_sources(objects, "metrics", "grpc") == from_policy_tuner_and_dashboard
    assert allowed_sources(objects, "scoring-train", "grpc") == from_policy_tuner_and_dashboard[:2]
    from_scoring = [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": name}}} for name in ("scoring", "scoring-train")
    ]
    assert allowed_sources(objects, "embedding", "grpc") == from_scoring
    # The dashboard: from this namespace's pods only (never exposed outside it by default).
    assert allowed_sources(objects, "dashboard", "http") == [{"podSelector": {}}]


def database_users(objects: tuple[dict[str, Any], ...]) -> set[str]:
    """The Deployments whose database URL comes from Secret rectune-database."""
    return {
        deployment["metadata"]["name"]
        for deployment in of_kind(objects, "Deployment")
        for variable in deployment["spec"]["template"]["spec"]["containers"][0].get("env", [])
        if variable["name"] == "RECTUNE_DATABASE_URL"
        and variable.get("valueFrom", {}).get("secretKeyRef") == {"name": "rectune-database", "key": "url"}
    }


def test_dev_runs_postgres_for_the_stateful_services_and_prod_expects_a_database_secret() -> None:
    dev = render("dev")
    (postgres,) = of_kind(dev, "StatefulSet")
    secrets = {s["metadata"]["name"]: s for s in of_kind(dev, "Secret")}
    assert "rectune-database" in secrets and postgres["metadata"]["name"] == "postgres"
    assert (
        database_users(render("prod"))
        == database_users(dev)
        == {"metrics", "policy", "scoring", "scoring-train", "tuner", "dashboard"}
    )
    # Each of them may reach PostgreSQL through the NetworkPolicies, and nothing else may.
    admitted = {
        source["podSelector"]["matchLabels"]["app.kubernetes.io/name"]
        for source in allowed_sources(dev, "postgres", "postgres")
    }
    assert admitted == database_users(dev)


def test_prod_runs_mtls_and_gpu_overlay_asks_for_a_gpu() -> None:
    prod = render("prod")
    for deployment in of_kind(prod, "Deployment"):
        env = container_env(prod, deployment["spec"]["template"]["spec"]["containers"][0])
        assert env["RECTUNE_CLIENT_CA"] == "/etc/rectune/tls/ca.crt"
        if deployment["metadata"]["name"] in SERVICES:
            assert env["RECTUNE_TLS_CLIENT_CA"] == "/etc/rectune/tls/ca.crt"
    (embedding,) = [d for d in of_kind(render("gpu"), "Deployment") if d["metadata"]["name"] == "embedding"]
    container = embedding["spec"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"


def test_container_entrypoint_runs_exactly_the_services() -> None:
    script = ROOT / "deploy/entrypoint.sh"
    usage = subprocess.run(["sh", str(script), "--help"], capture_output=True, text=True)
    assert usage.returncode == 0
    programs = [name for name in SETTINGS if name != "scoring-train"]  # scoring in its training role
    assert usage.stdout.strip().startswith(f"usage: rectune {{{'|'.join(programs)}}}")
    unknown = subprocess.run(["sh", str(script), "tuner-x"], capture_output=True, text=True)
    assert unknown.returncode == 2
    assert "unknown service 'tuner-x'" in unknown.stderr


def test_dockerfile_runs_as_a_non_root_user_with_the_pinned_lock() -> None:
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert "USER 10001:10001" in dockerfile
    assert "-c requirements/constraints.txt" in dockerfile
    assert "ARG BASE_IMAGE=" in dockerfile


IMAGE_PACKAGES = ("rectune", "services", "tuner", "operators")


def test_the_package_the_image_installs_carries_every_module_of_the_checkout(tmp_path) -> None:
    # The Dockerfile copies these into the build stage and runs `pip install .`: a folder
    # that setuptools does not pick up (the metrics migrations, say) would be missing in the
    # image only. Built from a copy, as there, so that no earlier build's leftovers count.
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in IMAGE_PACKAGES:
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("rectune-*.whl")
    packaged = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        path.relative_to(ROOT).as_posix()
        for package in IMAGE_PACKAGES
        for path in (ROOT / package).rglob("*")
        if path.is_file() and path.suffix in (".py", ".html", ".js", ".css")  # the dashboard's page too
    }
    assert sources - packaged == set()
    dockerfile = (ROOT / "deploy/Dockerfile").read_text()
    assert all(f"COPY {package} {package}" in dockerfile for package in IMAGE_PACKAGES)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_tuner_runs_alone_with_its_limits_search_space_and_the_admin_token(overlay: str) -> None:
    objects = render(overlay)
    (tuner,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "tuner"]
    assert tuner["spec"]["replicas"] == 1 and tuner["spec"]["strategy"] == {"type": "Recreate"}
    pod = tuner["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["tuner", "run"]
    env = container_env(objects, container)
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert container["livenessProbe"]["grpc"]["port"] == ports["grpc-health"] == int(env["RECTUNE_HEALTH_PORT"] or 0)
    token = next(v for v in container["env"] if v["name"] == "RECTUNE_CLIENT_TOKEN")
    assert token["valueFrom"]["secretKeyRef"] == {"name": "rectune-auth", "key": "admin-token"}
    # The search-space file the limits point at is mounted from its ConfigMap, and it is a
    # restriction the real ScoringService search space accepts.
    path = Path(env["RECTUNE_TUNER_SEARCH_SPACE"] or "")
    (mount,) = [m for m in container["volumeMounts"] if m["mountPath"] == str(path.parent)]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    config_maps = {c["metadata"]["name"]: c["data"] for c in of_kind(objects, "ConfigMap")}
    restriction = json.loads(config_maps[volume["configMap"]["name"]][path.name])
    assert narrowed(scoring_search_space(), restriction).names() == list(restriction["strategies"])
    # As shipped it is the tuner's default space: every strategy, in the default ranges.
    shipped, default = narrowed(scoring_search_space(), restriction), default_space(scoring_search_space())
    assert shipped.by_strategy() == default.by_strategy()


def scoring_search_space() -> SearchSpace:
    """The search space ScoringService declares, as the tuner receives it."""
    spaces = [strategy.space for strategy in default_registry().values()]
    spaces += [CONTENT_SPACE, TWO_TOWER_SPACE]  # where ScoringService has an EmbeddingService
    return SearchSpace(tuple(sorted(spaces, key=lambda space: space.strategy)))
