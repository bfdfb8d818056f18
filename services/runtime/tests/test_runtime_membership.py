"""An elastic job's membership in the node agent, against real NATS and a real MongoDB-wire server with real
processes: the file at $PAI_MEMBERSHIP_FILE from the start, rewritten whole on UpdateMembership, then
SIGWINCH to the task, which a task that traps it sees and a task that does not survives; an older version
never replaces a newer one."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

from pai_common.bus import Bus
from pai_common.contract.commands import LaunchTask, UpdateMembership
from pai_common.contract.events import TaskExited, TaskRunning
from pai_common.embedded import ServerProcess
from pai_common.testing import EventRecorder
from pai_runtime import membership
from pai_runtime.settings import RuntimeSettings
from pai_runtime.shell import Agent

JOB = "alice~elastic"


def test_the_file_is_a_sourceable_versioned_snapshot(tmp_path: Path) -> None:
    text = membership.render({"PAI_HOST_IP_w_0": "10.0.0.1", "PATH": "/bin", "PAI_X": "it's"}, 3)
    assert text == "# membership version 3\nexport PAI_HOST_IP_w_0=10.0.0.1\nexport PAI_X='it'\"'\"'s'\n"
    path = tmp_path / membership.FILE_NAME
    assert membership.write(path, text) and membership.version_of(path.read_text()) == 3
    # An update that overtook an older one keeps its place: the older is not written.
    assert not membership.write(path, membership.render({"PAI_X": "old"}, 2))
    assert membership.version_of(path.read_text()) == 3
    assert membership.own_variables({"PAI_A": "1", "PAI_B": "2", "X": "3"}, {"PAI_A": "1"}) == {}
    launched = {"PAI_A": "1", membership.VERSION: "1"}
    assert membership.own_variables({"PAI_A": "1", "PAI_B": "2", "X": "3"}, launched) == {"PAI_B": "2"}


def _agent(nats: ServerProcess, mongo: ServerProcess, data: Path) -> Agent:
    settings = RuntimeSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        data_dir=data,
        node_name=f"node-{uuid.uuid4().hex[:6]}",
        force_simulated=True,
        nak_base_delay_s=0.05,
        kill_grace_s=1.0,
    )
    agent = Agent(settings)
    agent.app.name = f"rt{uuid.uuid4().hex[:8]}"
    return agent


def _env(hosts: str, version: int) -> dict[str, str]:
    return {"PAI_TASK_ROLE_w_HOST_LIST": hosts, "PAI_ELASTIC_INSTANCES_w": str(hosts.count(",") + 1),
            membership.VERSION: str(version)}  # fmt: skip


async def _wait_for(path: Path, text: str) -> None:
    deadline = time.monotonic() + 30
    while not path.exists() or text not in path.read_text(errors="replace"):
        assert time.monotonic() < deadline, f"{text!r} never appeared in {path}"
        await asyncio.sleep(0.1)


async def test_a_task_learns_the_new_membership_and_one_that_ignores_the_signal_runs_on(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    events = EventRecorder(fresh_bus)
    await events.start()
    agent = _agent(fresh_nats, mongo_server, tmp_path)
    await agent.app.start()
    try:
        listens = (
            'echo "file $PAI_MEMBERSHIP_FILE"; . "$PAI_MEMBERSHIP_FILE"\n'
            'echo "start v$PAI_MEMBERSHIP_VERSION"\n'
            'trap \'. "$PAI_MEMBERSHIP_FILE"; echo "now v$PAI_MEMBERSHIP_VERSION $PAI_TASK_ROLE_w_HOST_LIST";'
            " exit 0' WINCH\n"
            "echo ready\n"
            "while true; do sleep 0.1; done\n"
        )
        ignores = "echo ready\nwhile [ ! -e go ]; do sleep 0.1; done\necho alive\n"
        for index, script in ((0, listens), (1, ignores)):
            launch = LaunchTask(
                job_key=JOB, attempt_id=0, task_role="w", index=index, node=agent.node, gpus=[],
                entrypoint=script, env=_env("10.0.0.1,10.0.0.2", 1),
            )  # fmt: skip
            await fresh_bus.send_command(launch, agent.node)
            await events.wait_until(
                lambda e, i=index: isinstance(e, TaskRunning) and e.job_key == JOB and e.index == i
            )
        workdirs = [agent.workdir(JOB, 0, "w", i) for i in (0, 1)]
        for workdir in workdirs:
            await _wait_for(workdir / "stdout.log", "ready")
        out = (workdirs[0] / "stdout.log").read_text()
        assert f"file {workdirs[0] / membership.FILE_NAME}" in out and "start v1" in out
        # The agent's own variables are in the file too, and stay there on each rewrite.
        assert "export PAI_TASK_ATTEMPT_ID=0" in (workdirs[0] / membership.FILE_NAME).read_text()

        for index in (0, 1):
            update = UpdateMembership(
                job_key=JOB, attempt_id=0, task_role="w", index=index, node=agent.node,
                env=_env("10.0.0.1,10.0.0.2,10.0.0.3", 2), version=2,
            )  # fmt: skip
            await fresh_bus.send_command(update, agent.node)
        told = await events.wait_until(
            lambda e: isinstance(e, TaskExited) and e.job_key == JOB and e.index == 0
        )
        assert (told.exit_code, told.signal) == (0, None), told.log_tail
        assert "now v2 10.0.0.1,10.0.0.2,10.0.0.3" in (workdirs[0] / "stdout.log").read_text()
        rewritten = (workdirs[1] / membership.FILE_NAME).read_text()
        assert rewritten.startswith("# membership version 2\n") and "PAI_TASK_ATTEMPT_ID=0" in rewritten

        # The task that does not trap SIGWINCH got it too, and runs on to its own end.
        (workdirs[1] / "go").touch()
        ignored = await events.wait_until(
            lambda e: isinstance(e, TaskExited) and e.job_key == JOB and e.index == 1
        )
        assert (ignored.exit_code, ignored.signal) == (0, None), ignored.log_tail
        assert "alive" in (workdirs[1] / "stdout.log").read_text()
    finally:
        await agent.app.stop()
