"""Slow clients (slow-loris) cannot hold the gateway's connections: deadlines on a request's head and body.

Uvicorn closes an idle keep-alive connection after ``timeout_keep_alive``, but sets no deadline on a
request that is still arriving: a client that opens connections and sends its headers a byte at a time
keeps each one open for as long as it likes, until the gateway runs out of file descriptors. This
protocol gives the head of every request ``header_timeout_s`` from its first byte (or from the connection's
opening) and closes the connection when it is late; ``read_body`` gives the body ``body_timeout_s`` and
answers 408. ``limit_concurrency`` (uvicorn's own) answers 503 past a number of connections.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

log = logging.getLogger(__name__)


class HeadDeadlineProtocol(H11Protocol):
    """Uvicorn's HTTP/1.1 protocol plus a deadline on the arrival of each request's head."""

    header_timeout_s: float = 10.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()  # a connection that never sends a byte is as slow as one that sends one a minute

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            # The head of a request is (still) arriving: it gets one deadline, not one per byte.
            if self._head_timer is None:
                self._arm()
        else:
            self._disarm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def on_response_complete(self) -> None:
        # Between requests uvicorn's keep-alive timeout applies; the next head arms its own deadline.
        self._disarm()
        super().on_response_complete()

    def _arm(self) -> None:
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _too_slow(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            log.info(
                "closed a connection whose request head did not arrive in time",
                extra={
                    "client": f"{self.client[0]}:{self.client[1]}" if self.client else "",
                    "timeout_s": self.header_timeout_s,
                },
            )
            self.transport.close()


def protocol_with(header_timeout_s: float) -> type[HeadDeadlineProtocol]:
    """The protocol class uvicorn instantiates per connection, with this gateway's deadline."""
    return type("GatewayHttpProtocol", (HeadDeadlineProtocol,), {"header_timeout_s": header_timeout_s})
