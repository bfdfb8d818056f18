"""The `pai` CLI against the real gateway of `pai up` (until now tested only against a mocked transport):
submit (and wait), list, get, logs, errors, as the admin `pai up` logged in and as another user."""

from __future__ import annotations

import json
import time
from pathlib import Path

from tests.acceptance.harness import JobLedger, RunningPlatform

ROOT = Path(__file__).resolve().parents[2]


def renamed(example: str, old: str, new: str, directory: Path) -> Path:
    path = directory / f"{new}.yaml"
    path.write_text((ROOT / "examples" / example).read_text().replace(f"name: {old}", f"name: {new}", 1))
    return path


def test_submit_wait_list_get_and_logs(pai: RunningPlatform, ledger: JobLedger, tmp_path: Path) -> None:
    run = str(int(time.time()))[-6:]
    hello = f"cli-hello-{run}"
    done = pai.cli(
        "job", "submit", "--wait", str(renamed("hello-world.yaml", "hello-world", hello, tmp_path))
    )
    ledger.expect(f"{pai.admin_user}~{hello}", "SUCCEEDED")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == f"{pai.admin_user}~{hello}"  # the bare key first, for scripts
    assert lines[-1].startswith(f"{pai.admin_user}~{hello} SUCCEEDED")
    # Progress went to stderr, one line per state.
    assert (
        f"{pai.admin_user}~{hello} RUNNING" in done.stderr
        or f"{pai.admin_user}~{hello} SUCCEEDED" in done.stderr
    )

    listed = pai.cli("job", "list", "--user", pai.admin_user, check=True)
    row = next(line for line in listed.stdout.splitlines() if line.startswith(hello))
    assert row.split()[1:3] == [pai.admin_user, "SUCCEEDED"]

    got = json.loads(pai.cli("job", "get", hello, check=True).stdout)
    assert got["name"] == hello and got["jobStatus"]["state"] == "SUCCEEDED"
    assert got["jobStatus"]["appExitCode"] == 0

    out = pai.cli("job", "logs", hello, check=True).stdout
    assert "hello from OpenPAI in Python" in out

    failing = f"cli-exit-{run}"
    failed = pai.cli("job", "submit", "--wait", str(renamed("exit-3.yaml", "exit-three", failing, tmp_path)))
    ledger.expect(f"{pai.admin_user}~{failing}", "FAILED")
    assert failed.returncode == 1
    assert failed.stdout.splitlines()[-1].startswith(f"{pai.admin_user}~{failing} FAILED")
    assert "exit code 3" in failed.stdout
    assert "about to fail" in pai.cli("job", "logs", failing, "--stderr", check=True).stdout


def test_errors_and_another_user(pai: RunningPlatform, ledger: JobLedger, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("protocolVersion: 2\nname: bad job\ntaskRoles: {}\n")
    refused = pai.cli("job", "submit", str(bad))
    assert refused.returncode != 0 and "InvalidProtocolError" in refused.stderr + refused.stdout
    missing = pai.cli("job", "get", "no-such-job-here")
    assert missing.returncode != 0 and "NoJobError" in missing.stderr + missing.stdout

    run = str(int(time.time()))[-6:]
    user = f"cliuser{run}"
    with pai.client() as admin:
        created = admin.post("/api/v2/users", json={"username": user, "password": f"{user}-Pa55word"})
        assert created.status_code == 201, created.text
    token = pai.login(user, f"{user}-Pa55word")
    name = f"cli-other-{run}"
    mine = pai.cli(
        "job",
        "submit",
        "--wait",
        str(renamed("hello-world.yaml", "hello-world", name, tmp_path)),
        token=token,
        user=user,
    )
    ledger.expect(f"{user}~{name}", "SUCCEEDED")
    assert mine.returncode == 0 and mine.stdout.splitlines()[0] == f"{user}~{name}", mine.stderr
    # `<job>` alone is the caller's own job; another user's needs `<user>~<job>`.
    assert json.loads(pai.cli("job", "get", name, token=token, user=user, check=True).stdout)["name"] == name
    assert json.loads(pai.cli("job", "get", f"{user}~{name}", check=True).stdout)["name"] == name
    assert pai.cli("job", "get", name).returncode != 0  # the admin has no job of that name
