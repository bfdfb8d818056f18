"""The node agent against real NATS (JetStream) and a real MongoDB-wire server, with real processes:
launch, exit codes and signals, a stop of a tree that ignores SIGTERM, secrets that stay in the task,
logs per task attempt (stdout, stderr, all) with retention, set-up failures, task metrics."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from pai_common.bus import DEAD_LETTER_STREAM, Bus
from pai_common.contract.base import heartbeat_subject
from pai_common.contract.commands import KillTask, LaunchTask
from pai_common.contract.events import NodeRegistered, TaskExited, TaskRunning
from pai_common.contract.rpc import JobSecretsReply, JobSecretsRequest, TaskLogReply, TaskLogRequest
from pai_common.embedded import ServerProcess
from pai_common.errors import ForbiddenUserError, NoTaskLogError, ServiceUnavailableError
from pai_common.testing import EventRecorder
from pai_runtime import exit_batch
from pai_runtime.backend import TaskExit
from pai_runtime.settings import RuntimeSettings
from pai_runtime.shell import PORT_CONFLICT_EXIT, Agent

SECRET = "hunter2-very-secret"


def _agent(nats: ServerProcess, mongo: ServerProcess, data: Path, node: str = "", **kw: Any) -> Agent:
    settings = RuntimeSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        data_dir=data,
        node_name=node or f"node-{uuid.uuid4().hex[:6]}",
        force_simulated=True,
        simulated_gpus=2,
        nak_base_delay_s=0.05,
        kill_grace_s=1.0,
        **kw,
    )
    agent = Agent(settings)
    agent.app.name = f"rt{uuid.uuid4().hex[:8]}"  # a database of this test's own
    return agent


def _live_members(pgid: int) -> list[int]:
    """Processes of a group that are not zombies (this container's init may be slow to reap them)."""
    live = []
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid and fields[0] != "Z":
            live.append(int(entry))
    return live


def _launch(agent: Agent, job: str, role: str, index: int, entrypoint: str, **kw: Any) -> LaunchTask:
    return LaunchTask(
        job_key=job, attempt_id=0, task_role=role, index=index, node=agent.node, gpus=[],
        entrypoint=entrypoint, **kw,
    )  # fmt: skip


def _exited(job: str, role: str = "worker", index: int = 0, attempt: int = 0) -> Any:
    return lambda e: (
        isinstance(e, TaskExited)
        and (e.job_key, e.task_role, e.index, e.task_attempt_id) == (job, role, index, attempt)
    )


async def test_exits_signals_and_stops(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    await agent.app.start()
    try:
        registered = await events.wait_until(lambda e: isinstance(e, NodeRegistered) and e.node == agent.node)
        assert (
            registered.simulated and registered.inventory_source == "simulated" and len(registered.gpus) == 2
        )

        job = "alice~exits"
        await fresh_bus.send_command(
            _launch(agent, job, "worker", 0, "echo out; echo err >&2; exit 3"), agent.node
        )
        await fresh_bus.send_command(_launch(agent, job, "worker", 1, "kill -SEGV $$"), agent.node)
        # A tree that ignores SIGTERM: only the SIGKILL after the grace period ends it.
        tree = "trap '' TERM\nbash -c \"trap '' TERM; sleep 300\" &\nsleep 300 &\nwait"
        await fresh_bus.send_command(_launch(agent, job, "worker", 2, tree), agent.node)

        first = await events.wait_until(_exited(job, "worker", 0))
        assert (first.exit_code, first.signal) == (3, None)
        assert "out" in first.log_tail and "err" in first.log_tail
        second = await events.wait_until(_exited(job, "worker", 1))
        assert (second.exit_code, second.signal) == (139, 11)

        running = await events.wait_until(
            lambda e: isinstance(e, TaskRunning) and e.index == 2 and e.job_key == job
        )
        assert running.backend == "host" and running.node == agent.node
        await asyncio.sleep(0.5)  # the traps are set
        group = running.pid
        await fresh_bus.send_command(
            KillTask(job_key=job, attempt_id=0, task_role="worker", index=2, node=agent.node, reason="stop",
                     grace_period_s=0.5),
            agent.node,
        )  # fmt: skip
        third = await events.wait_until(_exited(job, "worker", 2))
        assert (third.exit_code, third.signal) == (137, 9)
        assert _live_members(group) == []  # nothing of the tree is left

        # Logs of each stream, by task attempt.
        async def logs(stream: str, index: int = 0, attempt: int = 0) -> TaskLogReply:
            req = TaskLogRequest(
                job_key=job,
                attempt_id=0,
                task_role="worker",
                index=index,
                task_attempt_id=attempt,
                stream=stream,
            )
            return await fresh_bus.request(req, TaskLogReply, target=agent.node)

        assert (await logs("stdout")).content == "out\n"
        assert (await logs("stderr")).content == "err\n"
        assert sorted((await logs("all")).content.split()) == ["err", "out"]
        with pytest.raises(NoTaskLogError, match="task attempt 1"):
            await logs("stdout", attempt=1)
    finally:
        await agent.app.stop()


class JobsSecrets:
    """The jobs service's side of jobs.secrets as the agent meets it: it answers only for the node a task
    attempt is placed on, and while it cannot tell (the orchestrator it asks is restarting) it says it is
    unavailable, as many times as ``unavailable`` says."""

    def __init__(self, placements: dict[tuple[str, int, str, int, int], str], unavailable: int = 0) -> None:
        self.placements = placements
        self.unavailable = unavailable
        self.asked: list[JobSecretsRequest] = []

    async def __call__(self, req: JobSecretsRequest) -> JobSecretsReply:
        self.asked.append(req)
        if len(self.asked) <= self.unavailable:
            raise ServiceUnavailableError("service orchestrator did not answer in 5s")
        key = (req.job_key, req.attempt_id, req.task_role, req.index, req.task_attempt_id)
        if self.placements.get(key) != req.node:
            raise ForbiddenUserError(f"Node {req.node} runs no task of job {req.job_key}.")
        return JobSecretsReply(secrets={"token": SECRET, "db": {"password": "pw-" + SECRET}})


async def test_secrets_stay_inside_the_task(
    fresh_nats: ServerProcess,
    mongo_server: ServerProcess,
    fresh_bus: Bus,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    job = "alice~secretive"
    # Unavailable more times than a message may fail before it is dead-lettered: a lag that resolves
    # itself must never fail the task, nor lose its launch.
    jobs_side = JobsSecrets({(job, 0, "worker", 0, 0): agent.node}, unavailable=6)
    jobs = await Bus.connect(fresh_nats.url, "jobs")
    await jobs.serve_rpc({JobSecretsRequest: jobs_side})
    await agent.app.start()
    try:
        entrypoint = (
            "echo token=<% $secrets.token %>\n"
            "echo '<% $secrets.db.password %>' > used.txt\n"
            "echo 'to stderr <% $secrets.token %>' >&2\nexit 1"
        )
        plugins = [{"plugin": "cmd", "parameters": {"preCommands": ["echo pre <% $secrets.token %>"]}}]
        await fresh_bus.send_command(
            _launch(agent, job, "worker", 0, entrypoint, has_secrets=True, plugins=plugins), agent.node
        )
        exited = await events.wait_until(_exited(job))
        assert exited.exit_code == 1 and "not started" not in exited.log_tail
        assert len(jobs_side.asked) == 7
        assert {(r.job_key, r.node, r.attempt_id, r.task_role, r.index) for r in jobs_side.asked} == {
            (job, agent.node, 0, "worker", 0)
        }
        # Rendered inside the task: its own files and output have the value.
        workdir = agent.workdir(job, 0, "worker", 0)
        assert (workdir / "used.txt").read_text().strip() == "pw-" + SECRET
        assert f"token={SECRET}" in (workdir / "stdout.log").read_text()
        assert (workdir / "user.sh").stat().st_mode & 0o777 == 0o600
        # Masked wherever the platform shows it.
        assert "token=******" in exited.log_tail and "pre ******" in exited.log_tail
        reply = await fresh_bus.request(
            TaskLogRequest(job_key=job, attempt_id=0, task_role="worker", index=0, stream="all"),
            TaskLogReply,
            target=agent.node,
        )
        assert "token=******" in reply.content and SECRET not in reply.content
        # Never in an event, a command's echo, or the agent's own logs.
        assert events.raw and all(SECRET.encode() not in raw for raw in events.raw)
        assert all(SECRET not in r.getMessage() and SECRET not in str(r.__dict__) for r in caplog.records)
        dead = await fresh_bus.js.stream_info(DEAD_LETTER_STREAM)
        assert dead.state.messages == 0

        # A task attempt the jobs service does not place on this node gets no secrets: it ends at once,
        # saying why, without running the user's command.
        await fresh_bus.send_command(
            _launch(agent, job, "worker", 1, "echo never <% $secrets.token %>", has_secrets=True), agent.node
        )
        refused = await events.wait_until(_exited(job, "worker", 1))
        assert refused.exit_code == 1
        assert "secrets are not available" in refused.log_tail and "runs no task" in refused.log_tail
        assert "never" not in refused.log_tail.replace("echo never", "")
    finally:
        await agent.app.stop()
        await jobs.close()


async def test_set_up_failures_end_the_task_with_a_reason(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    await agent.app.start()
    taken = socket.socket()
    taken.bind(("0.0.0.0", 0))
    taken.listen()
    try:
        job = "alice~bad"
        port = taken.getsockname()[1]
        await fresh_bus.send_command(
            _launch(agent, job, "worker", 0, "echo never", ports={"http": [port]}), agent.node
        )
        await fresh_bus.send_command(
            _launch(agent, job, "worker", 1, "echo never", plugins=[{"plugin": "nope"}]), agent.node
        )
        await fresh_bus.send_command(_launch(agent, job, "worker", 2, "echo <% $secrets.x %>"), agent.node)
        conflict = await events.wait_until(_exited(job, "worker", 0))
        assert conflict.exit_code == PORT_CONFLICT_EXIT and str(port) in conflict.log_tail
        plugin = await events.wait_until(_exited(job, "worker", 1))
        assert plugin.exit_code == 1 and "unknown runtime plugin 'nope'" in plugin.log_tail
        secret = await events.wait_until(_exited(job, "worker", 2))
        assert secret.exit_code == 1 and "no secret $secrets.x" in secret.log_tail
        assert all("never" not in e.log_tail.replace("echo never", "") for e in (conflict, plugin, secret))
    finally:
        taken.close()
        await agent.app.stop()


async def test_task_attempts_logs_retention_and_metrics(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path, metrics_s=0.2, log_retention_s=3600)
    await agent.app.start()
    try:
        job = "alice~retried"
        # The same task, attempted twice: each attempt has its own directory and logs.
        for attempt in (0, 1):
            await fresh_bus.send_command(
                _launch(agent, job, "worker", 0, f"echo attempt {attempt}; sleep 1", task_attempt_id=attempt),
                agent.node,
            )
        labels = {
            "node": agent.node,
            "job_name": job,
            "username": "alice",
            "task_role": "worker",
            "index": "0",
            "task_attempt": "1",
        }
        for _ in range(100):
            if (REGISTRY.get_sample_value("pai_task_processes", labels) or 0) >= 2:
                break
            await asyncio.sleep(0.05)
        assert (REGISTRY.get_sample_value("pai_task_memory_bytes", labels) or 0) > 0
        assert (REGISTRY.get_sample_value("pai_task_processes", labels) or 0) >= 2
        for attempt in (0, 1):
            done = await events.wait_until(_exited(job, attempt=attempt))
            assert done.exit_code == 0 and f"attempt {attempt}" in done.log_tail
        assert REGISTRY.get_sample_value("pai_task_memory_bytes", labels) is None  # gone with the task

        workdir = agent.workdir(job, 0, "worker", 0, 1)
        assert (workdir / "stdout.log").read_text() == "attempt 1\n"
        # Kept for the retention time, then removed.
        assert await agent.expire_logs_once(now=int(time.time() * 1000)) == 0
        assert await agent.expire_logs_once(now=int(time.time() * 1000) + 3601 * 1000) == 2
        assert not workdir.exists()
        with pytest.raises(NoTaskLogError):
            await fresh_bus.request(
                TaskLogRequest(job_key=job, attempt_id=0, task_role="worker", index=0, task_attempt_id=1),
                TaskLogReply,
                target=agent.node,
            )
    finally:
        await agent.app.stop()


async def test_a_device_marked_bad_is_reported(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    inventory = tmp_path / "inventory.yaml"
    inventory.write_text("gpus: [{model: A100}, {model: A100}]\ninfiniband: [{model: CX6, id: mlx5_0}]\n")
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path, inventory_file=inventory, heartbeat_s=0.1)
    beats: list[dict[str, Any]] = []

    async def heard(msg: Any) -> None:
        beats.append(json.loads(msg.data))

    await fresh_bus.nc.subscribe(heartbeat_subject(agent.node), cb=heard)
    await agent.app.start()
    try:
        first = await events.wait_until(lambda e: isinstance(e, NodeRegistered) and e.node == agent.node)
        assert first.inventory_source == "declared" and [g.healthy for g in first.gpus] == [True, True]
        assert [d.id for d in first.infiniband] == ["mlx5_0"]
        assert await agent.check_health_once() is False  # nothing changed
        inventory.write_text(
            "gpus: [{model: A100}, {model: A100, healthy: false}]\ninfiniband: [{model: CX6, id: mlx5_0}]\n"
        )
        assert await agent.check_health_once() is True
        again = await events.wait_until(
            lambda e: (
                isinstance(e, NodeRegistered) and e.node == agent.node and not all(g.healthy for g in e.gpus)
            )
        )
        assert [g.healthy for g in again.gpus] == [True, False]
        for _ in range(100):
            if beats and beats[-1]["unhealthy_gpus"] == [1]:
                break
            await asyncio.sleep(0.05)
        assert beats[-1]["unhealthy_gpus"] == [1] and beats[-1]["node"] == agent.node
    finally:
        await agent.app.stop()


async def test_a_restarted_agent_adopts_its_running_tasks(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    events = EventRecorder(fresh_bus)
    await events.start()
    first = _agent(fresh_nats, mongo_server, tmp_path)
    await first.app.start()
    job = "alice~adopted"
    try:
        await fresh_bus.send_command(
            _launch(first, job, "worker", 0, "sleep 2\necho done\nexit 5"), first.node
        )
        await events.wait_until(lambda e: isinstance(e, TaskRunning) and e.job_key == job)
    finally:
        await first.app.stop()  # the task keeps running without its agent
    second = Agent(first.settings)
    second.app.name = first.app.name  # the same node and database: the next agent of this node
    await second.app.start()
    try:
        exited = await events.wait_until(_exited(job))
        assert (exited.exit_code, exited.signal) == (5, None) and "done" in exited.log_tail
        assert sum(1 for body in events.seen if _exited(job)(body)) == 1
    finally:
        await second.app.stop()


async def test_nodes_named_like_kubernetes_nodes(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """A DNS-1123 node name (EKS's ip-10-0-0-1.ec2.internal) works end to end; a node whose name is the
    first label of it is another node: neither gets the other's commands, logs or heartbeats."""
    events = EventRecorder(fresh_bus)
    await events.start()
    short = f"ip-10-0-{uuid.uuid4().hex[:4]}"
    dotted = _agent(fresh_nats, mongo_server, tmp_path / "a", node=f"{short}.ec2.internal")
    plain = _agent(fresh_nats, mongo_server, tmp_path / "b", node=short)
    beats: list[str] = []

    async def heard(msg: Any) -> None:
        beats.append(msg.subject)

    await fresh_bus.nc.subscribe(heartbeat_subject(dotted.node), cb=heard)
    await dotted.app.start()
    await plain.app.start()
    try:
        job = "alice~dotted"
        await fresh_bus.send_command(_launch(dotted, job, "worker", 0, "echo on-dotted"), dotted.node)
        await fresh_bus.send_command(_launch(plain, job, "worker", 1, "echo on-plain"), plain.node)
        first = await events.wait_until(_exited(job, "worker", 0))
        second = await events.wait_until(_exited(job, "worker", 1))
        assert (first.node, first.exit_code) == (dotted.node, 0)
        assert (second.node, second.exit_code) == (plain.node, 0)
        req = TaskLogRequest(job_key=job, attempt_id=0, task_role="worker", index=0)
        assert (await fresh_bus.request(req, TaskLogReply, target=dotted.node)).content == "on-dotted\n"
        with pytest.raises(NoTaskLogError):
            await fresh_bus.request(req, TaskLogReply, target=plain.node)
        while not beats:
            await asyncio.sleep(0.1)
        assert beats[0] == f"pai.hb.{short}~ec2~internal"
    finally:
        await plain.app.stop()
        await dotted.app.stop()


@pytest.mark.parametrize("name", ["", "a..b", ".a", "a.", "a b", "a/b", "x" * 254, "a~b"])
def test_names_that_are_no_node_names_are_refused(name: str, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="node_name"):
        RuntimeSettings(data_dir=tmp_path, node_name=name)


async def test_a_preempted_task_gets_its_notice_before_sigterm(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """The task knows where its notice will be; on preemption the file holds the deadline and the preemptor
    when SIGTERM arrives, so a task that checkpoints in its handler ends well within the grace."""
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    await agent.app.start()
    try:
        job = "alice~checkpointing"
        script = (
            'echo "notice at $PAI_PREEMPTION_NOTICE"\n'
            'test -e "$PAI_PREEMPTION_NOTICE" || echo "no notice yet"\n'
            "trap 'cat \"$PAI_PREEMPTION_NOTICE\"; echo; echo checkpointed; exit 0' TERM\n"
            "echo ready\n"
            "while true; do sleep 0.1; done\n"
        )
        await fresh_bus.send_command(_launch(agent, job, "worker", 0, script), agent.node)
        running = await events.wait_until(lambda e: isinstance(e, TaskRunning) and e.job_key == job)
        workdir = agent.workdir(job, 0, "worker", 0)
        deadline = time.monotonic() + 30
        stdout = workdir / "stdout.log"
        while not stdout.exists() or "ready" not in stdout.read_text(errors="replace"):
            assert time.monotonic() < deadline, "the task never got ready"
            await asyncio.sleep(0.1)
        due = int(time.time() * 1000) + 20_000
        await fresh_bus.send_command(
            KillTask(job_key=job, attempt_id=0, task_role="worker", index=0, node=agent.node,
                     reason="attempt completed: preempted by bob~urgent", grace_period_s=20.0,
                     preemption_deadline=due, preemptor="bob~urgent"),
            agent.node,
        )  # fmt: skip
        ended = await events.wait_until(_exited(job))
        assert (ended.exit_code, ended.signal) == (0, None), ended.log_tail
        out = (workdir / "stdout.log").read_text()
        assert f"notice at {workdir / 'preemption-notice.json'}" in out and "no notice yet" in out
        notice = json.loads(out.split("ready\n", 1)[1].splitlines()[0])
        assert notice["deadlineMs"] == due and notice["preemptor"] == "bob~urgent"
        assert notice["graceSeconds"] == 20.0 and notice["deadline"].endswith("Z")
        assert "checkpointed" in out
        assert _live_members(running.pid) == []
    finally:
        await agent.app.stop()


async def test_commands_waiting_for_the_agent_are_one_batch(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """Commands queued before the agent starts come as one batch (launch_batch.py): a launch given twice
    starts its task once, a kill after a launch in the same batch stops that task, and a task that ends at
    once reports its exit once, after the run it updates was committed."""
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    job = "alice~batch"
    quick = _launch(agent, job, "worker", 0, "true")
    await fresh_bus.send_command(quick, agent.node)
    await fresh_bus.send_command(_launch(agent, job, "worker", 1, "sleep 300"), agent.node)
    await fresh_bus.send_command(
        KillTask(job_key=job, attempt_id=0, task_role="worker", index=1, node=agent.node, reason="stopped",
                 grace_period_s=0.5),
        agent.node,
    )  # fmt: skip
    await fresh_bus.send_command(quick, agent.node)  # the same launch again (another message)
    await agent.app.start()
    try:
        first = await events.wait_until(_exited(job, "worker", 0))
        assert (first.exit_code, first.signal) == (0, None)
        killed = await events.wait_until(_exited(job, "worker", 1))
        assert killed.signal in (9, 15)
        await events.drain(0.5)
        assert len([e for e in events.of(TaskRunning) if e.job_key == job and e.index == 0]) == 1
        assert len([e for e in events.of(TaskExited) if e.job_key == job and e.index == 0]) == 1
        runs = {d["_id"]: d async for d in agent.app.db[agent.runs_collection].find({})}
        assert sorted(runs) == [f"{job}/0/worker/0/0", f"{job}/0/worker/1/0"]
        assert runs[f"{job}/0/worker/1/0"]["stop_reason"] == "stopped"
        assert {d["status"] for d in runs.values()} == {"exited"}
        markers = [d["at"] async for d in agent.app.db["processed"].find({})]
        assert max(markers.count(at) for at in set(markers)) == 4  # the four in one transaction
    finally:
        await agent.app.stop()


async def test_the_exits_of_the_moment_are_recorded_in_one_transaction(
    fresh_nats: ServerProcess,
    mongo_server: ServerProcess,
    fresh_bus: Bus,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """exit_batch.py: exits waiting together share one transaction; each run is reported once, only while
    running; an exit whose run is not stored yet (its launch not committed) is recorded once it is."""
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    await agent.app.start()
    job = "alice~exits"
    transactions = 0
    transaction = agent.app.transaction

    def counted() -> Any:
        nonlocal transactions
        transactions += 1
        return transaction()

    agent.app.transaction = counted  # type: ignore[method-assign]
    try:
        runs = agent.app.db[agent.runs_collection]
        template = {"job_key": job, "attempt_id": 0, "task_role": "worker", "task_attempt_id": 0}
        rid = [f"{job}/0/worker/{i}/0" for i in range(6)]
        await runs.insert_many(
            [{"_id": rid[i], "status": "running"} for i in range(4)]
            + [{"_id": rid[4], "status": "exited", "exit_code": 0}]  # reported already
        )
        where = [{**template, "index": i, "node": agent.node} for i in range(6)]
        recorded = asyncio.gather(
            *(agent._record_exit(rid[i], where[i], TaskExit(i, None), "") for i in range(6))
        )
        await asyncio.sleep(0.1)
        await runs.insert_one({"_id": rid[5], "status": "running"})  # its launch commits late
        await asyncio.wait_for(recorded, 30)
        assert transactions == 2  # the six together, then the late one alone
        await events.drain(0.5)
        reported = sorted((e.index, e.exit_code) for e in events.of(TaskExited) if e.job_key == job)
        assert reported == [(0, 0), (1, 1), (2, 2), (3, 3), (5, 5)]
        stored = {d["_id"]: (d["status"], d["exit_code"]) async for d in runs.find({})}
        assert stored == {rid[i]: ("exited", 0 if i == 4 else i) for i in range(6)}
        # No transaction records more than MAX_BATCH exits.
        monkeypatch.setattr(exit_batch, "MAX_BATCH", 2)
        more = [f"{job}/0/worker/{i}/0" for i in range(6, 11)]
        await runs.insert_many([{"_id": r, "status": "running"} for r in more])
        transactions = 0
        later = [
            agent._record_exit(r, {**template, "index": 6 + n, "node": agent.node}, TaskExit(0, None), "")
            for n, r in enumerate(more)
        ]
        await asyncio.wait_for(asyncio.gather(*later), 30)
        assert transactions == 3
        assert {d["status"] async for d in runs.find({"_id": {"$in": more}})} == {"exited"}
        await events.drain(0.5)  # (unread events would hold the bus's close for seconds)
        indices = sorted(e.index for e in events.of(TaskExited) if e.job_key == job)
        assert indices == [0, 1, 2, 3, 5, 6, 7, 8, 9, 10]  # each once; 4 was reported before
    finally:
        await agent.app.stop()


async def test_a_stop_that_overtakes_its_launch_ends_the_task_before_it_starts(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    """A launch can go back to the stream (a transient failure, an agent restarted while holding it) and
    come after the stop of its task. The stop reports the exit at once (the orchestrator waits for it), and
    the launch that comes later, here after a restart of the agent, starts nothing: the task's cells may be
    someone else's by then."""
    events = EventRecorder(fresh_bus)
    await events.start()
    data = tmp_path / "agent"
    agent = _agent(fresh_nats, mongo_server, data)
    name, node = agent.app.name, agent.node
    job = "alice~overtaken"
    await agent.app.start()
    try:
        await fresh_bus.send_command(
            KillTask(job_key=job, attempt_id=0, task_role="worker", index=0, node=node,
                     reason="attempt completed: stopped by alice", grace_period_s=30.0),
            node,
        )  # fmt: skip
        ended = await events.wait_until(_exited(job))
        assert (ended.exit_code, ended.signal) == (143, 15)
        assert "stopped before it was launched" in ended.log_tail and "stopped by alice" in ended.log_tail
    finally:
        await agent.app.stop()

    again = _agent(fresh_nats, mongo_server, data, node=node)
    again.app.name = name
    await again.app.start()
    try:
        await fresh_bus.send_command(_launch(again, job, "worker", 0, "sleep 300"), node)
        # A task launched after it, on the same agent: once it runs, the late launch was handled.
        await fresh_bus.send_command(_launch(again, job, "worker", 1, "true"), node)
        await events.wait_until(_exited(job, "worker", 1))
        await events.drain(0.3)
        assert [e.index for e in events.of(TaskRunning) if e.job_key == job] == [1]
        assert len([e for e in events.of(TaskExited) if e.job_key == job and e.index == 0]) == 1
        run = await again.app.db[again.runs_collection].find_one({"_id": f"{job}/0/worker/0/0"})
        assert run is not None and run["status"] == "exited" and run["never_launched"] is True
    finally:
        await again.app.stop()
