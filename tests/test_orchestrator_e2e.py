"""FrameworkController semantics through the whole platform (real NATS, MongoDB-wire server, every service
as a process), with the orchestrator killed and restarted in the middle of each job: a two-role job whose
worker fails once with a transient exit and is retried with its whole gang, and jobs stopped through
`PUT executionType` while waiting for cells and while running.

The transient failure is exit code 137 (SIGKILL) with nothing in the log: OpenPAI's exit spec calls it a
transient platform failure (ALWAYS_RETRY), so the retry is charged to the platform, not to the user.
The tests wait for what they await (a job state on the job's event stream, a file a task writes), never
for a fixed time; every job's final state is checked when the module ends.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pai_cli.platform import Platform
from tests.acceptance.harness import JobLedger, wait_for_state, wait_until

pytestmark = pytest.mark.e2e

FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
PASSWORD = "orchestrator-e2e-secret"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(
        data_dir=tmp_path_factory.mktemp("pai-orch"),
        nodes=2,
        gpus_per_node=2,
        port=0,
        extra_env={"PAI_ADMIN_PASSWORD": PASSWORD},
    )
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def api(platform: Platform) -> Iterator[httpx.Client]:
    login = httpx.post(
        f"{platform.url}/api/v2/authn/basic/login",
        json={"username": "admin", "password": PASSWORD},
        timeout=15,
    )
    assert login.status_code == 200, login.text
    headers = {"Authorization": f"Bearer {login.json()['token']}"}
    with httpx.Client(base_url=platform.url, timeout=15, headers=headers) as client:
        yield client


@pytest.fixture(scope="module")
def ledger(api: httpx.Client) -> Iterator[JobLedger]:
    book = JobLedger()
    yield book
    book.assert_all_as_expected(api, every_job=True)


def submit(api: httpx.Client, text: str, ledger: JobLedger, key: str, *expected: str) -> str:
    response = api.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 202, response.text
    return ledger.expect(key, *expected)


def job_where(api: httpx.Client, key: str, check: Any, what: str) -> dict[str, Any]:
    """The job's detail once ``check`` holds for it (for what its state alone does not say)."""

    def current() -> dict[str, Any]:
        job: dict[str, Any] = api.get(f"/api/v2/jobs/{key}").json()
        return job if check(job) else {}

    found: dict[str, Any] = wait_until(current, f"{key}: {what}")
    return found


def two_roles(name: str, master: list[str], worker: list[str], retries: int, gpu: int = 1) -> str:
    def block(commands: list[str]) -> str:
        return "\n".join(f"      - {c!r}" for c in commands)

    return f"""protocolVersion: 2
name: {name}
type: job
jobRetryCount: {retries}
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  master:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: {gpu}, cpu: 1, memoryMB: 512}}
    commands:
{block(master)}
  worker:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: {gpu}, cpu: 1, memoryMB: 512}}
    commands:
{block(worker)}
"""


def test_transient_failure_is_retried_then_succeeds_across_an_orchestrator_restart(
    api: httpx.Client, platform: Platform, tmp_path: Path, ledger: JobLedger
) -> None:
    marker = tmp_path / "worker-failed-once"
    runs = tmp_path / "runs"
    go, exiting, again = tmp_path / "go", tmp_path / "worker-exiting", tmp_path / "worker-ran-again"
    key = submit(
        api,
        two_roles(
            "flaky",
            # The master runs until the worker's second run: a master that succeeded first would end the
            # attempt (minSucceededInstances), and the worker's failure would not count.
            master=[f"echo master >> {runs}", f"until [ -e {again} ]; do sleep 0.1; done"],
            # The first run fails with 137 once the test says so (the orchestrator is down by then).
            worker=[
                f"echo worker >> {runs}",
                f"if [ ! -e {marker} ]; then touch {marker}; until [ -e {go} ]; do sleep 0.1; done;"
                f" touch {exiting}; exit 137; fi",
                f"touch {again}",
            ],
            retries=1,
        ),
        ledger,
        "admin~flaky",
        "SUCCEEDED",
    )
    wait_for_state(api, key, {"RUNNING"})
    wait_until(marker.exists, "the worker's first run")
    platform.kill("orchestrator")
    go.touch()
    wait_until(exiting.exists, "the worker failing while the orchestrator is down")
    platform.restart("orchestrator")

    job = wait_for_state(api, key, FINAL)
    status = job["jobStatus"]
    assert status["state"] == "SUCCEEDED", status
    assert status["retries"] == 1 and status["attemptId"] == 1
    # A SIGKILL nobody explains is the platform's transient failure: the retry is the platform's.
    assert status["retryDetails"] == {"user": 0, "platform": 1, "resource": 0}

    attempts = api.get(f"/api/v2/jobs/{key}/job-attempts")
    assert attempts.status_code == 200, attempts.text
    first = next(a for a in attempts.json() if a["attemptIndex"] == 0)
    assert first["exitCode"] == 137
    # Both roles ran twice: the whole gang is retried, and nothing ran a third time.
    assert sorted(runs.read_text().split()) == ["master", "master", "worker", "worker"]
    assert marker.exists()


def test_job_stopped_while_running_stops_its_tasks_and_releases_its_cells(
    api: httpx.Client, platform: Platform, tmp_path: Path, ledger: JobLedger
) -> None:
    pids = tmp_path / "pids"
    key = submit(
        api,
        two_roles(
            "long",
            master=[f"echo $$ >> {pids}", "sleep 120"],
            worker=[f"echo $$ >> {pids}", "sleep 120"],
            retries=0,
        ),
        ledger,
        "admin~long",
        "STOPPED",
    )
    job = job_where(
        api,
        key,
        lambda j: all(
            t["taskState"] == "RUNNING" for r in j["taskRoles"].values() for t in r["taskStatuses"]
        ),
        "every task RUNNING",
    )
    assert job["jobStatus"]["state"] == "RUNNING"
    wait_until(lambda: pids.exists() and len(pids.read_text().split()) == 2, "both tasks' commands running")

    # A gang that cannot be placed while "long" holds its GPUs waits for cells; it is stopped there.
    text = two_roles("queued", master=["true"], worker=["true"], retries=0, gpu=2)
    submit(api, text, ledger, "admin~queued", "STOPPED")
    job_where(api, "admin~queued", lambda j: bool(j["jobStatus"].get("pendingReason")), "a pending reason")
    stop(api, "admin~queued")
    queued = wait_for_state(api, "admin~queued", FINAL)
    assert (queued["jobStatus"]["state"], queued["jobStatus"]["appExitCode"]) == ("STOPPED", -210)
    assert queued["jobStatus"]["launchedTime"] is None

    # The orchestrator is down when "long" is stopped; the request waits in the stream.
    platform.kill("orchestrator")
    stop(api, key)
    platform.restart("orchestrator")

    job = wait_for_state(api, key, FINAL)
    status = job["jobStatus"]
    assert status["state"] == "STOPPED", status
    assert status["appExitCode"] == -210 and status["retries"] == 0
    # Every task process is gone (SIGTERM, then SIGKILL after the grace period).
    wait_until(lambda: not any(alive(int(p)) for p in pids.read_text().split()), "the stopped tasks gone")
    # Its cells are back (nothing else runs in this module now).
    wait_until(
        lambda: api.get("/api/v2/virtual-clusters").json()["default"]["resourcesUsed"]["gpu"] == 0,
        "the stopped job's cells released",
    )


def stop(api: httpx.Client, key: str) -> None:
    response = api.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
    assert response.status_code == 202, response.text


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie has exited; only its parent has not collected it yet.
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split()[2] != "Z"
    except OSError:
        return False
