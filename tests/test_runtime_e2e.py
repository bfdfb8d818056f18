"""The runtime across services, with real processes: a 3-role job whose every task reaches every other's
host and ports through the PAI_* environment, and the stdlib distributed example through the whole
platform (HTTP submission to SUCCEEDED, data really exchanged between its tasks)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pai_cli.platform import Platform
from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.commands import LaunchTask
from pai_common.contract.events import TaskExited
from pai_common.contract.types import JobSpec, Placement, TaskRoleSpec
from pai_common.embedded import ServerProcess
from pai_common.envelope import decode
from pai_orchestrator.environment import task_environment
from pai_orchestrator.ports import assign_ports
from pai_runtime.settings import RuntimeSettings
from pai_runtime.shell import Agent
from tests.acceptance.harness import JOB_GUARD_S, JobLedger, wait_final

pytestmark = pytest.mark.e2e
EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

# Every task listens on all its ports, connects to every port of every other task, and waits until every
# other task has connected to each of its own ports: it succeeds only if the whole gang can reach it.
PEER_CHECK = r"""python3 - <<'PYTHON'
import json, os, socket, threading, time
env = os.environ
me = (env["PAI_CURRENT_TASK_ROLE_NAME"], env["PAI_TASK_INDEX"])
tasks = [tuple(t.split(":")) for t in env["PAI_TASK_ROLE_INSTANCES"].split(",")]
def ports(role, i):
    prefix = f"PAI_PORT_LIST_{role}_{i}_"
    return {k[len(prefix):]: [int(p) for p in v.split(",")] for k, v in env.items() if k.startswith(prefix)}
mine = [p for ps in ports(*me).values() for p in ps]
expected = (len(tasks) - 1)
accepted = {p: 0 for p in mine}
def serve(port):
    server = socket.create_server(("0.0.0.0", port))
    server.settimeout(150)
    while accepted[port] < expected:
        conn, _ = server.accept()
        conn.recv(64)
        conn.close()
        accepted[port] += 1
threads = [threading.Thread(target=serve, args=(p,)) for p in mine]
for t in threads:
    t.start()
seen = {}
for role, i in tasks:
    if (role, i) == me:
        continue
    host = env[f"PAI_HOST_IP_{role}_{i}"]
    for label, plist in ports(role, i).items():
        for port in plist:
            deadline = time.monotonic() + 150
            while True:
                try:
                    with socket.create_connection((host, port), timeout=2) as c:
                        c.sendall(b"hi")
                    break
                except OSError:
                    assert time.monotonic() < deadline, f"{role}-{i} {label}:{port} unreachable"
                    time.sleep(0.05)
            seen[f"{role}-{i}/{label}"] = f"{host}:{port}"
for t in threads:
    t.join()
hosts = {k: v for k, v in env.items() if k.startswith("PAI_TASK_ROLE_") and k.endswith("_HOST_LIST")}
with open("peers.json", "w") as f:
    json.dump({"seen": seen, "accepted": accepted, "hosts": hosts}, f)
print("reached", len(seen), "peer ports; accepted", sum(accepted.values()))
PYTHON"""


async def test_every_task_of_a_three_role_job_reaches_every_other(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    roles = {"master": (1, {"grpc": 1}), "worker": (2, {"nccl": 2}), "ps": (1, {})}
    spec = JobSpec(
        job_key="alice~three-roles",
        user="alice",
        name="three-roles",
        task_roles=[
            TaskRoleSpec(name=n, instances=k, gpu=0, cpu=1, memory_mb=1024, entrypoint=PEER_CHECK, ports=p)
            for n, (k, p) in roles.items()
        ],
        submitted_at=1,
    )
    agents = []
    for _ in range(2):
        settings = RuntimeSettings(
            nats_url=fresh_nats.url, mongo_url=mongo_server.url, data_dir=tmp_path / "data",
            node_name=f"n-{uuid.uuid4().hex[:6]}", force_simulated=True, nak_base_delay_s=0.05,
        )  # fmt: skip
        agent = Agent(settings)
        agent.app.name = f"rt{uuid.uuid4().hex[:8]}"
        agents.append(agent)
    sub = await fresh_bus.js.subscribe("pai.evt.task.exited", stream=EVENTS_STREAM, ordered_consumer=True)
    for agent in agents:
        await agent.app.start()
    try:
        placements = [
            Placement(task_role=r.name, index=i, node=agents[(k + i) % 2].node, gpus=[], host_ip="127.0.0.1")
            for k, r in enumerate(spec.task_roles)
            for i in range(r.instances)
        ]
        gang = assign_ports(spec.job_key, 0, spec, placements)
        for p in gang:
            await fresh_bus.send_command(
                LaunchTask(
                    job_key=spec.job_key, attempt_id=0, task_role=p.task_role, index=p.index, node=p.node,
                    gpus=[], entrypoint=PEER_CHECK, env=task_environment(spec, p.task_role, p.index, gang),
                    ports=p.ports,
                ),
                p.node,
            )  # fmt: skip
        exits: dict[tuple[str, int], TaskExited] = {}
        deadline = time.monotonic() + JOB_GUARD_S  # a hang guard: the loop ends when every task has exited
        while len(exits) < len(gang):
            assert time.monotonic() < deadline, f"only {sorted(exits)} exited"
            try:
                msg = await sub.next_msg(timeout=1)
            except Exception:
                continue
            body = decode(msg.headers, msg.data).body
            if isinstance(body, TaskExited) and body.job_key == spec.job_key:
                exits[(body.task_role, body.index)] = body
        assert {k: e.exit_code for k, e in exits.items()} == {(p.task_role, p.index): 0 for p in gang}, {
            k: e.log_tail for k, e in exits.items()
        }
        by_task = {(p.task_role, p.index): p for p in gang}
        for p in gang:
            agent = next(a for a in agents if a.node == p.node)
            report = json.loads(
                (agent.workdir(spec.job_key, 0, p.task_role, p.index) / "peers.json").read_text()
            )
            others = [q for q in gang if q is not p]
            # Every label of every other task, reached at the address and (last) port its environment gave.
            assert report["seen"] == {
                f"{q.task_role}-{q.index}/{label}": f"127.0.0.1:{ports[-1]}"
                for q in others
                for label, ports in q.ports.items()
            }
            assert all(n == len(gang) - 1 for n in report["accepted"].values())
            workers = [by_task[("worker", i)] for i in range(2)]
            assert report["hosts"]["PAI_TASK_ROLE_worker_HOST_LIST"] == ",".join(
                f"127.0.0.1:{w.ports['http'][0]}" for w in workers
            )
    finally:
        for agent in agents:
            await agent.app.stop()


# ---- the whole platform --------------------------------------------------------------------------------

PASSWORD = "runtime-e2e-admin"


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(
        data_dir=tmp_path_factory.mktemp("pai-runtime"),
        nodes=2,
        # The scheduler gives a CPU-only task a leaf of its own on a GPU node: a ps and two workers take 3.
        gpus_per_node=2,
        port=0,
        extra_env={"PAI_ADMIN_PASSWORD": PASSWORD},
    )
    p.start()
    yield p
    p.stop()


def _api(p: Platform) -> httpx.Client:
    login = httpx.post(
        f"{p.url}/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD}, timeout=15
    )
    assert login.status_code == 200, login.text
    return httpx.Client(
        base_url=p.url, timeout=15, headers={"Authorization": f"Bearer {login.json()['token']}"}
    )


@pytest.fixture(scope="module")
def api(platform: Platform) -> Iterator[httpx.Client]:
    with _api(platform) as client:
        yield client


@pytest.fixture(scope="module")
def ledger(api: httpx.Client) -> Iterator[JobLedger]:
    book = JobLedger()
    yield book
    book.assert_all_as_expected(api, every_job=True)


def _submit(api: httpx.Client, text: str) -> None:
    response = api.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 202, response.text


def _stdout(api: httpx.Client, task: dict[str, Any]) -> str:
    locations = api.get(task["containerLog"]).json()["locations"]
    return api.get(next(loc["uri"] for loc in locations if loc["name"] == "stdout")).text


def test_the_stdlib_distributed_example_exchanges_data_and_succeeds(
    api: httpx.Client, ledger: JobLedger
) -> None:
    text = (EXAMPLES / "distributed-allreduce.yaml").read_text()
    _submit(api, text)
    job = wait_final(api, ledger.expect("admin~distributed-allreduce", "SUCCEEDED"))
    tasks = job["taskRoles"]["worker"]["taskStatuses"]
    assert job["jobStatus"]["state"] == "SUCCEEDED", job
    assert [t["containerExitCode"] for t in tasks] == [0, 0]
    outputs = [_stdout(api, task) for task in tasks]
    assert "rank 0/2: all-reduce sum 3" in outputs[0] and "got the vector of rank 1" in outputs[0]
    assert "rank 1/2: all-reduce sum 3" in outputs[1]


def test_secrets_reach_every_role_of_a_multi_role_job_and_nothing_else(
    api: httpx.Client, ledger: JobLedger, platform: Platform
) -> None:
    """The regression of issue 12: a ps and two workers using `<% $secrets.token %>` failed every time,
    because the secrets were authorised against a read model that learnt the placement after the runtime
    asked. Submitted twice back to back; both must succeed, with the secret nowhere to be read."""
    example = (EXAMPLES / "multi-role-secrets.yaml").read_text()
    secret = yaml.safe_load(example)["secrets"]["token"]
    keys = []
    for run in range(2):
        text = example.replace("name: multi-role-secrets", f"name: multi-role-secrets-{run}", 1)
        _submit(api, text)
        keys.append(ledger.expect(f"admin~multi-role-secrets-{run}", "SUCCEEDED"))
    for key in keys:
        job = wait_final(api, key)
        assert job["jobStatus"]["state"] == "SUCCEEDED", job["jobStatus"]
        outputs = [
            _stdout(api, t) for role in ("ps", "worker") for t in job["taskRoles"][role]["taskStatuses"]
        ]
        assert "proved the secret" in outputs[0]
        assert all("the ps accepted the secret" in out for out in outputs[1:])
        config = api.get(f"/api/v2/jobs/{key}/config")
        assert config.status_code == 200 and config.json()["secrets"] == {"token": "******"}
        assert secret not in api.get(f"/api/v2/jobs/{key}").text + config.text + "".join(outputs)
    logs = "".join(path.read_text(errors="replace") for path in (platform.data_dir / "logs").glob("*.log"))
    assert secret not in logs
