"""The gateway's alert and node routes in front of the real monitoring and scheduler services (real NATS,
real MongoDB-wire server): who may post Alertmanager's notifications and cordon nodes, what malformed
input gets, who sees which alert; and the gateway's own request metrics and traceparent."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
from fastapi import Request
from prometheus_client import REGISTRY

from pai_common.bus import Bus
from pai_common.contract.events import NodeRegistered
from pai_common.contract.rpc import Identity
from pai_common.contract.types import GpuInfo
from pai_common.embedded import ServerProcess
from pai_common.service import ServiceApp
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings
from pai_monitoring.shell import MonitoringSettings
from pai_monitoring.shell import build_app as monitoring_app
from pai_scheduler.shell import Scheduler, SchedulerSettings

CLUSTER = "node,leaf_type,leaf_count,cpu,memory_mb\nn0,gpu,2,16,131072\nn1,gpu,2,16,131072\n"


class _Caller:
    """Identity from the header alone (auth is not under test); root is the admin."""

    async def resolve(self, request: Request) -> Identity:
        who = request.headers.get("authorization", "").removeprefix("Bearer ")
        return Identity(username=who, admin=who == "root", virtual_clusters=["default"])


def notification(**overrides: Any) -> dict[str, Any]:
    alert = {
        "status": "firing",
        "labels": {"alertname": "PaiJobRetriedRepeatedly", "job_name": "alice~a", "username": "alice"},
        "annotations": {"summary": "retried"},
        "startsAt": "2026-12-01T10:00:00Z",
        "endsAt": "0001-01-01T00:00:00Z",
        "generatorURL": "http://prometheus/graph",
        "fingerprint": "f00d",
    }
    node_alert = {**alert, "labels": {"alertname": "PaiNodeLost", "node": "n1"}, "fingerprint": "beef"}
    body = {
        "version": "4",
        "groupKey": "{}",
        "status": "firing",
        "receiver": "pai",
        "groupLabels": {},
        "commonLabels": {},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager",
        "truncatedAlerts": 0,
        "alerts": [alert, node_alert],
    }
    return {**body, **overrides}


def http_count(route: str, code: str, method: str) -> float:
    return (
        REGISTRY.get_sample_value("pai_http_requests_total", {"method": method, "route": route, "code": code})
        or 0
    )


async def test_alert_and_node_routes(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    cluster = tmp_path / "cluster.csv"
    cluster.write_text(CLUSTER)
    common = {"nats_url": fresh_nats.url, "mongo_url": mongo_server.url, "data_dir": tmp_path}
    monitoring = monitoring_app(MonitoringSettings(**common))
    monitoring.name = f"mon{uuid.uuid4().hex[:8]}"
    sched_settings = SchedulerSettings(scheduler_cluster=cluster, **common)
    scheduler = ServiceApp("scheduler", sched_settings)
    Scheduler(scheduler, sched_settings)
    scheduler.name = f"sched{uuid.uuid4().hex[:8]}"
    await monitoring.start()
    await scheduler.start()
    try:
        for node in ("n0", "n1"):
            gpus = [GpuInfo(index=i, model="x", memory_mb=1, uuid=f"{node}-{i}") for i in range(2)]
            await fresh_bus.publish_event(
                NodeRegistered(node=node, host_ip="10.0.0.1", cpu=16, memory_mb=1, gpus=gpus, simulated=True)
            )
        http = build_http_app(lambda: fresh_bus, GatewaySettings(nats_url=fresh_nats.url))
        http.state.resolver = _Caller
        transport = httpx.ASGITransport(app=http)
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as api:
            root, alice, bob = ({"Authorization": f"Bearer {u}"} for u in ("root", "alice", "bob"))
            hook = "/api/v2/alerts/webhook"

            # Only an admin's token may post notifications; malformed ones are refused precisely.
            r = await api.post(hook, headers=alice, json=notification())
            assert r.status_code == 403 and r.json()["code"] == "ForbiddenUserError"
            for bad, words in (
                (b"{not json", "not valid JSON"),
                (b'{"status": "firing"}', "alerts: Field required"),
                (
                    b'{"version": "3", "status": "firing", "alerts": []}',
                    "unsupported Alertmanager webhook version",
                ),
                (
                    b'{"status": "firing", "alerts": [{"status": "odd", "labels": {}, "startsAt": "x"}]}',
                    "alerts.0.status",
                ),
            ):
                r = await api.post(hook, headers=root, content=bad)
                assert r.status_code == 400 and r.json()["code"] == "InvalidParametersError", r.text
                assert words in r.json()["message"], r.json()
            r = await api.post(hook, headers=root, json=notification())
            assert r.status_code == 200 and r.json() == {"alerts": 2, "actions": 0}

            # OpenPAI's GET /api/v2/alerts: an admin sees both, alice her job's, bob nothing.
            assert len((await api.get("/api/v2/alerts", headers=root)).json()) == 2
            mine = (await api.get("/api/v2/alerts", headers=alice)).json()
            assert [a["labels"]["job_name"] for a in mine] == ["alice~a"]
            assert mine[0]["status"]["state"] == "active" and mine[0]["fingerprint"] == "f00d"
            assert (await api.get("/api/v2/alerts", headers=bob)).json() == []

            # Nodes: anyone lists them; only an admin changes them; bad input is refused.
            listed = (await api.get("/api/v2/cluster/nodes", headers=bob)).json()["nodes"]
            assert [n["name"] for n in listed] == ["n0", "n1"]
            path = "/api/v2/cluster/nodes/n1"
            r = await api.put(path, headers=bob, json={"schedulable": False})
            assert r.status_code == 403 and r.json()["code"] == "ForbiddenUserError"
            r = await api.put("/api/v2/cluster/nodes/nope", headers=root, json={"schedulable": False})
            assert r.status_code == 404 and r.json()["code"] == "NoNodeError"
            r = await api.put("/api/v2/cluster/nodes/..", headers=root, json={"schedulable": False})
            assert r.status_code == 404
            for body in ({}, {"schedulable": "maybe"}, {"schedulable": False, "extra": 1}):
                r = await api.put(path, headers=root, json=body)
                assert r.status_code == 400 and r.json()["code"] == "InvalidParametersError", body
            before = http_count("/api/v2/cluster/nodes/{node}", "200", "PUT")
            r = await api.put(path, headers=root, json={"schedulable": False, "reason": "fan"})
            assert r.status_code == 200 and r.json()["schedulable"] is False, r.text
            assert r.json()["cordon"]["by"] == "root" and r.json()["cordon"]["reason"] == "fan"

            # Every answer carries its trace; metrics are per route template, never per raw path.
            assert r.headers["traceparent"].startswith("00-")
            assert http_count("/api/v2/cluster/nodes/{node}", "200", "PUT") == before + 1
            assert http_count("/api/v2/cluster/nodes/n1", "200", "PUT") == 0
            # An unknown path is counted under the catch-all's template (the portal proxy's), not its own.
            unknown_before = http_count("/{path:path}", "404", "GET")
            missing = await api.get("/api/v2/no/such/route", headers=root)
            assert missing.status_code == 404 and "traceparent" in missing.headers
            assert http_count("/{path:path}", "404", "GET") == unknown_before + 1
            assert http_count("/api/v2/no/such/route", "404", "GET") == 0
            # OpenPAI's clients' /rest-server prefix and a trailing slash count under the same template.
            nodes_before = http_count("/api/v2/cluster/nodes", "200", "GET")
            r = await api.get("/rest-server/api/v2/cluster/nodes/", headers=bob)
            assert r.status_code == 200, r.text
            n0, n1 = r.json()["nodes"]
            # The scheduler applied the cordon after the registrations published before it (one ordered
            # consumer), so both nodes are registered and heard from; the cordoned one stays healthy.
            assert n1["cordon"]["reason"] == "fan" and n1["healthy"] and not n1["schedulable"]
            assert n0["hostIp"] == "10.0.0.1" and n0["gpus"] == {"total": 2, "used": 0, "bad": []}
            assert n0["healthy"] and n0["schedulable"] and n0["runningGangs"] == 0
            assert http_count("/api/v2/cluster/nodes", "200", "GET") == nodes_before + 1
            latency = {"method": "PUT", "route": "/api/v2/cluster/nodes/{node}"}
            assert (REGISTRY.get_sample_value("pai_http_request_duration_seconds_count", latency) or 0) >= 1
    finally:
        await scheduler.stop()
        await monitoring.stop()
