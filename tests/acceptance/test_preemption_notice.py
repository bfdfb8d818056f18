"""Preemption with notice on `pai up`, driven through HTTP as a user: a low-priority job that checkpoints
holds every GPU; a prod job arrives and preempts it. Each preempted task gets SIGTERM with the notice file at
$PAI_PREEMPTION_NOTICE already written (its deadline from the job's extras.preemption.graceSeconds) and
checkpoints into a folder; the retry, uncounted, starts with PAI_RESUME=1, finds the checkpoint and
succeeds. The job's events and detail say so. An elastic job on the same cluster grows into the idle node,
is shrunk (not stopped) when the prod job needs that node, and grows back; its first task learns each change
through $PAI_MEMBERSHIP_FILE and SIGWINCH."""

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


def elastic_job(name: str, folder: Path) -> str:
    """Two tasks of four GPUs each, elastic from one: each records the membership it starts with and each
    one it is told of (the trap first, then the file: a change between the two is not missed)."""
    script = f"""
        cd {folder}
        told() {{ . "$PAI_MEMBERSHIP_FILE"
        echo "v$PAI_MEMBERSHIP_VERSION n$PAI_ELASTIC_INSTANCES_train" >> members-$PAI_TASK_INDEX; }}
        trap told WINCH
        trap 'exit 0' TERM
        told
        touch started-$PAI_TASK_INDEX-$PAI_TASK_ATTEMPT_ID
        while [ ! -e finish ]; do sleep 0.2; done
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
  preemption: {{graceSeconds: 5}}
  elastic: {{train: {{minInstances: 1, maxInstances: 2}}}}
"""


def _wait_line(path: Path, line: str) -> None:
    deadline = time.monotonic() + JOB_GUARD_S
    while not path.exists() or line not in path.read_text().splitlines():
        assert time.monotonic() < deadline, f"{line!r} never in {path}"
        time.sleep(0.2)


def test_an_elastic_job_grows_is_shrunk_by_a_preemption_and_grows_back(
    pai: RunningPlatform, ledger: JobLedger, tmp_path: Path
) -> None:
    s = uuid.uuid4().hex[:6]
    user = pai.admin_user
    with pai.client() as client:
        bad = elastic_job(f"bad{s}", tmp_path).replace("maxInstances: 2", "maxInstances: 3")
        refused = client.post("/api/v2/jobs", content=bad, headers=YAML)
        assert refused.status_code == 400 and "extras.elastic.train.maxInstances" in refused.text

        response = client.post("/api/v2/jobs", content=elastic_job(f"elastic{s}", tmp_path), headers=YAML)
        assert response.status_code == 202, response.text
        job = ledger.expect(f"{user}~elastic{s}", "SUCCEEDED")
        # The gang (task 0) starts, then grows into the idle node: task 0 is told.
        _wait_files(tmp_path / "started-0-0", tmp_path / "started-1-0")
        _wait_line(tmp_path / "members-0", "v1 n2")
        status = client.get(f"/api/v2/jobs/{job}").json()["jobStatus"]
        assert status["elastic"]["train"] == {"minInstances": 1, "maxInstances": 2, "currentInstances": 2}

        # A prod job needs a node: the growth task is shrunk away, the gang runs on.
        response = client.post("/api/v2/jobs", content=urgent_job(f"urgent{s}"), headers=YAML)
        assert response.status_code == 202, response.text
        urgent = ledger.expect(f"{user}~urgent{s}", "SUCCEEDED")
        _wait_line(tmp_path / "members-0", "v2 n1")
        assert wait_final(client, urgent)["jobStatus"]["state"] == "SUCCEEDED"
        # Once the node is idle again the task grows back, as its next task attempt.
        _wait_files(tmp_path / "started-1-1")
        _wait_line(tmp_path / "members-0", "v3 n2")

        (tmp_path / "finish").touch()
        done = wait_final(client, job)["jobStatus"]
        assert done["state"] == "SUCCEEDED" and done["retries"] == 0, done
        reasons = [e["reason"] for e in client.get(f"/api/v2/jobs/{job}/events").json()["data"]]
        assert reasons.count("ElasticGrew") == 2 and reasons.count("ElasticShrank") == 1, reasons
        assert "Preempted" not in reasons
