"""A short ack_wait, kept from redelivering a batch still in hand (held_messages.py), against real NATS
(JetStream) and MongoDB-wire servers."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from prometheus_client import REGISTRY

from pai_common import consumer as consumer_module
from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.consumer import HandlerContext
from pai_common.contract.events import JobAttemptCompleted
from pai_common.embedded import ServerProcess
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_common.testing import publish_attempt_completed

# Short, yet with room for a busy machine: the in-progress acks go every 2/3 s, 4/3 s before it runs out.
SHORT_ACK_WAIT_S = 2.0
# Several ack_waits: a batch in hand this long would be handed out again, untold.
SLOW_HANDLING_S = 5.0


def slow_app(name: str, nats: ServerProcess, mongo: ServerProcess, handled: list[str]) -> ServiceApp:
    app = ServiceApp(name, Settings(nats_url=nats.url, mongo_url=mongo.url))

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        handled.append(env.id)
        await asyncio.sleep(SLOW_HANDLING_S)

    return app


def redeliveries(durable: str) -> float:
    return REGISTRY.get_sample_value("pai_bus_redeliveries_total", {"consumer": durable}) or 0.0


async def settled(bus: Bus, durable: str) -> None:
    """Until the consumer has nothing pending or unacknowledged."""
    while True:
        info = await bus.js.consumer_info(EVENTS_STREAM, durable)
        if not info.num_pending and not info.num_ack_pending:
            return
        await asyncio.sleep(0.1)


async def test_a_batch_in_hand_longer_than_ack_wait_is_not_handed_out_to_another_replica(
    fresh_nats: ServerProcess, fresh_bus: Bus, mongo_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two replicas on one durable consumer (as on Kubernetes): while one works on a message for several
    ack_waits, the other, waiting with a pull request of its own, is never handed it."""
    monkeypatch.setattr(consumer_module, "ACK_WAIT_S", SHORT_ACK_WAIT_S)
    name = f"h{uuid.uuid4().hex[:10]}"
    handled: list[str] = []
    replicas = [slow_app(name, fresh_nats, mongo_server, handled) for _ in range(2)]
    for replica in replicas:
        await replica.start()
    try:
        await publish_attempt_completed(fresh_nats.url, "m1")
        await asyncio.wait_for(settled(fresh_bus, name), 30)
        # A redelivery would come one ack_wait after the last word; give it two.
        await asyncio.sleep(2 * SHORT_ACK_WAIT_S)
        info = await fresh_bus.js.consumer_info(EVENTS_STREAM, name)
        assert info.config.ack_wait == SHORT_ACK_WAIT_S
        assert (info.num_pending, info.num_ack_pending, info.num_redelivered) == (0, 0, 0)
        assert redeliveries(name) == 0
        assert handled == ["m1"]
    finally:
        for replica in replicas:
            await replica.stop()


async def test_a_consumer_made_with_another_ack_wait_takes_this_one(
    fresh_nats: ServerProcess, fresh_bus: Bus, mongo_server: ServerProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A data dir of an earlier version has its consumers with ack_wait 60 s: a start sets the current one."""
    name = f"h{uuid.uuid4().hex[:10]}"
    handled: list[str] = []
    monkeypatch.setattr(consumer_module, "ACK_WAIT_S", 60.0)
    earlier = slow_app(name, fresh_nats, mongo_server, handled)
    await earlier.start()
    await earlier.stop()
    assert (await fresh_bus.js.consumer_info(EVENTS_STREAM, name)).config.ack_wait == 60.0
    monkeypatch.undo()
    current = slow_app(name, fresh_nats, mongo_server, handled)
    await current.start()
    try:
        info = await fresh_bus.js.consumer_info(EVENTS_STREAM, name)
        assert info.config.ack_wait == consumer_module.ACK_WAIT_S < 60.0
    finally:
        await current.stop()
