"""Storage that reaches jobs, driven from outside through HTTP on `pai up`: an admin defines `local`
storages on a temporary folder and grants them to a group through its storageConfigs ACL; a member's jobs
write and read the folder through /mnt/<name>; a read-only storage refuses writes; an outsider neither sees
the storage nor may submit a job that names it; a storage in use cannot be deleted; OpenPAI's mnist example
runs task by task, more tasks than the cluster holds at once, placed one by one as capacity allows
(gangAllocation false).

The mounts need a private mount namespace per task (the agent runs as root with `unshare`); where the
machine cannot give one, the tasks end with exit code 246 and say why, and these tests assert that instead.
"""

from __future__ import annotations

import copy
import os
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from tests.acceptance.harness import JOB_GUARD_S, JobLedger, RunningPlatform, wait_final

ROOT = Path(__file__).resolve().parents[2]
YAML = {"Content-Type": "text/yaml"}
MNIST = ROOT / "examples" / "openpai" / "mnist_500_tasks_CPU_500Task_MNIST.yaml"
STORAGE_MOUNT_EXIT = 246


def _can_mount() -> bool:
    """As the runtime decides: root, and `unshare --mount` allowed."""
    if os.geteuid() != 0:
        return False
    try:
        probe = ["unshare", "--mount", "--propagation", "private", "true"]
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


CAN_MOUNT = _can_mount()


@dataclass
class Team:
    suffix: str
    folder: Path
    storage: str
    read_only: str
    group: str
    member: str
    outsider: str
    member_token: str
    outsider_token: str


def _ok(response: httpx.Response, status: int = 200) -> Any:
    assert response.status_code == status, (
        f"{response.request.method} {response.request.url}: {response.text}"
    )
    return response.json()


@pytest.fixture(scope="module")
def team(pai: RunningPlatform, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Team]:
    suffix = uuid.uuid4().hex[:6]
    folder = tmp_path_factory.mktemp("storage-folder")
    (folder / "seed.txt").write_text("seeded by the host\n")
    t = Team(
        suffix,
        folder,
        f"data{suffix}",
        f"ro{suffix}",
        f"team{suffix}",
        f"mem{suffix}",
        f"out{suffix}",
        "",
        "",
    )
    with pai.client() as admin:
        created = admin.post(
            "/api/v2/storages",
            json={
                "name": t.storage,
                "type": "local",
                "share": True,
                "default": False,
                "data": {"path": str(folder)},
            },
        )
        assert _ok(created, 201) == {"message": f"Storage {t.storage} is created successfully."}
        _ok(
            admin.post(
                "/api/v2/storages",
                json={"name": t.read_only, "type": "local", "readOnly": True, "data": {"path": str(folder)}},
            ),
            201,
        )
        acls = {"virtualClusters": ["default"], "storageConfigs": [t.storage, t.read_only, "confignfs"]}
        _ok(admin.post("/api/v2/groups", json={"groupname": t.group, "extension": {"acls": acls}}), 201)
        for user in (t.member, t.outsider):
            _ok(admin.post("/api/v2/users", json={"username": user, "password": f"pw-{user}-123"}), 201)
        _ok(admin.put(f"/api/v2/users/{t.member}/group", json={"groupname": t.group}), 201)
    t.member_token = pai.login(t.member, f"pw-{t.member}-123")
    t.outsider_token = pai.login(t.outsider, f"pw-{t.outsider}-123")
    yield t


def _job(name: str, commands: list[str], storages: str = "") -> str:
    lines = "\n".join(f"      - {c!r}" for c in commands)
    return f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, name: img, uri: "ubuntu:22.04"}}
taskRoles:
  worker:
    instances: 1
    dockerImage: img
    resourcePerInstance: {{cpu: 1, memoryMB: 256, gpu: 0}}
    commands:
{lines}
{storages}"""


def _log(client: httpx.Client, key: str, role: str = "worker", index: int = 0) -> str:
    route = f"/api/v2/jobs/{key}/attempts/0/taskRoles/{role}/taskIndex/{index}/attempts/0/logs/all"
    response = client.get(route)
    return response.text if response.status_code == 200 else ""


def _exit_code(detail: dict[str, Any], role: str = "worker") -> Any:
    return detail["taskRoles"][role]["taskStatuses"][0].get("containerExitCode")


def test_storages_are_listed_and_shown_only_where_granted(pai: RunningPlatform, team: Team) -> None:
    with pai.client(team.member_token) as member, pai.client(team.outsider_token) as outsider:
        names = [s["name"] for s in _ok(member.get("/api/v2/storages"))["storages"]]
        assert team.storage in names and team.read_only in names
        assert {"name": team.storage, "share": True, "volumeName": team.storage, "default": False} in _ok(
            member.get("/api/v2/storages")
        )["storages"]
        shown = _ok(member.get(f"/api/v2/storages/{team.storage}"))
        # OpenPAI's types have no host folder: "other", with the exact type beside it.
        assert (shown["type"], shown["storageType"]) == ("other", "local")
        assert shown["data"] == {"path": str(team.folder)}
        assert shown["readOnly"] is False
        assert team.storage not in [s["name"] for s in _ok(outsider.get("/api/v2/storages"))["storages"]]
        refused = outsider.get(f"/api/v2/storages/{team.storage}")
        assert refused.status_code == 403 and team.storage in refused.json()["message"]
        missing = member.get("/api/v2/storages/no-such-storage")
        assert missing.status_code == 404 and missing.json()["code"] == "NoStorageError"
        # Only admins define storages.
        denied = member.post(
            "/api/v2/storages", json={"name": "x", "type": "local", "data": {"path": "/tmp"}}
        )
        assert denied.status_code == 403
    with pai.client() as admin:
        bad = admin.post(
            "/api/v2/storages", json={"name": "bad name", "type": "ceph", "data": {"path": "rel"}, "x": 1}
        )
        assert bad.status_code == 400
        for field in ("name", "type", "x"):
            assert f"{field}:" in bad.json()["message"]
        duplicate = admin.post(
            "/api/v2/storages",
            json={"name": team.storage, "type": "local", "data": {"path": str(team.folder)}},
        )
        assert duplicate.status_code == 409


def test_a_members_jobs_write_and_read_the_storage(
    pai: RunningPlatform, team: Team, ledger: JobLedger
) -> None:
    expected = "SUCCEEDED" if CAN_MOUNT else "FAILED"
    writer = f"writer{team.suffix}"
    plugin = f"""extras:
  com.microsoft.pai.runtimeplugin:
    - plugin: teamwise_storage
      parameters:
        storageConfigNames: [{team.storage}]
"""
    with pai.client(team.member_token) as member:
        write = [
            f"cat /mnt/{team.storage}/seed.txt",
            f"echo written-by-{writer} > /mnt/{team.storage}/out.txt",
        ]
        _ok(member.post("/api/v2/jobs", content=_job(writer, write, plugin), headers=YAML), 202)
        key = ledger.expect(f"{team.member}~{writer}", expected)
        detail = wait_final(member, key)
        if not CAN_MOUNT:
            assert _exit_code(detail) == STORAGE_MOUNT_EXIT
            assert "not mounted" in _log(member, key)
            return
        assert detail["jobStatus"]["state"] == "SUCCEEDED", _log(member, key)
        assert (team.folder / "out.txt").read_text() == f"written-by-{writer}\n"
        assert "seeded by the host" in _log(member, key)

        reader = f"reader{team.suffix}"
        extras = f"extras:\n  storages:\n    - {{name: {team.storage}, mountPath: /data/shared}}\n"
        _ok(
            member.post(
                "/api/v2/jobs", content=_job(reader, ["cat /data/shared/out.txt"], extras), headers=YAML
            ),
            202,
        )
        key = ledger.expect(f"{team.member}~{reader}", "SUCCEEDED")
        assert wait_final(member, key)["jobStatus"]["state"] == "SUCCEEDED"
        assert f"written-by-{writer}" in _log(member, key)

        forbidden = f"rowrite{team.suffix}"
        extras = f"extras:\n  storages:\n    - {{name: {team.read_only}}}\n"
        commands = [f"cat /mnt/{team.read_only}/seed.txt", f"echo no > /mnt/{team.read_only}/refused.txt"]
        _ok(member.post("/api/v2/jobs", content=_job(forbidden, commands, extras), headers=YAML), 202)
        key = ledger.expect(f"{team.member}~{forbidden}", "FAILED")
        assert wait_final(member, key)["jobStatus"]["state"] == "FAILED"
        assert "Read-only file system" in _log(member, key)
        assert not (team.folder / "refused.txt").exists()
    # The host's mount table never showed the tasks' mounts.
    assert f"/mnt/{team.storage}" not in Path("/proc/self/mountinfo").read_text()


def test_jobs_naming_storages_they_may_not_use_are_refused_before_they_exist(
    pai: RunningPlatform, team: Team
) -> None:
    extras = f"extras:\n  storages:\n    - {{name: {team.storage}}}\n"
    with pai.client(team.outsider_token) as outsider:
        name = f"sneak{team.suffix}"
        refused = outsider.post("/api/v2/jobs", content=_job(name, ["true"], extras), headers=YAML)
        assert refused.status_code == 403, refused.text
        assert refused.json()["code"] == "ForbiddenUserError" and team.storage in refused.json()["message"]
        assert outsider.get(f"/api/v2/jobs/{team.outsider}~{name}").status_code == 404
    with pai.client(team.member_token) as member:
        name = f"ghost{team.suffix}"
        extras = "extras:\n  storages:\n    - {name: ghost-storage}\n"
        missing = member.post("/api/v2/jobs", content=_job(name, ["true"], extras), headers=YAML)
        assert missing.status_code == 404 and missing.json()["code"] == "NoStorageError"
        assert "ghost-storage" in missing.json()["message"]
        assert member.get(f"/api/v2/jobs/{team.member}~{name}").status_code == 404


def test_a_storage_in_use_cannot_be_deleted(pai: RunningPlatform, team: Team, ledger: JobLedger) -> None:
    name = f"holder{team.suffix}"
    extras = f"extras:\n  storages:\n    - {{name: {team.read_only}}}\n"
    with pai.client(team.member_token) as member, pai.client() as admin:
        _ok(member.post("/api/v2/jobs", content=_job(name, ["sleep 600"], extras), headers=YAML), 202)
        key = ledger.expect(f"{team.member}~{name}", "STOPPED", "FAILED")
        refused = admin.delete(f"/api/v2/storages/{team.read_only}")
        assert refused.status_code == 409 and key in refused.json()["message"]
        _ok(member.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"}), 202)
        wait_final(member, key)
        # Sent again once it ended (a client retrying): the same 202, and no new hold on the storage.
        _ok(member.post("/api/v2/jobs", content=_job(name, ["sleep 600"], extras), headers=YAML), 202)
        # Released once the storage service hears that the job ended.
        deadline = time.monotonic() + JOB_GUARD_S
        while (deleted := admin.delete(f"/api/v2/storages/{team.read_only}")).status_code == 409:
            assert time.monotonic() < deadline, deleted.text
            time.sleep(0.5)
        assert _ok(deleted) == {"message": f"Storage {team.read_only} is deleted successfully."}
        assert admin.get(f"/api/v2/storages/{team.read_only}").status_code == 404


def _mnist(shipped: dict[str, Any], workers: int) -> dict[str, Any]:
    """The example with its commands replaced by what they stand for (each worker writes its result into
    the confignfs storage, the master waits for all of them), and ``workers`` instances of its task role."""
    doc = copy.deepcopy(shipped)
    results = "/mnt/confignfs/mnist_result"
    index = "$PAI_CURRENT_TASK_ROLE_CURRENT_TASK_INDEX"
    doc["taskRoles"]["taskrole"]["instances"] = workers
    doc["taskRoles"]["taskrole"]["commands"] = [
        f"mkdir -p {results}",
        f"echo {index},0.9 > {results}/{doc['name']}_{index}.csv",
    ]
    doc["taskRoles"]["master"]["commands"] = [
        f"mkdir -p {results}",
        f"while [ $(ls {results} | grep -c '^{doc['name']}_') -lt {workers} ]; do sleep 1; done",
    ]
    return doc


def _spans(detail: dict[str, Any]) -> list[tuple[int, int]]:
    tasks = [t for role in detail["taskRoles"].values() for t in role["taskStatuses"]]
    return sorted((t["launchedTime"], t["completedTime"] or 1 << 62) for t in tasks if t["launchedTime"])


def _most_at_once(spans: list[tuple[int, int]]) -> int:
    return max(sum(1 for s, e in spans if s <= start < e) for start, _ in spans)


def test_openpais_mnist_example_runs_task_by_task(
    pai: RunningPlatform, team: Team, ledger: JobLedger, confignfs: Path
) -> None:
    """OpenPAI's example: 501 tasks with `gangAllocation: false`, each asking for 50,000 MB and no GPU, on a
    cluster whose CPU leaves (2 nodes x 32 of 1 core and 8 GiB) hold 8 such tasks at a time (7 leaves
    each). As in OpenPAI with HiveD, its tasks are placed one by one as capacity allows (not refused as one
    gang of 501): each task's cells go to the next when it completes.
    Its commands download from GitHub, `apt-get install` on the host and mount an NFS server at
    10.151.40.235, none of which this machine may reach or do, so they are replaced by what they stand for;
    everything else is the example as shipped, which /config shows. The 501-task job is followed until more
    tasks have run than the cluster holds at once, then stopped (all 501 take tens of minutes on a loaded
    2-core machine); the same job with 16 workers runs to completion."""
    shipped = yaml.safe_load(MNIST.read_text())
    whole = _mnist(shipped, 500)
    with pai.client(team.member_token) as member:
        accepted = member.post("/api/v2/jobs", content=yaml.safe_dump(whole, sort_keys=False), headers=YAML)
        assert accepted.status_code == 202, accepted.text
        key = ledger.expect(f"{team.member}~CPU_500Task_MNIST", "STOPPED" if CAN_MOUNT else "FAILED")
        config = _ok(member.get(f"/api/v2/jobs/{key}/config"))
        for role in ("master", "taskrole"):
            config["taskRoles"][role]["commands"] = shipped["taskRoles"][role]["commands"]
        assert config == shipped
        if not CAN_MOUNT:  # the tasks cannot get their storage here: they say so and end with 246
            status = wait_final(member, key)["jobStatus"]
            assert status["state"] == "FAILED" and status["appExitCode"] == STORAGE_MOUNT_EXIT, status
            return
        deadline = time.monotonic() + JOB_GUARD_S
        while True:
            answer = member.get(f"/api/v2/jobs/{key}")
            if answer.status_code == 503:  # the jobs service is busy on a loaded machine: ask again
                assert time.monotonic() < deadline, answer.text
                time.sleep(1.0)
                continue
            detail = _ok(answer)
            states = [t["taskState"] for r in detail["taskRoles"].values() for t in r["taskStatuses"]]
            if states.count("SUCCEEDED") > 8:
                break
            assert detail["jobStatus"]["state"] in ("WAITING", "RUNNING"), detail["jobStatus"]
            assert time.monotonic() < deadline, f"{key}: fewer than 9 tasks done: {states.count('SUCCEEDED')}"
            time.sleep(1.0)
        # More tasks ran than the cluster holds, never more at once, and the rest wait their turn.
        assert detail["jobStatus"]["state"] == "RUNNING" and len(states) == 501
        assert states.count("WAITING") > 400 and _most_at_once(_spans(detail)) <= 8
        # The jobs service may be busy with this job's 501 task statuses: a 503 (with Retry-After) is its
        # true answer then, and a stop is safe to ask again.
        while (
            stop := member.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
        ).status_code == 503:
            assert time.monotonic() < deadline, stop.text
            time.sleep(float(stop.headers.get("Retry-After", "1")))
        _ok(stop, 202)
        assert wait_final(member, key)["jobStatus"]["state"] == "STOPPED"

        small = _mnist({**shipped, "name": "CPU_16Task_MNIST"}, 16)
        _ok(member.post("/api/v2/jobs", content=yaml.safe_dump(small, sort_keys=False), headers=YAML), 202)
        key = ledger.expect(f"{team.member}~CPU_16Task_MNIST", "SUCCEEDED")
        detail = wait_final(member, key)
    status = detail["jobStatus"]
    assert status["state"] == "SUCCEEDED" and status["appExitCode"] == 0 and status["retries"] == 0, status
    written = sorted((confignfs / "mnist_result").glob("CPU_16Task_MNIST_*.csv"))
    assert len(written) == 16
    assert (confignfs / "mnist_result" / "CPU_16Task_MNIST_15.csv").read_text() == "15,0.9\n"
    spans = _spans(detail)
    assert len(spans) == 17  # every task launched, in waves: never more at once than the CPU leaves hold
    assert 1 < _most_at_once(spans) <= 8
