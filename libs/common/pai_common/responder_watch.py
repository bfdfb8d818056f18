"""Whether the service that took an RPC request is still there to answer it.

A request waits for its answer up to its timeout (a submission: a minute). When the process that took it
dies (SIGKILL, a crash), no answer will come, and NATS does not tell the asker. The NATS micro discovery
API does: every running instance of a service answers ``$SRV.PING.pai-<service>`` (and
``$SRV.PING.pai-<service>.<id>`` for one instance), and when none runs the server answers "no responders"
at once. So a request still unanswered after ``WATCH_AFTER_S`` notes the instances running then, and is
given up (``RpcInterruptedError``: whether the service acted is not known, as after a timeout) once every
one of them has gone. A stopped or busy instance still holds its subscriptions: it is not gone, and the
request waits for it as before.

An instance that died and was replaced before the watch began (a restart within ``WATCH_AFTER_S``): each
instance says when it started (``STARTED_MS``, in its discovery metadata), and one that started after the
request was sent (by more than ``STARTED_MARGIN_MS``, for the publish's way to the server and the hosts'
clocks) subscribed too late to have taken it, so it is not waited for. An instance that does not say when
it started is waited for, as any that could have the request.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from nats.aio.client import Client as NatsClient
from nats.errors import NoRespondersError
from nats.errors import TimeoutError as NatsTimeoutError

# Most RPCs are answered sooner; only slower ones are watched (the watch itself costs a few requests).
WATCH_AFTER_S = 2.0
WATCH_EVERY_S = 1.0
# How long the answers of a service's instances to one PING are gathered.
GATHER_S = 0.25
PING_TIMEOUT_S = 1.0
ASK_EVERY_S = 5.0
_NO_RESPONDERS_HEADER = "Status"
_NO_RESPONDERS = "503"
# The discovery metadata key under which an instance gives its start (wall clock, epoch ms).
STARTED_MS = "started_ms"
STARTED_MARGIN_MS = 500

log = logging.getLogger(__name__)


def micro_name(service: str) -> str:
    """The name under which a service's bus registers its endpoints (Bus.serve_rpc)."""
    return f"pai-{service}"


class ResponderWatch:
    """One per bus connection."""

    def __init__(self, nc: NatsClient) -> None:
        self.nc = nc
        # Services seen running under their own name. Only for those does "no instance runs" mean that
        # the request's taker is gone: a service registered under another name (tests give theirs names
        # of their own) is never seen here, and its requests wait for their timeout.
        self._seen: set[str] = set()
        # When each service not seen yet was last asked (it may not have been started then).
        self._asked: dict[str, float] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def seen(self, service: str) -> bool:
        """Whether ``service`` was seen running under its own name (then its requests are watched)."""
        return service in self._seen

    def note(self, service: str) -> None:
        """Called for each request: until ``service`` is seen running under its own name, learn it in
        the background (one PING per service every ASK_EVERY_S at most)."""
        if service in self._seen:
            return
        loop = asyncio.get_running_loop()
        asked = self._asked.get(service)
        if asked is not None and loop.time() - asked < ASK_EVERY_S:
            return
        self._asked[service] = loop.time()
        task = loop.create_task(self._learn(service))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def close(self) -> None:
        """Stop what is still learning (the connection is closing)."""
        for task in self._tasks:
            task.cancel()

    async def _learn(self, service: str) -> None:
        with contextlib.suppress(Exception):  # a failed PING only leaves the service unwatched
            if await self.instances(service):
                self._seen.add(service)

    async def instances(self, service: str) -> dict[str, int | None] | None:
        """The instances running now, each with when it started (None: not said); empty: none runs;
        None: no answer in time (busy, or stopped), which says nothing."""
        inbox = self.nc.new_inbox()
        sub = await self.nc.subscribe(inbox)
        try:
            await self.nc.publish(f"$SRV.PING.{micro_name(service)}", b"", reply=inbox)
            found: dict[str, int | None] = {}
            loop = asyncio.get_running_loop()
            deadline = loop.time() + GATHER_S
            while (left := deadline - loop.time()) > 0:
                try:
                    msg = await sub.next_msg(timeout=left)
                except NatsTimeoutError:
                    break
                if msg.headers and msg.headers.get(_NO_RESPONDERS_HEADER) == _NO_RESPONDERS:
                    return {}
                with contextlib.suppress(ValueError, KeyError, TypeError, AttributeError):
                    ping = json.loads(msg.data)
                    found[str(ping["id"])] = _started(ping)
            return found or None
        finally:
            with contextlib.suppress(Exception):
                await sub.unsubscribe()

    async def _running(self, service: str, instance: str) -> bool:
        try:
            await self.nc.request(f"$SRV.PING.{micro_name(service)}.{instance}", b"", timeout=PING_TIMEOUT_S)
        except NoRespondersError:
            return False
        except NatsTimeoutError:
            return True  # stopped or busy: still holds the request
        return True

    async def until_gone(self, service: str, sent_ms: int | None = None) -> None:
        """Return once every instance of ``service`` that could have taken a request sent at ``sent_ms``
        (wall clock; None: any running when the watch began) has gone (then nobody has the request any
        more); otherwise wait until cancelled."""
        watched: set[str] | None = None
        while True:
            try:
                if watched is None:
                    found = await self.instances(service)
                    if found == {} and service in self._seen:
                        return
                    if found:
                        self._seen.add(service)
                        watched = {i for i, started in found.items() if could_have_taken(started, sent_ms)}
                        if not watched:
                            return  # every instance running started after the request: its taker is gone
                else:
                    watched = {i for i in watched if await self._running(service, i)}
                    if not watched:
                        return
            except Exception as exc:  # the bus going down is the link's to report; this one knows nothing
                log.debug("responder watch failed", extra={"service": service, "error": repr(exc)})
            await asyncio.sleep(WATCH_EVERY_S)


def could_have_taken(started_ms: int | None, sent_ms: int | None) -> bool:
    """Whether an instance that started at ``started_ms`` may hold a request sent at ``sent_ms``."""
    return started_ms is None or sent_ms is None or started_ms <= sent_ms + STARTED_MARGIN_MS


def _started(ping: dict[str, object]) -> int | None:
    metadata = ping.get("metadata")
    raw = metadata.get(STARTED_MS) if isinstance(metadata, dict) else None
    try:
        return int(raw) if isinstance(raw, str) else None
    except ValueError:
        return None
