"""The bus's users and permissions, on a real NATS server configured as the embedded default configures it.

A node agent may not publish job events, nor read another node's commands by any route (its consumer,
a consumer of its own, the stream's messages, a plain subscription), nor another user's RPC replies; an
extension may only read events, through consumers of its own; a service may publish only what the
contract says it produces; nobody may remove a stream. Each refusal is shown beside what the same user may
do, so that a user who can do nothing at all would fail these tests.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
import pytest
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from pai_common import bus_permissions
from pai_common.bus import COMMANDS_STREAM, EVENTS_STREAM, Bus
from pai_common.contract.commands import KillTask
from pai_common.contract.events import JobCompleted, TaskRunning
from pai_common.embedded import ServerProcess, start_nats
from pai_common.envelope import encode

NODES = ["node-0", "node-1"]
REFUSED_S = 2.0  # how long a refused JetStream request waits for an answer that will not come


@dataclass
class Secured:
    server: ServerProcess
    users: dict[str, tuple[str, bus_permissions.Permissions]]

    def url(self, user: str) -> str:
        return bus_permissions.url_for(self.server.url, user, self.users[user][0])


@pytest.fixture(scope="module")
def secured(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Secured]:
    users = bus_permissions.embedded_users(NODES)
    server = start_nats(tmp_path_factory.mktemp("secured"), authorization=bus_permissions.nats_config(users))
    yield Secured(server, users)
    server.stop()


@dataclass
class Session:
    nc: Client
    errors: list[str] = field(default_factory=list)

    @property
    def js(self) -> Any:
        return self.nc.jetstream(timeout=REFUSED_S)

    async def refused(self, subject_part: str) -> None:
        """The server told this client it was not allowed (asynchronously, as NATS does)."""
        for _ in range(100):
            if any(
                "permissions violation" in e.lower() and subject_part.lower() in e.lower()
                for e in self.errors
            ):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permission violation for {subject_part!r}: {self.errors}")


@pytest.fixture
async def connect(secured: Secured) -> AsyncIterator[Any]:
    opened: list[Session] = []

    async def as_user(user: str) -> Session:
        session = Session(nc=None)  # type: ignore[arg-type]

        async def on_error(exc: Exception) -> None:
            session.errors.append(str(exc))

        session.nc = await nats.connect(
            bus_permissions.url_for(secured.server.url, user, secured.users[user][0]),
            error_cb=on_error,
            inbox_prefix=bus_permissions.inbox_prefix(user),
            allow_reconnect=False,
        )
        opened.append(session)
        return session

    yield as_user
    for session in opened:
        await session.nc.close()


@pytest.fixture(scope="module")
async def streams(secured: Secured) -> None:
    bus = await Bus.connect(secured.url("orchestrator"), "orchestrator")
    await bus.ensure_streams()
    await bus.close()


async def _count(secured: Secured, stream: str) -> int:
    bus = await Bus.connect(secured.url("operator"), "operator")
    try:
        return int((await bus.js.stream_info(stream)).state.messages)
    finally:
        await bus.close()


async def test_a_node_agent_may_not_publish_job_events_only_its_own(
    secured: Secured, streams: None, connect: Any
) -> None:
    node = await connect("runtime-node-0")
    before = await _count(secured, EVENTS_STREAM)
    _, headers, payload = encode(
        JobCompleted(job_key="a~b", state="SUCCEEDED", exit_code=0, completed_at=1), "runtime"
    )
    with pytest.raises(Exception):  # noqa: B017 - no PubAck comes for a refused publish
        await node.js.publish("pai.evt.job.completed", payload, headers=headers)
    await node.refused("pai.evt.job.completed")
    assert await _count(secured, EVENTS_STREAM) == before
    # What it does produce goes through.
    running = TaskRunning(
        job_key="a~b",
        attempt_id=0,
        task_role="r",
        index=0,
        node="node-0",
        host_ip="127.0.0.1",
        pid=1,
        started_at=1,
    )
    _, headers, payload = encode(running, "runtime")
    await node.js.publish("pai.evt.task.running", payload, headers=headers)
    assert await _count(secured, EVENTS_STREAM) == before + 1


async def test_a_node_agent_reads_its_own_commands_and_no_other_nodes(
    secured: Secured, streams: None, connect: Any
) -> None:
    orchestrator = await Bus.connect(secured.url("orchestrator"), "orchestrator")
    for node in NODES:
        kill = KillTask(job_key="a~b", attempt_id=0, task_role="r", index=0, node=node, reason="test")
        await orchestrator.send_command(kill, node)
    await orchestrator.close()

    node0 = await connect("runtime-node-0")
    own = bus_permissions.node_durable("node-0")
    config = ConsumerConfig(
        durable_name=own,
        name=own,
        ack_policy=AckPolicy.EXPLICIT,
        filter_subjects=["pai.cmd.runtime.node-0.>"],
    )
    await node0.js.add_consumer(COMMANDS_STREAM, config=config)
    sub = await node0.js.pull_subscribe_bind(durable=own, stream=COMMANDS_STREAM)
    [mine] = await sub.fetch(1, timeout=10)
    assert json.loads(mine.data)["node"] == "node-0"
    await mine.ack()

    other = bus_permissions.node_durable("node-1")
    # The other node's consumer, under its name:
    with pytest.raises(Exception):  # noqa: B017
        await node0.js.add_consumer(
            COMMANDS_STREAM,
            config=ConsumerConfig(
                durable_name=other, name=other, filter_subjects=["pai.cmd.runtime.node-1.>"]
            ),
        )
    await node0.refused(f"CONSUMER.CREATE.{COMMANDS_STREAM}.{other}")
    # A consumer of its own reading the other node's subject:
    with pytest.raises(Exception):  # noqa: B017
        await node0.js.add_consumer(
            COMMANDS_STREAM, config=ConsumerConfig(durable_name="spy", name="spy", filter_subject="pai.cmd.>")
        )
    await node0.refused(f"CONSUMER.CREATE.{COMMANDS_STREAM}.spy")
    # The stream's messages, one by one:
    with pytest.raises(Exception):  # noqa: B017
        await node0.js.get_msg(COMMANDS_STREAM, 1)
    await node0.refused(f"STREAM.MSG.GET.{COMMANDS_STREAM}")
    # A plain subscription on the subject:
    await node0.nc.subscribe("pai.cmd.runtime.node-1.>")
    await node0.refused("pai.cmd.runtime.node-1.>")
    # Other users' inboxes, where RPC replies such as a job's secrets travel:
    await node0.nc.subscribe("_INBOX.>")
    await node0.refused("_INBOX.>")
    # Its heartbeat only:
    await node0.nc.publish("pai.hb.node-1", b"{}")
    await node0.refused("pai.hb.node-1")


async def test_an_extension_only_reads_events_through_consumers_of_its_own(
    secured: Secured, streams: None, connect: Any
) -> None:
    producer = await Bus.connect(secured.url("runtime-node-1"), "runtime")
    running = TaskRunning(
        job_key="x~y",
        attempt_id=0,
        task_role="r",
        index=0,
        node="node-1",
        host_ip="127.0.0.1",
        pid=2,
        started_at=1,
    )
    await producer.publish_event(running)
    await producer.close()

    ext = await connect("extension")
    config = ConsumerConfig(
        durable_name="notifier",
        name="notifier",
        ack_policy=AckPolicy.EXPLICIT,
        filter_subject="pai.evt.task.>",
    )
    await ext.js.add_consumer(EVENTS_STREAM, config=config)
    sub = await ext.js.pull_subscribe_bind(durable="notifier", stream=EVENTS_STREAM)
    got = await sub.fetch(1, timeout=10)
    assert got and got[0].subject.startswith("pai.evt.task.")
    await got[0].ack()

    _, headers, payload = encode(
        JobCompleted(job_key="a~b", state="SUCCEEDED", exit_code=0, completed_at=1), "ext"
    )
    with pytest.raises(Exception):  # noqa: B017
        await ext.js.publish("pai.evt.job.completed", payload, headers=headers)
    await ext.refused("pai.evt.job.completed")
    # The platform's own consumers are not its to read from, take over or delete.
    with pytest.raises(Exception):  # noqa: B017
        await ext.js.add_consumer(
            EVENTS_STREAM,
            config=ConsumerConfig(
                durable_name="orchestrator", name="orchestrator", filter_subject="pai.evt.>"
            ),
        )
    await ext.refused(f"CONSUMER.CREATE.{EVENTS_STREAM}.orchestrator")
    with pytest.raises(Exception):  # noqa: B017
        await ext.js.delete_consumer(EVENTS_STREAM, "orchestrator")
    await ext.refused(f"CONSUMER.DELETE.{EVENTS_STREAM}.orchestrator")
    # Commands, RPCs, and the dead letters are not events.
    with pytest.raises(Exception):  # noqa: B017
        await ext.js.add_consumer(COMMANDS_STREAM, config=ConsumerConfig(durable_name="c", name="c"))
    await ext.refused(f"CONSUMER.CREATE.{COMMANDS_STREAM}")
    await ext.nc.publish("pai.rpc.jobs.submit", b"{}")
    await ext.refused("pai.rpc.jobs.submit")


async def test_a_service_publishes_only_what_it_produces_and_nobody_removes_a_stream(
    secured: Secured, streams: None, connect: Any
) -> None:
    jobs = await connect("jobs")
    _, headers, payload = encode(
        TaskRunning(
            job_key="a~b",
            attempt_id=0,
            task_role="r",
            index=0,
            node="node-0",
            host_ip="127.0.0.1",
            pid=1,
            started_at=1,
        ),
        "jobs",
    )
    with pytest.raises(Exception):  # noqa: B017
        await jobs.js.publish("pai.evt.task.running", payload, headers=headers)
    await jobs.refused("pai.evt.task.running")
    with pytest.raises(Exception):  # noqa: B017
        await jobs.js.delete_stream(EVENTS_STREAM)
    await jobs.refused(f"STREAM.DELETE.{EVENTS_STREAM}")
    operator = await connect("operator")
    with pytest.raises(Exception):  # noqa: B017
        await operator.js.purge_stream(EVENTS_STREAM)
    await operator.refused(f"STREAM.PURGE.{EVENTS_STREAM}")
    assert await _count(secured, EVENTS_STREAM) > 0


async def test_without_credentials_nobody_gets_in(secured: Secured) -> None:
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(secured.server.url, allow_reconnect=False, max_reconnect_attempts=0)
    with pytest.raises(Exception, match="Authorization Violation"):
        await nats.connect(
            bus_permissions.url_for(secured.server.url, "jobs", "wrong-password"), allow_reconnect=False
        )


def test_every_platform_user_and_node_has_a_configuration_nats_accepts(tmp_path: Path) -> None:
    users = bus_permissions.embedded_users(["a.b.c", "node-9"])
    assert {"runtime-a~b~c", "runtime-node-9", "operator", "extension", "jobs", "gateway"} <= set(users)
    server = start_nats(tmp_path, authorization=bus_permissions.nats_config(users))
    server.stop()
