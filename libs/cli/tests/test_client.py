"""Unit tests of the SDK (`PaiClient`) and of the CLI config file.

`httpx.MockTransport` stands in for the REST server: these tests check what the client sends and how it
reads OpenPAI's answers, not the platform itself.
"""

from __future__ import annotations

import json
import socket
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from pai_cli.client import (
    FINAL_STATES,
    PaiApiError,
    PaiClient,
    PaiConnectionError,
    PaiError,
    PaiTimeoutError,
)
from pai_cli.config import DEFAULT_URL, load_config, save_config

BASE = "http://pai.test"
HELLO_YAML = """\
protocolVersion: 2
name: hello
type: job
prerequisites:
  - {name: img, type: dockerimage, uri: ubuntu}
taskRoles:
  worker:
    instances: 1
    dockerImage: img
    resourcePerInstance: {cpu: 1, memoryMB: 512, gpu: 0}
    commands: [echo hello]
"""

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Wraps a handler and keeps every request it saw, so tests can inspect what went over the wire."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def make_client(handler: Handler, **kwargs: Any) -> tuple[PaiClient, Recorder]:
    recorder = Recorder(handler)
    kwargs.setdefault("sleep", lambda _s: None)
    return PaiClient(BASE, transport=httpx.MockTransport(recorder), **kwargs), recorder


def closed_port() -> int:
    # Bind then close: nothing listens there afterwards, so connecting is refused.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def job_detail(state: str, task_roles: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "hello",
        "jobStatus": {"username": "alice", "state": state},
        "taskRoles": task_roles or {},
    }


# -- login ------------------------------------------------------------------------------------------------


def test_login_posts_credentials_and_keeps_token_for_later_calls() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/v2/authn/basic/login":
            return httpx.Response(200, json={"user": "alice", "token": "tok-1", "admin": False})
        return httpx.Response(200, json=job_detail("RUNNING"))

    client, rec = make_client(handler)
    assert client.login("alice", "secret123") == "tok-1"
    assert client.token == "tok-1"
    assert client.username == "alice"

    login_req = rec.requests[0]
    assert login_req.method == "POST"
    assert json.loads(login_req.content) == {"username": "alice", "password": "secret123"}
    assert "authorization" not in login_req.headers

    client.get_job("hello")  # a bare name now resolves to the logged-in user's job
    assert rec.requests[1].url.path == "/api/v2/jobs/alice~hello"
    assert rec.requests[1].headers["authorization"] == "Bearer tok-1"


def test_login_with_wrong_password_raises_api_error() -> None:
    client, _ = make_client(
        lambda r: httpx.Response(
            400, json={"code": "IncorrectPasswordError", "message": "Password is incorrect."}
        )
    )
    with pytest.raises(PaiApiError) as info:
        client.login("alice", "nope")
    assert (info.value.status, info.value.code) == (400, "IncorrectPasswordError")
    assert client.token is None


# -- submit -----------------------------------------------------------------------------------------------


def test_submit_sends_yaml_with_bearer_token_and_returns_key() -> None:
    client, rec = make_client(
        lambda r: httpx.Response(202, json={"status": 202, "message": "ok"}), token="tok-1", username="alice"
    )
    assert client.submit_job(HELLO_YAML) == "alice~hello"
    (req,) = rec.requests
    assert (req.method, req.url.path) == ("POST", "/api/v2/jobs")
    assert req.headers["content-type"] == "text/yaml"
    assert req.headers["authorization"] == "Bearer tok-1"
    assert req.content.decode() == HELLO_YAML


def test_submit_without_username_sends_nothing() -> None:
    client, rec = make_client(lambda r: httpx.Response(202, json={}), token="tok-1")
    with pytest.raises(PaiError) as info:
        client.submit_job(HELLO_YAML)
    assert info.value.code == "NoUserError"
    assert rec.requests == []


# -- errors -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "status", "code", "message"),
    [
        (
            httpx.Response(
                409, json={"code": "ConflictJobError", "message": "Job alice~hello already exists."}
            ),
            409,
            "ConflictJobError",
            "Job alice~hello already exists.",
        ),
        (
            httpx.Response(401, json={"code": "UnauthorizedUserError", "message": "Your token is invalid."}),
            401,
            "UnauthorizedUserError",
            "Your token is invalid.",
        ),
        # express-rate-limit answers in plain text: the raw text becomes the message.
        (
            httpx.Response(429, text="Too many requests, please try again later."),
            429,
            "Too Many Requests",
            "Too many requests, please try again later.",
        ),
        (httpx.Response(422, json={"detail": "bad body"}), 422, "Unprocessable Entity", "bad body"),
    ],
)
def test_error_bodies_become_pai_api_error(
    response: httpx.Response, status: int, code: str, message: str
) -> None:
    client, _ = make_client(lambda r: response, token="t", username="alice")
    with pytest.raises(PaiApiError) as info:
        client.submit_job(HELLO_YAML)
    assert (info.value.status, info.value.code, info.value.message) == (status, code, message)


def test_connection_refused_becomes_connection_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with PaiClient(url, token="t", username="alice") as client, pytest.raises(PaiConnectionError) as info:
        client.get_job("hello")
    assert info.value.url == url
    assert url in info.value.message
    assert "pai up" in info.value.message
    assert info.value.code == "ConnectionError"


# -- jobs -------------------------------------------------------------------------------------------------


def test_get_job_accepts_full_key_and_rejects_bare_name_without_user() -> None:
    client, rec = make_client(lambda r: httpx.Response(200, json=job_detail("RUNNING")), token="t")
    assert client.get_job("bob~train")["jobStatus"]["state"] == "RUNNING"
    assert rec.requests[0].url.path == "/api/v2/jobs/bob~train"
    with pytest.raises(PaiError) as info:
        client.get_job("train")
    assert info.value.code == "NoUserError"


def test_get_missing_job_raises_no_job_error() -> None:
    client, _ = make_client(
        lambda r: httpx.Response(404, json={"code": "NoJobError", "message": "Job alice~x is not found."}),
        username="alice",
    )
    with pytest.raises(PaiApiError) as info:
        client.get_job("x")
    assert (info.value.status, info.value.code) == (404, "NoJobError")


def test_list_jobs_sends_filters_and_unwraps_total_count_form() -> None:
    summaries = [{"name": "a", "username": "alice", "state": "RUNNING"}]

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.params.get("withTotalCount") == "true":
            return httpx.Response(200, json={"totalCount": 1, "data": summaries})
        return httpx.Response(200, json=summaries)

    client, rec = make_client(handler, token="t")
    assert client.list_jobs(username=["alice", "bob"], state="RUNNING", limit=10) == summaries
    params = rec.requests[0].url.params
    assert params["username"] == "alice,bob"
    assert params["state"] == "RUNNING"
    assert params["limit"] == "10"
    assert "vc" not in params and "offset" not in params

    assert client.list_jobs(withTotalCount="true") == summaries


# -- logs -------------------------------------------------------------------------------------------------

LOG_LIST = "/api/v2/jobs/alice~hello/attempts/0/taskRoles/{role}/taskIndex/{index}/attempts/0/logs"


def log_server(stderr_uri: str = "/logs/{role}/{index}/stderr") -> Handler:
    roles = {
        role: {
            "taskStatuses": [
                {"taskIndex": i, "containerLog": LOG_LIST.format(role=role, index=i)} for i in (0, 1)
            ]
        }
        for role in ("master", "worker")
    }

    def handler(request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/api/v2/jobs/alice~hello":
            return httpx.Response(200, json=job_detail("RUNNING", roles))
        if path.endswith("/logs"):
            parts = path.split("/")
            role, index = parts[8], parts[10]
            return httpx.Response(
                200,
                json={
                    "locations": [
                        {"name": "stdout", "uri": f"/logs/{role}/{index}/stdout?token=x"},
                        {"name": "stderr", "uri": stderr_uri.format(role=role, index=index)},
                    ]
                },
            )
        if path.startswith("/logs/"):
            return httpx.Response(200, text=f"{path} content\n", headers={"content-type": "text/plain"})
        return httpx.Response(404, json={"code": "NoApiError", "message": path})

    return handler


def test_task_log_follows_container_log_then_locations_then_uri() -> None:
    client, rec = make_client(log_server(), token="tok", username="alice")
    assert client.task_log("alice~hello", "worker", 1) == "/logs/worker/1/stdout content\n"
    paths = [r.url.path for r in rec.requests]
    assert paths == [
        "/api/v2/jobs/alice~hello",
        LOG_LIST.format(role="worker", index=1),
        "/logs/worker/1/stdout",
    ]
    assert rec.requests[2].url.params["token"] == "x"
    assert all(r.headers["authorization"] == "Bearer tok" for r in rec.requests)


def test_task_log_defaults_to_first_role_and_index_zero_and_reads_stderr() -> None:
    client, _ = make_client(log_server(), token="tok", username="alice")
    assert client.task_log("hello") == "/logs/master/0/stdout content\n"
    assert client.task_log("hello", stream="stderr") == "/logs/master/0/stderr content\n"


def test_task_log_does_not_leak_token_to_another_host() -> None:
    client, rec = make_client(log_server("http://log-manager.other/logs/{role}/{index}/stderr"), token="tok")
    assert client.task_log("alice~hello", "worker", 0, "stderr") == "/logs/worker/0/stderr content\n"
    assert rec.requests[-1].url.host == "log-manager.other"
    assert "authorization" not in rec.requests[-1].headers


@pytest.mark.parametrize(
    ("role", "index", "stream", "code"),
    [
        ("ps", 0, "stdout", "NoTaskRoleError"),
        ("worker", 5, "stdout", "NoTaskError"),
        ("worker", 0, "all", "NoTaskLogError"),
    ],
)
def test_task_log_reports_what_is_missing(role: str, index: int, stream: str, code: str) -> None:
    client, _ = make_client(log_server(), token="tok")
    with pytest.raises(PaiError) as info:
        client.task_log("alice~hello", role, index, stream)
    assert info.value.code == code


def test_task_log_of_unlaunched_task_says_no_log_yet() -> None:
    roles = {"worker": {"taskStatuses": [{"taskIndex": 0, "taskState": "WAITING", "containerLog": None}]}}
    client, rec = make_client(lambda r: httpx.Response(200, json=job_detail("WAITING", roles)))
    with pytest.raises(PaiError) as info:
        client.task_log("alice~hello")
    assert info.value.code == "NoTaskLogError"
    assert "WAITING" in info.value.message
    assert len(rec.requests) == 1


# -- wait -------------------------------------------------------------------------------------------------


def scripted_states(states: list[str]) -> Handler:
    remaining = list(states)

    def handler(request: httpx.Request) -> httpx.Response:
        # Repeats the last state once the script runs out, like a job that stays put.
        state = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return httpx.Response(200, json=job_detail(state))

    return handler


def test_wait_for_job_stops_on_final_state_and_reports_each_change() -> None:
    sleeps: list[float] = []
    client, rec = make_client(
        scripted_states(["WAITING", "WAITING", "RUNNING", "RUNNING", "SUCCEEDED", "RUNNING"]),
        sleep=sleeps.append,
    )
    seen: list[str] = []
    job = client.wait_for_job("alice~hello", on_state=lambda state, job: seen.append(state))
    assert job["jobStatus"]["state"] == "SUCCEEDED"
    assert seen == ["WAITING", "RUNNING", "SUCCEEDED"]
    assert len(rec.requests) == 5  # stopped polling at the first final state
    assert sleeps == [0.5] * 4


def test_wait_for_job_honours_custom_states() -> None:
    client, rec = make_client(scripted_states(["WAITING", "RUNNING", "SUCCEEDED"]))
    assert client.wait_for_job("alice~hello", states={"RUNNING"})["jobStatus"]["state"] == "RUNNING"
    assert len(rec.requests) == 2


def test_wait_for_job_times_out() -> None:
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    client, rec = make_client(scripted_states(["RUNNING"]), sleep=sleep, clock=lambda: now[0])
    with pytest.raises(PaiTimeoutError) as info:
        client.wait_for_job("alice~hello", timeout_s=2.0)
    assert info.value.state == "RUNNING"
    assert len(rec.requests) == 5  # t = 0, 0.5, 1.0, 1.5, 2.0


def test_final_states_are_openpai_terminal_states() -> None:
    assert frozenset({"SUCCEEDED", "FAILED", "STOPPED"}) == FINAL_STATES


# -- config -----------------------------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("PAI_URL", "PAI_TOKEN", "PAI_USER"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "conf" / "cli.json"
    monkeypatch.setenv("PAI_CLI_CONFIG", str(path))
    return path


def test_save_config_writes_owner_only_file_that_load_config_reads(clean_env: Path) -> None:
    written = save_config("http://pai.test:9186/", "alice", "tok-1")
    assert written == clean_env
    assert stat.S_IMODE(written.stat().st_mode) == 0o600
    assert json.loads(written.read_text()) == {
        "url": "http://pai.test:9186",
        "username": "alice",
        "token": "tok-1",
    }
    cfg = load_config()
    assert (cfg.url, cfg.username, cfg.token) == ("http://pai.test:9186", "alice", "tok-1")
    assert list(written.parent.iterdir()) == [written]  # no temp file left behind


def test_save_config_tightens_an_existing_readable_file(clean_env: Path, tmp_path: Path) -> None:
    target = tmp_path / "explicit.json"
    target.write_text("{}")
    target.chmod(0o644)
    assert save_config("http://x", "bob", "tok", path=target) == target
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert load_config(target).username == "bob"


def test_env_overrides_file(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    save_config("http://from-file", "alice", "file-token")
    monkeypatch.setenv("PAI_URL", "http://from-env")
    monkeypatch.setenv("PAI_TOKEN", "env-token")
    cfg = load_config()
    assert (cfg.url, cfg.username, cfg.token) == ("http://from-env", "alice", "env-token")


def test_missing_or_damaged_file_gives_defaults(clean_env: Path) -> None:
    assert load_config() == load_config(clean_env)
    assert (load_config().url, load_config().token) == (DEFAULT_URL, None)
    clean_env.parent.mkdir(parents=True)
    clean_env.write_text("{not json")
    assert load_config().token is None


def test_from_config_builds_client_with_saved_values(clean_env: Path) -> None:
    save_config("http://pai.test", "alice", "tok-1")
    with PaiClient.from_config() as client:
        assert (client.base_url, client.username, client.token) == ("http://pai.test", "alice", "tok-1")
