"""The bus: JetStream streams for events and commands, core NATS request/reply for RPC."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
import ssl
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import nats
from nats.aio.client import Client as NatsClient
from nats.errors import (
    ConnectionClosedError,
    ConnectionReconnectingError,
    NoRespondersError,
    OutboundBufferLimitError,
    StaleConnectionError,
)
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import DiscardPolicy, RetentionPolicy, StorageType, StreamConfig
from nats.js.errors import BadRequestError, NotFoundError
from nats.micro import add_service
from nats.micro.request import Request
from nats.micro.service import Service
from opentelemetry.trace import SpanKind
from pydantic import ValidationError

from pai_common.bus_link import BusLink
from pai_common.contract.base import (
    COMMAND_SUBJECT_PREFIX,
    DEAD_LETTER_PREFIX,
    EVENT_SUBJECT_PREFIX,
    Command,
    Event,
    Message,
    RpcRequest,
    command_subject,
    event_subject,
    rpc_subject,
    subject_token,
)
from pai_common.database import is_transient
from pai_common.envelope import encode
from pai_common.errors import (
    BusUnavailableError,
    InvalidParametersError,
    PaiError,
    RpcInterruptedError,
    RpcTimeoutError,
    ServiceUnavailableError,
    UnknownError,
    error_from_code,
)
from pai_common.metrics import RPC_REQUESTS, RPC_SECONDS
from pai_common.responder_watch import STARTED_MS, WATCH_AFTER_S, ResponderWatch, micro_name
from pai_common.telemetry import inject_headers, span_from_headers

log = logging.getLogger(__name__)

EVENTS_STREAM = "PAI_EVENTS"
COMMANDS_STREAM = "PAI_COMMANDS"
DEAD_LETTER_STREAM = "PAI_DEAD_LETTERS"
DUPLICATE_WINDOW_S = 120.0
ERROR_CODE_HEADER = "Nats-Service-Error-Code"
# When the asker stops waiting (Unix time in milliseconds): a handler can give up work nobody waits for.
# Absolute, because a request may wait in the responder's queue before its handler starts (a subscription
# hands its messages to the handler one at a time); the platform's hosts keep their clocks in sync.
DEADLINE_HEADER = "pai-deadline-ms"
# The connection is gone or being re-established: the request was not sent.
BUS_DOWN_ERRORS = (
    ConnectionClosedError,
    ConnectionReconnectingError,
    OutboundBufferLimitError,
    StaleConnectionError,
)

R = TypeVar("R", bound=Message)
# How long a request waits for a responder to (re)appear before the service counts as not running.
NO_RESPONDERS_WAIT_S = 1.0
# How long closing waits for requests of concurrent endpoints already taken.
RPC_DRAIN_S = 10.0
RpcHandler = Callable[[Any], Awaitable[Message]]


def stream_configs(replicas: int = 1) -> list[StreamConfig]:
    """The streams every service may create at start; creating them is idempotent."""
    streams = [
        StreamConfig(
            name=EVENTS_STREAM,
            subjects=[f"{EVENT_SUBJECT_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=7 * 24 * 3600.0,
            duplicate_window=DUPLICATE_WINDOW_S,
            discard=DiscardPolicy.OLD,
        ),
        StreamConfig(
            name=COMMANDS_STREAM,
            subjects=[f"{COMMAND_SUBJECT_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.WORK_QUEUE,
            duplicate_window=DUPLICATE_WINDOW_S,
        ),
        StreamConfig(
            name=DEAD_LETTER_STREAM,
            subjects=[f"{DEAD_LETTER_PREFIX}.>"],
            storage=StorageType.FILE,
            retention=RetentionPolicy.LIMITS,
            max_age=30 * 24 * 3600.0,
        ),
    ]
    for config in streams:
        config.num_replicas = replicas
    return streams


class Bus:
    """One NATS connection of one service."""

    def __init__(self, nc: NatsClient, service: str, link: BusLink | None = None) -> None:
        self.nc = nc
        # Told when the connection drops (by Bus.connect's callback; a Bus made on another's connection
        # still refuses to send while it is down, but learns of a drop only at the request's timeout).
        self.link = link or BusLink()
        self.responders = ResponderWatch(nc)
        self.js: JetStreamContext = nc.jetstream()
        self.service = service
        self._micro: list[Service] = []
        # Requests of concurrent endpoints in flight (see serve_rpc).
        self._rpc_tasks: set[asyncio.Task[None]] = set()

    @classmethod
    async def connect(
        cls,
        url: str,
        service: str,
        ca_file: Path | None = None,
        token_file: Path | None = None,
        inbox_user: str | None = None,
    ) -> Bus:
        # Credentials travel in the URL (nats://user:password@host), or as a token read from token_file at
        # every (re)connection (a renewed token is used once it is there); the CA, when given, is the only
        # one a TLS server certificate is checked against.
        tls = ssl.create_default_context(cafile=str(ca_file)) if ca_file is not None else None
        # Several servers may be listed, comma-separated: the first connection survives one being down.
        servers = [u.strip() for u in url.split(",") if u.strip()]
        websocket = [u for u in servers if urlsplit(u).scheme in ("ws", "wss")]
        if websocket:
            # nats-py's WebSocket transport is not loaded (import_hooks.py): say so, not "install aiohttp".
            raise ValueError("NATS over WebSocket (ws://, wss://) is not supported: use nats:// or tls://")
        user = inbox_user or (urlsplit(servers[0]).username if servers else None)
        auth: dict[str, Any] = {}
        if token_file is not None:
            path = token_file
            auth["token"] = lambda: path.read_text().strip()
        link = BusLink()
        nc = await nats.connect(
            servers,
            tls=tls,
            name=f"pai-{service}",
            # A user's replies come to an inbox of its own, which no other user may subscribe to.
            inbox_prefix=f"_INBOX.{subject_token(user)}" if user else "_INBOX",
            max_reconnect_attempts=-1,
            reconnect_time_wait=0.5,
            connect_timeout=5,
            # Draining finishes in-flight work; a subscription that never quiets must not hold a stop.
            drain_timeout=5,
            disconnected_cb=link.on_disconnected,
            **auth,
        )
        return cls(nc, service, link)

    def ensure_up(self) -> None:
        """BusUnavailableError unless the connection is up: for callers about to use JetStream directly,
        whose requests nats-py would otherwise buffer while it reconnects and answer after their timeout."""
        self.link.check(self.nc)

    async def ensure_streams(self, replicas: int = 1, create: bool = True) -> None:
        """Create the streams, or bring existing ones to this configuration (the replica count included,
        so a stream made with one copy grows to three when the cluster does). With ``create`` False only
        wait until they exist (a node agent or an extension may not create streams: the services do)."""
        if not create:
            for config in stream_configs(replicas):
                assert config.name is not None
                while True:
                    try:
                        await self.js.stream_info(config.name)
                        break
                    except NotFoundError:
                        await asyncio.sleep(0.5)
            return
        for config in stream_configs(replicas):
            try:
                await self.js.add_stream(config=config)
            except BadRequestError as exc:
                # Another service created it first with the same subjects; an update keeps it current.
                if exc.err_code != 10058:  # stream name already in use with a different configuration
                    raise
                await self.js.update_stream(config=config)
                log.info("stream updated", extra={"stream": config.name, "replicas": replicas})

    # ---- publishing ----------------------------------------------------------------------------------

    @property
    def max_payload(self) -> int:
        """The most bytes (headers and body) the server takes in one message, as it told at connection."""
        return int(self.nc.max_payload)

    async def publish_raw(self, subject: str, headers: dict[str, str], payload: bytes) -> None:
        await self.js.publish(subject, payload, headers=headers, timeout=5.0)

    async def publish_event(self, event: Event, msg_id: str | None = None) -> str:
        mid, headers, payload = encode(event, self.service, msg_id)
        await self.publish_raw(event_subject(event.TYPE), headers, payload)
        return mid

    async def send_command(self, command: Command, target: str, msg_id: str | None = None) -> str:
        mid, headers, payload = encode(command, self.service, msg_id)
        await self.publish_raw(command_subject(command.TYPE, target), headers, payload)
        return mid

    async def dead_letter(self, durable: str, headers: dict[str, str], payload: bytes, error: str) -> None:
        """Keep a message that cannot be handled, with why, instead of dropping it."""
        dl_headers = {k: v for k, v in headers.items() if k != "Nats-Msg-Id"}
        # A header value is one line: an error's own line breaks would make the publish itself fail.
        dl_headers["pai-error"] = " ".join(error.split())[:4000]
        dl_headers["pai-consumer"] = durable
        await self.js.publish(f"{DEAD_LETTER_PREFIX}.{self.service}.{durable}", payload, headers=dl_headers)

    # ---- RPC -----------------------------------------------------------------------------------------

    async def request(
        self, req: RpcRequest, reply_type: type[R], target: str | None = None, timeout: float = 5.0
    ) -> R:
        """Ask the owning service; its PaiError comes back as the same error type."""
        subject = rpc_subject(req.SERVICE, req.ENDPOINT, target)
        headers = inject_headers({DEADLINE_HEADER: str(int((time.time() + timeout) * 1000))})
        payload = req.model_dump_json().encode()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        # A responder that is restarting or reconnecting has no subscription for a moment: ask again for
        # up to NO_RESPONDERS_WAIT_S (within the timeout) before calling the service unavailable.
        patience = loop.time() + min(timeout, NO_RESPONDERS_WAIT_S)
        pause = 0.02
        if target is None:
            self.responders.note(req.SERVICE)
        while True:
            self.link.check(self.nc)
            try:
                msg = await self._request_while_up(
                    req.SERVICE if target is None else None,
                    subject,
                    payload,
                    max(deadline - loop.time(), 0.001),
                    headers,
                )
                break
            except NoRespondersError as exc:
                if loop.time() + pause >= patience:
                    raise ServiceUnavailableError(f"service {req.SERVICE} is not running") from exc
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.25)
            except NatsTimeoutError as exc:
                raise RpcTimeoutError(f"service {req.SERVICE} did not answer in {timeout:g}s") from exc
            except BUS_DOWN_ERRORS as exc:
                raise BusUnavailableError(f"the bus is unavailable ({type(exc).__name__})") from exc
        if msg.headers and msg.headers.get(ERROR_CODE_HEADER):
            try:
                body = json.loads(msg.data or b"{}")
                retry_after = body.get("retryAfter")
                status = body.get("status")
                raise error_from_code(
                    str(body.get("code")),
                    str(body.get("message")),
                    retry_after if isinstance(retry_after, int) else None,
                    status if isinstance(status, int) else None,
                )
            except (ValueError, AttributeError):
                raise UnknownError(msg.headers.get("Nats-Service-Error", "remote error")) from None
        try:
            return reply_type.model_validate_json(msg.data)
        except ValidationError as exc:
            log.error("invalid rpc reply", extra={"endpoint": req.ENDPOINT, "error": str(exc)[:2000]})
            raise UnknownError(f"service {req.SERVICE} answered with an invalid reply") from None

    async def _request_while_up(
        self, service: str | None, subject: str, payload: bytes, timeout: float, headers: dict[str, str]
    ) -> Any:
        """nc.request, given up at once (RpcInterruptedError) should the connection drop meanwhile, or
        every instance of ``service`` that could have taken the request stop running (responder_watch;
        None: a request to one target, not watched)."""
        lost = self.link.lost()
        sent_ms = int(time.time() * 1000)
        call = asyncio.ensure_future(self.nc.request(subject, payload, timeout=timeout, headers=headers))
        watch: asyncio.Task[None] | None = None
        try:
            done, _ = await asyncio.wait(
                (call, lost), timeout=min(WATCH_AFTER_S, timeout), return_when=asyncio.FIRST_COMPLETED
            )
            if not done and service is not None:
                watch = asyncio.ensure_future(self.responders.until_gone(service, sent_ms))
                done, _ = await asyncio.wait((call, lost, watch), return_when=asyncio.FIRST_COMPLETED)
            elif not done:
                done, _ = await asyncio.wait((call, lost), return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pending in (call, watch):
                if pending is not None and not pending.done():
                    pending.cancel()
        if call in done:
            return call.result()
        if lost in done:
            raise RpcInterruptedError(
                "the bus went down while the request waited for its answer: whether it acted is not known"
            )
        raise RpcInterruptedError(
            f"service {service} stopped running while it had the request: whether it acted is not known"
        )

    async def serve_rpc(
        self,
        handlers: dict[type[RpcRequest], RpcHandler],
        target: str | None = None,
        concurrent: frozenset[type[RpcRequest]] = frozenset(),
    ) -> None:
        """Register endpoints with the NATS micro services API (discovery, stats, queue groups).

        An endpoint takes its requests one at a time (NATS delivers a subscription's messages in order to
        one callback), except those in `concurrent`, whose every request runs in a task of its own.

        Every call adds to one micro service per connection: two would each answer a discovery request
        ($SRV.PING) on the same connection, and a secured server lets a connection answer a request only
        once, so both answers were refused and the service looked absent (see responder_watch).
        """
        if not self._micro:
            self._micro.append(
                await add_service(
                    self.nc,
                    name=micro_name(self.service),
                    version="0.1.0",
                    description=f"OpenPAI {self.service} service",
                    # Read before any endpoint subscribes: a request sent before it is not this one's.
                    metadata={STARTED_MS: str(int(time.time() * 1000))},
                )
            )
        service = self._micro[0]
        for req_type, handler in handlers.items():
            await service.add_endpoint(
                name=req_type.ENDPOINT,
                subject=rpc_subject(req_type.SERVICE, req_type.ENDPOINT, target),
                handler=_rpc_wrapper(req_type, handler, self._rpc_tasks if req_type in concurrent else None),
            )
        # The server has the subscriptions once flush returns: a request sent right after start-up from
        # another connection then finds its responder instead of "no responders".
        await self.nc.flush()

    async def close(self) -> None:
        self.responders.close()
        for service in self._micro:
            await service.stop()
        self._micro.clear()
        # Requests already taken are answered before the connection drains.
        if self._rpc_tasks:
            await asyncio.wait(set(self._rpc_tasks), timeout=RPC_DRAIN_S)
        if self.nc.is_connected:
            await self.nc.drain()
        elif not self.nc.is_closed:
            # Reconnecting: there is nothing to drain through, and drain() refuses; stop trying. close()
            # still writes what was buffered meanwhile to the lost socket, and fails on it, when the
            # connection is already marked closed: that failure is the outage itself.
            with contextlib.suppress(OSError):
                await self.nc.close()


# The Unix time at which the asker of the RPC being handled stops waiting.
_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("rpc_deadline", default=None)


def rpc_time_left() -> float | None:
    """Seconds until the asker of the RPC being handled stops waiting (None: not in an RPC, or no limit).

    A handler about to commit a change checks it (``give_up_if_abandoned``): a change committed after the
    asker was told 503 would make that answer untrue.
    """
    deadline = _deadline.get()
    if deadline is None:
        return None
    return deadline - time.time()


def give_up_if_abandoned(margin_s: float = 0.5) -> None:
    """Raise ServiceUnavailableError when the asker stops waiting within ``margin_s``: change nothing."""
    left = rpc_time_left()
    if left is not None and left < margin_s:
        raise ServiceUnavailableError("the service is busy; nothing was changed, try again")


def _start_deadline(headers: dict[str, str] | None) -> None:
    raw = (headers or {}).get(DEADLINE_HEADER)
    try:
        _deadline.set(int(raw) / 1000 if raw is not None else None)
    except ValueError:
        _deadline.set(None)


def _rpc_wrapper(
    req_type: type[RpcRequest], handler: RpcHandler, tasks: set[asyncio.Task[None]] | None = None
) -> Callable[[Request], Awaitable[None]]:
    endpoint = f"{req_type.SERVICE}.{req_type.ENDPOINT}"
    seconds = RPC_SECONDS.labels(endpoint)

    async def handle(request: Request) -> None:
        _start_deadline(request.headers)
        started = time.perf_counter()
        outcome = "ok"
        with span_from_headers(f"rpc {endpoint}", request.headers, SpanKind.SERVER):
            try:
                try:
                    req = req_type.model_validate_json(request.data)
                except ValidationError as exc:
                    problems = "; ".join(
                        f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
                    )
                    raise InvalidParametersError(problems) from exc
                reply = await handler(req)
                await request.respond(reply.model_dump_json().encode())
            except PaiError as err:
                outcome = err.code
                await _respond_error(request, err)
            except Exception as exc:
                if is_transient(exc):
                    # A write conflict that outlasted the handler's retries, the database restarting or
                    # failing over: nothing was committed, and the same request will work again shortly.
                    outcome = ServiceUnavailableError.code
                    log.warning(
                        "rpc handler met a transient failure; answered unavailable",
                        extra={"endpoint": req_type.ENDPOINT, "error": repr(exc)},
                    )
                    await _respond_error(
                        request, ServiceUnavailableError(f"service {req_type.SERVICE} is busy; try again")
                    )
                    return
                outcome = UnknownError.code
                log.exception("rpc handler failed", extra={"endpoint": req_type.ENDPOINT})
                await _respond_error(request, UnknownError("internal error"))
            finally:
                RPC_REQUESTS.labels(endpoint, outcome).inc()
                seconds.observe(time.perf_counter() - started)

    if tasks is None:
        return handle

    async def spawn(request: Request) -> None:
        task = asyncio.create_task(handle(request))
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    return spawn


async def _respond_error(request: Request, err: PaiError) -> None:
    body: dict[str, object] = {**err.to_body(), "status": err.status}
    if err.retry_after_s is not None:
        body["retryAfter"] = err.retry_after_s
    await request.respond_error(str(err.status), err.message, data=json.dumps(body).encode())
