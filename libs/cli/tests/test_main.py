"""Tests of the `pai` commands through typer's CliRunner.

The commands get their client from `main.make_client`; tests replace it with one whose transport is an
`httpx.MockTransport` playing a small in-memory OpenPAI REST server.
"""

from __future__ import annotations

import json
import socket
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from pai_cli import main
from pai_cli.client import PaiClient
from pai_cli.config import load_config, save_config

HELLO_YAML = """\
protocolVersion: 2
name: hello
type: job
prerequisites:
  - {name: img, type: dockerimage, uri: ubuntu}
taskRoles:
  trainer:
    instances: 2
    dockerImage: img
    resourcePerInstance: {cpu: 1, memoryMB: 512, gpu: 1}
    commands: [echo hello]
"""


class FakePai:
    """A minimal OpenPAI REST v2 server: one user, jobs whose state follows a script, task logs."""

    def __init__(self) -> None:
        self.requests: list[httpx.Request] = []
        self.jobs: dict[str, dict[str, Any]] = {}
        self.state_script: list[str] = ["WAITING", "RUNNING", "SUCCEEDED"]

    def add_job(self, key: str, states: list[str] | None = None) -> None:
        user, name = key.split("~")
        self.jobs[key] = {"user": user, "name": name, "states": list(states or self.state_script)}

    def _detail(self, key: str) -> dict[str, Any]:
        job = self.jobs[key]
        states: list[str] = job["states"]
        state = states.pop(0) if len(states) > 1 else states[0]
        roles = {
            role: {
                "taskRoleStatus": {"name": role},
                "taskStatuses": [
                    {
                        "taskIndex": i,
                        "taskState": state,
                        "containerLog": f"/api/v2/jobs/{key}/attempts/0/taskRoles/{role}"
                        f"/taskIndex/{i}/attempts/0/logs",
                    }
                    for i in (0, 1)
                ],
            }
            for role in ("trainer", "evaluator")
        }
        return {
            "name": job["name"],
            "jobStatus": {
                "username": job["user"],
                "state": state,
                "appExitCode": {"SUCCEEDED": 0, "FAILED": 1}.get(state),
            },
            "taskRoles": roles,
        }

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path = request.url.path
        if path == "/api/v2/authn/basic/login":
            body = json.loads(request.content)
            if body["password"] != "secret123":
                return httpx.Response(
                    400, json={"code": "IncorrectPasswordError", "message": "Password is incorrect."}
                )
            return httpx.Response(200, json={"user": body["username"], "token": "tok-new", "admin": False})
        if request.headers.get("authorization") != "Bearer tok-1":
            return httpx.Response(
                401, json={"code": "UnauthorizedUserError", "message": "Your token is invalid."}
            )
        if path == "/api/v2/jobs" and request.method == "POST":
            if request.headers.get("content-type") != "text/yaml":
                return httpx.Response(400, json={"code": "InvalidProtocolError", "message": "not yaml"})
            key = "alice~hello"
            if key in self.jobs:
                return httpx.Response(
                    409, json={"code": "ConflictJobError", "message": f"Job {key} already exists."}
                )
            self.add_job(key)
            return httpx.Response(202, json={"status": 202, "message": "ok"})
        if path == "/api/v2/jobs":
            return httpx.Response(
                200,
                json=[
                    {
                        "name": "train-1",
                        "username": "alice",
                        "state": "RUNNING",
                        "virtualCluster": "default",
                        "totalGpuNumber": 4,
                        "submissionTime": 1_700_000_000_000,
                    },
                    {
                        "name": "eval-2",
                        "username": "bob",
                        "state": "FAILED",
                        "virtualCluster": "research",
                        "totalGpuNumber": 0,
                        "submissionTime": None,
                    },
                ],
            )
        if path.endswith("/logs"):
            parts = path.split("/")
            role, index = parts[8], parts[10]
            return httpx.Response(
                200,
                json={
                    "locations": [
                        {"name": name, "uri": f"/log-content/{role}/{index}/{name}"}
                        for name in ("stdout", "stderr")
                    ]
                },
            )
        if path.startswith("/log-content/"):
            return httpx.Response(200, text=f"log of {path.removeprefix('/log-content/')}\n")
        if path.startswith("/api/v2/jobs/"):
            key = path.removeprefix("/api/v2/jobs/")
            if key not in self.jobs:
                return httpx.Response(404, json={"code": "NoJobError", "message": f"Job {key} is not found."})
            return httpx.Response(200, json=self._detail(key))
        return httpx.Response(404, json={"code": "NoApiError", "message": f"API {path} is not found."})


@pytest.fixture
def config_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("PAI_URL", "PAI_TOKEN", "PAI_USER"):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "cli.json"
    monkeypatch.setenv("PAI_CLI_CONFIG", str(path))
    return path


@pytest.fixture
def server(monkeypatch: pytest.MonkeyPatch, config_file: Path) -> FakePai:
    fake = FakePai()
    save_config("http://pai.test", "alice", "tok-1")
    urls: list[str | None] = []

    def make_client(url: str | None = None) -> PaiClient:
        urls.append(url)
        cfg = load_config()
        return PaiClient(
            url or cfg.url,
            token=cfg.token,
            username=cfg.username,
            transport=httpx.MockTransport(fake),
            sleep=lambda _s: None,
        )

    monkeypatch.setattr(main, "make_client", make_client)
    fake.factory_urls = urls  # type: ignore[attr-defined]
    return fake


runner = CliRunner()


def invoke(*args: str, input: str | None = None) -> Any:
    return runner.invoke(main.app, list(args), input=input)


# -- login ------------------------------------------------------------------------------------------------


def test_login_saves_token_in_owner_only_config(server: FakePai, config_file: Path) -> None:
    result = invoke("login", "--url", "http://pai.test", "--user", "carol", "--password", "secret123")
    assert result.exit_code == 0, result.output
    assert "carol" in result.stdout
    saved = json.loads(config_file.read_text())
    assert saved == {"url": "http://pai.test", "username": "carol", "token": "tok-new"}
    assert stat.S_IMODE(config_file.stat().st_mode) == 0o600
    assert server.factory_urls == ["http://pai.test"]  # type: ignore[attr-defined]


def test_login_prompts_for_password_without_echoing_it(server: FakePai, config_file: Path) -> None:
    result = invoke("login", "--user", "carol", input="secret123\n")
    assert result.exit_code == 0, result.output
    assert "secret123" not in result.output
    assert json.loads(config_file.read_text())["token"] == "tok-new"


def test_login_with_wrong_password_prints_error_and_keeps_old_config(
    server: FakePai, config_file: Path
) -> None:
    result = invoke("login", "--user", "alice", "--password", "wrong-pass")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: IncorrectPasswordError: Password is incorrect."
    assert "Traceback" not in result.output
    assert json.loads(config_file.read_text())["token"] == "tok-1"


# -- submit -----------------------------------------------------------------------------------------------


@pytest.fixture
def job_file(tmp_path: Path) -> Path:
    path = tmp_path / "hello.yaml"
    path.write_text(HELLO_YAML)
    return path


def test_submit_prints_key_and_sends_yaml(server: FakePai, job_file: Path) -> None:
    result = invoke("job", "submit", str(job_file))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == "alice~hello"
    (post,) = [r for r in server.requests if r.method == "POST"]
    assert post.content.decode() == HELLO_YAML
    # Without --wait the job is not polled.
    assert not any(r.method == "GET" for r in server.requests)


def test_submit_wait_exits_zero_on_success_and_shows_states(server: FakePai, job_file: Path) -> None:
    result = invoke("job", "submit", str(job_file), "--wait")
    assert result.exit_code == 0, result.output
    assert result.stdout.splitlines()[0] == "alice~hello"
    assert "alice~hello SUCCEEDED (exit code 0)" in result.stdout
    for state in ("WAITING", "RUNNING"):
        assert f"alice~hello {state}" in result.stderr


def test_submit_wait_exits_one_when_the_job_fails(server: FakePai, job_file: Path) -> None:
    server.state_script = ["WAITING", "RUNNING", "FAILED"]
    result = invoke("job", "submit", str(job_file), "--wait")
    assert result.exit_code == 1
    assert "alice~hello FAILED (exit code 1)" in result.stdout


def test_submit_conflict_is_reported_without_traceback(server: FakePai, job_file: Path) -> None:
    server.add_job("alice~hello")
    result = invoke("job", "submit", str(job_file))
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: ConflictJobError: Job alice~hello already exists."
    assert "Traceback" not in result.output


# -- list / get / logs ------------------------------------------------------------------------------------


def test_list_shows_a_table_and_passes_filters(server: FakePai) -> None:
    result = invoke("job", "list", "--user", "alice", "--state", "running", "--limit", "5")
    assert result.exit_code == 0, result.output
    header = result.stdout.splitlines()[0].split()
    assert header == ["NAME", "USER", "STATE", "VC", "GPUS", "SUBMITTED"]
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:] if line.strip()}
    assert rows["train-1"][:5] == ["train-1", "alice", "RUNNING", "default", "4"]
    assert rows["eval-2"] == ["eval-2", "bob", "FAILED", "research", "0", "-"]
    params = server.requests[-1].url.params
    assert (params["username"], params["state"], params["limit"]) == ("alice", "RUNNING", "5")


def test_get_resolves_bare_name_to_configured_user_and_prints_json(server: FakePai) -> None:
    server.add_job("alice~hello", ["RUNNING"])
    result = invoke("job", "get", "hello")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["jobStatus"]["state"] == "RUNNING"
    assert server.requests[-1].url.path == "/api/v2/jobs/alice~hello"


def test_get_of_another_users_job_and_missing_job(server: FakePai) -> None:
    server.add_job("bob~other", ["SUCCEEDED"])
    assert json.loads(invoke("job", "get", "bob~other").stdout)["name"] == "other"
    result = invoke("job", "get", "nope")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: NoJobError: Job alice~nope is not found."


def test_logs_default_to_first_role_index_zero_stdout(server: FakePai) -> None:
    server.add_job("alice~hello", ["RUNNING"])
    result = invoke("job", "logs", "hello")
    assert result.exit_code == 0, result.output
    assert result.stdout == "log of trainer/0/stdout\n"


def test_logs_with_role_index_and_stderr(server: FakePai) -> None:
    server.add_job("alice~hello", ["RUNNING"])
    result = invoke("job", "logs", "alice~hello", "--role", "evaluator", "--index", "1", "--stderr")
    assert result.exit_code == 0, result.output
    assert result.stdout == "log of evaluator/1/stderr\n"


def test_logs_of_unknown_role_names_the_roles(server: FakePai) -> None:
    server.add_job("alice~hello", ["RUNNING"])
    result = invoke("job", "logs", "hello", "--role", "ps")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: NoTaskRoleError: ")
    assert "trainer, evaluator" in result.stderr


# -- configuration problems -------------------------------------------------------------------------------


def test_bare_job_name_without_configured_user_is_an_error(server: FakePai, config_file: Path) -> None:
    config_file.unlink()
    result = invoke("job", "get", "hello")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: NoUserError: ")
    assert server.requests == []


def test_unreachable_platform_names_url_and_suggests_pai_up(
    config_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The real make_client, pointed by PAI_URL at a port where nothing listens.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    monkeypatch.setenv("PAI_URL", url)
    monkeypatch.setenv("PAI_TOKEN", "tok")
    result = invoke("job", "list")
    assert result.exit_code == 1
    assert result.stderr.startswith("error: ConnectionError: ")
    assert url in result.stderr and "pai up" in result.stderr
    assert "Traceback" not in result.output
