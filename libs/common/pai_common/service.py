"""The service runner: connects, starts consumers and RPC endpoints, drains and stops on SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.database import AsyncDatabase

from pai_common import event_loop
from pai_common.bookkeeping import supports_one_request
from pai_common.bus import COMMANDS_STREAM, EVENTS_STREAM, Bus, RpcHandler
from pai_common.consumer import (
    ConsumerSpec,
    DurableConsumer,
    Handler,
    HandlerContext,
    WriteGuard,
    end_transaction,
)
from pai_common.contract.base import Event, RpcRequest, event_subject
from pai_common.contract.rpc import ReplayDeadLetterRequest
from pai_common.database import connect_mongo, retry_transient, service_database
from pai_common.envelope import Envelope
from pai_common.health import HealthServer, announce
from pai_common.logs import setup_logging
from pai_common.metrics import set_build_info
from pai_common.outbox import DEAD_LETTER_DURABLE, Outbox, PendingMessages
from pai_common.service_metrics import sample_forever
from pai_common.settings import Settings
from pai_common.telemetry import setup_tracing, shutdown_tracing

log = logging.getLogger(__name__)
# How long a stop lets cancelled background tasks finish before cancelling those still running again.
CANCEL_AGAIN_S = 2.0

Hook = Callable[["ServiceApp"], Awaitable[None]]


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]]) -> None:
    """Cancel the tasks and wait until each has ended, cancelling again those still running: a cancellation
    that lands inside a library call can be swallowed (pymongo's async network layer did, and a stop then
    waited forever on a sampler that went on sleeping and sampling)."""
    pending = set(tasks)
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=CANCEL_AGAIN_S)


class ServiceApp:
    """One service process. Register handlers before ``run``; the runner does the I/O plumbing."""

    def __init__(self, name: str, settings: Settings | None = None) -> None:
        self.name = name
        self.settings = settings or Settings()
        self._event_handlers: dict[str, Handler] = {}
        self._event_filters: dict[str, Callable[[Any], bool]] = {}
        self._command_consumers: list[tuple[str, str, Handler]] = []
        self._rpc: list[
            tuple[dict[type[RpcRequest], RpcHandler], str | None, frozenset[type[RpcRequest]]]
        ] = []
        self._startup: list[Hook] = []
        self._shutdown: list[Hook] = []
        self._background: list[Callable[[], Coroutine[Any, Any, None]]] = []
        self._consumers: list[DurableConsumer] = []
        self._write_guard: WriteGuard | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._ready = False
        self.bus: Bus
        self.mongo: AsyncMongoClient[dict[str, Any]]
        self.db: AsyncDatabase[dict[str, Any]]
        self.outbox: Outbox
        self.health_port = 0
        # Whether the database server takes a transaction's final writes and outbox in one request
        # (pai_common.bookkeeping); asked at the first transaction.
        self._one_request: bool | None = None

    # ---- registration --------------------------------------------------------------------------------

    def on_event(
        self, *types: type[Event], acts_on: Callable[[Any], bool] | None = None
    ) -> Callable[[Handler], Handler]:
        """Handle events of ``types``; with ``acts_on``, only those whose body it accepts: the handler does
        nothing for the others, which are acked without a transaction (``ConsumerSpec.acts_on``)."""

        def register(handler: Handler) -> Handler:
            for t in types:
                self._event_handlers[t.TYPE] = handler
                if acts_on is not None:
                    self._event_filters[t.TYPE] = acts_on
                else:  # a handler registered again for the type acts on all of them again
                    self._event_filters.pop(t.TYPE, None)
            return handler

        return register

    def on_commands(self, durable: str, filter_subject: str, handler: Handler) -> None:
        self._command_consumers.append((durable, filter_subject, handler))

    def rpc(
        self,
        handlers: dict[type[RpcRequest], RpcHandler],
        target: str | None = None,
        concurrent: frozenset[type[RpcRequest]] = frozenset(),
    ) -> None:
        """Serve RPC endpoints. Each endpoint handles one request at a time, in arrival order, unless it is
        in `concurrent`: then every request gets its own task at once (the handler bounds the work)."""
        self._rpc.append((handlers, target, concurrent))

    def serialize_writes(self, guard: WriteGuard) -> None:
        """Hold ``guard()`` around every consumer transaction of this process.

        For a service whose RPC writes and event handlers update the same documents (counters): held
        around those RPC writes too, it makes them take turns instead of conflicting and backing off.
        """
        self._write_guard = guard

    def on_startup(self, hook: Hook) -> None:
        self._startup.append(hook)

    def on_shutdown(self, hook: Hook) -> None:
        self._shutdown.append(hook)

    def background(self, fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._background.append(fn)

    # ---- lifecycle -----------------------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[HandlerContext]:
        """State changes and the messages they cause, committed together, then published.

        For work that does not start from a message (a process exited, a timer fired).
        """
        out = PendingMessages(self.name)
        if self._one_request is None:
            self._one_request = await supports_one_request(self.mongo)
        taken: list[str] = []
        try:
            async with self.mongo.start_session() as session:
                async with await session.start_transaction():
                    ctx = HandlerContext(self.db, session, out)
                    yield ctx
                    await end_transaction(ctx, self.mongo, self.outbox, (), self._one_request, taken)
        except BaseException:
            self.outbox.restore_sent(taken)
            raise
        ctx.committed()
        await self.outbox.publish_after_commit(out.docs)

    async def transact(self, work: Callable[[HandlerContext], Awaitable[None]]) -> None:
        """``transaction`` with retries when another process's write conflicted with this one."""

        async def once() -> None:
            async with self.transaction() as tx:
                await work(tx)

        await retry_transient(once)

    def is_ready(self) -> bool:
        return self._ready and self.bus.nc.is_connected

    async def start(self) -> None:
        s = self.settings
        setup_tracing(self.name, s.otel_exporter)
        set_build_info()
        self.bus = await Bus.connect(
            s.nats_url,
            self.name,
            s.nats_ca_file,
            token_file=s.nats_token_file,
            inbox_user=s.bus_user(self.name),
        )
        await self.bus.ensure_streams(s.stream_replicas, create=s.create_streams)
        self.mongo = connect_mongo(s.mongo_url)
        self.db = service_database(self.mongo, self.name)
        # A node agent may file dead letters only under its own consumer's name.
        node_agent = getattr(s, "node_name", None) is not None and self._command_consumers
        self.outbox = Outbox(
            self.db, self.bus, self._command_consumers[0][0] if node_agent else DEAD_LETTER_DURABLE
        )
        health = HealthServer(s.http_host, s.http_port, self.is_ready)
        self.health_port = await health.start()
        self._health = health
        self._write_port_file()
        for hook in self._startup:
            await hook(self)
        # Whatever a previous run committed but did not publish goes out first.
        await self.outbox.flush()
        self._tasks.append(asyncio.create_task(self.outbox.relay_forever(), name="outbox-relay"))
        specs = []
        if self._event_handlers:
            specs.append(
                ConsumerSpec(
                    durable=self.name,
                    stream=EVENTS_STREAM,
                    filter_subjects=sorted(event_subject(t) for t in self._event_handlers),
                    handler=self._dispatch_event,
                    max_deliver=s.max_deliver,
                    nak_base_delay_s=s.nak_base_delay_s,
                    batch=s.fetch_batch,
                    acts_on=self._acts_on if self._event_filters else None,
                )
            )
        for durable, subject, handler in self._command_consumers:
            specs.append(
                ConsumerSpec(
                    durable=durable,
                    stream=COMMANDS_STREAM,
                    filter_subjects=[subject],
                    handler=handler,
                    max_deliver=s.max_deliver,
                    nak_base_delay_s=s.nak_base_delay_s,
                    batch=s.fetch_batch,
                )
            )
        for spec in specs:
            consumer = DurableConsumer(spec, self.bus, self.mongo, self.db, self.outbox, self._write_guard)
            await consumer.start()
            self._consumers.append(consumer)
            # An admin's replay of this consumer's dead letters reaches whichever replica runs it.
            await self.bus.serve_rpc({ReplayDeadLetterRequest: consumer.replay}, target=spec.durable)
        for handlers, target, concurrent in self._rpc:
            await self.bus.serve_rpc(handlers, target, concurrent)
        for fn in self._background:
            self._tasks.append(asyncio.create_task(fn(), name=fn.__name__))
        self._tasks.append(
            asyncio.create_task(
                sample_forever(self.bus, self.outbox, self._consumers, s.metrics_sample_s),
                name="service-metrics",
            )
        )
        self._ready = True
        log.info("service ready", extra={"health_port": self.health_port})

    async def _dispatch_event(self, ctx: HandlerContext, env: Envelope) -> None:
        await self._event_handlers[env.type](ctx, env)

    def _acts_on(self, env: Envelope) -> bool:
        accepts = self._event_filters.get(env.type)
        return accepts is None or accepts(env.body)

    async def stop(self) -> None:
        self._ready = False
        for consumer in self._consumers:
            with contextlib.suppress(Exception):
                await consumer.stop()
        await cancel_and_wait(self._tasks)
        for hook in self._shutdown:
            with contextlib.suppress(Exception):
                await hook(self)
        with contextlib.suppress(Exception):
            await self.outbox.flush()
        with contextlib.suppress(Exception):
            await self.bus.close()
        await self._health.stop()
        await self.mongo.close()
        shutdown_tracing()
        log.info("service stopped")

    def _write_port_file(self) -> None:
        """Tell a local launcher and a local Prometheus where this process serves health and metrics."""
        instance = getattr(self.settings, "node_name", None) or self.name
        announce(Path(self.settings.data_dir), self.name, instance, self.settings.http_host, self.health_port)

    async def serve_until_signalled(self) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        # A signal must stop the service while it starts too: the start waits for the bus and the
        # database, which may be down, and a supervisor stopping everything must not wait on that.
        starting = asyncio.create_task(self.start(), name="start")
        signalled = asyncio.create_task(stop.wait(), name="signalled")
        await asyncio.wait({starting, signalled}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            with contextlib.suppress(BaseException):
                await starting
            log.info("signal received during start-up; exiting")
            return
        signalled.cancel()
        starting.result()  # a start that failed fails the process
        await stop.wait()
        log.info("signal received; draining")
        try:
            # Draining needs the bus and the database; when they are gone already, do not wait forever.
            await asyncio.wait_for(self.stop(), timeout=self.settings.stop_timeout_s)
        except TimeoutError:
            log.warning(
                "drain did not finish in time; exiting anyway",
                extra={"timeout_s": self.settings.stop_timeout_s},
            )

    def run(self) -> None:
        setup_logging(self.name, self.settings.log_level)
        event_loop.run(self.serve_until_signalled())
