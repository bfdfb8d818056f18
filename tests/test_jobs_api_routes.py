"""REST API v2 for jobs through the real gateway and jobs service (and every other service): one platform
for the module, real NATS, a real MongoDB-wire server. OpenPAI's status codes and shapes, wrong users,
missing jobs, bad filters, paging edges, the live stream and the rate limits."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from pai_cli.platform import Platform
from pai_common.contract.states import JOB_STATES
from tests.acceptance.harness import JobLedger, wait_for_state, wait_until

pytestmark = pytest.mark.e2e

ADMIN_PASSWORD = "jobs-api-admin-secret"
USER_PASSWORD = "jobs-api-user-secret"
FINAL = {"SUCCEEDED", "FAILED", "STOPPED"}
# Small limits, so that the 429s are reachable; only carol's requests come near them.
LIST_LIMIT_PER_MIN = 60
SUBMIT_LIMIT_PER_HOUR = 8
YAML = {"Content-Type": "text/yaml"}


def job_yaml(
    name: str, commands: list[str], *, vc: str = "default", priority: str = "test", extra: str = ""
) -> str:
    lines = "\n".join(f"      - {json.dumps(c)}" for c in commands)
    return f"""protocolVersion: 2
name: {name}
type: job
{extra}prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  worker:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 0, cpu: 1, memoryMB: 256, ports: {{http: 1}}}}
    commands:
{lines}
defaults:
  virtualCluster: {vc}
extras:
  hivedScheduler: {{jobPriorityClass: {priority}}}
"""


def add_user(p: Platform, username: str) -> None:
    """A plain user in the default group, created by the admin through the users API."""
    with login(p, "admin", ADMIN_PASSWORD) as admin:
        response = admin.post("/api/v2/users", json={"username": username, "password": USER_PASSWORD})
        assert response.status_code == 201, response.text


def login(p: Platform, username: str, password: str) -> httpx.Client:
    response = httpx.post(
        f"{p.url}/api/v2/authn/basic/login", json={"username": username, "password": password}, timeout=15
    )
    assert response.status_code == 200, response.text
    token = response.json()["token"]
    return httpx.Client(base_url=p.url, timeout=15, headers={"Authorization": f"Bearer {token}"})


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    p = Platform(
        data_dir=tmp_path_factory.mktemp("jobs-api"),
        nodes=1,
        gpus_per_node=2,
        port=0,
        extra_env={
            "PAI_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "PAI_RATE_LIMIT_LIST_PER_MIN": str(LIST_LIMIT_PER_MIN),
            "PAI_RATE_LIMIT_SUBMIT_PER_HOUR": str(SUBMIT_LIMIT_PER_HOUR),
            "PAI_JOB_STREAM_POLL_S": "0.2",
        },
    )
    p.start()
    for user in ("bob", "carol"):
        add_user(p, user)
    yield p
    p.stop()


@pytest.fixture(scope="module")
def admin(platform: Platform) -> Iterator[httpx.Client]:
    with login(platform, "admin", ADMIN_PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def bob(platform: Platform) -> Iterator[httpx.Client]:
    with login(platform, "bob", USER_PASSWORD) as client:
        yield client


@pytest.fixture(scope="module")
def ledger(admin: httpx.Client) -> Iterator[JobLedger]:
    """Every job of this module's platform and how it must end; checked when the module ends."""
    book = JobLedger()
    yield book
    book.assert_all_as_expected(admin, every_job=True)


ENDS = {"hello": "SUCCEEDED", "sleeper": "STOPPED", "secretive": "SUCCEEDED", "bobs": "SUCCEEDED"}


@pytest.fixture(scope="module")
def jobs(admin: httpx.Client, bob: httpx.Client, ledger: JobLedger) -> dict[str, str]:
    """The jobs every test reads: submitted once, in this order."""
    submitted = {
        "hello": (admin, job_yaml("hello", ["echo hello-out", "echo hello-err >&2"], priority="prod")),
        "sleeper": (admin, job_yaml("sleeper", ["sleep 600"])),
        "secretive": (
            admin,
            job_yaml(
                "secretive", ["test -n '<% $secrets.token %>'"], extra="secrets:\n  token: s3cr3t-value\n"
            ),
        ),
        "bobs": (bob, job_yaml("bobs", ["echo bob"], priority="oppo")),
    }
    keys = {}
    for name, (client, text) in submitted.items():
        response = client.post("/api/v2/jobs", content=text, headers=YAML)
        assert response.status_code == 202, response.text
        user = "bob" if client is bob else "admin"
        assert response.json() == {
            "status": 202,
            "message": f"Update job {name} for user {user} successfully.",
        }
        keys[name] = ledger.expect(f"{user}~{name}", ENDS[name])
    return keys


def wait_state(client: httpx.Client, key: str, states: set[str]) -> dict[str, Any]:
    return wait_for_state(client, key, states)


def error(response: httpx.Response, status: int, code: str) -> str:
    assert response.status_code == status, response.text
    body = response.json()
    assert body["code"] == code, body
    message: str = body["message"]
    return message


# ---- submit ------------------------------------------------------------------------------------------


def test_submit_errors(
    admin: httpx.Client, bob: httpx.Client, platform: Platform, jobs: dict[str, str]
) -> None:
    again = admin.post("/api/v2/jobs", content=job_yaml("hello", ["true"]), headers=YAML)
    assert error(again, 409, "ConflictJobError") == "Job admin~hello already exists."

    bad = admin.post("/api/v2/jobs", content="protocolVersion: 2\nname: bad name\ntype: job\n", headers=YAML)
    problems = json.loads(error(bad, 400, "InvalidProtocolError"))
    assert {"field": "name", "message": "must match ^[a-zA-Z0-9_-]+$"} in problems
    assert {"field": "taskRoles", "message": "is required"} in problems

    as_json = admin.post("/api/v2/jobs", json={"name": "x"})
    error(as_json, 400, "InvalidProtocolError")

    # A VC nobody has: OpenPAI's 404 at submission (a VC the user may not use is 403: test_security_auth).
    other_vc = bob.post("/api/v2/jobs", content=job_yaml("elsewhere", ["true"], vc="research"), headers=YAML)
    assert error(other_vc, 404, "NoVirtualClusterError") == "Virtual cluster research is not found."

    # The very same submission again (a client retrying one that succeeded): the same 202.
    same = admin.post(
        "/api/v2/jobs",
        content=job_yaml("hello", ["echo hello-out", "echo hello-err >&2"], priority="prod"),
        headers=YAML,
    )
    assert (same.status_code, same.json()) == (
        202,
        {"status": 202, "message": "Update job hello for user admin successfully."},
    )

    guest = httpx.post(f"{platform.url}/api/v2/jobs", content=job_yaml("guest", ["true"]), headers=YAML)
    error(guest, 401, "UnauthorizedUserError")


def test_info_needs_no_token(platform: Platform) -> None:
    info = httpx.get(f"{platform.url}/api/v2/info")
    assert info.status_code == 200 and info.json()["name"] == "PAI RESTful API"


# ---- list --------------------------------------------------------------------------------------------


def names(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    body = response.json()
    items = body["data"] if isinstance(body, dict) else body
    return [job["name"] for job in items]


def test_list_filters_order_and_paging(admin: httpx.Client, bob: httpx.Client, jobs: dict[str, str]) -> None:
    assert names(admin.get("/api/v2/jobs")) == ["bobs", "secretive", "sleeper", "hello"]
    assert names(bob.get("/api/v2/jobs")) == ["bobs", "secretive", "sleeper", "hello"]  # everyone sees all
    assert names(admin.get("/api/v2/jobs", params={"username": "bob"})) == ["bobs"]
    assert names(admin.get("/api/v2/jobs", params={"username": "bob,admin", "order": "jobName,ASC"})) == [
        "bobs",
        "hello",
        "secretive",
        "sleeper",
    ]
    assert names(admin.get("/api/v2/jobs", params={"vc": "default", "keyword": "sec"})) == ["secretive"]
    assert names(admin.get("/api/v2/jobs", params={"vc": "nowhere"})) == []
    assert names(admin.get("/api/v2/jobs", params={"jobPriority": "prod,oppo"})) == ["bobs", "hello"]
    assert names(admin.get("/api/v2/jobs", params={"jobPriority": "default"})) == ["secretive", "sleeper"]

    summary = admin.get("/api/v2/jobs", params={"username": "admin", "keyword": "hello"}).json()[0]
    assert set(summary) >= {
        "debugId",
        "name",
        "username",
        "state",
        "subState",
        "executionType",
        "tags",
        "retries",
        "retryDetails",
        "retryDelayTime",
        "submissionTime",
        "createdTime",
        "launchedTime",
        "completedTime",
        "appExitCode",
        "virtualCluster",
        "totalGpuNumber",
        "totalTaskNumber",
        "totalTaskRoleNumber",
        "jobPriority",
    }
    assert summary["jobPriority"] == "prod" and summary["totalTaskNumber"] == 1

    counted = admin.get("/api/v2/jobs", params={"withTotalCount": "true", "offset": 1, "limit": 2})
    assert counted.json()["totalCount"] == 4 and names(counted) == ["secretive", "sleeper"]
    assert names(admin.get("/api/v2/jobs", params={"offset": 3, "limit": 5})) == ["hello"]
    past_the_end = admin.get("/api/v2/jobs", params={"offset": 100, "withTotalCount": "true"})
    assert past_the_end.json() == {"totalCount": 4, "data": []}
    assert names(admin.get("/api/v2/jobs", params={"limit": 50000})) == [
        "bobs",
        "secretive",
        "sleeper",
        "hello",
    ]


def test_counts_per_state(
    admin: httpx.Client, bob: httpx.Client, platform: Platform, jobs: dict[str, str]
) -> None:
    """This platform's own `GET /api/v2/jobs/counts` (the portal's home page): jobs per state, with the
    list's `username` and `vc` filters; every state named."""
    final = wait_state(bob, jobs["bobs"], FINAL)["jobStatus"]["state"]
    bobs = bob.get("/api/v2/jobs/counts", params={"username": "bob"})
    assert bobs.status_code == 200, bobs.text
    expected = {state: 0 for state in JOB_STATES} | {final: 1}
    assert bobs.json() == {"totalCount": 1, "states": expected}
    # OpenPAI's clients' prefix reaches it too.
    assert bob.get("/rest-server/api/v2/jobs/counts", params={"username": "bob"}).json() == bobs.json()

    everyone = admin.get("/api/v2/jobs/counts").json()
    listed = admin.get("/api/v2/jobs", params={"withTotalCount": "true"}).json()
    assert everyone["totalCount"] == listed["totalCount"] == sum(everyone["states"].values())
    assert set(everyone["states"]) == set(JOB_STATES)
    two = admin.get("/api/v2/jobs/counts", params={"username": "bob,admin", "vc": "default"}).json()
    assert two["totalCount"] == 4
    nowhere = admin.get("/api/v2/jobs/counts", params={"vc": "nowhere"}).json()
    assert nowhere == {"totalCount": 0, "states": {state: 0 for state in JOB_STATES}}

    guest = httpx.get(f"{platform.url}/api/v2/jobs/counts")
    error(guest, 401, "UnauthorizedUserError")


@pytest.mark.parametrize(
    ("params", "words"),
    [
        ({"limit": 50001}, "limit"),
        ({"limit": 0}, "limit"),
        ({"offset": -1}, "offset"),
        ({"limit": "many"}, "limit"),
        ({"order": "size,ASC"}, "order field 'size'"),
        ({"order": "jobName,UP"}, "order direction"),
        ({"state": "DONE"}, "state DONE"),
        ({"jobPriority": "urgent"}, "jobPriority urgent"),
    ],
)
def test_bad_list_parameters(admin: httpx.Client, params: dict[str, Any], words: str) -> None:
    assert words in error(admin.get("/api/v2/jobs", params=params), 400, "InvalidParametersError")


# ---- detail, attempts, config ---------------------------------------------------------------------------


def test_detail_of_a_finished_job(admin: httpx.Client, jobs: dict[str, str]) -> None:
    job = wait_state(admin, jobs["hello"], FINAL)
    status = job["jobStatus"]
    assert status["state"] == "SUCCEEDED" and status["subState"] == "Completed"
    assert status["appExitCode"] == 0 and status["retries"] == 0
    assert status["retryDetails"] == {"user": 0, "platform": 0, "resource": 0}
    assert status["executionType"] == "START" and status["attemptId"] == 0
    (task,) = job["taskRoles"]["worker"]["taskStatuses"]
    assert task["taskState"] == "SUCCEEDED" and task["containerExitCode"] == 0
    assert task["containerNodeName"] == "node-0" and task["containerIp"]
    # The http port the job asked for, plus the ssh port OpenPAI adds to every task.
    assert {"http", "ssh"} <= set(task["containerPorts"]) and task["containerPorts"]["http"].isdigit()
    assert task["createdTime"] is not None and task["completedTime"] is not None


def test_missing_jobs(admin: httpx.Client) -> None:
    for path in (
        "/api/v2/jobs/admin~nothing",
        "/api/v2/jobs/admin~nothing/config",
        "/api/v2/jobs/admin~nothing/events",
        "/api/v2/jobs/admin~nothing/attempts/0",
        "/api/v2/jobs/admin~nothing/job-attempts/0",
        "/api/v2/jobs/admin~nothing/attempts/0/taskRoles/worker/taskIndex/0/attempts",
        "/api/v2/jobs/not-a-framework-name",
    ):
        error(admin.get(path), 404, "NoJobError")
    missing = admin.get("/api/v2/jobs/admin~nothing/job-attempts")
    assert missing.status_code == 404 and missing.text == "null"
    stop = admin.put("/api/v2/jobs/admin~nothing/executionType", json={"value": "STOP"})
    error(stop, 404, "NoJobError")


def test_attempts(admin: httpx.Client, jobs: dict[str, str]) -> None:
    key = jobs["hello"]
    wait_state(admin, key, FINAL)
    attempts = admin.get(f"/api/v2/jobs/{key}/job-attempts")
    assert attempts.status_code == 200
    (latest,) = attempts.json()
    assert latest["isLatest"] is True and latest["attemptIndex"] == 0 and latest["state"] == "SUCCEEDED"
    assert latest["jobName"] == "hello" and latest["userName"] == "admin"
    assert admin.get(f"/api/v2/jobs/{key}/job-attempts/0").json()["attemptIndex"] == 0
    error(admin.get(f"/api/v2/jobs/{key}/job-attempts/3"), 404, "NoJobError")
    healthz = admin.get(f"/api/v2/jobs/{key}/job-attempts/healthz")
    assert healthz.status_code == 200 and healthz.text == "ok"

    detail = admin.get(f"/api/v2/jobs/{key}/attempts/0").json()
    assert detail["jobStatus"]["attemptId"] == 0 and detail["jobStatus"]["state"] == "SUCCEEDED"
    error(admin.get(f"/api/v2/jobs/{key}/attempts/1"), 404, "NoJobError")

    task = admin.get(f"/api/v2/jobs/{key}/attempts/0/taskRoles/worker/taskIndex/0/attempts").json()
    assert (task["jobName"], task["taskRoleName"], task["taskIndex"], task["taskState"]) == (
        "hello",
        "worker",
        0,
        "SUCCEEDED",
    )
    (attempt,) = task["attempts"]
    assert attempt["attemptId"] == 0 and attempt["containerExitCode"] == 0
    for bad in ("taskRoles/worker/taskIndex/1", "taskRoles/ps/taskIndex/0"):
        error(admin.get(f"/api/v2/jobs/{key}/attempts/0/{bad}/attempts"), 404, "NoJobError")


def test_config_masks_secrets(admin: httpx.Client, bob: httpx.Client, jobs: dict[str, str]) -> None:
    response = bob.get(f"/api/v2/jobs/{jobs['secretive']}/config")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/yaml")
    config = json.loads(response.text)  # OpenPAI sends JSON under the YAML header
    assert config["secrets"] == {"token": "******"} and config["name"] == "secretive"
    detail = admin.get(f"/api/v2/jobs/{jobs['secretive']}").text
    assert "s3cr3t-value" not in detail and "s3cr3t-value" not in response.text


# ---- mutations ----------------------------------------------------------------------------------------


def test_tags(admin: httpx.Client, bob: httpx.Client, jobs: dict[str, str]) -> None:
    key = jobs["hello"]
    error(bob.put(f"/api/v2/jobs/{key}/tag", json={"value": "mine"}), 403, "ForbiddenUserError")
    added = admin.put(f"/api/v2/jobs/{key}/tag", json={"value": "nightly"})
    assert added.status_code == 200 and added.json()["status"] == 200
    assert (
        admin.put(f"/api/v2/jobs/{jobs['bobs']}/tag", json={"value": "nightly"}).status_code == 200
    )  # admin
    assert bob.put(f"/api/v2/jobs/{jobs['bobs']}/tag", json={"value": "bobs-own"}).status_code == 200
    assert admin.get(f"/api/v2/jobs/{key}").json()["tags"] == ["nightly"]
    assert names(admin.get("/api/v2/jobs", params={"tagsContain": "nightly"})) == ["bobs", "hello"]
    assert names(
        admin.get("/api/v2/jobs", params={"tagsContain": "nightly", "tagsNotContain": "bobs-own"})
    ) == ["hello"]
    error(admin.put(f"/api/v2/jobs/{key}/tag", json={"value": "a,b"}), 400, "InvalidParametersError")
    error(admin.put(f"/api/v2/jobs/{key}/tag", json={"tag": "x"}), 400, "InvalidParametersError")
    error(admin.put(f"/api/v2/jobs/{key}/tag", content=b"not json"), 400, "InvalidParametersError")
    error(
        bob.request("DELETE", f"/api/v2/jobs/{key}/tag", json={"value": "nightly"}), 403, "ForbiddenUserError"
    )
    removed = admin.request("DELETE", f"/api/v2/jobs/{key}/tag", json={"value": "nightly"})
    assert removed.status_code == 200 and removed.json()["status"] == 200
    again = admin.request("DELETE", f"/api/v2/jobs/{key}/tag", json={"value": "nightly"})
    error(again, 404, "NoTagError")


def test_stop_by_owner_or_admin_only(admin: httpx.Client, bob: httpx.Client, jobs: dict[str, str]) -> None:
    key = jobs["sleeper"]
    wait_state(admin, key, {"RUNNING"})
    error(bob.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"}), 403, "ForbiddenUserError")
    bad = admin.put(f"/api/v2/jobs/{key}/executionType", json={"value": "PAUSE"})
    assert "START, STOP" in error(bad, 400, "InvalidParametersError")
    stop = admin.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
    assert stop.status_code == 202
    assert stop.json() == {"status": 202, "message": f"Execute job {key} successfully."}
    assert admin.get(f"/api/v2/jobs/{key}").json()["jobStatus"]["executionType"] == "STOP"
    job = wait_state(admin, key, FINAL)
    assert job["jobStatus"]["state"] == "STOPPED" and job["jobStatus"]["appExitCode"] in (-210, -220)
    # START after a stop is accepted and resumes nothing: the jobs service answers it without publishing
    # anything, so there is nothing to wait for (the ledger checks again at the end that it stayed STOPPED).
    assert admin.put(f"/api/v2/jobs/{key}/executionType", json={"value": "START"}).status_code == 202
    assert admin.get(f"/api/v2/jobs/{key}").json()["jobStatus"]["state"] == "STOPPED"
    events = admin.get(f"/api/v2/jobs/{key}/events").json()
    reasons = [e["reason"] for e in events["data"]]
    assert events["totalCount"] == len(reasons)
    assert reasons[:2] == ["Submitted", "StopRequested"] and "AttemptCompleted" in reasons
    assert names(admin.get("/api/v2/jobs", params={"state": "STOPPED"})) == ["sleeper"]


def test_events(admin: httpx.Client, jobs: dict[str, str]) -> None:
    wait_state(admin, jobs["hello"], FINAL)

    def completed() -> dict[str, Any]:
        body: dict[str, Any] = admin.get(f"/api/v2/jobs/{jobs['hello']}/events").json()
        return body if "AttemptCompleted" in [e["reason"] for e in body["data"]] else {}

    body = wait_until(completed, "the AttemptCompleted job event")
    reasons = [e["reason"] for e in body["data"]]
    assert reasons[0] == "Submitted" and "AttemptCompleted" in reasons
    event = body["data"][0]
    assert set(event) >= {"uid", "frameworkName", "type", "reason", "message", "firstTimestamp", "count"}
    normal = admin.get(f"/api/v2/jobs/{jobs['hello']}/events", params={"type": "Normal"}).json()
    assert all(e["type"] == "Normal" for e in normal["data"]) and normal["totalCount"] >= 2
    error(
        admin.get(f"/api/v2/jobs/{jobs['hello']}/events", params={"type": "Loud"}),
        400,
        "InvalidParametersError",
    )


# ---- logs ---------------------------------------------------------------------------------------------


def test_log_locations_and_content(admin: httpx.Client, jobs: dict[str, str]) -> None:
    job = wait_state(admin, jobs["hello"], FINAL)
    log_url = job["taskRoles"]["worker"]["taskStatuses"][0]["containerLog"]
    full = admin.get(log_url).json()["locations"]
    assert [loc["name"] for loc in full] == ["stdout", "stderr", "all"]
    tail = admin.get(log_url, params={"tail-mode": "true"}).json()["locations"]
    assert all(loc["uri"].endswith("?tail_bytes=16384") for loc in tail)
    outputs = {loc["name"]: admin.get(loc["uri"]) for loc in tail}
    assert outputs["stdout"].status_code == 200 and "hello-out" in outputs["stdout"].text
    assert "hello-err" in outputs["stderr"].text
    assert "hello-out" in outputs["all"].text and "hello-err" in outputs["all"].text
    error(admin.get(log_url + "/journal"), 404, "NoTaskLogError")
    error(admin.get(log_url.replace("taskIndex/0", "taskIndex/4")), 404, "NoTaskLogError")


# ---- the live stream ----------------------------------------------------------------------------------


def read_stream(client: httpx.Client, path: str, timeout_s: float = 90) -> list[tuple[str, dict[str, Any]]]:
    frames: list[tuple[str, dict[str, Any]]] = []
    with client.stream("GET", path, timeout=timeout_s) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event = ""
        for line in response.iter_lines():
            if line.startswith("event: "):
                event = line.removeprefix("event: ")
            elif line.startswith("data: "):
                frames.append((event, json.loads(line.removeprefix("data: "))))
                if event == "end":
                    break
    return frames


def test_stream_pushes_changes_until_the_end(
    admin: httpx.Client, bob: httpx.Client, ledger: JobLedger
) -> None:
    submitted = bob.post("/api/v2/jobs", content=job_yaml("streamed", ["sleep 2", "echo done"]), headers=YAML)
    assert submitted.status_code == 202
    ledger.expect("bob~streamed", "SUCCEEDED")
    frames = read_stream(admin, "/api/v2/jobs/bob~streamed/stream")
    kinds = [kind for kind, _ in frames]
    assert kinds[0] == "job" and kinds[-1] == "end"
    states = [data["jobStatus"]["state"] for kind, data in frames if kind == "job"]
    assert states[-1] == "SUCCEEDED" and "RUNNING" in states
    task_states = [data["taskState"] for kind, data in frames if kind == "task"]
    assert task_states[-1] == "SUCCEEDED" and len(task_states) >= 2
    assert frames[-1][1] == {"state": "SUCCEEDED"}
    # A finished job's stream sends its state once and ends.
    again = read_stream(admin, "/api/v2/jobs/bob~streamed/stream")
    assert [kind for kind, _ in again] == ["job", "task", "end"]
    error(admin.get("/api/v2/jobs/bob~nothing/stream"), 404, "NoJobError")
    guest = httpx.get(f"{admin.base_url}/api/v2/jobs/bob~streamed/stream")
    error(guest, 401, "UnauthorizedUserError")


# ---- rate limits (last: carol spends her budget) ---------------------------------------------------------


def test_rate_limits_answer_429(platform: Platform) -> None:
    with login(platform, "carol", USER_PASSWORD) as carol:
        for _ in range(SUBMIT_LIMIT_PER_HOUR):
            # Refused submissions count too, as express-rate-limit counts every request.
            error(carol.post("/api/v2/jobs", content="name: x\n", headers=YAML), 400, "InvalidProtocolError")
        limited = carol.post("/api/v2/jobs", content=job_yaml("late", ["true"]), headers=YAML)
        assert "submit" in error(limited, 429, "TooManyRequestsError")
        assert 1 <= int(limited.headers["Retry-After"]) <= 3600
        for _ in range(LIST_LIMIT_PER_MIN):
            assert carol.get("/api/v2/jobs", params={"limit": 1}).status_code == 200
        assert "list" in error(carol.get("/api/v2/jobs"), 429, "TooManyRequestsError")
        # Other users are not limited by carol's requests; other routes are not limited.
        assert carol.get("/api/v2/jobs/admin~hello").status_code == 200
    with login(platform, "bob", USER_PASSWORD) as bob_again:
        assert bob_again.get("/api/v2/jobs", params={"limit": 1}).status_code == 200


def test_data_dir_holds_no_secret(platform: Platform, jobs: dict[str, str]) -> None:
    """Secrets never reach the logs: no service's log file mentions the secret value."""
    logs = [path for path in Path(platform.data_dir).rglob("*.log") if path.is_file()]
    assert logs, "the platform writes service logs"
    for path in logs:
        assert "s3cr3t-value" not in path.read_text(errors="replace"), path
