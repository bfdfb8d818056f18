"""Drive the platform as a user does: `pai up` as a subprocess, plain HTTP, the `pai` CLI.

Nothing here imports a service. The platform is the process tree `pai up` starts; the tests see it only
through its URL, its data dir (the admin credentials it generates, its logs) and the CLI.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from pai_common.embedded import free_port

FINAL_STATES = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
# A hang guard, not a performance assertion: long enough for a loaded 2-core CI machine.
START_GUARD_S = 240.0
JOB_GUARD_S = 300.0
# Starts of `pai up` when its port turns out to be taken by another process (see start_platform).
START_TRIES = 3
# What `pai up` prints once the platform runs (and the CLI is logged in, where it can be).
RUNNING_LINE = "running; Ctrl-C stops everything"


def pai_executable() -> Path:
    """The `pai` script of the environment running the tests."""
    path = Path(sys.executable).parent / "pai"
    if not path.exists():
        raise RuntimeError(f"no `pai` script beside {sys.executable}: install libs/cli")
    return path


@dataclass
class RunningPlatform:
    """One `pai up` process tree and what a user gets from it."""

    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log_path: Path
    cli_config: Path
    admin_user: str
    admin_password: str
    _admin_token: str | None = None

    def login(self, username: str, password: str) -> str:
        response = httpx.post(
            f"{self.url}/api/v2/authn/basic/login",
            json={"username": username, "password": password},
            timeout=30,
        )
        assert response.status_code == 200, response.text
        token = response.json()["token"]
        assert isinstance(token, str)
        return token

    @property
    def admin_token(self) -> str:
        if self._admin_token is None:
            self._admin_token = self.login(self.admin_user, self.admin_password)
        return self._admin_token

    def client(self, token: str | None = None) -> httpx.Client:
        """An HTTP client for the API, as the admin unless `token` is given."""
        return httpx.Client(
            base_url=self.url,
            timeout=30,
            headers={"Authorization": f"Bearer {token or self.admin_token}"},
        )

    def cli(
        self, *args: str, token: str | None = None, user: str | None = None, check: bool = False
    ) -> subprocess.CompletedProcess[str]:
        """Run the `pai` CLI against this platform (as the admin `pai up` logged in, unless `token`, which
        belongs to `user`: the CLI names jobs `<user>~<name>` with the user it is told, PAI_USER)."""
        env = {**os.environ, "PAI_CLI_CONFIG": str(self.cli_config), "NO_COLOR": "1", "COLUMNS": "200"}
        env.pop("PAI_TOKEN", None)
        env.pop("PAI_USER", None)
        if token is not None:
            env["PAI_TOKEN"] = token
        if user is not None:
            env["PAI_USER"] = user
        done = subprocess.run(
            [str(pai_executable()), *args], env=env, capture_output=True, text=True, timeout=JOB_GUARD_S
        )
        if check and done.returncode != 0:
            raise AssertionError(f"pai {' '.join(args)} exited {done.returncode}: {done.stderr}{done.stdout}")
        return done

    def log_tail(self, lines: int = 60) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class PortTakenError(AssertionError):
    """`pai up`'s gateway could not bind its port: another process took it after it was picked."""


def start_platform(
    data_dir: Path,
    nodes: int = 2,
    gpus_per_node: int = 4,
    extra_args: Iterable[str] = (),
    env: dict[str, str] | None = None,
    port: int | None = None,
    cli_login: bool = True,
) -> RunningPlatform:
    """Start `pai up` in its own process group and wait until it has logged the CLI in as the admin (with
    `cli_login=False`, where password login is off, until it says it runs).

    The port is picked free (or `port`, for the first try), but another process may bind it before the
    gateway does (other test sessions run on this machine): then the gateway ends during start-up, and
    `pai up` is started again on another port."""
    for attempt in range(1, START_TRIES + 1):
        try:
            return _start_once(
                data_dir, port or free_port(), nodes, gpus_per_node, extra_args, env, cli_login
            )
        except PortTakenError:
            if attempt == START_TRIES:
                raise
            port = None
    raise AssertionError("unreachable")


def _gateway_log_size(data_dir: Path) -> int:
    try:
        return (data_dir / "logs" / "gateway.log").stat().st_size
    except OSError:
        return 0


def _read_from(path: Path, since: int) -> str:
    try:
        with open(path, "rb") as log:
            log.seek(since)
            return log.read().decode(errors="replace")
    except OSError:
        return ""


def _port_taken(data_dir: Path, up_log_from: int = 0, gateway_log_from: int = 0) -> bool:
    """Whether this start (the logs from those offsets on) met its port in use: `pai up` found it taken
    before starting anything, or the gateway could not bind it (taken after that check)."""
    said = " ".join(_read_from(data_dir / "pai-up.log", up_log_from).split())  # rich wraps lines
    gateway = _read_from(data_dir / "logs" / "gateway.log", gateway_log_from)
    return "is already in use by another program" in said or "address already in use" in gateway.lower()


def _start_once(
    data_dir: Path,
    port: int,
    nodes: int,
    gpus_per_node: int,
    extra_args: Iterable[str],
    env: dict[str, str] | None,
    cli_login: bool = True,
) -> RunningPlatform:
    data_dir.mkdir(parents=True, exist_ok=True)
    gateway_log_from = _gateway_log_size(data_dir)
    cli_config = data_dir / "cli.json"
    # Written by this `pai up` once it is ready: one left by an earlier `pai up` on this data dir must go.
    cli_config.unlink(missing_ok=True)
    log_path = data_dir / "pai-up.log"
    proc_env = {**os.environ, "PAI_CLI_CONFIG": str(cli_config), "NO_COLOR": "1", **(env or {})}
    for name in ("PAI_ADMIN_PASSWORD", "PAI_NATS_URL", "PAI_MONGO_URL"):
        if env is None or name not in env:
            proc_env.pop(name, None)
    log_from = log_path.stat().st_size if log_path.exists() else 0  # this start's part of the log
    with open(log_path, "ab") as log:
        proc = subprocess.Popen(
            [
                str(pai_executable()),
                "up",
                "--port",
                str(port),
                "--data-dir",
                str(data_dir),
                "--nodes",
                str(nodes),
                "--gpus-per-node",
                str(gpus_per_node),
                "--simulate",
                *extra_args,
            ],
            env=proc_env,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_GUARD_S
    # `pai up` writes the CLI config only after the platform is ready and its admin login worked.

    def started() -> bool:
        if cli_login:
            return cli_config.exists()
        with open(log_path, "rb") as log:
            log.seek(log_from)
            return RUNNING_LINE in log.read().decode(errors="replace")

    while not started():
        if proc.poll() is not None:
            what = f"pai up exited {proc.returncode} during start on port {port}:\n{_tail(log_path)}"
            taken = _port_taken(data_dir, log_from, gateway_log_from)
            raise PortTakenError(what) if taken else AssertionError(what)
        if time.monotonic() > deadline:
            stop_platform(proc)
            raise AssertionError(f"pai up not ready after {START_GUARD_S:g}s:\n{_tail(log_path)}")
        time.sleep(0.2)
    saved = json.loads((data_dir / "admin-credentials.json").read_text())
    return RunningPlatform(
        url=url,
        data_dir=data_dir,
        proc=proc,
        log_path=log_path,
        cli_config=cli_config,
        admin_user=str(saved["username"]),
        admin_password=str(saved["password"]),
    )


def stop_platform(proc: subprocess.Popen[bytes], grace_s: float = 60.0) -> int:
    """Ctrl-C as a user would; the whole group is killed if `pai up` does not stop within the grace."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(grace_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise AssertionError(f"pai up did not stop within {grace_s:g}s of Ctrl-C") from None
    return proc.returncode


@contextmanager
def running_platform(data_dir: Path, **kwargs: Any) -> Iterator[RunningPlatform]:
    platform = start_platform(data_dir, **kwargs)
    try:
        yield platform
    finally:
        stop_platform(platform.proc)


def _tail(path: Path, lines: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def job_key(response: httpx.Response, user: str, name: str) -> str:
    assert response.status_code == 202, f"{response.status_code}: {response.text}"
    return f"{user}~{name}"


def wait_final(client: httpx.Client, key: str, guard_s: float = JOB_GUARD_S) -> dict[str, Any]:
    """Follow the job's SSE stream until its `end` event; answer the job's detail.

    The guard only keeps a broken platform from hanging the suite.
    """
    return wait_for_state(client, key, FINAL_STATES, guard_s)


def wait_for_state(
    client: httpx.Client, key: str, states: Iterable[str], guard_s: float = JOB_GUARD_S
) -> dict[str, Any]:
    """Follow the job's SSE stream until its state is one of ``states``; answer the job's detail then.

    A final state that is not awaited fails at once (the job will never get there). The guard only
    keeps a broken platform from hanging the suite.
    """
    wanted = frozenset(states)
    deadline = time.monotonic() + guard_s
    while time.monotonic() < deadline:
        try:
            with client.stream(
                "GET", f"/api/v2/jobs/{key}/stream", timeout=httpx.Timeout(30, read=guard_s)
            ) as stream:
                assert stream.status_code == 200, stream.read().decode()
                event = ""
                for line in stream.iter_lines():
                    if time.monotonic() >= deadline:
                        break  # a busy stream must not outlive the guard
                    if line.startswith("event:"):
                        event = line.split(":", 1)[1].strip()
                    elif line.startswith("data:") and event in ("job", "end"):
                        data = json.loads(line.split(":", 1)[1])
                        state = data["state"] if event == "end" else data["jobStatus"]["state"]
                        if state in wanted:
                            detail = client.get(f"/api/v2/jobs/{key}")
                            assert detail.status_code == 200, detail.text
                            body: dict[str, Any] = detail.json()
                            return body
                        if event == "end":
                            raise AssertionError(f"{key} ended {state}, not {' or '.join(sorted(wanted))}")
        except httpx.TransportError:
            time.sleep(0.5)  # the gateway restarted under the stream: reconnect
    raise AssertionError(f"{key} did not reach {' or '.join(sorted(wanted))} within {guard_s:g}s")


def wait_until(
    check: Callable[[], Any], what: str, guard_s: float = JOB_GUARD_S, pause_s: float = 0.2
) -> Any:
    """Ask ``check`` until it answers something true (returned); for conditions no stream announces
    (a metric, a VC's usage, a file a task writes). The guard only keeps a hang from lasting."""
    deadline = time.monotonic() + guard_s
    while True:
        answer = check()
        if answer:
            return answer
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not seen within {guard_s:g}s (last: {answer!r})")
        time.sleep(pause_s)


@dataclass
class JobLedger:
    """Every job a test module submits, with the final states its test expects.

    At the end of the module each one is followed to its end; one that ended in a state nobody expected
    (or never ended) fails the module, so a job that silently fails cannot hide behind an unrelated
    assertion.
    """

    expected: dict[str, frozenset[str]] = field(default_factory=dict)

    def expect(self, key: str, *states: str) -> str:
        unknown = set(states) - FINAL_STATES
        assert states and not unknown, f"expected final states must be among {sorted(FINAL_STATES)}"
        self.expected[key] = frozenset(states)
        return key

    def check(self, client: httpx.Client, every_job: bool = False) -> list[str]:
        """The jobs that ended otherwise than expected, one line each.

        ``every_job``: the platform is this ledger's alone, so a job it lists that nobody registered is
        wrong too (a test that forgot to say what it expects cannot hide a failure)."""
        wrong = []
        for key, states in self.expected.items():
            try:
                state = wait_final(client, key)["jobStatus"]["state"]
            except AssertionError as exc:
                wrong.append(f"{key}: {exc}")
                continue
            if state not in states:
                wrong.append(f"{key}: ended {state}, expected {' or '.join(sorted(states))}")
        if every_job:
            listed = client.get("/api/v2/jobs")
            assert listed.status_code == 200, listed.text
            for job in listed.json():
                key = f"{job['username']}~{job['name']}"
                if key not in self.expected:
                    wrong.append(f"{key}: {job['state']}, but no test said what it expects of it")
        return wrong

    def assert_all_as_expected(self, client: httpx.Client, every_job: bool = False) -> None:
        wrong = self.check(client, every_job)
        assert not wrong, "jobs ended in states their tests did not expect:\n" + "\n".join(wrong)
