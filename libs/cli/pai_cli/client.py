"""The synchronous SDK: ``PaiClient``, every route of the REST API v2 plus the few things made of several.

It speaks the public OpenPAI wire format (not this project's internals), so the same client works against
a stock OpenPAI rest-server where the route exists there: jobs are addressed as ``<user>~<name>``,
submissions are raw protocol YAML sent as ``text/yaml``, errors arrive as ``{code, message}`` bodies and
become the exception types of ``pai_cli.errors``. The route methods come from ``api.Api`` (one definition
per route, shared with ``AsyncPaiClient``); their answers are the typed models of ``pai_cli.models``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from types import TracebackType
from typing import Any

import httpx
import yaml

from pai_cli import routes
from pai_cli.api import Api
from pai_cli.config import DEFAULT_URL, CliConfig, load_config
from pai_cli.endpoint import SyncRunner
from pai_cli.errors import (
    NotFoundError,
    PaiApiError,
    PaiConnectionError,
    PaiError,
    PaiTimeoutError,
)
from pai_cli.follow import FollowState, pick_location
from pai_cli.logtail import SIZE_HEADER, LogFollower
from pai_cli.models import FINAL_STATES, JobDetail, LoginResult, Message, StreamEvent
from pai_cli.routes import Call, LogStream
from pai_cli.sse import SseParser
from pai_cli.transport import ClientCore, RetryPolicy, connection_error, error_from_response, retry_delay

StateCallback = Callable[[str, JobDetail], None]
"""Called as ``on_state(state, job)`` by ``wait_for_job`` each time the job's state changes."""

POLL_INTERVAL_S = 0.5
FOLLOW_TAIL_BYTES = 64 * 1024
# The job stream sends a keep-alive every 15 s; a read waiting longer than this has lost its server.
STREAM_READ_S = 60.0

__all__ = [
    "FINAL_STATES",
    "PaiApiError",
    "PaiClient",
    "PaiConnectionError",
    "PaiError",
    "PaiTimeoutError",
    "job_state",
]


def job_state(job: JobDetail | Mapping[str, Any]) -> str:
    """The public state of a job detail or summary (a model or the raw JSON)."""
    if isinstance(job, JobDetail):
        return job.state
    status = job.get("jobStatus")
    if isinstance(status, Mapping) and isinstance(status.get("state"), str):
        return str(status["state"])
    state = job.get("state")
    return state if isinstance(state, str) else "UNKNOWN"


def yaml_job_name(yaml_text: str) -> str:
    """The ``name`` of a job protocol, read after the server accepted it (so a broken YAML got the
    server's precise InvalidProtocolError, not a local parser message)."""
    try:
        protocol = _read_back(yaml_text)
    except yaml.YAMLError as exc:
        raise PaiError("InvalidProtocolError", f"submitted, but the YAML cannot be read back: {exc}") from exc
    name = protocol.get("name") if isinstance(protocol, dict) else None
    if not isinstance(name, str) or not name:
        raise PaiError("InvalidProtocolError", "submitted, but the YAML has no `name`")
    return name


def _read_back(yaml_text: str) -> object:
    """A YAML the server accepted, read as leniently as the server reads it: libyaml first (a tab after
    `key:` is fine there, as in js-yaml), then PyYAML's pure parser for what libyaml refuses."""
    c_loader = getattr(yaml, "CSafeLoader", None)
    if c_loader is not None:
        try:
            return yaml.load(yaml_text, Loader=c_loader)  # libyaml's safe loader
        except (yaml.YAMLError, UnicodeError):
            pass
    return yaml.safe_load(yaml_text)


class PaiClient(ClientCore, Api, SyncRunner):
    """Synchronous client of the OpenPAI REST API v2.

    ``username`` turns a bare job name into its key ``<user>~<name>``; ``login`` sets it and the token.
    ``transport``, ``sleep`` and ``clock`` let tests stand in for the network and for time.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        username: str | None = None,
        *,
        timeout_s: float = 30.0,
        poll_interval_s: float = POLL_INTERVAL_S,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(base_url, token, username, retry=retry)
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    @classmethod
    def from_config(cls, config: CliConfig | None = None, **kwargs: Any) -> PaiClient:
        """A client for the CLI's current context (file plus ``PAI_URL``/``PAI_TOKEN``/``PAI_USER``)."""
        cfg = config if config is not None else load_config()
        return cls(cfg.url, token=cfg.token, username=cfg.username, **kwargs)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PaiClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # ---- one exchange, with its retries ------------------------------------------------------------

    def _send(self, call: Call[Any]) -> httpx.Response:
        headers, where = self._prepare(call)
        try:
            return self._http.request(call.method, call.path, **self._request_args(call, headers))
        except httpx.TransportError as exc:
            raise connection_error(where, exc) from exc

    def _run(self, call: Call[Any]) -> Any:
        attempt = 0
        while True:
            response = self._send(call)
            if response.is_success:
                return call.parse(response)
            delay = retry_delay(call, response, attempt, self.retry)
            if delay is None:
                raise error_from_response(response)
            self._sleep(delay)
            attempt += 1

    # ---- signing in and out ------------------------------------------------------------------------

    def login(self, username: str, password: str, expiration_s: int | None = None) -> str:
        """Basic login; keeps the token and the user for later calls and returns the token."""
        result: LoginResult = self._run(routes.basic_login(self, username, password, expiration_s))
        self.token, self.username = result.token, result.user or username
        return result.token

    def oidc_exchange(self, code: str) -> LoginResult:
        """Trade the one-time code of a single sign-on (``login_url``) for a token, and keep it."""
        result: LoginResult = self._run(routes.oidc_exchange_code(self, code))
        self.token, self.username = result.token, result.user
        return result

    def logout(self) -> Message:
        """Revoke this client's token."""
        reply: Message = self._run(routes.basic_logout(self))
        self.token = None
        return reply

    # ---- jobs: made of several calls ---------------------------------------------------------------

    def submit_job(self, yaml_text: str) -> str:
        """Submit a job protocol v2 YAML; returns its key ``<user>~<name>``."""
        if not self.username:
            # Checked before submitting: a job accepted under a key we cannot name would be hard to find.
            raise PaiError("NoUserError", "the client has no username; log in first (`pai login`)")
        self._run(routes.submit(self, yaml_text))
        return f"{self.username}~{yaml_job_name(yaml_text)}"

    def task_log(
        self,
        name: str,
        task_role: str | None = None,
        index: int = 0,
        stream: LogStream = "stdout",
        tail_bytes: int | None = None,
    ) -> str:
        """The text of one task's log (its current attempt); ``task_role=None``: the job's first role.

        Follows OpenPAI's chain: the task's ``containerLog`` lists ``{locations: [{name, uri}]}``, and the
        location named ``stream`` serves the text.
        """
        key = self.job_key(name)
        where = FollowState(task_role, index)
        where.from_detail(self.get_job(key))
        if not where.container_log:
            raise PaiError(
                "NoTaskLogError",
                f"task {where.role}[{index}] of job {key} has no log yet (task state {where.task_state})",
            )
        uri = self._log_uri(where.container_log, stream, key, where.role, index)
        params = {"tail_bytes": tail_bytes} if tail_bytes else {}
        text: str = self._run(Call("GET", uri, routes.text, params=params))
        return text

    def _log_uri(self, listing_url: str, stream: str, key: str, role: str | None, index: int) -> str:
        listing = self._run(Call("GET", listing_url, routes.body_of))
        uri = pick_location(listing, stream)
        if uri is None:
            raise PaiError("NoTaskLogError", f"task {role}[{index}] of job {key} has no {stream} log")
        return uri

    def stream_job(self, name: str, read_timeout_s: float = STREAM_READ_S) -> Iterator[StreamEvent]:
        """The job's Server-Sent Events (``job``, ``task``, ``end``) until it ends or the stream breaks
        (nothing, not even a keep-alive, for ``read_timeout_s``: ``PaiConnectionError``)."""
        call: Call[None] = Call("GET", routes.job_path(self.job_key(name)) + "/stream", lambda r: None)
        headers, where = self._prepare(call)
        timeout = httpx.Timeout(30.0, read=read_timeout_s)
        try:
            with self._http.stream("GET", call.path, headers=headers, timeout=timeout) as response:
                if not response.is_success:
                    response.read()
                    raise error_from_response(response)
                parser = SseParser()
                for line in response.iter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise connection_error(where, exc) from exc

    def wait_for_job(
        self,
        name: str,
        states: Collection[str] = FINAL_STATES,
        timeout_s: float | None = None,
        on_state: StateCallback | None = None,
    ) -> JobDetail:
        """Wait until the job's state is in ``states``; returns its detail then.

        Follows the job stream (a poll every ``poll_interval_s`` against a server without one).
        ``on_state(state, job)`` is called for the first state seen and on every change. Raises
        ``PaiTimeoutError`` after ``timeout_s`` (None waits for ever).
        """
        key = self.job_key(name)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        last: str | None = None
        streaming = True
        while True:
            job = self.get_job(key)
            if job.state != last:
                last = job.state
                if on_state is not None:
                    on_state(job.state, job)
            if job.state in states:
                return job
            if deadline is not None and self._clock() >= deadline:
                raise PaiTimeoutError(key, job.state, timeout_s or 0.0)
            if streaming:
                try:
                    self._next_change(key, job.state, deadline)
                    continue
                except NotFoundError as exc:
                    if exc.code != "NoApiError":
                        raise
                    streaming = False  # a server without the job stream: poll
                except PaiConnectionError:
                    pass  # the stream broke (a gateway restart): look again after a pause
            self._sleep(self.poll_interval_s)

    def _next_change(self, key: str, state: str, deadline: float | None) -> None:
        """Read the job stream until the job's state differs from ``state`` (or the stream ends, or the
        deadline passes)."""
        remaining = (
            STREAM_READ_S if deadline is None else max(0.1, min(STREAM_READ_S, deadline - self._clock()))
        )
        for event in self.stream_job(key, remaining):
            status = event.data.get("jobStatus") if event.event == "job" else None
            if event.event == "end" or (isinstance(status, dict) and status.get("state") != state):
                return
            if deadline is not None and self._clock() >= deadline:
                return

    def follow_log(
        self,
        name: str,
        task_role: str | None = None,
        index: int = 0,
        stream: LogStream = "stdout",
        poll_s: float = 1.0,
    ) -> Iterator[str]:
        """A task's log as it grows, chunk by chunk, until the job ends (a retried task's new log is
        followed too, after a ``--- ... ---`` line). The job stream says when the task's log changes and
        when the job ends; the log itself is polled every ``poll_s``."""
        key = self.job_key(name)
        state = FollowState(task_role, index)
        state.from_detail(self.get_job(key))
        lock = threading.Lock()
        changed = threading.Event()

        def listen() -> None:
            while not state.ended:
                try:
                    for event in self.stream_job(key):
                        with lock:
                            state.from_event(event)
                        changed.set()
                    break  # the stream closes after the job's end
                except NotFoundError as exc:
                    if exc.code == "NoApiError":
                        self._poll_follow(key, state, lock, changed, poll_s)  # a server without the stream
                    break
                except PaiConnectionError:
                    self._sleep(poll_s)  # the stream broke (a gateway restart): open it again
                except PaiError:
                    break
            with lock:
                state.ended = True
            changed.set()

        if not state.ended:
            threading.Thread(target=listen, name=f"follow-{key}", daemon=True).start()
        follower = LogFollower()
        shown: str | None = None
        uri: str | None = None
        while True:
            with lock:
                ended, log_url = state.ended, state.container_log
            if log_url and log_url != shown:
                if shown is not None:
                    yield f"--- {key} {state.role}[{index}]: a new attempt's log ---\n"
                shown, uri = log_url, None
                follower.reset()
            if shown and uri is None:
                with contextlib.suppress(NotFoundError):
                    uri = self._log_uri(shown, stream, key, state.role, index)
            if uri is not None:
                # Not there yet (the task is still starting) is not an error: the next poll looks again.
                response = self._send(Call("GET", uri, routes.text, params={"tail_bytes": FOLLOW_TAIL_BYTES}))
                if response.is_success:
                    size = response.headers.get(SIZE_HEADER)
                    new = follower.update(response.text, int(size) if size and size.isdigit() else None)
                    if new:
                        yield new
            if ended:
                return
            changed.wait(poll_s)
            changed.clear()

    def _poll_follow(
        self, key: str, state: FollowState, lock: threading.Lock, changed: threading.Event, poll_s: float
    ) -> None:
        while not state.ended:
            self._sleep(poll_s)
            detail = self.get_job(key)
            with lock:
                state.from_detail(detail)
            changed.set()
