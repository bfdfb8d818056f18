"""One scheduler at a time: a lease in a NATS key-value bucket, with hot standbys waiting for it.

Allocation is single-writer (see shell.py), so of several scheduler processes only the lease holder runs
the service; the others stay connected, answer their health probes and try for the lease every second.
The lease is one key in a bucket whose entries expire ``ttl_s`` after their last write: the holder
rewrites it every ``renew_s`` with a compare-and-set on the revision it wrote last. A holder that dies
stops rewriting, the entry expires and a standby creates it anew (at most ``ttl_s`` plus one poll after
the death); a holder that stops cleanly deletes it, and a standby takes over within one poll. NATS KV
works wherever the platform runs (``pai up``, Compose, Kubernetes), so no mode needs the Kubernetes API.

A holder that cannot renew for ``ttl_s`` (its NATS server gone, a long pause) may already have been
replaced, so it stops at once and exits non-zero; its supervisor (Kubernetes, ``pai up``) starts it again
as a standby. A holder restarting under the same identity (the same pod, the same ``pai up`` data
directory) takes its own lease back without waiting for it to expire.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket

from nats.errors import Error as NatsError
from nats.js.api import KeyValueConfig, StorageType
from nats.js.errors import BadRequestError, BucketNotFoundError, KeyNotFoundError, KeyWrongLastSequenceError
from nats.js.kv import KeyValue
from pydantic import Field, model_validator

from pai_common import event_loop
from pai_common.bus import Bus
from pai_common.health import HealthServer
from pai_common.logs import setup_logging
from pai_common.service import ServiceApp
from pai_common.settings import Settings

log = logging.getLogger(__name__)

BUCKET = "pai_leases"
KEY = "scheduler"
# The standby's longest wait after a holder dies is ttl_s + poll_s; the issue asks for 15 s at most.
TAKEOVER_BOUND_S = 15.0


class LeaseSettings(Settings):
    # Who this process is: unique among the schedulers (Kubernetes: the pod name, which is the hostname).
    scheduler_lease_holder: str = Field(default_factory=socket.gethostname, min_length=1, max_length=200)
    scheduler_lease_ttl_s: float = Field(default=10.0, gt=0)
    scheduler_lease_renew_s: float = Field(default=3.0, gt=0)
    scheduler_lease_poll_s: float = Field(default=1.0, gt=0)

    @model_validator(mode="after")
    def _renewal_fits_in_the_ttl(self) -> LeaseSettings:
        if self.scheduler_lease_renew_s * 2 > self.scheduler_lease_ttl_s:
            raise ValueError("PAI_SCHEDULER_LEASE_RENEW_S must be at most half of PAI_SCHEDULER_LEASE_TTL_S")
        if self.scheduler_lease_ttl_s + self.scheduler_lease_poll_s > TAKEOVER_BOUND_S:
            bound = f"{TAKEOVER_BOUND_S:g}s"
            raise ValueError(f"PAI_SCHEDULER_LEASE_TTL_S + _POLL_S must stay within {bound}")
        return self


class LeaseLost(RuntimeError):
    """Another process holds the lease now: this one must stop acting as the scheduler."""


class Lease:
    """The lease key: create it to take the lease, compare-and-set it to keep it, delete it to let go."""

    def __init__(self, kv: KeyValue, holder: str) -> None:
        self.kv = kv
        self.holder = holder
        self.revision: int | None = None

    @classmethod
    async def open(cls, bus: Bus, holder: str, ttl_s: float, replicas: int) -> Lease:
        config = KeyValueConfig(
            bucket=BUCKET, history=1, ttl=ttl_s, replicas=replicas, storage=StorageType.FILE
        )
        try:
            kv = await bus.js.create_key_value(config=config)
        except BadRequestError:
            kv = await bus.js.key_value(BUCKET)  # made by another scheduler, or with another replica count
        return cls(kv, holder)

    async def holder_now(self) -> str | None:
        try:
            entry = await self.kv.get(KEY)
        except KeyNotFoundError:
            return None
        return entry.value.decode() if entry.value else None

    async def try_acquire(self) -> bool:
        try:
            self.revision = await self.kv.create(KEY, self.holder.encode())
            return True
        except KeyWrongLastSequenceError:
            pass
        except KeyNotFoundError:
            # nats-py's create, refused because the key exists, reads it back to see whether it is only a
            # delete marker; an entry that expires between those two steps surfaces as KeyNotFoundError.
            # Nobody holds the lease then: the next poll creates it.
            return False
        try:
            entry = await self.kv.get(KEY)
        except KeyNotFoundError:
            return False  # expired between the two calls: the next poll creates it
        if entry.value and entry.value.decode() == self.holder:
            # This holder's own lease from before a restart: take it back at once.
            try:
                self.revision = await self.kv.update(KEY, self.holder.encode(), last=entry.revision)
                return True
            except KeyWrongLastSequenceError:
                return False
        return False

    async def renew(self) -> None:
        if self.revision is None:
            raise LeaseLost("the lease is not held")
        try:
            self.revision = await self.kv.update(KEY, self.holder.encode(), last=self.revision)
        except KeyWrongLastSequenceError as exc:
            self.revision = None
            raise LeaseLost(f"the lease was taken over (now held by {await self.holder_now()!r})") from exc

    async def release(self) -> None:
        if self.revision is not None:
            with contextlib.suppress(NatsError, KeyWrongLastSequenceError, BucketNotFoundError):
                await self.kv.delete(KEY, last=self.revision)
            self.revision = None


async def serve_with_lease(app: ServiceApp, lease_settings: LeaseSettings | None = None) -> None:
    """Wait for the lease, run ``app`` while holding it, stop it when the lease is lost or on a signal."""
    ls = lease_settings or LeaseSettings()
    s = app.settings
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    lost: str | None = None
    bus = await Bus.connect(s.nats_url, f"{app.name}-lease", s.nats_ca_file)
    # A standby is healthy and ready (to take over): a drain may move it, and probes must not restart it.
    standby_health = HealthServer(s.http_host, s.http_port, lambda: bus.nc.is_connected)
    await standby_health.start()
    try:
        lease = await Lease.open(bus, ls.scheduler_lease_holder, ls.scheduler_lease_ttl_s, s.stream_replicas)
        log.info("waiting for the scheduler lease", extra={"holder": ls.scheduler_lease_holder})
        while not stop.is_set():
            try:
                if await lease.try_acquire():
                    break
            except NatsError as exc:
                log.warning("lease poll failed", extra={"error": repr(exc)})
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ls.scheduler_lease_poll_s)
        if stop.is_set():
            return
        log.info("scheduler lease acquired", extra={"holder": ls.scheduler_lease_holder})
        await standby_health.stop()  # the service's own health server takes the port
        lost = await _lead(app, lease, ls, stop)
    finally:
        await standby_health.stop()
        await bus.close()
    if lost is not None:
        raise SystemExit(f"scheduler lease lost: {lost}")


async def _lead(app: ServiceApp, lease: Lease, ls: LeaseSettings, stop: asyncio.Event) -> str | None:
    """Run the service while renewing; the reason the lease was lost, or None after a clean stop."""
    await app.start()
    loop = asyncio.get_running_loop()
    renewed_at = loop.time()
    lost: str | None = None
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), ls.scheduler_lease_renew_s)
        if stop.is_set():
            break
        try:
            await lease.renew()
            renewed_at = loop.time()
        except LeaseLost as exc:
            lost = str(exc)
        except NatsError as exc:
            log.warning("lease renewal failed", extra={"error": repr(exc)})
            if loop.time() - renewed_at >= ls.scheduler_lease_ttl_s:
                lost = f"not renewed for {ls.scheduler_lease_ttl_s:g}s"
        if lost is not None:
            log.error("scheduler lease lost; stopping", extra={"reason": lost})
            break
    try:
        await asyncio.wait_for(app.stop(), timeout=app.settings.stop_timeout_s)
    except TimeoutError:
        log.warning("drain did not finish in time; exiting anyway")
    if lost is None:
        await lease.release()  # a standby takes over within one poll instead of one TTL
    return lost


def run(app: ServiceApp) -> None:
    """The scheduler's entry point: ``ServiceApp.run`` behind the lease."""
    setup_logging(app.name, app.settings.log_level)
    event_loop.run(serve_with_lease(app))
