"""Preemption with notice on `pai up`, driven through HTTP as a user: a low-priority job that checkpoints
holds every GPU; a prod job arrives and preempts it. Each preempted task gets SIGTERM with the notice file at
$PAI_PREEMPTION_NOTICE already written (its deadline from the job's extras.preemption.graceSeconds) and
checkpoints into a folder; the retry, uncounted, starts with PAI_RESUME=1, finds the checkpoint and
succeeds. The job's events and detail say so."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

from tests.acceptance.harness import JOB_GUARD_S, JobLedger, RunningPlatform, wait_final

YAML = {"Content-Type": "text/yaml"}
GRACE_S = 20


def checkpointing_job(name: str, folder: Path) -> str:
    """Two tasks of four GPUs each (the whole simulated cluster) that checkpoint on notice and resume."""
    script = f"""
        cd {folder}
        if [ "$PAI_RESUME" = 1 ]; then cat ckpt-$PAI_TASK_INDEX > resumed-$PAI_TASK_INDEX; exit 0; fi
        save() {{ cp "$PAI_PREEMPTION_NOTICE" notice-$PAI_TASK_INDEX; date +%s%3N > ckpt-$PAI_TASK_INDEX; }}
        trap 'save; exit 0' TERM
        touch started-$PAI_TASK_INDEX
        while true; do sleep 0.2; done
    """
    commands = "\n".join(f"      - {json.dumps(line.strip())}" for line in script.strip().splitlines())
    return f"""protocolVersion: 2
name: {name}
type: job
taskRoles:
  train:
    instances: 2
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: 4}}
    commands:
{commands}
extras:
  hivedScheduler: {{jobPriorityClass: test}}
  preemption: {{graceSeconds: {GRACE_S}}}
"""


def urgent_job(name: str) -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
taskRoles:
  main:
    instances: 1
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: 4}}
    commands: ["sleep 1"]
extras:
  hivedScheduler: {{jobPriorityClass: prod}}
"""


def _wait_files(*paths: Path) -> None:
    deadline = time.monotonic() + JOB_GUARD_S
    while not all(p.exists() for p in paths):
        assert time.monotonic() < deadline, f"never written: {[str(p) for p in paths if not p.exists()]}"
        time.sleep(0.2)


def test_a_preempted_job_is_told_checkpoints_and_resumes(
    pai: RunningPlatform, ledger: JobLedger, tmp_path: Path
) -> None:
    s = uuid.uuid4().hex[:6]
    user = pai.admin_user
    with pai.client() as client:
        response = client.post("/api/v2/jobs", content=checkpointing_job(f"ckpt{s}", tmp_path), headers=YAML)
        assert response.status_code == 202, response.text
        victim = ledger.expect(f"{user}~ckpt{s}", "SUCCEEDED")
        _wait_files(tmp_path / "started-0", tmp_path / "started-1")

        told_after = int(time.time() * 1000)
        response = client.post("/api/v2/jobs", content=urgent_job(f"urgent{s}"), headers=YAML)
        assert response.status_code == 202, response.text
        urgent = ledger.expect(f"{user}~urgent{s}", "SUCCEEDED")

        # Each task read its notice in its SIGTERM handler and checkpointed before the deadline.
        _wait_files(*(tmp_path / f"{kind}-{i}" for kind in ("notice", "ckpt") for i in (0, 1)))
        for i in (0, 1):
            notice = json.loads((tmp_path / f"notice-{i}").read_text())
            assert notice["preemptor"] == urgent and notice["graceSeconds"] == GRACE_S
            assert notice["deadlineMs"] >= told_after + GRACE_S * 1000
            assert told_after <= int((tmp_path / f"ckpt-{i}").read_text()) <= notice["deadlineMs"]

        assert wait_final(client, urgent)["jobStatus"]["state"] == "SUCCEEDED"
        done = wait_final(client, victim)["jobStatus"]
        assert done["state"] == "SUCCEEDED", done
        # The retry was the platform's (uncounted), started with PAI_RESUME=1 and found its checkpoints.
        assert done["retries"] >= 1 and done["retryDetails"]["user"] == 0 and done["resume"] is True
        for i in (0, 1):
            assert (tmp_path / f"resumed-{i}").read_text() == (tmp_path / f"ckpt-{i}").read_text()

        events = client.get(f"/api/v2/jobs/{victim}/events").json()["data"]
        [noticed] = [e for e in events if e["reason"] == "PreemptionNotice"]
        assert f"preempted by {urgent}" in noticed["message"] and f"{GRACE_S} s to stop" in noticed["message"]
        first = client.get(f"/api/v2/jobs/{victim}/job-attempts/0")
        assert first.status_code == 200, first.text
        attempt = first.json()
        assert attempt["exitCode"] == -1003 and "resume" not in attempt
        assert (
            attempt["preemption"]["preemptor"] == urgent and attempt["preemption"]["graceSeconds"] == GRACE_S
        )
