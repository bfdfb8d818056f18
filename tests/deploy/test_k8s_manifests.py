"""The Kubernetes deployment as an operator applies it: each overlay rendered by kustomize, checked against
the Kubernetes 1.30 API schema (strict: no unknown field), then read object by object for what the
platform needs from it. Offline; about 15 s (most of it kustomize and the schema check).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from pai_common import bus_permissions
from pai_common.contract import base, commands, events
from tests.deploy.manifests import (
    K8S,
    KUBERNETES_VERSION,
    OVERLAYS,
    REPO,
    by_name,
    container_env,
    nats_users,
    of_kind,
    pod_labels,
    render,
    render_with_components,
    selects,
)

METRICS_PORT = 9100
GATEWAY_PORT = 9186
IMAGE_REPO = "openpai-py"
WORKLOAD_KINDS = ("Deployment", "DaemonSet", "StatefulSet")
PLATFORM_NS, TASKS_NS = "pai", "pai-tasks"
# Kinds of the Kubernetes API itself; anything else needs a CRD and belongs in a component.
CORE_API_VERSIONS = {
    "v1",
    "apps/v1",
    "batch/v1",
    "policy/v1",
    "networking.k8s.io/v1",
    "rbac.authorization.k8s.io/v1",
}
SERVICES = sorted(p.name for p in (REPO / "services").iterdir() if (p / "pyproject.toml").is_file())
# The services on the bus, each with its own NATS and MongoDB user; the portal is a client of the API only.
BUS = nats_users.services()
PORTAL_PORT = 9187


@pytest.fixture(scope="module", params=OVERLAYS)
def overlay(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, render(K8S / "overlays" / request.param)


@pytest.fixture(scope="module")
def production() -> list[dict[str, Any]]:
    return render(K8S / "overlays" / "production")


def _platform_workloads(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        o["metadata"]["name"]: o
        for o in of_kind(objects, *WORKLOAD_KINDS)
        if o["metadata"]["name"] in SERVICES
    }


def _pod_spec(workload: dict[str, Any]) -> dict[str, Any]:
    return dict(workload["spec"]["template"]["spec"])


def test_the_services_directory_lists_the_platform() -> None:
    # Everything below is derived from this list; an empty or truncated one would make the checks vacuous.
    assert len(SERVICES) >= 9 and {"gateway", "runtime", "scheduler", "auth"} <= set(SERVICES), SERVICES
    assert {"gateway", "runtime", "scheduler", "auth", "jobs"} <= set(BUS) <= set(SERVICES), BUS


# ---- rendering and schema ----------------------------------------------------------------------------


def _validate(objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        where = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            raise AssertionError(f"{where}: {exc.message} at {list(exc.absolute_path)}") from None


def test_every_overlay_renders_and_passes_the_strict_1_30_schema(
    overlay: tuple[str, list[dict[str, Any]]],
) -> None:
    name, objects = overlay
    assert len(objects) > 40, f"{name}: only {len(objects)} objects rendered"
    _validate(objects)
    # No CRD in the overlays: `kubectl apply -k` works on a cluster with nothing but Kubernetes.
    foreign = {o["apiVersion"] for o in objects} - CORE_API_VERSIONS
    assert not foreign, f"{name} needs CRDs: {foreign}"
    keys = [(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in objects]
    assert len(keys) == len(set(keys)), "an object is defined twice"
    for o in objects:
        if o["kind"] not in ("Namespace",) and not o["kind"].startswith("Cluster"):
            assert o["metadata"].get("namespace") in (PLATFORM_NS, TASKS_NS), o["metadata"]


def test_monitoring_is_an_optional_component(tmp_path: Path) -> None:
    objects = render_with_components(tmp_path / "with-monitoring", "production", "monitoring")
    monitors = of_kind(objects, "ServiceMonitor")
    assert monitors and all(m["apiVersion"] == "monitoring.coreos.com/v1" for m in monitors)
    # The rest still passes the schema; the operator's kinds have none here.
    _validate([o for o in objects if o["apiVersion"] in CORE_API_VERSIONS])
    # Every platform service is scraped through a Service with a metrics port the monitor selects.
    for service, workload in _platform_workloads(objects).items():
        scraped = False
        for k8s_service in of_kind(objects, "Service"):
            if not selects({"matchLabels": k8s_service["spec"].get("selector") or {}}, pod_labels(workload)):
                continue
            ports = {p.get("name"): p["port"] for p in k8s_service["spec"]["ports"]}
            for monitor in monitors:
                if not selects(monitor["spec"]["selector"], k8s_service["metadata"].get("labels") or {}):
                    continue
                endpoints = monitor["spec"]["endpoints"]
                scraped |= any(ports.get(e.get("port")) == METRICS_PORT for e in endpoints)
        assert scraped, f"{service}: no ServiceMonitor scrapes its :{METRICS_PORT}/metrics"


def test_the_base_is_only_reached_through_overlays() -> None:
    base_kustomization = yaml.safe_load((K8S / "base" / "kustomization.yaml").read_text())
    assert "namespace" not in base_kustomization, "a namespace transformer would move pai-tasks objects"
    listed = set(base_kustomization["resources"])
    on_disk = {str(p.relative_to(K8S / "base")) for p in (K8S / "base").rglob("*.yaml")} - {
        "kustomization.yaml"
    }
    assert listed == on_disk, f"base files not listed (or listed, missing): {sorted(listed ^ on_disk)}"


# ---- images: one release value --------------------------------------------------------------------


def _release(overlay_dir: Path) -> dict[str, str]:
    lines = [ln for ln in overlay_dir.joinpath("release.env").read_text().splitlines() if ln and ln[0] != "#"]
    return dict(ln.split("=", 1) for ln in lines)


def test_platform_images_come_from_the_overlay_release(overlay: tuple[str, list[dict[str, Any]]]) -> None:
    name, objects = overlay
    release = _release(K8S / "overlays" / name)
    for service, workload in _platform_workloads(objects).items():
        for c in _pod_spec(workload)["containers"]:
            assert c["image"] == f"{release['IMAGE_PREFIX']}/{service}:{release['TAG']}", (
                service,
                c["image"],
            )
    for w in of_kind(objects, *WORKLOAD_KINDS, "Job"):
        for c in [*_pod_spec(w)["containers"], *(_pod_spec(w).get("initContainers") or [])]:
            tag = c["image"].rsplit(":", 1)[-1] if ":" in c["image"].rsplit("/", 1)[-1] else "latest"
            assert tag != "latest", f"{w['metadata']['name']}: {c['image']} has no pinned tag"
    if name == "production":
        assert release["TAG"] not in ("dev", "latest")


def test_changing_the_release_changes_every_platform_image(tmp_path: Path) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    (copy / "overlays" / "production" / "release.env").write_text(
        "TAG=9.8.7\nIMAGE_PREFIX=registry.example.com:5000/team/openpai-py\n"
    )
    objects = render(copy / "overlays" / "production")
    images = {c["image"] for w in _platform_workloads(objects).values() for c in _pod_spec(w)["containers"]}
    assert images == {f"registry.example.com:5000/team/openpai-py/{s}:9.8.7" for s in SERVICES}
    assert {c["image"] for c in _pod_spec(by_name(objects, "StatefulSet")["nats"])["containers"]} == {
        "nats:2.10-alpine"
    }


# ---- every service, wired alike --------------------------------------------------------------------


def test_every_service_has_its_workload_service_and_probes(production: list[dict[str, Any]]) -> None:
    workloads = _platform_workloads(production)
    assert set(workloads) == set(SERVICES)
    for service, w in workloads.items():
        assert w["kind"] == ("DaemonSet" if service == "runtime" else "Deployment"), service
        assert selects(w["spec"]["selector"], pod_labels(w)), service
        c = _pod_spec(w)["containers"][0]
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            assert (c.get(probe) or {}).get("httpGet", {}).get("path") == path, (service, probe)
        assert {"configMapRef": {"name": "pai-config"}} in (c.get("envFrom") or []), service
        matching = [
            s
            for s in of_kind(production, "Service")
            if s["spec"].get("selector") and selects({"matchLabels": s["spec"]["selector"]}, pod_labels(w))
        ]
        ports = {p.get("name"): p["port"] for s in matching for p in s["spec"]["ports"]}
        assert ports.get("metrics") == METRICS_PORT, service
    assert GATEWAY_PORT in {p["port"] for p in by_name(production, "Service")["gateway"]["spec"]["ports"]}


def test_every_container_has_requests_and_limits(production: list[dict[str, Any]]) -> None:
    for w in of_kind(production, *WORKLOAD_KINDS, "Job"):
        for c in [*_pod_spec(w)["containers"], *(_pod_spec(w).get("initContainers") or [])]:
            resources = c.get("resources") or {}
            for part in ("requests", "limits"):
                assert {"cpu", "memory"} <= set(resources.get(part) or {}), (
                    f"{w['metadata']['name']}/{c['name']}"
                )


def test_the_gateway_and_the_portal_listen_on_all_interfaces(production: list[dict[str, Any]]) -> None:
    from pai_gateway.settings import GatewaySettings

    env = container_env(by_name(production, "Deployment")["gateway"])
    assert env["PAI_GATEWAY_HOST"]["value"] == "0.0.0.0"
    settings = GatewaySettings(
        gateway_host=env["PAI_GATEWAY_HOST"]["value"], gateway_port=env["PAI_GATEWAY_PORT"]["value"]
    )
    assert (settings.gateway_host, settings.gateway_port) == ("0.0.0.0", GATEWAY_PORT)
    assert by_name(production, "ConfigMap")["pai-config"]["data"]["PAI_HTTP_HOST"] == "0.0.0.0"
    if "portal" in SERVICES:
        from pai_portal.settings import PortalSettings

        portal = container_env(by_name(production, "Deployment")["portal"])
        assert PortalSettings(portal_host=portal["PAI_PORTAL_HOST"]["value"]).portal_host == "0.0.0.0"
        assert env["PAI_PORTAL_URL"]["value"] == f"http://portal:{PORTAL_PORT}"


def test_streams_are_replicated_on_every_nats_server(production: list[dict[str, Any]]) -> None:
    from pai_common.settings import Settings

    data = by_name(production, "ConfigMap")["pai-config"]["data"]
    replicas = Settings(stream_replicas=data["PAI_STREAM_REPLICAS"]).stream_replicas
    assert replicas == 3 == by_name(production, "StatefulSet")["nats"]["spec"]["replicas"]
    assert not any(re.search("PASSWORD|SECRET|URL", key) for key in data), "credentials belong in Secrets"


# ---- pod security -----------------------------------------------------------------------------------


def test_namespaces_admit_what_their_pods_need(production: list[dict[str, Any]]) -> None:
    namespaces = by_name(production, "Namespace")
    platform = namespaces[PLATFORM_NS]["metadata"]["labels"]
    tasks = namespaces[TASKS_NS]["metadata"]["labels"]
    assert platform["pod-security.kubernetes.io/enforce"] == "restricted"
    # Task pods use hostNetwork, hostPort, SYS_ADMIN and hostPath, which only "privileged" admits.
    assert tasks["pod-security.kubernetes.io/enforce"] == "privileged"
    assert tasks["pod-security.kubernetes.io/warn"] == "baseline"
    for w in of_kind(production, *WORKLOAD_KINDS, "Job"):
        assert w["metadata"]["namespace"] == PLATFORM_NS, "nothing but task pods goes to pai-tasks"


def test_every_platform_pod_meets_the_restricted_level(production: list[dict[str, Any]]) -> None:
    for w in of_kind(production, *WORKLOAD_KINDS, "Job"):
        pod = _pod_spec(w)
        where = w["metadata"]["name"]
        assert not any(pod.get(k) for k in ("hostNetwork", "hostPID", "hostIPC")), where
        assert not any("hostPath" in v for v in pod.get("volumes") or []), where
        assert (pod.get("securityContext") or {}).get("seccompProfile", {}).get("type") == "RuntimeDefault", (
            where
        )
        for c in [*pod["containers"], *(pod.get("initContainers") or [])]:
            effective = {**(pod.get("securityContext") or {}), **(c.get("securityContext") or {})}
            assert effective.get("runAsNonRoot") is True, (where, c["name"])
            assert effective.get("allowPrivilegeEscalation") is False, (where, c["name"])
            assert effective.get("capabilities", {}).get("drop") == ["ALL"], (where, c["name"])
            assert not effective.get("capabilities", {}).get("add"), (where, c["name"])
            assert not any(p.get("hostPort") for p in c.get("ports") or []), (where, c["name"])


# ---- the runtime's Kubernetes backend and its rights ----------------------------------------------------

_API_CALL = re.compile(
    r"\b(create|read|list|delete|patch|replace)_namespaced_([a-z_]+?)(_log)?(?:_without_preload_content)?\b"
)
_VERB = {
    "create": "create",
    "read": "get",
    "list": "list",
    "delete": "delete",
    "patch": "patch",
    "replace": "update",
}


def _backend_calls() -> set[tuple[str, str]]:
    """(resource, verb) of every Kubernetes API call the runtime's code makes, read from its source."""
    sources = [p for p in (REPO / "services" / "runtime" / "pai_runtime").rglob("*.py")]
    calls: set[tuple[str, str]] = set()
    for path in sources:
        text = path.read_text()
        for verb, kind, log in _API_CALL.findall(text):
            resource = f"{kind}s/log" if log else f"{kind}s"
            calls.add((resource, _VERB[verb]))
            if verb == "list" and re.search(r"\bwatch\b", text):
                calls.add((resource, "watch"))  # a list function handed to a watch stream
    assert calls, "no Kubernetes API call found in pai_runtime: has the backend moved?"
    return calls


def test_the_runtime_runs_tasks_as_pods_in_the_tasks_namespace(production: list[dict[str, Any]]) -> None:
    from pai_runtime.settings import RuntimeSettings

    runtime = by_name(production, "DaemonSet")["runtime"]
    env = container_env(runtime)
    plain = {k: v["value"] for k, v in env.items() if "value" in v and "$(" not in v["value"]}
    settings = RuntimeSettings(
        node_name="node-0", **{k[4:].lower(): v for k, v in plain.items() if k.startswith("PAI_")}
    )
    assert settings.backend == "kubernetes" and settings.k8s_in_cluster
    assert settings.k8s_namespace == TASKS_NS
    assert env["PAI_NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "spec.nodeName"
    pod = _pod_spec(runtime)
    assert pod["serviceAccountName"] == "pai-runtime" and pod.get("automountServiceAccountToken") is not False


def test_each_node_agent_is_its_node_s_own_bus_user_through_the_auth_callout(
    production: list[dict[str, Any]],
) -> None:
    from pai_auth.callout.settings import CalloutSettings

    runtime = by_name(production, "DaemonSet")["runtime"]
    env = container_env(runtime)
    # No password: the URL names no user, the agent presents its projected token.
    assert env["PAI_NATS_URL"]["value"] == "tls://nats:4222"
    assert not any("pai-nats-users" in str(e) for e in env.values())
    token_file = Path(env["PAI_NATS_TOKEN_FILE"]["value"])
    from pai_runtime.settings import RuntimeSettings

    agent = RuntimeSettings(node_name="ip-10-0-0-1.ec2.internal", nats_token_file=token_file)
    # Its replies arrive in the inbox the callout's user for that node may read (pai up's name for it).
    assert agent.bus_user("runtime") == bus_permissions.node_durable("ip-10-0-0-1.ec2.internal")
    assert RuntimeSettings(node_name="node-0").bus_user("runtime") is None  # a password: the URL's user
    pod = _pod_spec(runtime)
    volumes = {v["name"]: v for v in pod["volumes"]}
    [mount] = [m for m in pod["containers"][0]["volumeMounts"] if Path(m["mountPath"]) == token_file.parent]
    [source] = volumes[mount["name"]]["projected"]["sources"]
    projected = source["serviceAccountToken"]
    assert projected["path"] == token_file.name and projected["expirationSeconds"] <= 3600
    # The callout accepts exactly these tokens: that audience, the DaemonSet's own service account.
    callout = by_name(production, "Deployment")["auth-callout"]
    plain = {
        k[4:].lower(): v["value"]
        for k, v in container_env(callout).items()
        if k.startswith("PAI_") and "$(" not in v.get("value", "$(")
    }
    settings = CalloutSettings(**plain)
    assert settings.callout_audience == projected["audience"] != "https://kubernetes.default.svc"
    assert (
        settings.callout_service_account == f"system:serviceaccount:{PLATFORM_NS}:{pod['serviceAccountName']}"
    )
    assert settings.k8s_in_cluster and callout["spec"]["replicas"] >= 2
    assert _mounted_secret(callout, settings.callout_issuer_seed_file) == ("pai-nats-callout", "seed")
    nats = container_env(by_name(production, "StatefulSet")["nats"])
    assert nats["NATS_CALLOUT_ISSUER"]["valueFrom"]["secretKeyRef"] == {
        "name": "pai-nats-callout",
        "key": "issuer",
    }
    conf = by_name(production, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert "issuer: $NATS_CALLOUT_ISSUER" in conf and "user: runtime\n" not in conf


def test_only_the_runtime_may_use_the_api_and_only_as_its_backend_does(
    production: list[dict[str, Any]],
) -> None:
    # Cluster-wide, one right only: the auth callout creates TokenReviews (a review is not namespaced).
    [cluster_role] = of_kind(production, "ClusterRole")
    assert cluster_role["rules"] == [
        {"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}
    ]
    [cluster_binding] = of_kind(production, "ClusterRoleBinding")
    assert cluster_binding["roleRef"]["name"] == cluster_role["metadata"]["name"]
    assert cluster_binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "pai-auth-callout", "namespace": PLATFORM_NS}
    ]
    callout = _pod_spec(by_name(production, "Deployment")["auth-callout"])
    assert callout["serviceAccountName"] == "pai-auth-callout"
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(production, "Role")}
    granted: dict[tuple[str, str], set[tuple[str, str]]] = {}
    for binding in of_kind(production, "RoleBinding"):
        role = roles[(binding["metadata"]["namespace"], binding["roleRef"]["name"])]
        rights = {
            (res, verb)
            for rule in role["rules"]
            if rule.get("apiGroups") == [""]
            for res in rule["resources"]
            for verb in rule["verbs"]
        }
        assert all(rule.get("apiGroups") == [""] for rule in role["rules"]), role["metadata"]["name"]
        for s in binding["subjects"]:
            key = (s["namespace"], s["name"])
            granted.setdefault(key, set()).update(rights)
            assert binding["metadata"]["namespace"] == TASKS_NS, "no rights in the platform's own namespace"
    assert set(granted) == {(PLATFORM_NS, "pai-runtime")}
    assert granted[(PLATFORM_NS, "pai-runtime")] == _backend_calls()
    # Every other platform pod runs without an API token; the orchestrator never calls the API.
    for service, w in _platform_workloads(production).items():
        if service != "runtime":
            assert _pod_spec(w).get("automountServiceAccountToken") is False, service
            assert "serviceAccountName" not in _pod_spec(w), service


# ---- availability --------------------------------------------------------------------------------------


def test_disruption_budgets_keep_every_replicated_component_up(production: list[dict[str, Any]]) -> None:
    workloads = {w["metadata"]["name"]: w for w in of_kind(production, *WORKLOAD_KINDS)}
    budgets = of_kind(production, "PodDisruptionBudget")
    for name in ("nats", "mongo", "gateway", "jobs", "auth", "scheduler"):
        w = workloads[name]
        covering = [b for b in budgets if selects(b["spec"]["selector"], pod_labels(w))]
        assert len(covering) == 1, f"{name}: {len(covering)} budgets"
        spec, replicas = covering[0]["spec"], w["spec"]["replicas"]
        allowed = spec["maxUnavailable"] if "maxUnavailable" in spec else replicas - spec["minAvailable"]
        # A drain may take a pod, and never the last one (nor NATS's or MongoDB's majority).
        assert allowed >= 1 and replicas - allowed >= (
            replicas // 2 + 1 if name in ("nats", "mongo") else 1
        ), name


def test_auth_runs_two_replicas_on_shared_signing_keys(production: list[dict[str, Any]]) -> None:
    auth = by_name(production, "Deployment")["auth"]
    assert auth["spec"]["replicas"] == 2
    pod = _pod_spec(auth)
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"]), "no per-replica key volume"
    keys_file = Path(container_env(auth)["PAI_AUTH_KEYS_FILE"]["value"])
    secret = _mounted_secret(auth, keys_file)
    assert secret == ("pai-auth-keys", keys_file.name)
    assert "secretKeyRef" in container_env(auth)["PAI_ADMIN_PASSWORD"]["valueFrom"]


def test_every_runtime_node_reads_one_job_ssh_secret(production: list[dict[str, Any]]) -> None:
    runtime = by_name(production, "DaemonSet")["runtime"]
    path = Path(container_env(runtime)["PAI_JOB_SSH_SECRET_FILE"]["value"])
    assert _mounted_secret(runtime, path) == ("pai-job-ssh", "secret")


def _mounted_secret(workload: dict[str, Any], path: Path) -> tuple[str, str]:
    """(Secret, key) that ``path`` is in the workload's container, through a secret volume."""
    pod = _pod_spec(workload)
    volumes = {v["name"]: v for v in pod["volumes"]}
    for mount in pod["containers"][0]["volumeMounts"]:
        if path.parent == Path(mount["mountPath"]) and "secret" in volumes[mount["name"]]:
            secret = volumes[mount["name"]]["secret"]
            items = {i["path"]: i["key"] for i in secret.get("items") or []}
            return secret["secretName"], items.get(path.name, path.name)
    raise AssertionError(f"{path} is not in a mounted Secret")


def test_the_scheduler_runs_a_leader_and_a_hot_standby(production: list[dict[str, Any]]) -> None:
    from pai_scheduler.lease import TAKEOVER_BOUND_S, LeaseSettings

    scheduler = by_name(production, "Deployment")["scheduler"]
    assert scheduler["spec"]["replicas"] == 2
    holder = container_env(scheduler)["PAI_SCHEDULER_LEASE_HOLDER"]
    assert holder["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"  # unique per pod
    defaults = LeaseSettings(scheduler_lease_holder="scheduler-0")
    assert defaults.scheduler_lease_ttl_s + defaults.scheduler_lease_poll_s <= TAKEOVER_BOUND_S <= 15


# ---- secrets: none committed, every one made by make-secrets.sh ----------------------------------------


@pytest.fixture(scope="module")
def made_secrets(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    out = tmp_path_factory.mktemp("secrets")
    subprocess.run([str(K8S / "make-secrets.sh"), "--out", str(out), "--no-apply"], check=True, timeout=120)
    made = {}
    for path in out.glob("*.yaml"):
        doc = yaml.safe_load(path.read_text())
        assert doc["kind"] == "Secret" and doc["metadata"]["namespace"] == PLATFORM_NS
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        made[doc["metadata"]["name"]] = doc
    return made


def _secret_references(objects: list[dict[str, Any]]) -> set[tuple[str, str]]:
    refs = set()
    for w in of_kind(objects, *WORKLOAD_KINDS, "Job"):
        pod = _pod_spec(w)
        for c in [*pod["containers"], *(pod.get("initContainers") or [])]:
            for e in c.get("env") or []:
                ref = (e.get("valueFrom") or {}).get("secretKeyRef")
                if ref:
                    refs.add((ref["name"], ref["key"]))
        for v in pod.get("volumes") or []:
            if "secret" in v:
                keys = [i["key"] for i in v["secret"].get("items") or []] or ["*"]
                refs.update((v["secret"]["secretName"], k) for k in keys)
    return refs


def test_every_secret_the_pods_read_is_made_by_make_secrets(
    overlay: tuple[str, list[dict[str, Any]]], made_secrets: dict[str, dict[str, Any]]
) -> None:
    _, objects = overlay
    assert not of_kind(objects, "Secret"), "no secret value is committed with the manifests"
    refs = _secret_references(objects)
    assert {name for name, _ in refs} >= {"pai-auth-keys", "pai-job-ssh", "pai-nats-users", "pai-mongo-users"}
    for name, key in sorted(refs):
        assert name in made_secrets, f"make-secrets.sh does not make {name}"
        if key != "*":
            assert key in made_secrets[name]["data"], f"make-secrets.sh's {name} has no {key}"
    assert set(made_secrets["pai-mongo-users"]["data"]) == set(BUS)
    # NATS: no password for the node agents (the auth callout makes their users), one for the callout.
    assert set(made_secrets["pai-nats-users"]["data"]) == set(nats_users.static_users())
    assert set(nats_users.static_users()) == (set(BUS) - {"runtime"}) | {"auth-callout"}


def test_the_made_callout_key_signs_as_the_issuer_nats_trusts(
    made_secrets: dict[str, dict[str, Any]],
) -> None:
    import base64

    from pai_auth.callout import jwt

    data = {k: base64.b64decode(v).decode() for k, v in made_secrets["pai-nats-callout"]["data"].items()}
    assert data["seed"].startswith("SA") and data["issuer"].startswith("A")
    # openssl's key in NATS's encoding: the seed the callout signs with has the public key nats.conf names.
    assert jwt.public_key(data["seed"]) == data["issuer"]
    signed = jwt.encode({"sub": "UABC"}, jwt.keypair(data["seed"]))
    assert jwt.decode(signed, issuer_prefix="A")["iss"] == data["issuer"]


def test_the_made_auth_keys_are_what_the_auth_service_reads(
    made_secrets: dict[str, dict[str, Any]], tmp_path: Path
) -> None:
    import base64

    from pai_auth import keys

    path = tmp_path / "jwt-keys.json"
    path.write_bytes(base64.b64decode(made_secrets["pai-auth-keys"]["data"]["jwt-keys.json"]))
    assert len(keys.load(path)) == 1
    ssh = base64.b64decode(made_secrets["pai-job-ssh"]["data"]["secret"])
    assert len(ssh) >= 32


# ---- NATS and MongoDB: per-service users, TLS ----------------------------------------------------------


def _nats_users(objects: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """user -> {"publish": [...], "subscribe": [...]}, parsed from the shipped nats.conf."""
    conf = by_name(objects, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    users = {}
    for block in re.findall(r"\{\s*user: ([\w-]+)(.*?)allow_responses: true", conf, re.DOTALL):
        name, body = block
        publish = re.search(r"publish: \{\s*allow: \[(.*?)\]", body, re.DOTALL)
        subscribe = re.search(r"subscribe: \{\s*allow: \[(.*?)\]", body, re.DOTALL)
        assert subscribe, name
        users[name] = {
            "publish": re.findall(r'"([^"]+)"', publish.group(1)) if publish else [],
            "subscribe": re.findall(r'"([^"]+)"', subscribe.group(1)),
            "password": re.search(r"password: \$(\w+)", body).group(1),  # type: ignore[union-attr]
        }
    return users


def _contract() -> tuple[list[type[base.Event]], list[type[base.Command]]]:
    evs = [
        c
        for c in vars(events).values()
        if isinstance(c, type) and issubclass(c, base.Event) and "TYPE" in vars(c)
    ]
    cmds = [
        c
        for c in vars(commands).values()
        if isinstance(c, type) and issubclass(c, base.Command) and "TYPE" in vars(c)
    ]
    return evs, cmds


def test_nats_users_may_publish_what_the_contract_says_they_produce(production: list[dict[str, Any]]) -> None:
    users = _nats_users(production)
    assert set(users) == set(nats_users.static_users()) == (set(BUS) - {"runtime"}) | {"auth-callout"}
    # The callout answers authorization requests and publishes nothing else.
    callout = users.pop("auth-callout")
    assert callout["publish"] == [] and callout["subscribe"] == ["$SYS.REQ.USER.AUTH"]
    assert callout["password"] == "NATS_PASSWORD_AUTH_CALLOUT"
    evs, cmds = _contract()
    for service, perms in users.items():
        published = {s for s in perms["publish"] if s.startswith(f"{base.EVENT_SUBJECT_PREFIX}.")}
        produced = {base.event_subject(e.TYPE) for e in evs if e.PRODUCER == service}
        assert published == produced, (
            f"{service}: nats.conf allows {sorted(published - produced)} it does not produce and lacks "
            f"{sorted(produced - published)}: run deploy/k8s/nats_users.py"
        )
        sent = {s for s in perms["publish"] if s.startswith(f"{base.COMMAND_SUBJECT_PREFIX}.")}
        owned = {
            f"{base.COMMAND_SUBJECT_PREFIX}.{c.TYPE.split('.', 1)[0]}.*.{c.TYPE.split('.', 1)[1]}"
            for c in cmds
            if c.PRODUCER == service
        }
        assert sent == owned, service
        assert f"{base.DEAD_LETTER_PREFIX}.{service}.>" in perms["publish"], service
        assert not any(s in (">", "pai.>", "pai.evt.>") for s in perms["publish"]), service
        consumed = {base.event_subject(e.TYPE) for e in evs if service in e.CONSUMERS}
        heard = {s for s in perms["subscribe"] if s.startswith(f"{base.EVENT_SUBJECT_PREFIX}.")}
        assert heard == consumed, service
        assert perms["password"] == f"NATS_PASSWORD_{service.upper()}"


def _rpc_targets(service: str) -> set[str]:
    return nats_users.rpc_targets(service)


def test_the_nats_users_are_what_the_generator_writes() -> None:
    current = nats_users.CONFIGMAP.read_text()
    assert nats_users.rewritten(current) == current, "run: .venv/bin/python deploy/k8s/nats_users.py"


def test_nats_users_may_ask_the_services_their_code_asks(production: list[dict[str, Any]]) -> None:
    users = _nats_users(production)
    users.pop("auth-callout")
    # A node agent's user is made by the auth callout, from the same table (one node's).
    node = bus_permissions.node_permissions("node-0")
    users["runtime"] = {"publish": node.publish, "subscribe": node.subscribe}
    for service, perms in users.items():
        allowed = {s for s in perms["publish"] if s.startswith(f"{base.RPC_SUBJECT_PREFIX}.")}
        needed = _rpc_targets(service)
        for target in needed:
            # A whole service (pai.rpc.<target>.>) or the very endpoints asked (pai.rpc.jobs.secrets).
            reach = {s for s in allowed if s == f"{base.RPC_SUBJECT_PREFIX}.>" or s.split(".")[2] == target}
            assert reach, (
                f"{service} asks {target}, which nats.conf does not allow: add it to RPC_CALLS in"
                " libs/common/pai_common/bus_permissions.py and run deploy/k8s/nats_users.py"
            )
        if f"{base.RPC_SUBJECT_PREFIX}.>" in allowed:
            assert len(needed) >= 3, f"{service} may ask every service but asks {needed}"
        else:
            assert {s.split(".")[2] for s in allowed} == needed, (service, allowed, needed)
        served = f"{base.RPC_SUBJECT_PREFIX}.{service}{'.node-0' if service == 'runtime' else ''}.>"
        assert (served in perms["subscribe"]) == ("$SRV.>" in perms["subscribe"]), service


def test_services_connect_as_themselves_over_tls(production: list[dict[str, Any]]) -> None:
    data = by_name(production, "ConfigMap")["pai-config"]["data"]
    assert data["PAI_NATS_CA_FILE"] == "/etc/pai/tls/ca.crt"
    for service, w in _platform_workloads(production).items():
        env = container_env(w)
        if service not in BUS:
            assert not {"PAI_NATS_URL", "PAI_MONGO_URL"} & set(env), f"{service} is not on the bus"
            continue
        names = [e["name"] for e in _pod_spec(w)["containers"][0]["env"]]
        if service == "runtime":  # a token, not a password (test_each_node_agent_is_its_node_s_own_...)
            assert env["PAI_NATS_URL"]["value"] == "tls://nats:4222" and "PAI_NATS_PASSWORD" not in env
        else:
            assert env["PAI_NATS_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
                "name": "pai-nats-users",
                "key": service,
            }
            assert env["PAI_NATS_URL"]["value"] == f"tls://{service}:$(PAI_NATS_PASSWORD)@nats:4222"
            # $(VAR) is expanded only from variables defined before it.
            assert names.index("PAI_NATS_PASSWORD") < names.index("PAI_NATS_URL"), service
        assert env["PAI_MONGO_PASSWORD"]["valueFrom"]["secretKeyRef"] == {
            "name": "pai-mongo-users",
            "key": service,
        }
        mongo = env["PAI_MONGO_URL"]["value"]
        assert mongo.startswith(f"mongodb://{service}:$(PAI_MONGO_PASSWORD)@"), service
        assert f"/pai_{service}?" in mongo and "tls=true" in mongo and "replicaSet=rs0" in mongo, service
        assert names.index("PAI_MONGO_PASSWORD") < names.index("PAI_MONGO_URL"), service
        assert _mounted_secret(w, Path("/etc/pai/tls/ca.crt")) == ("pai-tls", "ca.crt"), service


def test_nats_and_mongo_require_tls_and_know_every_service(production: list[dict[str, Any]]) -> None:
    conf = by_name(production, "ConfigMap")["nats-config"]["data"]["nats.conf"]
    assert re.search(r"^tls \{", conf, re.MULTILINE) and "verify: true" in conf
    nats = by_name(production, "StatefulSet")["nats"]
    env = container_env(nats)
    for user in nats_users.static_users():
        assert env[nats_users.password_env(user)]["valueFrom"]["secretKeyRef"]["key"] == user
    assert "NATS_PASSWORD_RUNTIME" not in env, "node agents have no password: the auth callout decides"
    mongo = by_name(production, "StatefulSet")["mongo"]
    args = " ".join(_pod_spec(mongo)["containers"][0]["args"])
    assert "--tlsMode=requireTLS" in args and "--keyFile=" in args and "--replSet rs0" in args
    init = by_name(production, "Job")["mongo-replicaset-init"]
    init_env = container_env(init)
    assert init_env["SERVICES"]["value"].split() == BUS
    script = _pod_spec(init)["containers"][0]["command"][-1]
    assert "createUser" in script and 'role: "readWrite", db: "pai_" + service' in script


# ---- who may talk to whom (kept from before the overlays) ----------------------------------------------


def _policies_for(objects: list[dict[str, Any]], labels: dict[str, str], kind: str) -> list[dict[str, Any]]:
    return [
        p
        for p in of_kind(objects, "NetworkPolicy")
        if kind in p["spec"].get("policyTypes", []) and selects(p["spec"]["podSelector"], labels)
    ]


def test_only_the_gateway_accepts_ingress_from_anywhere(production: list[dict[str, Any]]) -> None:
    for name, w in _platform_workloads(production).items():
        policies = _policies_for(production, pod_labels(w), "Ingress")
        assert policies, f"{name}: no ingress policy isolates its pods"
        open_rules = [r for p in policies for r in p["spec"].get("ingress", []) if not r.get("from")]
        if name == "gateway":
            assert {port["port"] for r in open_rules for port in r.get("ports", [])} == {GATEWAY_PORT}
        else:
            assert not open_rules, f"{name} accepts connections from anywhere"
        for p in policies:
            for rule in p["spec"].get("ingress", []):
                ports = {port["port"] for port in rule.get("ports", [])}
                if name == "portal" and ports == {PORTAL_PORT}:
                    # Served through the gateway: the gateway's pods alone reach the portal's port.
                    gateway = pod_labels(_platform_workloads(production)["gateway"])
                    peers = rule.get("from") or []
                    assert peers and all(
                        "namespaceSelector" not in peer and selects(peer.get("podSelector") or {}, gateway)
                        for peer in peers
                    ), f"portal: {p['metadata']['name']} admits more than the gateway"
                elif rule.get("from"):
                    assert ports in ({METRICS_PORT}, {GATEWAY_PORT}), (name, p["metadata"]["name"], ports)


def test_platform_services_reach_only_nats_and_mongo(production: list[dict[str, Any]]) -> None:
    labels = {m["metadata"]["name"]: pod_labels(m) for m in of_kind(production, "StatefulSet")}
    workloads = _platform_workloads(production)
    base_peers = {("nats", 4222): labels["nats"], ("mongo", 27017): labels["mongo"]}
    # The gateway relays non-API paths to the portal, which calls the gateway's REST API back.
    extra = (
        {
            "gateway": {("portal", PORTAL_PORT): pod_labels(workloads["portal"])},
            "portal": {("gateway", GATEWAY_PORT): pod_labels(workloads["gateway"])},
        }
        if "portal" in workloads
        else {}
    )
    for name, w in workloads.items():
        allowed = {**base_peers, **extra.get(name, {})}
        reached = set()
        policies = _policies_for(production, pod_labels(w), "Egress")
        assert policies, f"{name}: no egress policy isolates its pods"
        for p in policies:
            for rule in p["spec"].get("egress", []):
                peers, ports = rule.get("to") or [], {port["port"] for port in rule.get("ports", [])}
                assert peers and ports, f"{name}: {p['metadata']['name']} allows any destination"
                if ports <= {53}:
                    continue
                if ports <= {443, 6443}:
                    assert name == "runtime", f"{name} may reach the Kubernetes API"
                    continue
                for peer in peers:
                    hits = [
                        t
                        for (t, port), lab in allowed.items()
                        if selects(peer.get("podSelector", {"matchLabels": {"-": "-"}}), lab)
                        and ports == {port}
                    ]
                    assert hits, f"{name}: {p['metadata']['name']} allows {peer} on {ports}"
                    reached.update(hits)
        assert reached == {"nats", "mongo", *(t for t, _ in extra.get(name, {}))}, f"{name} reaches {reached}"
