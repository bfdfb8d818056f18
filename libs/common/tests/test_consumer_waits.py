"""An idle consumer waits long for its next message (few rounds, little CPU), yet a stop or a dropped
connection ends that wait at once, and what is published next reaches a consumer at once, against real
NATS (JetStream) and MongoDB-wire servers."""

from __future__ import annotations

import asyncio
import uuid

import pytest

from pai_common import consumer as consumer_module
from pai_common.bus import Bus
from pai_common.consumer import HandlerContext
from pai_common.contract.events import JobAttemptCompleted
from pai_common.embedded import ServerProcess, wait_for_port
from pai_common.envelope import Envelope
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_common.testing import publish_attempt_completed

# Far longer than any guard below: a wait that is not ended early fails the test.
NEVER_S = 600.0


@pytest.fixture(autouse=True)
def waits_that_never_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(consumer_module, "FETCH_WAIT_S", NEVER_S)
    # A message handed to a consumer that is gone comes back only after this: never, within the guards.
    monkeypatch.setattr(consumer_module, "ACK_WAIT_S", NEVER_S)


def recording_app(name: str, nats: ServerProcess, mongo: ServerProcess, handled: list[str]) -> ServiceApp:
    app = ServiceApp(name, Settings(nats_url=nats.url, mongo_url=mongo.url))

    @app.on_event(JobAttemptCompleted)
    async def handle(ctx: HandlerContext, env: Envelope) -> None:
        handled.append(env.id)

    return app


async def waiting(app: ServiceApp) -> None:
    """Until the app's consumer is waiting for a first message."""
    while not all(c._waiting is not None for c in app._consumers):
        await asyncio.sleep(0.02)


async def handled_soon(handled: list[str], msg_id: str) -> None:
    while msg_id not in handled:
        await asyncio.sleep(0.05)


async def test_a_stop_ends_the_wait_and_the_next_consumer_gets_what_follows_at_once(
    fresh_nats: ServerProcess, fresh_bus: Bus, mongo_server: ServerProcess
) -> None:
    name = f"w{uuid.uuid4().hex[:10]}"
    handled: list[str] = []
    first = recording_app(name, fresh_nats, mongo_server, handled)
    await first.start()
    await asyncio.wait_for(publish_attempt_completed(fresh_nats.url, "m1"), 10)
    await asyncio.wait_for(handled_soon(handled, "m1"), 15)
    await asyncio.wait_for(waiting(first), 15)
    # Without ending the wait, the stop would last until the pull request expired.
    await asyncio.wait_for(first.stop(), 20)
    # The stopped consumer's pull request is still pending on the server until it expires; a message sent
    # to it would come back only after ack_wait (NEVER_S here).
    await publish_attempt_completed(fresh_nats.url, "m2")
    second = recording_app(name, fresh_nats, mongo_server, handled)
    await second.start()
    try:
        await asyncio.wait_for(handled_soon(handled, "m2"), 15)
        assert handled == ["m1", "m2"]
    finally:
        await second.stop()


async def test_a_dropped_connection_ends_the_wait_and_a_new_request_goes_on_the_new_one(
    fresh_nats: ServerProcess, fresh_bus: Bus, mongo_server: ServerProcess
) -> None:
    handled: list[str] = []
    app = recording_app(f"w{uuid.uuid4().hex[:10]}", fresh_nats, mongo_server, handled)
    await app.start()
    try:
        await asyncio.wait_for(waiting(app), 15)
        # The pull request dies with the server: without the drop ending the wait, nothing would answer it.
        fresh_nats.proc.kill()
        fresh_nats.proc.wait()
        fresh_nats.respawn()
        wait_for_port(fresh_nats.port, 20, fresh_nats.proc)
        # The stream survives the restart; the consumer's client reconnects by itself.
        await asyncio.wait_for(publish_when_up(fresh_nats.url, "after"), 30)
        await asyncio.wait_for(handled_soon(handled, "after"), 20)
        assert handled == ["after"]
    finally:
        await app.stop()


async def publish_when_up(url: str, msg_id: str) -> None:
    """Published once JetStream has recovered its streams after the restart."""
    while True:
        try:
            await publish_attempt_completed(url, msg_id)
            return
        except Exception:
            await asyncio.sleep(0.2)
