"""Whether a bus connection is up, and a way for requests in flight to learn at once that it went down.

nats-py keeps publishing while it reconnects: what is published goes to a buffer that is sent once the
connection is back, and a request then waits for its whole timeout. For RPC that is two wrong answers: an
asker kept waiting for nothing while the bus is down, and a request told "failed" that is still sent (and
acted on) later. So a request is not sent while the link is down (``BusUnavailableError``: nothing done),
and one in flight when the link drops stops waiting (``RpcInterruptedError``: the outcome is unknown).
"""

from __future__ import annotations

import asyncio

from nats.aio.client import Client as NatsClient

from pai_common.errors import BusUnavailableError


class BusLink:
    """Fed by the connection's disconnected callback; read by the requests of the same connection."""

    def __init__(self) -> None:
        # Completed when the connection drops; requests sent while it was up wait on it beside their
        # answer. A request sent after the connection came back gets a fresh one.
        self._lost: asyncio.Future[None] | None = None

    async def on_disconnected(self) -> None:
        if self._lost is not None and not self._lost.done():
            self._lost.set_result(None)

    def check(self, nc: NatsClient) -> None:
        """Raise BusUnavailableError unless the connection is up (then a request may be sent)."""
        if not nc.is_connected:
            state = "closed" if nc.is_closed else "reconnecting"
            raise BusUnavailableError(f"the bus is unavailable ({state}); the request was not sent")

    def lost(self) -> asyncio.Future[None]:
        """Completes when the connection, up now, drops (call it just before sending)."""
        loop = asyncio.get_running_loop()
        if self._lost is None or self._lost.done() or self._lost.get_loop() is not loop:
            self._lost = loop.create_future()
        return self._lost
