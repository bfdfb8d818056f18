"""Every example job, submitted through `pai up` as a user would, followed to its end.

The project's own examples (`examples/*.yaml`) each say how they end, and this module holds them to it:
an example added without an expectation here fails the module. OpenPAI's own examples (from
`../shared/reference/openpai/examples/`, where that folder exists) need images, downloads and commands
this machine may lack: they must be accepted and end SUCCEEDED, or FAILED with an explanation the exit spec
recognises (never the "nothing identified why" fallback); one that names a virtual cluster this cluster
does not have is refused at submission with OpenPAI's 404 NoVirtualClusterError.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pai_common.reference import reference_files
from tests.acceptance.harness import JobLedger, RunningPlatform, wait_final

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = sorted((ROOT / "examples").glob("*.yaml"))
REFERENCE_EXAMPLES = reference_files(
    "openpai/examples", "*.yaml", "OpenPAI's examples submitted through pai up and followed to their end"
)
YAML = {"Content-Type": "text/yaml"}
# The exit spec's fallback when nothing in a task's exit explains it.
UNEXPLAINED = 255


def _torch_on_the_nodes() -> bool:
    """Tasks run with the host's python3 on the embedded default (the agents inherit this PATH)."""
    python = shutil.which("python3")
    return (
        python is not None
        and subprocess.run([python, "-c", "import torch"], capture_output=True).returncode == 0
    )


Check = Callable[[httpx.Client, dict[str, Any]], None]


@dataclass(frozen=True)
class Expect:
    state: str
    check: Check | None = None


def _stdout(client: httpx.Client, job: dict[str, Any], role: str, index: int = 0) -> str:
    task = job["taskRoles"][role]["taskStatuses"][index]
    locations = client.get(task["containerLog"]).json()["locations"]
    return client.get(next(loc["uri"] for loc in locations if loc["name"] == "stdout")).text


def _status(job: dict[str, Any]) -> dict[str, Any]:
    status: dict[str, Any] = job["jobStatus"]
    return status


def _no_retry(job: dict[str, Any]) -> None:
    assert _status(job)["retries"] == 0
    assert _status(job)["retryDetails"] == {"user": 0, "platform": 0, "resource": 0}


def check_hello(client: httpx.Client, job: dict[str, Any]) -> None:
    out = _stdout(client, job, "worker")
    assert "hello from OpenPAI in Python" in out  # the parameter, rendered
    assert re.search(r"GPUs visible to this task: \d", out)
    _no_retry(job)


def check_exit_3(client: httpx.Client, job: dict[str, Any]) -> None:
    assert _status(job)["appExitCode"] == 3
    assert _status(job)["appExitDiagnostics"]
    _no_retry(job)


def check_allreduce(client: httpx.Client, job: dict[str, Any]) -> None:
    assert "all-reduce sum 3" in _stdout(client, job, "worker", 0)
    assert "all-reduce sum 3" in _stdout(client, job, "worker", 1)


def check_secrets(client: httpx.Client, job: dict[str, Any]) -> None:
    assert "2 workers proved the secret 3 times each" in _stdout(client, job, "ps")
    for index in (0, 1):
        assert "the ps accepted the secret" in _stdout(client, job, "worker", index)
    key = f"{_status(job)['username']}~{job['name']}"
    assert client.get(f"/api/v2/jobs/{key}/config").json()["secrets"] == {"token": "******"}
    _no_retry(job)


def check_retry(client: httpx.Client, job: dict[str, Any]) -> None:
    # One failed attempt nothing explains: retried once, charged to the user (jobRetryCount counts it).
    status = _status(job)
    assert (status["retries"], status["attemptId"]) == (1, 1)
    assert status["retryDetails"] == {"user": 1, "platform": 0, "resource": 0}
    assert "done on attempt 1" in _stdout(client, job, "worker")


def check_per_task_retry(client: httpx.Client, job: dict[str, Any]) -> None:
    tasks = job["taskRoles"]["worker"]["taskStatuses"]
    assert [t["retries"] for t in tasks] == [0, 1, 0]
    assert [t["taskState"] for t in tasks] == ["SUCCEEDED"] * 3
    _no_retry(job)  # the job itself was never retried: only worker 1's task was


def check_syntax_error(client: httpx.Client, job: dict[str, Any]) -> None:
    status = _status(job)
    assert (
        status["appExitSpec"]["code"] == 307
        and status["appExitSpec"]["phrase"] == "ContainerPythonCompileError"
    )
    assert "train.py" in status["appExitDiagnostics"]
    _no_retry(job)  # permanent: jobRetryCount 3 does not apply


def check_gpus(client: httpx.Client, job: dict[str, Any]) -> None:
    for index in (0, 1):
        out = _stdout(client, job, "trainer", index)
        assert re.search(rf"trainer {index} trains on GPUs \d+,\d+\n", out)
        assert "two GPUs, as asked" in out  # the deployment's post-command checked them


def check_plugins(client: httpx.Client, job: dict[str, Any]) -> None:
    for index in (0, 1):
        out = _stdout(client, job, "worker", index)
        assert "the cmd plugin ran before the commands" in out
        assert "the cmd plugin's post-command ran" in out
        assert re.search(r"ssh port of this task: \d+", out)


def check_many(client: httpx.Client, job: dict[str, Any]) -> None:
    tasks = job["taskRoles"]["shard"]["taskStatuses"]
    assert len(tasks) == 8 and all(t["taskState"] == "SUCCEEDED" for t in tasks)
    assert f"shard 7: {sum(range(7000, 8000))}" in _stdout(client, job, "shard", 7)


TORCH = _torch_on_the_nodes()


def check_ddp(client: httpx.Client, job: dict[str, Any]) -> None:
    if TORCH:
        assert "replicas in sync" in _stdout(client, job, "worker", 0)
    else:  # torch is not installed where the tasks run: the job says so and is not retried
        assert _status(job)["appExitSpec"]["code"] == 304 and "torch" in _status(job)["appExitDiagnostics"]
        _no_retry(job)


OWN: dict[str, Expect] = {
    "distributed-allreduce": Expect("SUCCEEDED", check_allreduce),
    "exit-3": Expect("FAILED", check_exit_3),
    "gpus-priority-deployment": Expect("SUCCEEDED", check_gpus),
    "hello-world": Expect("SUCCEEDED", check_hello),
    "many-cpu-tasks": Expect("SUCCEEDED", check_many),
    "multi-role-secrets": Expect("SUCCEEDED", check_secrets),
    "per-task-retry": Expect("SUCCEEDED", check_per_task_retry),
    "plugins": Expect("SUCCEEDED", check_plugins),
    "pytorch-ddp-gloo": Expect("SUCCEEDED" if TORCH else "FAILED", check_ddp),
    "retry-then-succeed": Expect("SUCCEEDED", check_retry),
    "syntax-error": Expect("FAILED", check_syntax_error),
}


def renamed(text: str, name: str) -> str:
    """The example under a name of this run's own: OpenPAI never reuses a job name."""
    out, count = re.subn(r"(?m)^name:.*$", f"name: {name}", text, count=1)
    assert count == 1, "an example without a top-level name"
    return out


def test_every_example_has_an_expectation() -> None:
    assert sorted(p.stem for p in EXAMPLES) == sorted(OWN)


def test_every_example_ends_as_it_says(pai: RunningPlatform, ledger: JobLedger) -> None:
    suffix = str(int(time.time()))[-6:]
    keys: dict[str, str] = {}
    with pai.client() as client:
        # Submitted together, as a team would: they share the cluster and must not get in each other's way.
        # The one with a high priority goes first, so that it finds free cells and preempts nobody (which
        # would add retries to the others; preemption has its own test in tests/test_e2e.py).
        for path in sorted(EXAMPLES, key=lambda p: "jobPriorityClass" not in p.read_text()):
            name = f"{path.stem}-{suffix}"
            response = client.post("/api/v2/jobs", content=renamed(path.read_text(), name), headers=YAML)
            assert response.status_code == 202, f"{path.name}: {response.text}"
            keys[path.stem] = ledger.expect(f"{pai.admin_user}~{name}", OWN[path.stem].state)
        for stem, key in keys.items():
            job = wait_final(client, key)
            expected = OWN[stem]
            assert _status(job)["state"] == expected.state, (stem, _status(job))
            # Scheduled: every task was placed on a node.
            placed = [t["containerNodeName"] for r in job["taskRoles"].values() for t in r["taskStatuses"]]
            assert placed and all(placed), (stem, placed)
            if expected.check is not None:
                expected.check(client, job)


@pytest.mark.reference("openpai/examples")
def test_openpai_examples_are_accepted_and_end_explained(
    pai: RunningPlatform, ledger: JobLedger, confignfs: Path
) -> None:
    suffix = str(int(time.time()))[-6:]
    keys: dict[str, str] = {}
    with pai.client() as client:
        vcs = client.get("/api/v2/virtual-clusters").json()
        for i, path in enumerate(REFERENCE_EXAMPLES):
            name = f"openpai-{i:02d}-{suffix}"
            text = renamed(path.read_text(), name)
            response = client.post("/api/v2/jobs", content=text, headers=YAML)
            vc = (yaml.safe_load(text).get("defaults") or {}).get("virtualCluster", "default")
            if vc not in vcs:
                # A VC this cluster does not have: refused at once, as OpenPAI refuses it (and nothing runs).
                assert response.status_code == 404, f"{path.name}: {response.text}"
                assert response.json() == {
                    "code": "NoVirtualClusterError",
                    "message": f"Virtual cluster {vc} is not found.",
                }
                assert client.get(f"/api/v2/jobs/{pai.admin_user}~{name}").status_code == 404
                continue
            assert response.status_code == 202, f"{path.name}: {response.text}"
            keys[path.name] = ledger.expect(f"{pai.admin_user}~{name}", "SUCCEEDED", "FAILED")
        unexplained = {}
        for example, key in keys.items():
            status = _status(wait_final(client, key))
            if status["state"] == "FAILED":  # what a machine without the job's images and data gives
                spec = status.get("appExitSpec") or {}
                if spec.get("code") in (None, UNEXPLAINED) or not status.get("appExitDiagnostics"):
                    unexplained[example] = status
        assert not unexplained, f"failures nothing explains: {unexplained}"
