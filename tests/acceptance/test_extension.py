"""The example extension (examples/extensions/job-notifier) against `pai up`, as its README runs it: with the
read-only extension credentials `pai up` writes, it notifies each finished job once, across a restart."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from pai_common.bus import EVENTS_STREAM, Bus
from tests.acceptance.harness import JOB_GUARD_S, JobLedger, RunningPlatform, wait_final

ROOT = Path(__file__).resolve().parents[2]
NOTIFIER = ROOT / "examples" / "extensions" / "job-notifier" / "notifier.py"


def _job(name: str, command: str) -> str:
    return f"""protocolVersion: 2
name: {name}
type: job
prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
  main:
    instances: 1
    dockerImage: image
    resourcePerInstance: {{gpu: 0, cpu: 1, memoryMB: 256}}
    commands: [{json.dumps(command)}]
"""


def _start(pai: RunningPlatform, out: Path, durable: str) -> subprocess.Popen[bytes]:
    credentials = pai.data_dir / "bus" / "extension.url"
    assert credentials.stat().st_mode & 0o077 == 0, "the extension's credentials are readable by others"
    return subprocess.Popen(
        [
            sys.executable,
            str(NOTIFIER),
            "--credentials",
            str(credentials),
            "--out",
            str(out),
            "--durable",
            durable,
        ],
        stderr=subprocess.PIPE,
    )


def _notes(out: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def _wait_drained(pai: RunningPlatform, durable: str) -> None:
    url = (pai.data_dir / "bus" / "operator.url").read_text().strip()

    async def drained() -> None:
        bus = await Bus.connect(url, "operator")
        try:
            deadline = time.monotonic() + JOB_GUARD_S
            while True:
                info = await bus.js.consumer_info(EVENTS_STREAM, durable)
                if not info.num_pending and not info.num_ack_pending:
                    return
                assert time.monotonic() < deadline, f"{durable} never drained: {info}"
                await asyncio.sleep(0.2)
        finally:
            await bus.close()

    asyncio.run(drained())


def _stop(proc: subprocess.Popen[bytes]) -> str:
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    return err.decode()


def test_the_notifier_tells_each_finished_job_once(
    pai: RunningPlatform, ledger: JobLedger, tmp_path: Path
) -> None:
    out, durable = tmp_path / "finished.jsonl", f"notifier-{uuid.uuid4().hex[:6]}"
    suffix = uuid.uuid4().hex[:6]
    keys = {f"{pai.admin_user}~ok{suffix}": "SUCCEEDED", f"{pai.admin_user}~bad{suffix}": "FAILED"}
    notifier = _start(pai, out, durable)
    try:
        with pai.client() as client:
            for key, state in keys.items():
                name = key.split("~", 1)[1]
                command = "exit 0" if state == "SUCCEEDED" else "exit 3"
                r = client.post(
                    "/api/v2/jobs", content=_job(name, command), headers={"Content-Type": "text/yaml"}
                )
                assert r.status_code == 202, r.text
                ledger.expect(key, state)
            for key in keys:
                wait_final(client, key)
        deadline = time.monotonic() + JOB_GUARD_S
        while not set(keys) <= {n["job"] for n in _notes(out)}:
            assert notifier.poll() is None, notifier.stderr.read().decode() if notifier.stderr else ""
            assert time.monotonic() < deadline, f"not notified: {_notes(out)}"
            time.sleep(0.2)
    finally:
        said = _stop(notifier)
    assert "reading pai.evt.job.completed as extension" in said
    mine = [n for n in _notes(out) if n["job"] in keys]
    assert sorted((n["job"], n["state"]) for n in mine) == sorted(keys.items())
    assert next(n for n in mine if n["state"] == "FAILED")["exitCode"] == 3
    before = len(_notes(out))
    # Started again on the same consumer: what it acknowledged is not notified a second time. It is stopped
    # once it reads and its consumer holds nothing undelivered or unacknowledged (a redelivery would be).
    again = _start(pai, out, durable)
    try:
        assert again.stderr is not None
        said_so_far = ""
        while "reading pai.evt.job.completed" not in said_so_far:
            line = again.stderr.readline().decode()
            assert line, f"the notifier ended before reading: {said_so_far}"
            said_so_far += line
        _wait_drained(pai, durable)
    finally:
        _stop(again)
    assert len(_notes(out)) == before
    assert len({n["eventId"] for n in _notes(out)}) == len(_notes(out))


@pytest.mark.parametrize("user", ["extension"])
def test_the_extension_credentials_cannot_publish(pai: RunningPlatform, user: str) -> None:
    import asyncio

    import nats

    url = (pai.data_dir / "bus" / f"{user}.url").read_text().strip()
    errors: list[str] = []

    async def attempt() -> None:
        async def on_error(exc: Exception) -> None:
            errors.append(str(exc))

        nc = await nats.connect(url, error_cb=on_error, inbox_prefix=f"_INBOX.{user}", allow_reconnect=False)
        await nc.publish("pai.evt.job.completed", b"{}")
        await nc.flush()
        for _ in range(100):
            if errors:
                break
            await asyncio.sleep(0.05)
        await nc.close()

    asyncio.run(attempt())
    assert any("permissions violation" in e.lower() for e in errors), errors
