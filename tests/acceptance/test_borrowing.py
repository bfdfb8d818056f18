"""Fair sharing of idle quota on the running platform: `pai up --cluster` with a HiveD config of two VCs,
a borrowing job on the other VC's idle node, `GET /api/v2/virtual-clusters` showing it borrowed and lent,
and the lender reclaiming the node by preemption when its own job arrives."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.acceptance.harness import JOB_GUARD_S, JobLedger, RunningPlatform, running_platform, wait_final

pytestmark = pytest.mark.e2e

# Two simulated nodes of 4 GPUs: VC "team" owns node-0 and may borrow 4 GPUs; VC "lender" owns node-1.
CLUSTER = """
physicalCluster:
  skuTypes:
    gpu: {gpu: 1, cpu: 8, memory: 65536Mi}
  cellTypes:
    NODE: {childCellType: gpu, childCellNumber: 4, isNodeLevel: true}
    RACK: {childCellType: NODE, childCellNumber: 2}
  physicalCells:
    - {cellType: RACK, cellChildren: [{cellAddress: node-0}, {cellAddress: node-1}]}
virtualClusters:
  team:
    virtualCells: [{cellType: RACK.NODE, cellNumber: 1}]
    borrowingLimit: 4
    weight: 2
    preemptionGraceSeconds: 20
  lender:
    virtualCells: [{cellType: RACK.NODE, cellNumber: 1}]
sharing:
  reclaimGraceSeconds: 5
"""


def job(name: str, vc: str) -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
jobRetryCount: 0
prerequisites:
  - {{type: dockerimage, uri: 'python:3.11-slim', name: image}}
taskRoles:
  worker:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 4, cpu: 1, memoryMB: 1024}}
    commands:
      - sleep 600
defaults:
  virtualCluster: {vc}
"""


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningPlatform]:
    data = tmp_path_factory.mktemp("pai-borrowing")
    cluster = data / "two-vcs.yaml"
    cluster.write_text(CLUSTER)
    with running_platform(data / "data", extra_args=["--cluster", str(cluster)]) as running:
        yield running


def wait_state(client: httpx.Client, key: str, state: str) -> dict[str, Any]:
    """Poll the job's detail until it reaches ``state`` (a hang guard, not a timing assertion)."""
    deadline = time.monotonic() + JOB_GUARD_S
    while time.monotonic() < deadline:
        detail = client.get(f"/api/v2/jobs/{key}")
        assert detail.status_code == 200, detail.text
        body: dict[str, Any] = detail.json()
        if body["jobStatus"]["state"] == state:
            return body
        time.sleep(0.5)
    raise AssertionError(f"{key} never reached {state}: {body['jobStatus']}")


def vcs(client: httpx.Client) -> dict[str, Any]:
    response = client.get("/api/v2/virtual-clusters")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def test_a_vc_borrows_idle_cells_and_the_lender_reclaims_them(platform: RunningPlatform) -> None:
    ledger = JobLedger()
    user = platform.admin_user
    suffix = str(int(time.time() * 1000))
    keys = {name: f"{user}~{name}-{suffix}" for name in ("own", "borrowing", "lender")}
    with platform.client() as client:
        views = vcs(client)
        assert set(views) == {"team", "lender"}
        # The most notice a preempted job of the VC gets: its own cap, else the cluster's (300 s).
        assert views["team"]["sharing"] == {
            "weight": 2.0,
            "borrowingLimit": 4.0,
            "preemptionGraceSeconds": 20.0,
        }
        assert views["lender"]["sharing"]["preemptionGraceSeconds"] == 300.0
        assert views["team"]["resourcesBorrowed"]["gpu"] == 0

        def submit(name: str, vc: str) -> str:
            text = job(f"{name}-{suffix}", vc)
            response = client.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
            assert response.status_code == 202, response.text
            return ledger.expect(keys[name], "STOPPED")

        try:
            submit("own", "team")
            wait_state(client, keys["own"], "RUNNING")
            # The team's node is full: its second job borrows the lender's idle node.
            submit("borrowing", "team")
            wait_state(client, keys["borrowing"], "RUNNING")
            views = vcs(client)
            assert views["team"]["resourcesBorrowed"]["gpu"] == 4, views["team"]
            assert views["lender"]["resourcesLent"]["gpu"] == 4, views["lender"]
            # The lender's own job reclaims its node: the borrower is preempted and waits again.
            submit("lender", "lender")
            wait_state(client, keys["lender"], "RUNNING")
            detail = wait_state(client, keys["borrowing"], "WAITING")
            status = detail["jobStatus"]
            # Its attempt was preempted and retried without counting against the user's retries.
            assert status["attemptId"] == 1 and status["retryDetails"]["user"] == 0, status
            assert status["pendingReason"].startswith("VC team: 4 of 4 guaranteed"), status
            views = vcs(client)
            assert views["team"]["resourcesBorrowed"]["gpu"] == 0
            assert views["lender"]["resourcesLent"]["gpu"] == 0
            assert views["lender"]["resourcesUsed"]["gpu"] == 4
        finally:
            for key in ledger.expected:
                client.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
        for key in ledger.expected:
            wait_final(client, key)
        wrong = ledger.check(client)
    assert not wrong, wrong
