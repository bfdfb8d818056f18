"""Job dependencies (extras.dependencies) on `pai up`, driven through HTTP as a user: a job waits, WAITING
with a pending reason naming its dependency, until that job ends; it then runs (and sees what its
dependency left behind); a job whose dependency fails fails without starting (-240, the reason naming the
dependency); `on: completed` runs after a failure too; unknown jobs and a job depending on itself are
refused at submission with the field at fault."""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

import httpx

from tests.acceptance.harness import JOB_GUARD_S, JobLedger, RunningPlatform, wait_final

YAML = {"Content-Type": "text/yaml"}


def job(name: str, command: str, extras: str = "") -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
taskRoles:
  main:
    instances: 1
    resourcePerInstance: {{cpu: 1, memoryMB: 128, gpu: 0}}
    commands:
      - {command}
{extras}"""


def submit(client: httpx.Client, text: str) -> httpx.Response:
    return client.post("/api/v2/jobs", content=text, headers=YAML)


def status(client: httpx.Client, key: str) -> dict[str, Any]:
    response = client.get(f"/api/v2/jobs/{key}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()["jobStatus"]
    return body


def wait_status(client: httpx.Client, key: str, check: Any, what: str) -> dict[str, Any]:
    deadline = time.monotonic() + JOB_GUARD_S
    while True:
        seen = status(client, key)
        if check(seen):
            return seen
        assert time.monotonic() < deadline, f"{key}: {what} never happened; last status {seen}"
        time.sleep(0.5)


def test_jobs_wait_for_their_dependencies_then_run_or_fail(
    pai: RunningPlatform, ledger: JobLedger, tmp_path: Path
) -> None:
    s = uuid.uuid4().hex[:6]
    user = pai.admin_user
    flag, marker = tmp_path / "go", tmp_path / "prep-ran"
    with pai.client() as client:
        # `prep` runs until the test lets it finish; it leaves a marker for `train`.
        prep = job(f"prep{s}", f"while [ ! -f {flag} ]; do sleep 0.2; done; echo ready > {marker}")
        assert submit(client, prep).status_code == 202
        prep_key = ledger.expect(f"{user}~prep{s}", "SUCCEEDED")
        needs = f"extras:\n  dependencies: [{{job: {prep_key}}}]\n"
        train = job(f"train{s}", f"test -f {marker} && cat {marker}", needs)
        assert submit(client, train).status_code == 202
        train_key = ledger.expect(f"{user}~train{s}", "SUCCEEDED")
        doomed = job(f"doomed{s}", "exit 3")
        assert submit(client, doomed).status_code == 202
        doomed_key = ledger.expect(f"{user}~doomed{s}", "FAILED")
        after_doomed = f"extras:\n  dependencies: [{{job: doomed{s}}}]\n"  # a bare name: the user's own job
        assert submit(client, job(f"never{s}", "echo never", after_doomed)).status_code == 202
        never_key = ledger.expect(f"{user}~never{s}", "FAILED")
        cleanup = f"extras:\n  dependencies: [{{job: {doomed_key}, on: completed}}, {{job: {prep_key}}}]\n"
        assert submit(client, job(f"cleanup{s}", "echo cleaning up", cleanup)).status_code == 202
        cleanup_key = ledger.expect(f"{user}~cleanup{s}", "SUCCEEDED")

        # While `prep` runs, `train` waits and says for what.
        wait_status(client, prep_key, lambda st: st["state"] == "RUNNING", "prep running")
        waiting = status(client, train_key)
        assert waiting["state"] == "WAITING"
        assert waiting["pendingReason"] == f"waiting for its dependency: {prep_key} to succeed"
        assert waiting["dependencies"] == [
            {"job": prep_key, "on": "succeeded", "state": None, "satisfied": None}
        ]
        events = client.get(f"/api/v2/jobs/{train_key}/events").json()
        assert "WaitingForDependencies" in [e["reason"] for e in events["data"]]

        # `doomed` fails: `never` fails without starting, naming it; `cleanup` still waits for `prep`.
        failed = wait_final(client, never_key)["jobStatus"]
        assert failed["state"] == "FAILED" and failed["appExitCode"] == -240
        assert failed["appExitSpec"]["phrase"] == "JobDependencyUnsatisfied"
        assert f"dependency {doomed_key} ended FAILED" in failed["appExitDiagnostics"]
        assert failed["launchedTime"] is None
        reasons = [e["reason"] for e in client.get(f"/api/v2/jobs/{never_key}/events").json()["data"]]
        assert "DependencyUnsatisfied" in reasons
        half = wait_status(
            client,
            cleanup_key,
            lambda st: any(d["state"] == "FAILED" for d in st.get("dependencies", [])),
            "cleanup learning that doomed failed",
        )
        assert half["state"] == "WAITING"
        assert half["pendingReason"] == f"waiting for its dependency: {prep_key} to succeed"
        assert status(client, train_key)["state"] == "WAITING"

        flag.write_text("go")
        assert wait_final(client, prep_key)["jobStatus"]["state"] == "SUCCEEDED"
        done = wait_final(client, train_key)
        assert done["jobStatus"]["state"] == "SUCCEEDED", done["jobStatus"]
        assert done["jobStatus"]["dependencies"][0]["state"] == "SUCCEEDED"
        # It started after `prep` ended, and saw what `prep` left.
        assert done["jobStatus"]["launchedTime"] >= status(client, prep_key)["completedTime"]
        assert wait_final(client, cleanup_key)["jobStatus"]["state"] == "SUCCEEDED"
        assert wait_final(client, doomed_key)["jobStatus"]["appExitCode"] == 3


def test_unknown_jobs_and_self_dependencies_are_refused(pai: RunningPlatform) -> None:
    s = uuid.uuid4().hex[:6]
    with pai.client() as client:
        ghost = job(f"orphan{s}", "exit 0", f"extras:\n  dependencies: [{{job: nobody~ghost{s}}}]\n")
        refused = submit(client, ghost)
        assert refused.status_code == 400, refused.text
        assert refused.json()["code"] == "InvalidProtocolError"
        assert f"names no job: nobody~ghost{s}" in refused.json()["message"]
        assert client.get(f"/api/v2/jobs/{pai.admin_user}~orphan{s}").status_code == 404
        selfish = job(f"self{s}", "exit 0", f"extras:\n  dependencies: [{{job: self{s}}}]\n")
        refused = submit(client, selfish)
        assert refused.status_code == 400 and "cannot depend on itself" in refused.json()["message"]
