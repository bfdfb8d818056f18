"""Monitoring as an operator uses it, on a `pai up` of its own (it needs mail, alert actions and an OTLP
collector configured before it starts): every metric the shipped rules and dashboards query is scraped
from the running platform; an alert posted as Alertmanager posts it stops, tags and mails; a cordon keeps
new work off a node and survives a scheduler restart, a drain moves running work away; one job's trace
reaches the collector with spans of every service it went through.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.acceptance.harness import JobLedger, RunningPlatform, running_platform, wait_final
from tests.acceptance.receivers import Mailbox, SpanSink, otlp_receiver, smtp_server

ROOT = Path(__file__).resolve().parents[2]
MONITORING = ROOT / "deploy" / "monitoring"
ADMIN_MAIL = "ops@example.org"
GUARD_S = 120.0  # hang guards for things that take seconds; never a performance assertion

# Metrics a rule or dashboard queries that have no sample on a simulated platform unless something
# happens: NVML figures (simulated GPUs have none), and counts of events this run need not produce.
NO_SAMPLE_UNLESS = {
    "pai_node_gpu_utilization_ratio": "NVML only",
    "pai_node_gpu_memory_used_bytes": "NVML only",
    "pai_node_gpu_ecc_errors_total": "NVML only",
    "pai_task_gpu_utilization_ratio": "NVML only",
    "pai_task_gpu_memory_bytes": "NVML only",
    "pai_scheduler_preemptions_total": "a preemption",
    "pai_bus_dead_letters": "a dead letter",
    "pai_bus_redeliveries_total": "a redelivery",
    "pai_job_retries": "a retried job that is not final",
    "pai_job_retries_total": "a retry",
}

ACTIONS = """
rules:
  - match: {alertname: PaiJobGpuIdle}
    actions: [email-user, email-admin, stop-jobs, {tag-jobs: stopped-by-alert-manager}]
"""


@dataclass
class Monitored:
    platform: RunningPlatform
    mailbox: Mailbox
    spans: SpanSink
    ledger: JobLedger


@pytest.fixture(scope="module")
def mon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Monitored]:
    data_dir = tmp_path_factory.mktemp("pai-monitoring")
    actions = data_dir / "alert-actions.yaml"
    actions.write_text(ACTIONS)
    with smtp_server() as (mailbox, smtp_port), otlp_receiver() as (spans, endpoint):
        env = {
            "PAI_ALERT_ACTIONS": str(actions),
            "PAI_SMTP_HOST": "127.0.0.1",
            "PAI_SMTP_PORT": str(smtp_port),
            "PAI_ALERT_ADMIN_EMAILS": ADMIN_MAIL,
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_BSP_SCHEDULE_DELAY": "200",
            # A drained task stops at once (a shell's `sleep` ends on SIGTERM); keep the grace short anyway.
            "PAI_PREEMPT_GRACE_S": "5",
        }
        with running_platform(data_dir, env=env) as platform:
            ledger = JobLedger()
            yield Monitored(platform, mailbox, spans, ledger)
            with platform.client() as client:
                wrong = ledger.check(client)
            assert not wrong, "jobs ended in states their tests did not expect:\n" + "\n".join(wrong)


def job_yaml(name: str, command: str, gpu: int = 1, instances: int = 1) -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
jobRetryCount: 0
taskRoles:
  main:
    instances: {instances}
    resourcePerInstance: {{gpu: {gpu}, cpu: 1, memoryMB: 256}}
    commands:
      - '{command}'
defaults:
  virtualCluster: default
"""


def submit(client: httpx.Client, text: str) -> httpx.Response:
    response = client.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 202, response.text
    return response


def until(check: Any, what: str, guard_s: float = GUARD_S) -> Any:
    deadline = time.monotonic() + guard_s
    while True:
        value = check()
        if value:
            return value
        assert time.monotonic() < deadline, f"{what} not seen within {guard_s:g}s"
        time.sleep(0.5)


def detail(client: httpx.Client, key: str) -> dict[str, Any]:
    response = client.get(f"/api/v2/jobs/{key}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def task_node(job: dict[str, Any]) -> str | None:
    node: str | None = job["taskRoles"]["main"]["taskStatuses"][0]["containerNodeName"]
    return node


# ---- metrics -----------------------------------------------------------------------------------------


def queried_metrics() -> set[str]:
    """Every pai_* metric the shipped rules and dashboards name (histogram series reduced to the family)."""
    texts = [p.read_text() for p in (MONITORING / "rules").glob("*.rules.yml")]
    for path in (MONITORING / "dashboards").glob("*.json"):
        dashboard = json.loads(path.read_text())
        texts += [t["expr"] for panel in dashboard["panels"] for t in panel.get("targets", [])]
        texts += [v["definition"] for v in dashboard["templating"]["list"] if "definition" in v]
    names = set(re.findall(r"\bpai_[a-z0-9_]+", "\n".join(texts)))
    return {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}


def scrape_all(data_dir: Path) -> tuple[set[str], set[str]]:
    """(declared metric names, names with samples) over every target `pai up` lists for Prometheus."""
    declared: set[str] = set()
    sampled: set[str] = set()
    targets = sorted((data_dir / "run" / "targets").glob("*.json"))
    assert len(targets) >= 10, targets  # eight services and two node agents
    for path in targets:
        for group in json.loads(path.read_text()):
            for target in group["targets"]:
                text = httpx.get(f"http://{target}/metrics", timeout=10).text
                for family in text_string_to_metric_families(text):
                    name = family.name + ("_total" if family.type == "counter" else "")
                    declared.add(name)
                    if family.samples:
                        sampled.add(name)
    return declared, sampled


def test_every_metric_a_rule_or_dashboard_queries_is_scraped(mon: Monitored) -> None:
    data_dir = mon.platform.data_dir
    config = (data_dir / "monitoring" / "prometheus.yml").read_text()
    assert str(data_dir / "run" / "targets" / "*.json") in config
    copied = sorted(p.name for p in (data_dir / "monitoring" / "rules").glob("*.rules.yml"))
    assert copied == sorted(p.name for p in (MONITORING / "rules").glob("*.rules.yml"))
    if shutil.which("promtool"):
        check = subprocess.run(
            ["promtool", "check", "config", str(data_dir / "monitoring" / "prometheus.yml")]
        )
        assert check.returncode == 0

    # A job running while we scrape, one finished before: task, completion and wait series exist.
    with mon.platform.client() as client:
        name = f"scraped-{int(time.time() * 1000)}"
        submit(client, job_yaml(name, "sleep 20"))
        key = mon.ledger.expect(f"{mon.platform.admin_user}~{name}", "SUCCEEDED")
        done = f"done-{int(time.time() * 1000)}"
        submit(client, job_yaml(done, "true", gpu=0))
        assert wait_final(client, mon.ledger.expect(f"{mon.platform.admin_user}~{done}", "SUCCEEDED"))
        until(lambda: detail(client, key)["jobStatus"]["state"] == "RUNNING", "the job running")

    wanted = queried_metrics()
    assert len(wanted) >= 30, wanted  # the rules and dashboards were read
    must_sample = wanted - set(NO_SAMPLE_UNLESS)

    def complete() -> tuple[set[str], set[str]] | None:
        declared, sampled = scrape_all(data_dir)
        return (declared, sampled) if must_sample <= sampled else None

    try:
        declared, sampled = until(complete, "a sample of every queried metric", guard_s=60)
    except AssertionError:
        declared, sampled = scrape_all(data_dir)
        raise AssertionError(f"queried but without samples: {sorted(must_sample - sampled)}") from None
    assert wanted <= declared, f"queried but not exported: {sorted(wanted - declared)}"
    # No metric of ours carries a label Prometheus would rename (job, instance) or that a target carries.
    for path in sorted((data_dir / "run" / "targets").glob("*.json")):
        target = json.loads(path.read_text())[0]["targets"][0]
        text = httpx.get(f"http://{target}/metrics", timeout=10).text
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                clash = {"job", "instance", "service", "process"} & set(sample.labels)
                assert not clash, f"{sample.name} carries {clash}"


# ---- alerts into actions -------------------------------------------------------------------------------


def test_an_alert_stops_tags_and_mails_once(mon: Monitored) -> None:
    p = mon.platform
    stamp = int(time.time() * 1000)
    user, email = f"alice{stamp}", f"alice{stamp}@example.org"
    with p.client() as admin:
        created = admin.post(
            "/api/v2/users",
            json={
                "username": user,
                "password": "alice-secret",
                "email": email,
                "virtualCluster": ["default"],
            },
        )
        assert created.status_code == 201, created.text
        token = admin.post("/api/v2/tokens/application").json()["token"]  # what Alertmanager holds
    name = f"idle-{stamp}"
    key = f"{user}~{name}"
    with p.client(p.login(user, "alice-secret")) as alice:
        submit(alice, job_yaml(name, "sleep 600"))
        mon.ledger.expect(key, "STOPPED")
        until(lambda: detail(alice, key)["jobStatus"]["state"] == "RUNNING", "the job running")

    # As Alertmanager posts it (webhook payload version 4), with an admin's application token.
    notification = {
        "version": "4",
        "groupKey": '{}:{alertname="PaiJobGpuIdle"}',
        "truncatedAlerts": 0,
        "status": "firing",
        "receiver": "pai-alert-handler",
        "groupLabels": {"alertname": "PaiJobGpuIdle"},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager.example",
        "alerts": [
            {
                "status": "firing",
                "labels": {
                    "alertname": "PaiJobGpuIdle",
                    "job_name": key,
                    "username": user,
                    "severity": "warning",
                },
                "annotations": {"summary": f"Job {key} has left its GPUs idle for 30 minutes"},
                "startsAt": "2026-12-01T10:00:00.000Z",
                "endsAt": "0001-01-01T00:00:00Z",
                "generatorURL": "http://prometheus.example/graph",
                "fingerprint": f"{stamp:016x}"[-16:],
            }
        ],
    }
    with httpx.Client(base_url=p.url, timeout=30, headers={"Authorization": f"Bearer {token}"}) as am:
        first = am.post("/api/v2/alerts/webhook", json=notification)
        assert first.status_code == 200, first.text
        assert first.json() == {"alerts": 1, "actions": 4}
        again = am.post("/api/v2/alerts/webhook", json=notification)
        assert again.json() == {"alerts": 1, "actions": 0}  # Alertmanager repeats; nothing runs twice
        bad = am.post("/api/v2/alerts/webhook", json={"status": "firing"})
        assert bad.status_code == 400 and bad.json()["code"] == "InvalidParametersError"

    with p.client() as admin:
        stopped = wait_final(admin, key)
        assert stopped["jobStatus"]["state"] == "STOPPED"
        until(lambda: "stopped-by-alert-manager" in detail(admin, key)["tags"], "the tag")

        def audited() -> list[dict[str, Any]] | None:
            entries = admin.get("/api/v2/audit-log", params={"actor": "alert-handler"}).json()["data"]
            mine = [
                e
                for e in entries
                if e["details"].get("fingerprint") == notification["alerts"][0]["fingerprint"]
            ]
            return mine if len(mine) == 4 else None

        entries = until(audited, "four audit entries")
        assert sorted(e["action"] for e in entries) == [
            "alert.email-admin",
            "alert.email-user",
            "alert.stop-jobs",
            "alert.tag-jobs:stopped-by-alert-manager",
        ]
        assert all(e["details"]["outcome"] == "done" for e in entries), entries
        alerts = admin.get("/api/v2/alerts").json()
        assert key in [a["labels"].get("job_name") for a in alerts]
    assert len(mon.mailbox.to(email)) == 1 and name in mon.mailbox.to(email)[0]
    assert len([m for m in mon.mailbox.to(ADMIN_MAIL) if name in m]) == 1
    with p.client(p.login(user, "alice-secret")) as alice:
        visible = alice.get("/api/v2/alerts").json()
        assert [a["labels"]["job_name"] for a in visible] == [key]
    anonymous = httpx.post(f"{p.url}/api/v2/alerts/webhook", json=notification, timeout=30)
    assert anonymous.status_code == 401, anonymous.text
    with p.client(p.login(user, "alice-secret")) as alice:
        refused = alice.post("/api/v2/alerts/webhook", json=notification)
        assert refused.status_code == 403 and refused.json()["code"] == "ForbiddenUserError"


# ---- cordon and drain ----------------------------------------------------------------------------------


def nodes(client: httpx.Client) -> dict[str, dict[str, Any]]:
    response = client.get("/api/v2/cluster/nodes")
    assert response.status_code == 200, response.text
    return {n["name"]: n for n in response.json()["nodes"]}


def kill_scheduler(platform: RunningPlatform) -> int:
    """SIGKILL the scheduler process of this `pai up` (found in its process tree), as a crash would."""
    tree = psutil.Process(platform.proc.pid).children(recursive=True)
    schedulers = [p for p in tree if "pai_scheduler" in " ".join(p.cmdline())]
    assert len(schedulers) == 1, [p.cmdline() for p in tree]
    schedulers[0].send_signal(signal.SIGKILL)
    schedulers[0].wait(30)
    return schedulers[0].pid


def test_cordon_keeps_new_work_off_a_node_and_survives_a_scheduler_restart(mon: Monitored) -> None:
    p = mon.platform
    stamp = int(time.time() * 1000)
    with p.client() as client:
        until(lambda: all(n["healthy"] for n in nodes(client).values()), "both nodes heard from")
        # The admin's CLI cordons it; the node lists (this project's and OpenPAI's Kubernetes view) say so.
        cordoned = p.cli("node", "cordon", "node-1", "--reason", "test", check=True)
        assert "node node-1: cordoned" in cordoned.stdout, cordoned.stdout
        assert nodes(client)["node-1"]["schedulable"] is False and nodes(client)["node-1"]["healthy"] is True
        k8s = {n["metadata"]["name"]: n for n in client.get("/api/v2/kubernetes/nodes").json()["items"]}
        assert [k8s[n]["spec"]["unschedulable"] for n in ("node-0", "node-1")] == [False, True]
        listed_by_cli = p.cli("node", "list", check=True).stdout
        assert re.search(r"node-1\s+yes\s+no \(cordoned\)", listed_by_cli), listed_by_cli
        bob = {"username": f"bob{stamp}", "password": "bob-secret", "virtualCluster": ["default"]}
        assert client.post("/api/v2/users", json=bob).status_code == 201
        refused = p.cli("node", "cordon", "node-0", token=p.login(bob["username"], "bob-secret"))
        assert refused.returncode != 0 and "admin" in (refused.stderr + refused.stdout).lower()
        assert client.put("/api/v2/cluster/nodes/node-9", json={"schedulable": False}).status_code == 404
        assert client.put("/api/v2/cluster/nodes/node-1", json={"cordon": True}).status_code == 400

        # A gang that needs both nodes waits, and says why; a one-GPU job runs on the other node.
        big = f"both-nodes-{stamp}"
        submit(client, job_yaml(big, "true", gpu=4, instances=2))
        big_key = mon.ledger.expect(f"{p.admin_user}~{big}", "SUCCEEDED")
        reason = until(lambda: detail(client, big_key)["jobStatus"].get("pendingReason"), "a pending reason")
        assert "node-1" in reason and "cordoned" in reason, reason
        small = f"one-gpu-{stamp}"
        submit(client, job_yaml(small, "true"))
        small_key = mon.ledger.expect(f"{p.admin_user}~{small}", "SUCCEEDED")
        assert task_node(wait_final(client, small_key)) == "node-0"

        killed = kill_scheduler(p)
        # `pai up` restarts it; it comes back with the cordon it had.
        until(lambda: _listed(client), "the scheduler answering again")
        listed = nodes(client)
        assert listed["node-1"]["schedulable"] is False and listed["node-1"]["cordon"]["by"] == p.admin_user
        assert killed not in [c.pid for c in psutil.Process(p.proc.pid).children(recursive=True)]
        assert detail(client, big_key)["jobStatus"]["state"] == "WAITING"

        uncordoned = p.cli("node", "uncordon", "node-1", check=True)
        assert "node node-1: takes new work again" in uncordoned.stdout, uncordoned.stdout
        assert wait_final(client, big_key)["jobStatus"]["state"] == "SUCCEEDED"
        cordon_log = client.get("/api/v2/audit-log", params={"target": "node-1"}).json()["data"]
        assert [e["action"] for e in cordon_log][:2] == ["node.uncordon", "node.cordon"]


def _listed(client: httpx.Client) -> bool:
    try:
        return client.get("/api/v2/cluster/nodes").status_code == 200
    except httpx.TransportError:
        return False


def test_drain_moves_running_work_to_another_node(mon: Monitored) -> None:
    p = mon.platform
    name = f"drained-{int(time.time() * 1000)}"
    with p.client() as client:
        until(lambda: all(n["schedulable"] and n["healthy"] for n in nodes(client).values()), "nodes ready")
        submit(client, job_yaml(name, "sleep 600"))
        key = mon.ledger.expect(f"{p.admin_user}~{name}", "STOPPED")
        first = until(
            lambda: detail(client, key)["jobStatus"]["state"] == "RUNNING" and detail(client, key), "running"
        )
        node = task_node(first)
        other = "node-1" if node == "node-0" else "node-0"
        drained = client.put(f"/api/v2/cluster/nodes/{node}", json={"schedulable": False, "drain": True})
        assert drained.status_code in (200, 202), drained.text

        def moved() -> dict[str, Any] | None:
            job = detail(client, key)
            running = job["jobStatus"]["state"] == "RUNNING" and task_node(job) == other
            return job if running and job["jobStatus"]["retries"] >= 1 else None

        job = until(moved, "the job running again on the other node")
        assert job["jobStatus"]["retryDetails"]["platform"] >= 1  # not counted against jobRetryCount
        until(lambda: not nodes(client)[node]["draining"], "the drained node empty")
        client.put(f"/api/v2/cluster/nodes/{node}", json={"schedulable": True})
        stop = client.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
        assert stop.status_code in (200, 202), stop.text
        assert wait_final(client, key)["jobStatus"]["state"] == "STOPPED"


# ---- tracing -----------------------------------------------------------------------------------------


def test_one_jobs_trace_crosses_every_service_it_touches(mon: Monitored) -> None:
    p = mon.platform
    name = f"traced-{int(time.time() * 1000)}"
    with p.client() as client:
        response = submit(client, job_yaml(name, "true"))
        parent = response.headers.get("traceparent", "")
        assert re.fullmatch(r"00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}", parent), parent
        key = mon.ledger.expect(f"{p.admin_user}~{name}", "SUCCEEDED")
        assert wait_final(client, key)["jobStatus"]["state"] == "SUCCEEDED"
    trace_id = parent.split("-")[1]
    wanted = {"pai-gateway", "pai-jobs", "pai-orchestrator", "pai-scheduler", "pai-runtime"}

    def seen() -> set[str] | None:
        services = {s.service for s in mon.spans.of_trace(trace_id)}
        return services if wanted <= services else None

    try:
        until(seen, "spans of every service in the job's trace", guard_s=60)
    except AssertionError:
        got = sorted({(s.service, s.name) for s in mon.spans.of_trace(trace_id)})
        raise AssertionError(f"trace {trace_id} has only {got}") from None
    spans = mon.spans.of_trace(trace_id)
    names = {(s.service, s.name) for s in spans}
    assert ("pai-jobs", "rpc jobs.submit") in names
    assert ("pai-runtime", "handle runtime.launch") in names
    # PyMongo's commands are spans of the job's trace too (named <database>.<command>).
    assert any(s.service == "pai-jobs" and s.name == "pai_jobs.insert" for s in spans), sorted(names)
    # One tree: every span but the gateway's request span has its parent in the trace.
    ids = {s.span_id for s in spans}
    roots = [s for s in spans if s.parent_id not in ids]
    assert {s.service for s in roots} == {"pai-gateway"}, roots
