"""The whole platform through HTTP: real NATS, a real MongoDB-wire server, every service as a process."""

from __future__ import annotations

import json
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import nats
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from pai_cli.platform import Platform
from tests.acceptance.harness import JOB_GUARD_S, JobLedger, wait_for_state, wait_until

pytestmark = pytest.mark.e2e

FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def job_yaml(
    name: str,
    commands: list[str],
    gpu: float = 1,
    instances: int = 1,
    retries: int = 0,
    priority: str = "test",
) -> str:
    lines = "\n".join(f"      - {json.dumps(c)}" for c in commands)
    return f"""protocolVersion: 2
name: {name}
type: job
jobRetryCount: {retries}
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  worker:
    instances: {instances}
    dockerImage: image
    resourcePerInstance: {{gpu: {gpu}, cpu: 1, memoryMB: 512}}
    commands:
{lines}
extras:
  hivedScheduler: {{jobPriorityClass: {priority}}}
"""


PASSWORD = "e2e-admin-secret"


def new_platform(data_dir: Path, nodes: int, gpus_per_node: int) -> Platform:
    return Platform(
        data_dir=data_dir,
        nodes=nodes,
        gpus_per_node=gpus_per_node,
        port=0,
        extra_env={"PAI_ADMIN_PASSWORD": PASSWORD},
    )


def admin_client(p: Platform, token: str | None = None) -> httpx.Client:
    """An API client logged in as the admin (with ``token`` when given, else by a fresh login)."""
    if token is None:
        login = httpx.post(
            f"{p.url}/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD}, timeout=15
        )
        assert login.status_code == 200, login.text
        token = login.json()["token"]
    return httpx.Client(base_url=p.url, timeout=15, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = new_platform(tmp_path_factory.mktemp("pai"), nodes=2, gpus_per_node=2)
    p.start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def api(platform: Platform) -> Iterator[httpx.Client]:
    with admin_client(platform) as client:
        yield client


@pytest.fixture(scope="module")
def ledger(api: httpx.Client) -> Iterator[JobLedger]:
    """Every job of this module's platform, with the final states its test expects; checked at the end."""
    book = JobLedger()
    yield book
    book.assert_all_as_expected(api, every_job=True)


def gpus_of(mask: int | None) -> list[int]:
    """The GPU indexes in OpenPAI's containerGpus bit mask."""
    return [i for i in range(64) if mask and mask >> i & 1]


def submit(api: httpx.Client, text: str, ledger: JobLedger, *expected: str) -> str:
    """Submit as the admin; the job must end in one of ``expected`` (checked when the module ends)."""
    response = api.post("/api/v2/jobs", content=text, headers={"Content-Type": "text/yaml"})
    assert response.status_code == 202, response.text
    name = yaml.safe_load(text)["name"]
    return ledger.expect(f"admin~{name}", *expected)


def wait_state(api: httpx.Client, key: str, states: set[str]) -> dict[str, Any]:
    return wait_for_state(api, key, states)


def test_job_succeeds_end_to_end(api: httpx.Client, ledger: JobLedger) -> None:
    submit(
        api,
        job_yaml(
            "hello",
            [
                'echo "job=$PAI_JOB_NAME user=$PAI_USER_NAME"',
                'echo "role=$PAI_CURRENT_TASK_ROLE_NAME index=$PAI_TASK_INDEX"',
                'echo "cuda=$CUDA_VISIBLE_DEVICES nvidia=$NVIDIA_VISIBLE_DEVICES"',
                'echo "leak=${PAI_ADMIN_PASSWORD:-none}"',
            ],
        ),
        ledger,
        "SUCCEEDED",
    )
    job = wait_state(api, "admin~hello", FINAL)
    status = job["jobStatus"]
    assert status["state"] == "SUCCEEDED"
    assert status["appExitCode"] == 0
    assert status["username"] == "admin" and status["virtualCluster"] == "default"
    assert status["submissionTime"] <= status["launchedTime"] <= status["completedTime"]
    task = job["taskRoles"]["worker"]["taskStatuses"][0]
    assert task["taskState"] == "SUCCEEDED" and task["containerExitCode"] == 0
    assert task["containerNodeName"] in ("node-0", "node-1")
    assert len(gpus_of(task["containerGpus"])) == 1

    locations = api.get(task["containerLog"]).json()["locations"]
    stdout_uri = next(loc["uri"] for loc in locations if loc["name"] == "stdout")
    out = api.get(stdout_uri).text
    assert "job=admin~hello user=admin\nrole=worker index=0" in out
    (gpu,) = gpus_of(task["containerGpus"])
    assert f"cuda={gpu} nvidia={gpu}" in out
    # The platform's own secrets never reach a task.
    assert "leak=none" in out


def test_failing_job_reports_its_exit_code(api: httpx.Client, ledger: JobLedger) -> None:
    submit(api, job_yaml("fails", ["echo about to fail >&2", "exit 3"], gpu=0), ledger, "FAILED")
    job = wait_state(api, "admin~fails", FINAL)
    assert job["jobStatus"]["state"] == "FAILED"
    assert job["jobStatus"]["appExitCode"] == 3
    assert job["jobStatus"]["appExitTriggerTaskRoleName"] == "worker"
    assert job["taskRoles"]["worker"]["taskStatuses"][0]["containerExitCode"] == 3


def test_bad_requests_get_openpai_errors(api: httpx.Client, platform: Platform, ledger: JobLedger) -> None:
    bad = api.post("/api/v2/jobs", content="name: [unclosed", headers={"Content-Type": "text/yaml"})
    assert bad.status_code == 400
    assert bad.json()["code"] == "InvalidProtocolError"
    assert bad.json()["message"]

    no_token = httpx.get(f"{platform.url}/api/v2/jobs")
    assert no_token.status_code == 401
    assert no_token.json() == {
        "code": "UnauthorizedUserError",
        "message": "Guest is not allowed to do this operation.",
    }

    forged = httpx.get(
        f"{platform.url}/api/v2/jobs", headers={"Authorization": "Bearer eyJhbGciOiJub25lIn0.e30."}
    )
    assert forged.status_code == 401
    assert forged.json()["code"] == "UnauthorizedUserError"

    wrong_password = httpx.post(
        f"{platform.url}/api/v2/authn/basic/login", json={"username": "admin", "password": "not-the-password"}
    )
    assert wrong_password.status_code == 400
    assert wrong_password.json()["code"] == "IncorrectPasswordError"

    missing = api.get("/api/v2/jobs/admin~never-submitted")
    assert missing.status_code == 404 and missing.json()["code"] == "NoJobError"

    unknown_route = api.get("/api/v2/no-such-thing")
    assert unknown_route.status_code == 404 and unknown_route.json()["code"] == "NoApiError"

    huge = api.post("/api/v2/jobs", content="x" * (300 * 1024), headers={"Content-Type": "text/yaml"})
    assert huge.status_code == 413

    submit(api, job_yaml("twice", ["true"], gpu=0), ledger, "SUCCEEDED")
    # The same job again is a retry of a success: the same 202. Other content under the name is 409.
    same = api.post(
        "/api/v2/jobs", content=job_yaml("twice", ["true"], gpu=0), headers={"Content-Type": "text/yaml"}
    )
    assert same.status_code == 202
    again = api.post(
        "/api/v2/jobs", content=job_yaml("twice", ["false"], gpu=0), headers={"Content-Type": "text/yaml"}
    )
    assert again.status_code == 409 and again.json()["code"] == "ConflictJobError"


def test_impossible_gang_fails_with_a_reason(api: httpx.Client, ledger: JobLedger) -> None:
    submit(api, job_yaml("too-big", ["true"], gpu=3), ledger, "FAILED")  # nodes have 2 GPUs each
    job = wait_state(api, "admin~too-big", FINAL)
    assert job["jobStatus"]["state"] == "FAILED"
    assert job["jobStatus"]["appExitCode"] == -200
    assert "needs 3 gpu leaves on one node" in job["jobStatus"]["appExitMessages"]["launcher"]


def test_orchestrator_killed_mid_job_completes_exactly_once(
    api: httpx.Client, platform: Platform, tmp_path: Path, ledger: JobLedger
) -> None:
    marker = tmp_path / "ran"
    submit(api, job_yaml("survivor", [f"echo once >> {marker}", "sleep 3"], gpu=1), ledger, "SUCCEEDED")
    wait_state(api, "admin~survivor", {"RUNNING"})
    platform.kill("orchestrator")
    platform.restart("orchestrator")
    job = wait_state(api, "admin~survivor", FINAL)
    assert job["jobStatus"]["state"] == "SUCCEEDED"
    assert marker.read_text().splitlines() == ["once"]
    assert count_events(platform, "pai.evt.job.completed", "admin~survivor") == 1


def test_virtual_clusters_and_sku_types(api: httpx.Client) -> None:
    vcs = api.get("/api/v2/virtual-clusters").json()
    assert set(vcs) == {"default"}
    default = vcs["default"]
    assert default["capacity"] == 100
    assert default["resourcesTotal"]["GPUs"] == 4
    assert default["resourcesGuaranteed"]["gpu"] == 4
    assert 0 <= default["resourcesUsed"]["gpu"] <= 4
    single = api.get("/api/v2/virtual-clusters/default").json()
    # Usage may move between the two calls; the shape and the guarantee may not.
    assert set(single) == set(default)
    assert single["resourcesGuaranteed"] == default["resourcesGuaranteed"]
    missing = api.get("/api/v2/virtual-clusters/nope")
    assert missing.status_code == 404 and missing.json()["code"] == "NoVirtualClusterError"
    bad = api.get("/api/v2/virtual-clusters/bad-name!")
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParametersError"
    skus = api.get("/api/v2/cluster/sku-types").json()
    # The simulated nodes' GPUs, and the CPU leaves beside them that jobs asking for no GPU take.
    assert skus == {
        "gpu": {"cpu": 8.0, "memory": 65536, "gpu": 1},
        "CPU": {"cpu": 1.0, "memory": 8192, "gpu": 0},
    }
    assert api.get("/api/v2/cluster/sku-types", params={"vc": "nope"}).status_code == 404


def test_list_storage_and_metrics(api: httpx.Client, platform: Platform) -> None:
    listed = api.get("/api/v2/jobs", params={"withTotalCount": "true", "username": "admin"})
    assert listed.status_code == 200
    body = listed.json()
    assert body["totalCount"] == len(body["data"]) >= 1
    assert all(j["username"] == "admin" for j in body["data"])

    # No storage exists until an admin defines one (tests/acceptance/test_storage.py defines some).
    assert api.get("/api/v2/storages").json() == {"storages": []}

    def scrape(process: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
        port = json.loads((platform.data_dir / "run" / f"{process}.json").read_text())["health_port"]
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
            text = response.read().decode()
        return {
            (s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    # Each owner exports its own state: jobs by state (jobs), nodes and their cells (scheduler), a node's
    # GPUs as its agent sees them (runtime).
    def exported() -> tuple[dict[Any, float], dict[Any, float]] | None:
        jobs, scheduler = scrape("jobs"), scrape("scheduler")
        succeeded = jobs.get(("pai_jobs", frozenset({("state", "SUCCEEDED")})), 0)
        healthy = [scheduler.get(("pai_node_healthy", frozenset({("node", n)}))) for n in platform.node_names]
        return (jobs, scheduler) if succeeded > 0 and healthy == [1.0] * len(healthy) else None

    _, scheduler = wait_until(exported, "the jobs and scheduler exporting the jobs and the nodes")
    node = platform.node_names[0]
    gpus = scheduler[("pai_node_gpus", frozenset({("node", node), ("sku", "gpu")}))]
    assert gpus == platform.gpus_per_node
    agent = scrape(node)
    infos = [dict(labels) for name, labels in agent if name == "pai_node_gpu_info"]
    assert len(infos) == platform.gpus_per_node
    assert all(i["simulated"] == "true" and i["node"] == node for i in infos)


def count_events(platform: Platform, subject: str, job_key: str) -> int:
    import asyncio

    async def count() -> int:
        nc = await nats.connect(platform.bus_url("operator"))
        try:
            js = nc.jetstream()
            sub = await js.subscribe(subject, ordered_consumer=True)
            n = 0
            while True:
                try:
                    msg = await sub.next_msg(timeout=1)
                except nats.errors.TimeoutError:
                    return n
                if msg.headers and msg.headers.get("ce-subject") == job_key:
                    n += 1
        finally:
            await nc.close()

    return asyncio.run(count())


def test_every_service_answers_health_readiness_and_metrics(platform: Platform) -> None:
    port_files = sorted((platform.data_dir / "run").glob("*.json"))
    assert {f.stem for f in port_files} == set(platform.children)
    for port_file in port_files:
        port = json.loads(port_file.read_text())["health_port"]
        for path in ("/healthz", "/readyz", "/metrics"):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
                assert response.status == 200, (port_file.stem, path)


def test_sigterm_drains_and_exits_cleanly(platform: Platform) -> None:
    child = platform.children["storage"]
    assert child.proc is not None
    child.signal(15)
    assert child.proc.wait(20) == 0
    assert '"msg": "service stopped"' in child.log_path.read_text()
    platform.restart("storage")


def test_jobs_survive_a_platform_restart(tmp_path: Path) -> None:
    own = JobLedger()  # this test's own platform
    p = new_platform(tmp_path / "pai", nodes=1, gpus_per_node=1)
    p.start()
    try:
        with admin_client(p) as c:
            submit(c, job_yaml("kept", ["true"], gpu=0), own, "SUCCEEDED")
            wait_state(c, "admin~kept", FINAL)
            token = str(c.headers["Authorization"]).removeprefix("Bearer ")
    finally:
        p.stop()
    again = new_platform(tmp_path / "pai", nodes=1, gpus_per_node=1)
    again.start()
    try:
        # Tokens survive too: the signing key and the token records live in the data directory.
        with admin_client(again, token) as c:
            job = c.get("/api/v2/jobs/admin~kept").json()
            assert job["jobStatus"]["state"] == "SUCCEEDED"
            submit(c, job_yaml("after-restart", ["true"], gpu=1), own, "SUCCEEDED")
            assert wait_state(c, "admin~after-restart", FINAL)["jobStatus"]["state"] == "SUCCEEDED"
            own.assert_all_as_expected(c, every_job=True)
    finally:
        again.stop()


def test_gpu_shares_pack_onto_one_gpu(api: httpx.Client, ledger: JobLedger, tmp_path: Path) -> None:
    # Each half waits until both have started: they run at the same time by construction, not by timing.
    both = [
        f"touch {tmp_path}/$PAI_JOB_NAME",
        f'until [ "$(ls {tmp_path} | wc -l)" -ge 2 ]; do sleep 0.1; done',
    ]
    for name in ("half-a", "half-b"):
        text = job_yaml(name, ['echo "mps=$CUDA_MPS_ACTIVE_THREAD_PERCENTAGE"', *both], gpu=0.5)
        submit(api, text, ledger, "SUCCEEDED")
    jobs = [wait_state(api, f"admin~{n}", FINAL) for n in ("half-a", "half-b")]
    tasks = [j["taskRoles"]["worker"]["taskStatuses"][0] for j in jobs]
    assert all(j["jobStatus"]["state"] == "SUCCEEDED" for j in jobs)
    # They ran at the same time, and two halves took one GPU between them rather than two.
    a, b = tasks
    assert a["launchedTime"] < b["completedTime"] and b["launchedTime"] < a["completedTime"]
    assert tasks[0]["containerNodeName"] == tasks[1]["containerNodeName"]
    assert (
        tasks[0]["containerGpus"] == tasks[1]["containerGpus"]
        and len(gpus_of(tasks[0]["containerGpus"])) == 1
    )
    out = api.get(api.get(tasks[0]["containerLog"]).json()["locations"][0]["uri"]).text
    assert "mps=50" in out


def test_waiting_job_says_why_then_higher_priority_preempts(
    api: httpx.Client, ledger: JobLedger, tmp_path: Path
) -> None:
    # Both nodes' GPUs are taken by a job that runs until the test releases it; the next GPU job must wait
    # and say so.
    release = tmp_path / "release"
    hold = f"until [ -e {release} ]; do sleep 0.2; done"
    submit(api, job_yaml("hog", [hold], gpu=2, instances=2), ledger, "SUCCEEDED")
    wait_state(api, "admin~hog", {"RUNNING"})
    submit(api, job_yaml("queued", ["true"], gpu=1), ledger, "SUCCEEDED")

    def pending() -> dict[str, Any]:
        status: dict[str, Any] = api.get("/api/v2/jobs/admin~queued").json()["jobStatus"]
        return status if status.get("pendingReason") else {}

    status = wait_until(pending, "the queued job's pending reason")
    assert status["state"] == "WAITING"
    assert "4 of 4 guaranteed gpu leaves in use" in status["pendingReason"]
    assert status["pendingPosition"] == 1

    # A prod job preempts the test-priority hog (whole gang), runs, and the hog is retried uncounted.
    submit(api, job_yaml("urgent", ["echo urgent"], gpu=1, priority="prod"), ledger, "SUCCEEDED")
    urgent = wait_state(api, "admin~urgent", FINAL)
    assert urgent["jobStatus"]["state"] == "SUCCEEDED"
    hog = api.get("/api/v2/jobs/admin~hog").json()["jobStatus"]
    # Preempted once: one retry, charged to the platform (a preemption is not the user's failure).
    assert hog["retries"] == 1
    assert hog["retryDetails"] == {"user": 0, "platform": 1, "resource": 0}
    assert hog["state"] in ("WAITING", "RUNNING")
    release.touch()  # its second attempt ends as soon as it runs (the ledger checks it SUCCEEDED)


def test_scheduler_killed_mid_workload_loses_and_double_books_no_cell(tmp_path: Path) -> None:
    own = JobLedger()  # this test's own platform
    p = new_platform(tmp_path / "pai", nodes=2, gpus_per_node=2)
    p.start()
    try:
        with admin_client(p) as c:
            names = [f"w{i}" for i in range(8)]
            for name in names[:4]:
                submit(c, job_yaml(name, ["sleep 1"], gpu=1), own, "SUCCEEDED")
            p.kill("scheduler")
            for name in names[4:]:
                submit(c, job_yaml(name, ["sleep 1"], gpu=1), own, "SUCCEEDED")
            p.restart("scheduler")
            held: dict[tuple[str, int], str] = {}
            # Sampled while the workload runs: no fixed duration, the loop ends when every job has.
            deadline = time.monotonic() + JOB_GUARD_S
            while True:
                jobs = {n: c.get(f"/api/v2/jobs/admin~{n}").json() for n in names}
                running = {
                    (n, t["containerNodeName"], g)
                    for n, j in jobs.items()
                    if j["jobStatus"]["state"] == "RUNNING"
                    for t in j["taskRoles"]["worker"]["taskStatuses"]
                    if t["taskState"] == "RUNNING"
                    for g in gpus_of(t["containerGpus"])
                }
                for name, node, gpu in running:
                    # The same (node, GPU) may pass from one job to another, but never be held by two at once.
                    other = held.get((node, gpu))
                    still = (
                        other is not None and other != name and jobs[other]["jobStatus"]["state"] == "RUNNING"
                    )
                    assert not still, f"{node}/{gpu} held by {other} and {name}"
                    held[(node, gpu)] = name
                if all(j["jobStatus"]["state"] in FINAL for j in jobs.values()):
                    break
                assert time.monotonic() < deadline, {n: j["jobStatus"]["state"] for n, j in jobs.items()}
                time.sleep(0.3)
            assert {j["jobStatus"]["state"] for j in jobs.values()} == {"SUCCEEDED"}
            # Every cell came back: nothing is held once every job has ended.
            wait_until(
                lambda: c.get("/api/v2/virtual-clusters").json()["default"]["resourcesUsed"]["gpu"] == 0,
                "every GPU released",
            )
            own.assert_all_as_expected(c, every_job=True)
    finally:
        p.stop()
