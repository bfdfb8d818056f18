"""The asynchronous SDK: ``AsyncPaiClient``, the same methods as ``PaiClient`` answering awaitables (and
async iterators for the streams), for services and notebooks that run an event loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Collection
from types import TracebackType
from typing import Any

import httpx

from pai_cli import routes
from pai_cli.api import Api
from pai_cli.client import FOLLOW_TAIL_BYTES, POLL_INTERVAL_S, STREAM_READ_S, StateCallback, yaml_job_name
from pai_cli.config import DEFAULT_URL, CliConfig, load_config
from pai_cli.endpoint import AsyncRunner
from pai_cli.errors import NotFoundError, PaiConnectionError, PaiError, PaiTimeoutError
from pai_cli.follow import FollowState, pick_location
from pai_cli.logtail import SIZE_HEADER, LogFollower
from pai_cli.models import FINAL_STATES, JobDetail, LoginResult, Message, StreamEvent
from pai_cli.routes import Call, LogStream
from pai_cli.sse import SseParser
from pai_cli.transport import ClientCore, RetryPolicy, connection_error, error_from_response, retry_delay


class AsyncPaiClient(ClientCore, Api, AsyncRunner):
    """Asynchronous client of the OpenPAI REST API v2; see ``PaiClient`` for what each method does."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        username: str | None = None,
        *,
        timeout_s: float = 30.0,
        poll_interval_s: float = POLL_INTERVAL_S,
        retry: RetryPolicy = RetryPolicy(),
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Any] = asyncio.sleep,
        clock: Callable[[], float] | None = None,
    ) -> None:
        super().__init__(base_url, token, username, retry=retry)
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock or (lambda: asyncio.get_running_loop().time())
        self._http = httpx.AsyncClient(base_url=self.base_url, timeout=timeout_s, transport=transport)

    @classmethod
    def from_config(cls, config: CliConfig | None = None, **kwargs: Any) -> AsyncPaiClient:
        cfg = config if config is not None else load_config()
        return cls(cfg.url, token=cfg.token, username=cfg.username, **kwargs)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def __aenter__(self) -> AsyncPaiClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def _send(self, call: Call[Any]) -> httpx.Response:
        headers, where = self._prepare(call)
        try:
            return await self._http.request(call.method, call.path, **self._request_args(call, headers))
        except httpx.TransportError as exc:
            raise connection_error(where, exc) from exc

    async def _run(self, call: Call[Any]) -> Any:
        attempt = 0
        while True:
            response = await self._send(call)
            if response.is_success:
                return call.parse(response)
            delay = retry_delay(call, response, attempt, self.retry)
            if delay is None:
                raise error_from_response(response)
            await self._sleep(delay)
            attempt += 1

    async def login(self, username: str, password: str, expiration_s: int | None = None) -> str:
        result: LoginResult = await self._run(routes.basic_login(self, username, password, expiration_s))
        self.token, self.username = result.token, result.user or username
        return result.token

    async def oidc_exchange(self, code: str) -> LoginResult:
        result: LoginResult = await self._run(routes.oidc_exchange_code(self, code))
        self.token, self.username = result.token, result.user
        return result

    async def logout(self) -> Message:
        reply: Message = await self._run(routes.basic_logout(self))
        self.token = None
        return reply

    async def submit_job(self, yaml_text: str) -> str:
        if not self.username:
            raise PaiError("NoUserError", "the client has no username; log in first (`pai login`)")
        await self._run(routes.submit(self, yaml_text))
        return f"{self.username}~{yaml_job_name(yaml_text)}"

    async def task_log(
        self,
        name: str,
        task_role: str | None = None,
        index: int = 0,
        stream: LogStream = "stdout",
        tail_bytes: int | None = None,
    ) -> str:
        key = self.job_key(name)
        where = FollowState(task_role, index)
        where.from_detail(await self.get_job(key))
        if not where.container_log:
            raise PaiError(
                "NoTaskLogError",
                f"task {where.role}[{index}] of job {key} has no log yet (task state {where.task_state})",
            )
        uri = await self._log_uri(where.container_log, stream, key, where.role, index)
        params = {"tail_bytes": tail_bytes} if tail_bytes else {}
        text: str = await self._run(Call("GET", uri, routes.text, params=params))
        return text

    async def _log_uri(self, listing_url: str, stream: str, key: str, role: str | None, index: int) -> str:
        listing = await self._run(Call("GET", listing_url, routes.body_of))
        uri = pick_location(listing, stream)
        if uri is None:
            raise PaiError("NoTaskLogError", f"task {role}[{index}] of job {key} has no {stream} log")
        return uri

    async def stream_job(self, name: str) -> AsyncIterator[StreamEvent]:
        call: Call[None] = Call("GET", routes.job_path(self.job_key(name)) + "/stream", lambda r: None)
        headers, where = self._prepare(call)
        timeout = httpx.Timeout(30.0, read=STREAM_READ_S)
        try:
            async with self._http.stream("GET", call.path, headers=headers, timeout=timeout) as response:
                if not response.is_success:
                    await response.aread()
                    raise error_from_response(response)
                parser = SseParser()
                async for line in response.aiter_lines():
                    event = parser.feed(line)
                    if event is not None:
                        yield event
        except httpx.TransportError as exc:
            raise connection_error(where, exc) from exc

    async def wait_for_job(
        self,
        name: str,
        states: Collection[str] = FINAL_STATES,
        timeout_s: float | None = None,
        on_state: StateCallback | None = None,
    ) -> JobDetail:
        key = self.job_key(name)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        last: str | None = None
        streaming = True
        while True:
            job = await self.get_job(key)
            if job.state != last:
                last = job.state
                if on_state is not None:
                    on_state(job.state, job)
            if job.state in states:
                return job
            remaining = None if deadline is None else deadline - self._clock()
            if remaining is not None and remaining <= 0:
                raise PaiTimeoutError(key, job.state, timeout_s or 0.0)
            if streaming:
                try:
                    await asyncio.wait_for(self._next_change(key, job.state), remaining)
                    continue
                except TimeoutError:
                    continue  # the deadline passed: the loop's check says so
                except NotFoundError as exc:
                    if exc.code != "NoApiError":
                        raise
                    streaming = False
                except PaiConnectionError:
                    pass
            await self._sleep(self.poll_interval_s)

    async def _next_change(self, key: str, state: str) -> None:
        async for event in self.stream_job(key):
            status = event.data.get("jobStatus") if event.event == "job" else None
            if event.event == "end" or (isinstance(status, dict) and status.get("state") != state):
                return

    async def follow_log(
        self,
        name: str,
        task_role: str | None = None,
        index: int = 0,
        stream: LogStream = "stdout",
        poll_s: float = 1.0,
    ) -> AsyncIterator[str]:
        key = self.job_key(name)
        state = FollowState(task_role, index)
        state.from_detail(await self.get_job(key))
        changed = asyncio.Event()

        async def listen() -> None:
            while not state.ended:
                try:
                    async for event in self.stream_job(key):
                        state.from_event(event)
                        changed.set()
                    break
                except NotFoundError as exc:
                    if exc.code == "NoApiError":
                        while not state.ended:
                            await self._sleep(poll_s)
                            state.from_detail(await self.get_job(key))
                            changed.set()
                    break
                except PaiConnectionError:
                    await self._sleep(poll_s)
                except PaiError:
                    break
            state.ended = True
            changed.set()

        listener = None if state.ended else asyncio.create_task(listen())
        follower = LogFollower()
        shown: str | None = None
        uri: str | None = None
        try:
            while True:
                ended, log_url = state.ended, state.container_log
                if log_url and log_url != shown:
                    if shown is not None:
                        yield f"--- {key} {state.role}[{index}]: a new attempt's log ---\n"
                    shown, uri = log_url, None
                    follower.reset()
                if shown and uri is None:
                    with contextlib.suppress(NotFoundError):
                        uri = await self._log_uri(shown, stream, key, state.role, index)
                if uri is not None:
                    params = {"tail_bytes": FOLLOW_TAIL_BYTES}
                    response = await self._send(Call("GET", uri, routes.text, params=params))
                    if response.is_success:
                        size = response.headers.get(SIZE_HEADER)
                        new = follower.update(response.text, int(size) if size and size.isdigit() else None)
                        if new:
                            yield new
                if ended:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(changed.wait(), poll_s)
                changed.clear()
        finally:
            if listener is not None:
                listener.cancel()
                with contextlib.suppress(asyncio.CancelledError, PaiError):
                    await listener
