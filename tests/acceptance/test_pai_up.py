"""`pai up` itself, run as a user runs it: its generated credentials, its restart loop (a service, a node
agent, the NATS server and the MongoDB-wire server killed: repaired, and new jobs succeed), its lock on
the data dir, a SIGKILL of `pai up` that must leave no process behind, the next `pai up` taking over and
running `--submit`, and a Ctrl-C that stops everything while the bus and the database are frozen.

The tests of this module run in order on one data dir of their own (not the session's platform).
"""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from pai_common.embedded import free_port
from tests.acceptance.harness import (
    JobLedger,
    RunningPlatform,
    pai_executable,
    start_platform,
    stop_platform,
    wait_final,
    wait_until,
)

ROOT = Path(__file__).resolve().parents[2]
YAML = {"Content-Type": "text/yaml"}
# A hang guard for processes to go: long enough for a loaded 2-core machine.
GONE_GUARD_S = 120.0


def processes(data_dir: Path) -> dict[str, int]:
    """The platform's processes as `pai up` records them in its lock on the data dir."""
    text = (data_dir / "pai-up.lock").read_text()
    recorded: dict[str, int] = json.loads(text)["processes"] if text else {}
    return recorded


def unready(data_dir: Path) -> list[str]:
    """The services and agents whose health endpoint (the port each writes under run/) is not ready."""
    names = [n for n in processes(data_dir) if not n.endswith("-server")]
    waiting = []
    for name in names:
        try:
            port = json.loads((data_dir / "run" / f"{name}.json").read_text())["health_port"]
            ready = httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=5).status_code == 200
        except (OSError, ValueError, KeyError, httpx.HTTPError):
            ready = False
        if not ready:
            waiting.append(name)
    return waiting


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def two_nodes_job(name: str) -> str:
    """One task on each node (a GPU each, one GPU per node): both agents must work."""
    return f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  worker:
    instances: 2
    dockerImage: image
    resourcePerInstance: {{gpu: 1, cpu: 1, memoryMB: 256}}
    commands: ["echo on $PAI_CONTAINER_HOST_IP"]
"""


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pai-up-own")


@pytest.fixture(scope="module")
def first(data_dir: Path) -> Iterator[RunningPlatform]:
    platform = start_platform(data_dir, nodes=2, gpus_per_node=1)
    yield platform
    if platform.proc.poll() is None:  # a test failed before the SIGKILL test ended it
        stop_platform(platform.proc)


def test_generated_admin_credentials(first: RunningPlatform) -> None:
    path = first.data_dir / "admin-credentials.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert first.admin_user == "admin" and len(first.admin_password) >= 16
    assert first.login(first.admin_user, first.admin_password)
    wrong = httpx.post(
        f"{first.url}/api/v2/authn/basic/login",
        json={"username": "admin", "password": first.admin_password + "x"},
        timeout=30,
    )
    assert wrong.status_code == 400 and wrong.json()["code"] == "IncorrectPasswordError"
    # `pai up` logged the CLI in with them.
    assert first.cli("job", "list", check=True).returncode == 0


def test_killed_parts_are_restarted_and_new_jobs_succeed(first: RunningPlatform) -> None:
    before = processes(first.data_dir)
    victims = ["jobs", "node-1", "nats-server", "mongo-server"]
    assert set(victims) <= set(before), before
    for name in victims:
        os.kill(before[name], signal.SIGKILL)

    def repaired() -> bool:
        now = processes(first.data_dir)
        return all(now.get(n) not in (None, before[n]) and alive(now[n]) for n in victims)

    wait_until(repaired, "every killed part started again", GONE_GUARD_S)

    # Repaired: every service and agent says it is ready again (its /readyz, which needs the bus).
    wait_until(lambda: not unready(first.data_dir), "every service ready again", GONE_GUARD_S, pause_s=1.0)
    log = first.log_tail(200)
    for said in ("nats server exited with -9", "mongo server exited with -9", "jobs exited with -9"):
        assert said in log, log
    ledger = JobLedger()
    with first.client() as client:
        # The session (token) survived: the auth service's keys and tokens are in the data dir.
        for name, text in (
            ("after-kills", two_nodes_job("after-kills")),
            ("hello-after", _hello("hello-after")),
        ):
            response = client.post("/api/v2/jobs", content=text, headers=YAML)
            assert response.status_code == 202, response.text
            ledger.expect(f"admin~{name}", "SUCCEEDED")
        job = wait_final(client, "admin~after-kills")
        nodes = sorted(t["containerNodeName"] for t in job["taskRoles"]["worker"]["taskStatuses"])
        assert nodes == ["node-0", "node-1"]
        ledger.assert_all_as_expected(client, every_job=True)


def test_a_second_pai_up_on_the_same_data_dir_names_the_first(first: RunningPlatform) -> None:
    done = subprocess.run(
        [
            str(pai_executable()),
            "up",
            "--data-dir",
            str(first.data_dir),
            "--port",
            str(free_port()),
            "--simulate",
        ],
        capture_output=True,
        text=True,
        timeout=GONE_GUARD_S,
        env={**os.environ, "PAI_CLI_CONFIG": str(first.data_dir / "second-cli.json"), "COLUMNS": "400"},
    )
    said = " ".join((done.stdout + done.stderr).split())
    assert done.returncode == 1, said
    assert f"a platform is already running on {first.data_dir}: pid {first.proc.pid}, {first.url}" in said
    assert first.proc.poll() is None  # the first one was left alone
    with first.client() as client:
        assert client.get("/api/v2/jobs").status_code == 200


def test_sigkill_of_pai_up_leaves_no_process_behind(first: RunningPlatform) -> None:
    platform = processes(first.data_dir)
    # The servers, every service, the node agents.
    assert {"nats-server", "mongo-server", "auth", "jobs", "gateway", "node-0", "node-1"} <= set(platform)
    assert all(alive(pid) for pid in platform.values())
    os.kill(first.proc.pid, signal.SIGKILL)  # a closed terminal, an OOM kill: nothing can be caught
    first.proc.wait()
    wait_until(
        lambda: not [name for name, pid in platform.items() if alive(pid)],
        "every child of pai up gone",
        GONE_GUARD_S,
    )


def test_the_next_pai_up_takes_over_submits_and_stops_whatever_is_down(data_dir: Path) -> None:
    hello = ROOT / "examples" / "hello-world.yaml"
    second = start_platform(data_dir, nodes=2, gpus_per_node=1, extra_args=["--submit", str(hello)])
    try:
        assert "was not stopped cleanly" in second.log_tail(200)

        def ended() -> str:
            # This run's output (the log file holds the first run's too), once it reports the example's end
            # and goes on supervising.
            text = second.log_tail(400).split("was not stopped cleanly", 1)[1]
            return text if "running; Ctrl-C stops everything" in text else ""

        log = wait_until(ended, "the --submit example's end")
        assert "SUCCEEDED (exit code 0)" in log and "hello from OpenPAI in Python" in log
        with second.client() as client:  # the jobs of the first platform are still there
            assert client.get("/api/v2/jobs/admin~after-kills").json()["jobStatus"]["state"] == "SUCCEEDED"
        # Freeze the bus and the database: every service then waits on them, and Ctrl-C must still end it all.
        platform = processes(data_dir)
        for name in ("nats-server", "mongo-server"):
            os.kill(platform[name], signal.SIGSTOP)
    finally:
        code = stop_platform(second.proc, grace_s=GONE_GUARD_S)
    assert code == 0, second.log_tail()
    assert "stopped" in second.log_tail(5)
    wait_until(
        lambda: not [n for n, pid in platform.items() if alive(pid)], "every process stopped", GONE_GUARD_S
    )
    assert (data_dir / "pai-up.lock").read_text() == ""  # released: nothing to take over next time


def _hello(name: str) -> str:
    return (
        (ROOT / "examples" / "hello-world.yaml").read_text().replace("name: hello-world", f"name: {name}", 1)
    )
