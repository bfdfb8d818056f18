"""Offline checks of the deployment files: Dockerfile, docker-bake.hcl, deploy/compose and deploy/k8s.

No Docker engine or Kubernetes cluster is needed: the files are parsed and checked against the list of
services, which is the set of folders under services/. A service added there without its image target,
compose container, Deployment or scrape target makes these tests fail.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
DOCKERFILE = REPO / "deploy" / "docker" / "Dockerfile"
BAKE = REPO / "docker-bake.hcl"
COMPOSE_DIR = REPO / "deploy" / "compose"
COMPOSE = COMPOSE_DIR / "compose.yaml"
PROMETHEUS = COMPOSE_DIR / "prometheus.yml"
K8S = REPO / "deploy" / "k8s"

METRICS_PORT = 9100
PORTAL_PORT = 9187
GATEWAY_PORT = 9186
IMAGE_REPO = "openpai-py"
RUNTIME_NODES = ("runtime-node-0", "runtime-node-1")
WORKLOAD_KINDS = {"Deployment", "DaemonSet", "StatefulSet"}


def _services() -> list[str]:
    return sorted(
        p.name for p in (REPO / "services").iterdir() if p.is_dir() and not p.name.startswith((".", "_"))
    )


SERVICES = _services()


def test_services_directory_lists_the_platform() -> None:
    # Everything below is derived from this list; an empty or truncated one would make them vacuous.
    assert len(SERVICES) >= 9, SERVICES
    assert {"gateway", "runtime", "scheduler"} <= set(SERVICES)


# --------------------------------------------------------------------------------------------- Dockerfile


def _dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", DOCKERFILE.read_text())
    out = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        word, _, rest = line.partition(" ")
        out.append((word.upper(), rest.strip()))
    return out


def test_dockerfile_builds_one_service_chosen_by_build_arg() -> None:
    instructions = _dockerfile_instructions()
    args = [rest for word, rest in instructions if word == "ARG"]
    assert any(a.split("=")[0] == "SERVICE" for a in args)
    assert any("python:3.11-slim" in a for a in args) or any(
        word == "FROM" and "python:3.11-slim" in rest for word, rest in instructions
    )
    copies = " ".join(rest for word, rest in instructions if word == "COPY")
    assert "libs/common" in copies
    assert "services/${SERVICE}" in copies
    runs = " ".join(rest for word, rest in instructions if word == "RUN")
    assert re.search(r"pip install \./libs/common \"?\./services/\$\{SERVICE\}", runs), runs


def test_dockerfile_runs_as_non_root_with_a_python_healthcheck() -> None:
    instructions = _dockerfile_instructions()
    users = [rest for word, rest in instructions if word == "USER"]
    assert users, "the image must switch to a non-root user"
    assert users[-1].split(":")[0] not in {"root", "0"}

    healthchecks = [rest for word, rest in instructions if word == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    check = healthchecks[0]
    assert '"python"' in check and "/healthz" in check and "127.0.0.1" in check
    assert str(METRICS_PORT) in check
    assert not re.search(r"\b(curl|wget)\b", check), "the slim base image has neither"

    cmds = [rest for word, rest in instructions if word == "CMD"]
    assert cmds and "python -m" in cmds[-1] and "pai_${PAI_SERVICE}" in cmds[-1]
    # The module name comes from the build argument, carried into the image as PAI_SERVICE.
    envs = " ".join(rest for word, rest in instructions if word == "ENV")
    assert "PAI_SERVICE=${SERVICE}" in envs


# ----------------------------------------------------------------------------------------- docker-bake


def _hcl_blocks(text: str) -> Iterator[tuple[str, str, str]]:
    """(block type, label, body) of every top-level `type "label" { ... }` block, by brace matching."""
    for match in re.finditer(r'^(target|group|variable)\s+"([^"]+)"\s*\{', text, re.MULTILINE):
        depth, i = 1, match.end()
        while depth:
            if i >= len(text):
                raise AssertionError(f"unbalanced braces in block {match.group(2)!r}")
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        yield match.group(1), match.group(2), text[match.end() : i - 1]


def _hcl_string(body: str, key: str) -> str | None:
    m = re.search(rf'^\s*{key}\s*=\s*"([^"]*)"', body, re.MULTILINE)
    return m.group(1) if m else None


def _hcl_list(body: str, key: str) -> list[str] | None:
    m = re.search(rf"^\s*{key}\s*=\s*\[([^\]]*)\]", body, re.MULTILINE)
    return re.findall(r'"([^"]*)"', m.group(1)) if m else None


def _hcl_map(body: str, key: str) -> dict[str, str]:
    m = re.search(rf"^\s*{key}\s*=\s*\{{([^}}]*)\}}", body, re.MULTILINE)
    return dict(re.findall(r'(\w+)\s*=\s*"([^"]*)"', m.group(1))) if m else {}


@pytest.fixture(scope="module")
def bake() -> dict[str, dict[str, dict[str, str]]]:
    blocks: dict[str, dict[str, dict[str, str]]] = {"target": {}, "group": {}, "variable": {}}
    for kind, label, body in _hcl_blocks(BAKE.read_text()):
        assert label not in blocks[kind], f"{kind} {label!r} is defined twice"
        blocks[kind][label] = body  # type: ignore[assignment]
    return blocks


def _resolved(targets: dict[str, Any], name: str, key: str) -> str | None:
    """A string attribute of a bake target, following `inherits` like bake does."""
    body = targets[name]
    value = _hcl_string(body, key)
    if value is not None:
        return value
    for parent in _hcl_list(body, "inherits") or []:
        assert parent in targets, f"target {name!r} inherits unknown {parent!r}"
        value = _resolved(targets, parent, key)
        if value is not None:
            return value
    return None


def _service_targets(bake: dict[str, Any]) -> dict[str, str]:
    """Bake target name -> its SERVICE build argument, for every target that sets one."""
    out = {}
    for name, body in bake["target"].items():
        service = _hcl_map(body, "args").get("SERVICE")
        if service is not None:
            out[name] = service
    return out


def test_every_bake_target_builds_an_existing_service(bake: dict[str, Any]) -> None:
    targets = _service_targets(bake)
    assert targets, "no target sets a SERVICE build argument"
    for name, service in targets.items():
        assert name == service, f"target {name!r} builds SERVICE={service!r}"
        assert (REPO / "services" / service).is_dir(), f"target {name!r}: no services/{service}"
        assert _hcl_list(bake["target"][name], "tags") == [f"{IMAGE_REPO}/{service}:latest"]
        dockerfile = _resolved(bake["target"], name, "dockerfile")
        context = _resolved(bake["target"], name, "context") or "."
        assert dockerfile is not None, f"target {name!r} names no dockerfile"
        assert (REPO / context / dockerfile).resolve() == DOCKERFILE


def test_every_service_has_a_bake_target_in_the_default_group(bake: dict[str, Any]) -> None:
    assert set(_service_targets(bake).values()) == set(SERVICES)
    assert "default" in bake["group"]
    default = _hcl_list(bake["group"]["default"], "targets")
    assert default is not None and sorted(default) == SERVICES


# --------------------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    doc = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def _env(container: dict[str, Any]) -> dict[str, str]:
    env = container.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): str(v) for k, v in env.items()}


def _platform_containers(compose: dict[str, Any]) -> dict[str, str]:
    """Compose container name -> the service it runs (its SERVICE build argument)."""
    out = {}
    for name, container in compose["services"].items():
        build = container.get("build")
        if isinstance(build, dict) and "SERVICE" in (build.get("args") or {}):
            out[name] = build["args"]["SERVICE"]
    return out


def test_compose_runs_nats_with_jetstream_and_mongo(compose: dict[str, Any]) -> None:
    services = compose["services"]
    nats = services["nats"]
    assert str(nats["image"]).startswith("nats:2.10")
    command = nats["command"] if isinstance(nats["command"], list) else nats["command"].split()
    assert "-js" in command
    assert command[command.index("-sd") + 1] == "/data"
    assert any(str(v).endswith(":/data") for v in nats.get("volumes", []))
    assert str(services["mongo"]["image"]).startswith("mongo:7")
    assert services["mongo"].get("volumes")
    assert {"prometheus", "grafana"} <= set(services)


def test_compose_has_a_container_for_every_service(compose: dict[str, Any]) -> None:
    containers = _platform_containers(compose)
    assert set(containers.values()) == set(SERVICES)
    for name, service in containers.items():
        assert (REPO / "services" / service).is_dir(), f"{name}: no services/{service}"
        if service != "runtime":
            assert name == service
    runtimes = sorted(n for n, s in containers.items() if s == "runtime")
    assert runtimes == list(RUNTIME_NODES)
    for name in runtimes:
        env = _env(compose["services"][name])
        assert env["PAI_NODE_NAME"] == name
        assert env["PAI_SIMULATED_GPUS"] == "4"
        assert env.get("PAI_HOST_IP")


def test_compose_platform_containers_are_wired_alike(compose: dict[str, Any]) -> None:
    for name, service in _platform_containers(compose).items():
        container = compose["services"][name]
        build = container["build"]
        context = COMPOSE_DIR / build["context"]
        assert context.resolve() == REPO, name
        assert (context / build["dockerfile"]).resolve() == DOCKERFILE, name
        assert container.get("image") == f"{IMAGE_REPO}/{service}:latest", name
        env = _env(container)
        assert env["PAI_NATS_URL"].startswith("nats://nats:"), name
        assert env["PAI_MONGO_URL"].startswith("mongodb://mongo:"), name
        assert env["PAI_DATA_DIR"], name
        assert env["PAI_HTTP_HOST"] == "0.0.0.0", name
        assert env["PAI_HTTP_PORT"] == str(METRICS_PORT), name
        depends = container.get("depends_on") or {}
        assert {"nats", "mongo"} <= set(depends), name
    gateway = compose["services"]["gateway"]
    assert _env(gateway)["PAI_GATEWAY_PORT"] == str(GATEWAY_PORT)
    assert any(str(p).endswith(f"{GATEWAY_PORT}:{GATEWAY_PORT}") for p in gateway.get("ports", []))


def test_compose_takes_secrets_from_the_environment(compose: dict[str, Any]) -> None:
    assert "PAI_ADMIN_PASSWORD" in _env(compose["services"]["auth"])
    secret_key = re.compile(r"PASSWORD|SECRET|TOKEN|API_KEY", re.IGNORECASE)
    # `${VAR}` or `${VAR:?message}`; a `${VAR:-default}` would still hard-code a password.
    from_env = re.compile(r"^\$\{[A-Za-z_][A-Za-z0-9_]*(:?\?[^}]*)?\}$")
    checked = 0
    for name, container in compose["services"].items():
        for key, value in _env(container).items():
            if secret_key.search(key):
                checked += 1
                assert from_env.match(value), f"{name}: {key} is hard-coded ({value!r})"
    assert checked >= 1


def test_compose_named_volumes_and_networks_are_declared(compose: dict[str, Any]) -> None:
    volumes = set(compose.get("volumes") or {})
    networks = set(compose.get("networks") or {}) | {"default"}
    for name, container in compose["services"].items():
        for mount in container.get("volumes") or []:
            source = mount.split(":", 1)[0] if isinstance(mount, str) else mount.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in volumes, f"{name}: undeclared volume {source!r}"
        used = container.get("networks") or []
        for network in used if isinstance(used, list) else used.keys():
            assert network in networks, f"{name}: undeclared network {network!r}"


def test_prometheus_scrapes_every_platform_container(compose: dict[str, Any]) -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        if job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    expected = {f"{name}:{METRICS_PORT}" for name in _platform_containers(compose)}
    assert expected <= targets, sorted(expected - targets)
    prometheus = compose["services"]["prometheus"]
    mounted = [str(v).split(":")[0] for v in prometheus.get("volumes", [])]
    assert any((COMPOSE_DIR / m).resolve() == PROMETHEUS for m in mounted if m.startswith("."))


# ------------------------------------------------------------------------------------------ kubernetes


@pytest.fixture(scope="module")
def kustomization() -> dict[str, Any]:
    doc = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert isinstance(doc, dict) and doc.get("kind") == "Kustomization"
    return doc


@pytest.fixture(scope="module")
def manifests(kustomization: dict[str, Any]) -> list[dict[str, Any]]:
    resources = kustomization.get("resources") or []
    assert resources, "the kustomization lists no resources"
    assert len(resources) == len(set(resources)), "a resource is listed twice"
    docs: list[dict[str, Any]] = []
    for entry in resources:
        path = K8S / entry
        assert path.is_file(), f"kustomization lists {entry}, which does not exist"
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is None:
                continue
            assert isinstance(doc, dict), f"{entry}: a document is not a mapping"
            for key in ("apiVersion", "kind", "metadata"):
                assert key in doc, f"{entry}: a document lacks {key}"
            assert doc["metadata"].get("name"), f"{entry}: a {doc['kind']} has no name"
            docs.append({**doc, "_file": entry})
    return docs


def _of_kind(manifests: list[dict[str, Any]], *kinds: str) -> list[dict[str, Any]]:
    return [m for m in manifests if m["kind"] in kinds]


def _by_name(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {m["metadata"]["name"]: m for m in _of_kind(manifests, kind)}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """Whether a Kubernetes label selector matches a set of labels (an empty selector matches all)."""
    for key, value in (selector.get("matchLabels") or {}).items():
        if labels.get(key) != value:
            return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        ok = {
            "In": key in labels and labels[key] in values,
            "NotIn": labels.get(key) not in values,
            "Exists": key in labels,
            "DoesNotExist": key not in labels,
        }[op]
        if not ok:
            return False
    return True


def _pod_labels(workload: dict[str, Any]) -> dict[str, str]:
    return workload["spec"]["template"]["metadata"]["labels"]


def _platform_workloads(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        m["metadata"]["name"]: m
        for m in _of_kind(manifests, *WORKLOAD_KINDS)
        if m["metadata"]["name"] in SERVICES
    }


def test_kustomization_files_exist_and_parse(
    kustomization: dict[str, Any], manifests: list[dict[str, Any]]
) -> None:
    assert kustomization.get("namespace") == "pai"
    assert "pai" in _by_name(manifests, "Namespace")
    seen = set()
    for m in manifests:
        key = (m["kind"], m["metadata"]["name"])
        assert key not in seen, f"{key} is defined twice"
        seen.add(key)
        assert m["metadata"].get("namespace", "pai") == "pai", key
    # Every manifest of the base is listed: a forgotten file would silently not be applied. Folders with
    # a kustomization of their own (overlays) are separate bases and are left out.
    nested = {p.parent for p in K8S.rglob("kustomization.yaml")} - {K8S}
    on_disk = {
        str(p.relative_to(K8S))
        for p in K8S.rglob("*.yaml")
        if p.name != "kustomization.yaml" and not any(d in nested for d in p.parents)
    }
    assert on_disk == set(kustomization["resources"]), sorted(on_disk ^ set(kustomization["resources"]))


def test_every_service_has_its_workload_and_service(manifests: list[dict[str, Any]]) -> None:
    workloads = _platform_workloads(manifests)
    for service in SERVICES:
        kind = "DaemonSet" if service == "runtime" else "Deployment"
        assert service in workloads and workloads[service]["kind"] == kind, f"{service}: no {kind}"
        container = workloads[service]["spec"]["template"]["spec"]["containers"][0]
        assert container["image"].split(":")[0] == f"{IMAGE_REPO}/{service}"
    k8s_services = _of_kind(manifests, "Service")
    for service, workload in workloads.items():
        matching = [
            s
            for s in k8s_services
            if s["spec"].get("selector")
            and _selects({"matchLabels": s["spec"]["selector"]}, _pod_labels(workload))
        ]
        assert matching, f"{service}: no Service selects its pods"
        ports = {p.get("name"): p for s in matching for p in s["spec"]["ports"]}
        assert ports.get("metrics", {}).get("port") == METRICS_PORT, f"{service}: no metrics port"
    gateway_ports = {p["port"] for p in _by_name(manifests, "Service")["gateway"]["spec"]["ports"]}
    assert GATEWAY_PORT in gateway_ports


def test_workload_selectors_match_their_pods(manifests: list[dict[str, Any]]) -> None:
    for w in _of_kind(manifests, *WORKLOAD_KINDS):
        assert _selects(w["spec"]["selector"], _pod_labels(w)), w["metadata"]["name"]


def test_every_container_has_requests_and_limits(manifests: list[dict[str, Any]]) -> None:
    for w in _of_kind(manifests, *WORKLOAD_KINDS, "Job"):
        for c in w["spec"]["template"]["spec"]["containers"]:
            where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part) or {}), f"{where}: {part}"


def test_every_pod_runs_as_non_root(manifests: list[dict[str, Any]]) -> None:
    for w in _of_kind(manifests, *WORKLOAD_KINDS, "Job"):
        pod = w["spec"]["template"]["spec"]
        for c in pod["containers"]:
            effective = {**(pod.get("securityContext") or {}), **(c.get("securityContext") or {})}
            where = f"{w['kind']}/{w['metadata']['name']}/{c['name']}"
            assert effective.get("runAsNonRoot") is True, where
            assert effective.get("allowPrivilegeEscalation") is False, where


def test_platform_containers_probe_healthz_and_readyz(manifests: list[dict[str, Any]]) -> None:
    for name, w in _platform_workloads(manifests).items():
        pod = w["spec"]["template"]["spec"]
        for c in pod["containers"]:
            for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
                get = (c.get(probe) or {}).get("httpGet") or {}
                assert get.get("path") == path, f"{name}: {probe} path"
                assert get.get("port") in (METRICS_PORT, "metrics"), f"{name}: {probe} port"
            ports = {p["containerPort"] for p in c.get("ports", [])}
            assert METRICS_PORT in ports, name
            assert {"configMapRef": {"name": "pai-config"}} in (c.get("envFrom") or []), name


def test_platform_config_points_at_the_cluster_nats_and_mongo(manifests: list[dict[str, Any]]) -> None:
    data = _by_name(manifests, "ConfigMap")["pai-config"]["data"]
    assert data["PAI_NATS_URL"].startswith("nats://nats:")
    assert "replicaSet=" in data["PAI_MONGO_URL"]
    assert data["PAI_HTTP_HOST"] == "0.0.0.0"
    assert data["PAI_HTTP_PORT"] == str(METRICS_PORT)
    assert "PAI_DATA_DIR" in data
    assert not any(re.search("PASSWORD|SECRET", key) for key in data), "secrets belong in a Secret"


def test_scheduler_runs_a_leader_and_a_standby(manifests: list[dict[str, Any]]) -> None:
    assert _by_name(manifests, "Deployment")["scheduler"]["spec"]["replicas"] == 2
    assert "lease" in (K8S / _by_name(manifests, "Deployment")["scheduler"]["_file"]).read_text()


def test_runtime_agent_is_named_after_its_node(manifests: list[dict[str, Any]]) -> None:
    runtime = _by_name(manifests, "DaemonSet")["runtime"]
    env = {e["name"]: e for e in runtime["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert env["PAI_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    assert "PAI_HOST_IP" in env


def test_auth_reads_the_admin_password_from_a_secret(manifests: list[dict[str, Any]]) -> None:
    auth = _by_name(manifests, "Deployment")["auth"]
    env = {e["name"]: e for e in auth["spec"]["template"]["spec"]["containers"][0].get("env", [])}
    assert "secretKeyRef" in env["PAI_ADMIN_PASSWORD"]["valueFrom"]
    assert not _of_kind(manifests, "Secret"), "no secret value may be committed with the manifests"


def test_nats_is_a_three_server_jetstream_cluster(manifests: list[dict[str, Any]]) -> None:
    nats = _by_name(manifests, "StatefulSet")["nats"]
    assert nats["spec"]["replicas"] == 3
    headless = _by_name(manifests, "Service")[nats["spec"]["serviceName"]]
    assert headless["spec"].get("clusterIP") == "None"
    config_maps = {
        v["configMap"]["name"] for v in nats["spec"]["template"]["spec"]["volumes"] if "configMap" in v
    }
    assert len(config_maps) == 1
    conf = "\n".join(_by_name(manifests, "ConfigMap")[config_maps.pop()]["data"].values())
    assert re.search(r"^\s*jetstream\s*\{", conf, re.MULTILINE)
    assert re.search(r"^\s*cluster\s*\{", conf, re.MULTILINE)
    for i in range(3):
        assert f"nats://nats-{i}.{headless['metadata']['name']}:6222" in conf


def test_mongo_is_a_three_member_replica_set(manifests: list[dict[str, Any]]) -> None:
    mongo = _by_name(manifests, "StatefulSet")["mongo"]
    assert mongo["spec"]["replicas"] == 3
    args = " ".join(mongo["spec"]["template"]["spec"]["containers"][0].get("args", []))
    assert "--replSet" in args
    assert "operator" in (K8S / mongo["_file"]).read_text().lower()


def test_pod_launchers_may_manage_pods(manifests: list[dict[str, Any]]) -> None:
    roles = _by_name(manifests, "Role")
    workloads = _platform_workloads(manifests)
    bound: set[str] = set()
    for binding in _of_kind(manifests, "RoleBinding"):
        role = roles.get(binding["roleRef"]["name"])
        assert role is not None, f"{binding['metadata']['name']} refers to an unknown Role"
        verbs = {
            verb
            for rule in role["rules"]
            if "pods" in rule.get("resources", []) and "" in rule.get("apiGroups", [])
            for verb in rule["verbs"]
        }
        if {"create", "delete", "watch"} <= verbs:
            bound |= {s["name"] for s in binding["subjects"] if s["kind"] == "ServiceAccount"}
    accounts = set(_by_name(manifests, "ServiceAccount"))
    for service in ("orchestrator", "runtime"):
        account = workloads[service]["spec"]["template"]["spec"].get("serviceAccountName")
        assert account in accounts, f"{service}: ServiceAccount {account!r} is not defined"
        assert account in bound, f"{service}: {account!r} may not create, delete and watch pods"


def _policies_for(manifests: list[dict[str, Any]], labels: dict[str, str], kind: str) -> list[dict[str, Any]]:
    return [
        p
        for p in _of_kind(manifests, "NetworkPolicy")
        if kind in p["spec"].get("policyTypes", []) and _selects(p["spec"]["podSelector"], labels)
    ]


def test_only_the_gateway_accepts_ingress_from_anywhere(manifests: list[dict[str, Any]]) -> None:
    for name, w in _platform_workloads(manifests).items():
        policies = _policies_for(manifests, _pod_labels(w), "Ingress")
        assert policies, f"{name}: no ingress policy isolates its pods"
        open_rules = [r for p in policies for r in p["spec"].get("ingress", []) if not r.get("from")]
        if name == "gateway":
            ports = {port["port"] for r in open_rules for port in r.get("ports", [])}
            assert ports == {GATEWAY_PORT}, ports
        else:
            assert not open_rules, f"{name} accepts connections from anywhere"
            for p in policies:
                for rule in p["spec"].get("ingress", []):
                    ports = {port["port"] for port in rule.get("ports", [])}
                    if name == "portal" and ports == {PORTAL_PORT}:
                        # The portal is served through the gateway: the gateway's pods alone reach it.
                        peers = rule.get("from") or []
                        assert peers and all(
                            "namespaceSelector" not in peer
                            and _selects(
                                peer.get("podSelector") or {},
                                _pod_labels(_platform_workloads(manifests)["gateway"]),
                            )
                            for peer in peers
                        ), f"portal: {p['metadata']['name']} admits more than the gateway"
                        continue
                    # Peers inside the namespace are other pods; only metrics scrapers come from outside.
                    assert ports == {METRICS_PORT}, name


def test_platform_services_reach_only_nats_and_mongo(manifests: list[dict[str, Any]]) -> None:
    labels = {m["metadata"]["name"]: _pod_labels(m) for m in _of_kind(manifests, "StatefulSet")}
    workloads = _platform_workloads(manifests)
    base_pods = {("nats", 4222): labels["nats"], ("mongo", 27017): labels["mongo"]}
    # The gateway relays non-API paths to the portal, which calls the gateway's REST API back.
    extra = {
        "gateway": {("portal", PORTAL_PORT): _pod_labels(workloads["portal"])},
        "portal": {("gateway", GATEWAY_PORT): _pod_labels(workloads["gateway"])},
    }
    for name, w in workloads.items():
        allowed_pods = {**base_pods, **extra.get(name, {})}
        policies = _policies_for(manifests, _pod_labels(w), "Egress")
        assert policies, f"{name}: no egress policy isolates its pods"
        reached = set()
        for p in policies:
            for rule in p["spec"].get("egress", []):
                peers = rule.get("to") or []
                ports = {port["port"] for port in rule.get("ports", [])}
                assert peers and ports, f"{name}: {p['metadata']['name']} allows any destination"
                if ports <= {53}:
                    continue  # DNS
                if ports <= {443, 6443} and name in {"orchestrator", "runtime"}:
                    continue  # the Kubernetes API, to launch task pods
                for peer in peers:
                    hits = [
                        target
                        for (target, port), pod_labels in allowed_pods.items()
                        if "podSelector" in peer
                        and "namespaceSelector" not in peer
                        and _selects(peer["podSelector"], pod_labels)
                        and ports == {port}
                    ]
                    assert hits, f"{name}: {p['metadata']['name']} allows {peer} on {ports}"
                    reached.update(hits)
        assert reached == {"nats", "mongo", *(t for t, _ in extra.get(name, {}))}, f"{name} reaches {reached}"


def test_service_monitors_scrape_every_platform_service(manifests: list[dict[str, Any]]) -> None:
    monitors = _of_kind(manifests, "ServiceMonitor")
    assert monitors and all(m["apiVersion"] == "monitoring.coreos.com/v1" for m in monitors)
    workloads = _platform_workloads(manifests)
    for service in SERVICES:
        pods = _pod_labels(workloads[service])
        scraped = False
        for k8s_service in _of_kind(manifests, "Service"):
            if not _selects({"matchLabels": k8s_service["spec"].get("selector") or {}}, pods):
                continue
            ports = {p.get("name"): p["port"] for p in k8s_service["spec"]["ports"]}
            for monitor in monitors:
                if not _selects(monitor["spec"]["selector"], k8s_service["metadata"].get("labels") or {}):
                    continue
                for endpoint in monitor["spec"]["endpoints"]:
                    if ports.get(endpoint.get("port")) == METRICS_PORT and endpoint.get("path") == "/metrics":
                        scraped = True
        assert scraped, f"{service}: no ServiceMonitor scrapes its :{METRICS_PORT}/metrics"
