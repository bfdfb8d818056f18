"""Fault injection on `pai up`, and the checks that follow each fault (used by tests/chaos and
benchmarks/chaos.py).

The platform is a `pai up` of the scenario's own (tests/acceptance/harness.py), driven from outside: jobs of
several kinds are submitted through HTTP; a fault hits the process tree `pai up` started (found through
/proc, as an operator would with `ps`); then, from outside again:

- every job reaches the state it would have reached without the fault (the workload says which);
- each task attempt ran exactly once: every task appends one line `<job> <attempt> <role> <index> <task
  attempt>` to a marker file on the host; a line twice is an attempt run twice;
- no allocation leaked: the VC view's available GPUs return to the total once the jobs ended;
- no message stays undelivered: every durable consumer of the platform has nothing pending and nothing
  waiting for an ack, read over NATS with the operator's credentials `pai up` writes;
- the API answered during recovery: every probe got a 2xx, or a 503/429 (never a 5xx otherwise), and the
  time from the fault to the first accepted submission is the recovery time.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from pai_common.bus import COMMANDS_STREAM, EVENTS_STREAM, Bus
from tests.acceptance.harness import RunningPlatform, wait_final

YAML = {"Content-Type": "text/yaml"}
GUARD_S = 300.0  # hang guards only; nothing is asserted about time
SECRETS = "secrets:\n  token: t0k3n\n"


# ---- the workload -------------------------------------------------------------------------------------


def _marker(markers: Path) -> str:
    fields = "$PAI_JOB_NAME $FC_FRAMEWORK_ATTEMPT_ID $PAI_CURRENT_TASK_ROLE_NAME $PAI_TASK_INDEX"
    fields += " $PAI_TASK_ATTEMPT_ID"
    return f'echo "{fields}" >> {markers}'


def _job(name: str, roles: dict[str, tuple[int, int, str]], extra: str = "") -> str:
    """roles: name -> (instances, gpus, command)."""
    parts = []
    for role, (instances, gpus, command) in roles.items():
        parts.append(
            f"""  {role}:
    instances: {instances}
    dockerImage: image
    resourcePerInstance: {{gpu: {gpus}, cpu: 1, memoryMB: 256, ports: {{http: 1}}}}
    commands: [{json.dumps(command)}]"""
        )
    body = "\n".join(parts)
    return f"""protocolVersion: 2
name: {name}
type: job
{extra}prerequisites:
  - {{type: dockerimage, uri: "python:3.11-slim", name: image}}
taskRoles:
{body}
"""


@dataclass
class Workload:
    """Jobs of several kinds and the final state each must reach; the ones to stop while they run."""

    markers: Path
    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])
    expected: dict[str, str] = field(default_factory=dict)
    to_stop: list[str] = field(default_factory=list)

    def jobs(self, user: str, seconds: int = 6) -> list[tuple[str, str]]:
        mark, s = _marker(self.markers), self.suffix
        work = f"{mark}; sleep {seconds}"
        retry = f'{mark}; if [ "$FC_FRAMEWORK_ATTEMPT_ID" = 0 ]; then exit 1; fi; sleep {seconds}'
        specs = [
            (f"one{s}", _job(f"one{s}", {"main": (1, 1, work)}), "SUCCEEDED"),
            (f"roles{s}", _job(f"roles{s}", {"ps": (1, 0, work), "worker": (2, 1, work)}), "SUCCEEDED"),
            (f"gpus{s}", _job(f"gpus{s}", {"main": (1, 2, work)}), "SUCCEEDED"),
            (
                f"secret{s}",
                _job(
                    f"secret{s}",
                    {"main": (1, 0, work + " # <% $secrets.token %>")},
                    "secrets:\n  token: t0k3n\n",
                ),
                "SUCCEEDED",
            ),
            (f"retry{s}", _job(f"retry{s}", {"main": (1, 1, retry)}, "jobRetryCount: 1\n"), "SUCCEEDED"),
            (f"stop{s}", _job(f"stop{s}", {"main": (1, 0, f"{mark}; sleep 3600")}), "STOPPED"),
        ]
        out = []
        for name, text, state in specs:
            key = f"{user}~{name}"
            self.expected[key] = state
            if state == "STOPPED":
                self.to_stop.append(key)
            out.append((key, text))
        return out


def submit_all(client: httpx.Client, jobs: list[tuple[str, str]]) -> None:
    for key, text in jobs:
        answer = submit_until_final(client, text)
        assert answer.status_code == 202, f"{key}: {answer.status_code} {answer.text}"


def submit_until_final(client: httpx.Client, text: str, tries: int = 60) -> httpx.Response:
    """As a well-behaved client: a 503 or 429 is tried again, with the same content, after Retry-After.

    A 503 can come from a jobs service that died between storing the job and answering: the retry then
    finds the job (202 where identical resubmissions are accepted, else OpenPAI's 409 for the name), which
    is the job the first try stored, not another one.
    """
    answer = client.post("/api/v2/jobs", content=text, headers=YAML)
    for _ in range(tries):
        if answer.status_code not in (429, 503):
            return answer
        time.sleep(min(float(answer.headers.get("Retry-After", "1")), 5.0))
        answer = client.post("/api/v2/jobs", content=text, headers=YAML)
        if answer.status_code == 409:
            return httpx.Response(202, json={"status": 202, "stored": "by the earlier try"})
    return answer


# ---- the process tree ----------------------------------------------------------------------------------


def platform_processes(root: int) -> dict[str, int]:
    """The processes `pai up` (pid ``root``) runs, by name: services, node agents, the servers."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found: dict[str, int] = {}
    todo = list(children.get(root, []))
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            argv = (Path("/proc") / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv if a]
        if any(w.endswith("nats-server") for w in words[:1]):
            found["nats-server"] = pid
        elif "pai_common.mongo_server" in words:
            # "mongo-server" (the shared one), "mongo-jobs-server" (the jobs database's own), ...
            store = words[words.index("--storage-path") + 1] if "--storage-path" in words[:-1] else "mongo"
            found[f"{Path(store).name}-server"] = pid
        elif "-m" in words:
            module = words[words.index("-m") + 1] if words.index("-m") + 1 < len(words) else ""
            if module == "pai_runtime":
                found[_node_of(pid)] = pid
            elif module.startswith("pai_"):
                found[module.removeprefix("pai_")] = pid
    return found


def _node_of(pid: int) -> str:
    try:
        env = (Path("/proc") / str(pid) / "environ").read_bytes().split(b"\0")
    except OSError:
        return f"runtime-{pid}"
    for item in env:
        if item.startswith(b"PAI_NODE_NAME="):
            return item.split(b"=", 1)[1].decode()
    return f"runtime-{pid}"


def kill(platform: RunningPlatform, *names: str, sig: int = signal.SIGKILL) -> list[str]:
    procs = platform_processes(platform.proc.pid)
    missing = [n for n in names if n not in procs]
    assert not missing, f"not running: {missing} (running: {sorted(procs)})"
    for name in names:
        os.kill(procs[name], sig)
    return [f"{n}:{procs[n]}" for n in names]


def kill_tree(platform: RunningPlatform) -> None:
    """An unclean stop of everything: `pai up` and every process it started, at once."""
    pids = [platform.proc.pid, *platform_processes(platform.proc.pid).values()]
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    platform.proc.wait(30)


# ---- watching the API during recovery --------------------------------------------------------------------


@dataclass
class Probe:
    """Submits a tiny job every ``every_s`` until stopped: each answer, and when the first 202 came."""

    client: httpx.Client
    workload: Workload
    user: str
    every_s: float = 1.0
    answers: list[tuple[float, int]] = field(default_factory=list)
    # How long each answer took (seconds), beside ``answers``: the API must answer, or answer 503, fast.
    waits: list[float] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    _stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        i = 0
        while not self._stop.is_set():
            name = f"probe{self.workload.suffix}{i}"
            text = _job(name, {"main": (1, 0, _marker(self.workload.markers))})
            sent = time.monotonic()
            try:
                status = self.client.post("/api/v2/jobs", content=text, headers=YAML, timeout=30).status_code
            except httpx.TransportError:
                status = 0  # the gateway itself was down (or kept the probe past 30 s): no answer at all
            if status == 409 and self.answers and self.answers[-1][1] in (0, 503):
                # The try the 503 (or the lost connection) answered had stored it: that job, not another.
                status = 202
            self.answers.append((time.monotonic() - self.started, status))
            self.waits.append(time.monotonic() - sent)
            if status == 202:
                self.workload.expected[f"{self.user}~{name}"] = "SUCCEEDED"
                i += 1
            self._stop.wait(self.every_s)

    def __enter__(self) -> Probe:
        self._thread = threading.Thread(target=self.run, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(60)

    def recovered_after(self, fault_at: float) -> float | None:
        for at, status in self.answers:
            if at >= fault_at and status == 202:
                return at - fault_at
        return None

    def slowest_after(self, fault_at: float) -> float:
        """The longest wait of a probe answered after the fault (the one in flight at the fault included;
        30 s: no answer within the probe's patience)."""
        after = [w for (at, _), w in zip(self.answers, self.waits, strict=True) if at >= fault_at]
        return max(after, default=0.0)

    def wrong_answers(self) -> list[tuple[float, int]]:
        """Answers a client must never get: 5xx other than 503 (0 = no answer: the gateway was down)."""
        return [(at, s) for at, s in self.answers if s >= 500 and s != 503]


# ---- after the fault -----------------------------------------------------------------------------------


@dataclass
class Outcome:
    jobs: int
    lost: list[str]
    run_twice: list[str]
    leaked_gpus: float
    undelivered: list[str]


def settle(platform: RunningPlatform, workload: Workload, client: httpx.Client) -> Outcome:
    wrong = []
    for key, state in workload.expected.items():
        detail = wait_final(client, key, guard_s=GUARD_S)
        got = detail["jobStatus"]["state"]
        if got != state:
            wrong.append(
                f"{key}: {got}, expected {state} ({detail['jobStatus'].get('appExitDiagnostics', '')})"[:400]
            )
    lines = workload.markers.read_text().splitlines() if workload.markers.exists() else []
    twice = sorted({line for line in lines if lines.count(line) > 1})
    return Outcome(len(workload.expected), wrong, twice, leaked_gpus(client), undelivered(platform))


def leaked_gpus(client: httpx.Client, guard_s: float = 120.0) -> float:
    """GPUs not available again once every job ended (0 when all came back)."""
    deadline = time.monotonic() + guard_s
    while True:
        vcs = client.get("/api/v2/virtual-clusters").json()
        total = sum(float(v["resourcesTotal"]["gpu"]) for v in vcs.values())
        free = sum(float(v["resourcesAvailable"]["gpu"]) for v in vcs.values())
        if free >= total or time.monotonic() > deadline:
            return total - free
        time.sleep(0.5)


def undelivered(platform: RunningPlatform, guard_s: float = 120.0) -> list[str]:
    """Durable consumers still holding messages once the platform is quiet (empty: none)."""
    url = (platform.data_dir / "bus" / "operator.url").read_text().strip()

    async def read() -> list[str]:
        bus = await Bus.connect(url, "operator")
        try:
            deadline = time.monotonic() + guard_s
            while True:
                busy = []
                for stream in (EVENTS_STREAM, COMMANDS_STREAM):
                    for info in await bus.js.consumers_info(stream):
                        if info.num_pending or info.num_ack_pending:
                            busy.append(
                                f"{info.name}: {info.num_pending} pending, {info.num_ack_pending} unacked"
                            )
                if not busy or time.monotonic() > deadline:
                    return busy
                await asyncio.sleep(0.5)
        finally:
            await bus.close()

    return asyncio.run(read())


def stop_the_ones_to_stop(client: httpx.Client, workload: Workload) -> None:
    for key in workload.to_stop:
        for _ in range(60):
            r = client.put(f"/api/v2/jobs/{key}/executionType", json={"value": "STOP"})
            if r.status_code == 202:
                break
            assert r.status_code in (503, 429), r.text
            time.sleep(1)


def wait_running(client: httpx.Client, keys: list[str], guard_s: float = GUARD_S) -> None:
    """Until each job has a running task: the fault then hits work in flight."""
    deadline = time.monotonic() + guard_s
    for key in keys:
        while client.get(f"/api/v2/jobs/{key}").json()["jobStatus"]["state"] != "RUNNING":
            assert time.monotonic() < deadline, f"{key} never ran"
            time.sleep(0.3)


Check = Callable[[Outcome], None]
