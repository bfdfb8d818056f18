"""Test support shared by every package's tests: reading back what services publish on the real bus.

Tests run against a real NATS server; this records the events a service published (decoded, with their
raw payloads for checks that no secret leaked) and waits for the ones a test expects.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nats.js.client import JetStreamContext

from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.events import JobAttemptCompleted
from pai_common.contract.rpc import ResolveStoragesReply, ResolveStoragesRequest
from pai_common.envelope import decode
from pai_common.errors import NoStorageError


async def publish_attempt_completed(url: str, msg_id: str) -> None:
    """One event for a test's consumer, from a connection of its own: a ``job.attempt.completed`` of the job
    ``t~<msg_id>``, with ``msg_id`` as its id."""
    bus = await Bus.connect(url, "test")
    try:
        await bus.publish_event(
            JobAttemptCompleted(job_key=f"t~{msg_id}", attempt_id=0, exit_code=0), msg_id=msg_id
        )
    finally:
        await bus.close()


def job_key_of(event: Any) -> str | None:
    """The job an event is about, whether it carries ``job_key`` or a framework ``snapshot``."""
    key = getattr(event, "job_key", None)
    if key is None and hasattr(event, "snapshot"):
        key = event.snapshot.job_key
    return key if isinstance(key, str) else None


def field_of(event: Any, name: str) -> Any:
    """A field of the event, or of its framework ``snapshot`` when the event itself has none."""
    if hasattr(event, name):
        return getattr(event, name)
    snapshot = getattr(event, "snapshot", None)
    return getattr(snapshot, name, None)


class EventRecorder:
    """Every event on ``subject`` from the moment ``start`` is called, in order."""

    def __init__(self, bus: Bus, subject: str = "pai.evt.>") -> None:
        self.bus = bus
        self.subject = subject
        self.seen: list[Any] = []
        self.raw: list[bytes] = []
        self._sub: JetStreamContext.PushSubscription | None = None

    async def start(self) -> EventRecorder:
        self._sub = await self.bus.js.subscribe(self.subject, stream=EVENTS_STREAM, ordered_consumer=True)
        return self

    async def _next(self, timeout: float) -> bool:
        assert self._sub is not None, "call start() first"
        try:
            msg = await self._sub.next_msg(timeout=timeout)
        except Exception:  # nats raises its own TimeoutError when nothing came
            return False
        self.seen.append(decode(msg.headers, msg.data).body)
        self.raw.append(msg.data)
        return True

    async def drain(self, quiet_s: float = 0.3) -> None:
        """Read until nothing new arrived for ``quiet_s``."""
        while await self._next(quiet_s):
            pass

    def of(self, kind: type, job_key: str | None = None) -> list[Any]:
        return [e for e in self.seen if isinstance(e, kind) and (job_key is None or job_key_of(e) == job_key)]

    async def wait_until(self, check: Callable[[Any], bool], timeout: float = 15, what: str = "") -> Any:
        """The first event (already seen or still to come) for which ``check`` is true."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        checked = 0
        while True:
            for event in self.seen[checked:]:
                if check(event):
                    return event
            checked = len(self.seen)
            remaining = deadline - loop.time()
            seen = [type(e).__name__ for e in self.seen]
            assert remaining > 0, f"no {what or 'matching event'} within {timeout:g}s; saw {seen}"
            await self._next(min(remaining, 0.5))

    async def wait_for(
        self, kind: type, job_key: str | None = None, timeout: float = 15, **fields: Any
    ) -> Any:
        """The first ``kind`` event about ``job_key`` whose ``fields`` have the given values."""

        def check(event: Any) -> bool:
            return (
                isinstance(event, kind)
                and (job_key is None or job_key_of(event) == job_key)
                and all(field_of(event, name) == value for name, value in fields.items())
            )

        return await self.wait_until(check, timeout, f"{kind.__name__} {fields or ''} for {job_key}")


async def no_storages(req: ResolveStoragesRequest) -> ResolveStoragesReply:
    """The storage service's answer where no storage is defined, for a service tested without it (register
    with ``app.rpc({ResolveStoragesRequest: no_storages})``): no default storage to mount, and a job naming
    one is refused as the storage service would refuse it."""
    for name in [str(r.get("name")) for r in req.requests or []] + list(req.referenced):
        raise NoStorageError(f"Storage {name} is not found.")
    return ResolveStoragesReply(mounts=[])
