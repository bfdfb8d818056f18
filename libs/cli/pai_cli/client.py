"""A small synchronous SDK for the platform's OpenPAI REST API v2.

It speaks the public OpenPAI wire format (not this project's internals), so the same client works against
a stock OpenPAI rest-server: jobs are addressed as `<user>~<name>`, submissions are raw protocol YAML sent
as `text/yaml`, and errors arrive as `{code, message}` bodies.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Iterable, Mapping
from types import TracebackType
from typing import Any
from urllib.parse import quote

import httpx
import yaml

from pai_cli.config import DEFAULT_URL, CliConfig, load_config

JobDict = dict[str, Any]
StateCallback = Callable[[str, JobDict], None]
"""Called as `on_state(state, job)` by `wait_for_job` each time the job's state changes."""

FINAL_STATES: frozenset[str] = frozenset({"SUCCEEDED", "FAILED", "STOPPED"})
"""Public OpenPAI job states from which a job never moves again."""

POLL_INTERVAL_S = 0.5


class PaiError(Exception):
    """Anything the SDK reports to its caller; `code` follows OpenPAI's error codes where one applies."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class PaiApiError(PaiError):
    """The server answered with a non-2xx status; `code`/`message` come from its `{code, message}` body."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(code, message)
        self.status = status


class PaiConnectionError(PaiError):
    """The server could not be reached at all (refused, unresolvable, timed out)."""

    def __init__(self, url: str, message: str) -> None:
        super().__init__("ConnectionError", message)
        self.url = url


class PaiTimeoutError(PaiError):
    """`wait_for_job` gave up before the job reached one of the awaited states."""

    def __init__(self, job_key: str, state: str, timeout_s: float) -> None:
        super().__init__("WaitTimeout", f"job {job_key} is still {state} after {timeout_s:g} s")
        self.job_key = job_key
        self.state = state


def job_state(job: Mapping[str, Any]) -> str:
    """The public state of a job detail (`jobStatus.state`) or of a job summary (`state`)."""
    status = job.get("jobStatus")
    if isinstance(status, Mapping) and isinstance(status.get("state"), str):
        return str(status["state"])
    state = job.get("state")
    return state if isinstance(state, str) else "UNKNOWN"


def _error_from_response(response: httpx.Response) -> PaiApiError:
    status = response.status_code
    reason = response.reason_phrase or f"HTTP {status}"
    text = response.text.strip()
    try:
        body: Any = response.json()
    except ValueError:
        body = None
    code: object = None
    message: object = None
    if isinstance(body, dict):
        code = body.get("code")
        message = body.get("message")
        # FastAPI's own errors (e.g. request validation) use {"detail": ...} instead of OpenPAI's shape.
        if message is None and "detail" in body:
            detail = body["detail"]
            message = detail if isinstance(detail, str) else json.dumps(detail)
    if not isinstance(message, str) or not message:
        # OpenPAI sends some errors as plain text (the rate limiter's 429) and one as a JSON `null` body
        # (job-attempts of a missing job); the raw text is the most useful thing to show.
        message = text if text and text != "null" else reason
    return PaiApiError(status, str(code) if code else reason, message)


class PaiClient:
    """Synchronous client of the OpenPAI REST API v2.

    `username` is needed to turn a job name into its key `<user>~<name>`; `login` sets it and the token.
    `transport`, `sleep` and `clock` exist so tests can stand in for the server and for time.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        token: str | None = None,
        username: str | None = None,
        *,
        timeout_s: float = 30.0,
        poll_interval_s: float = POLL_INTERVAL_S,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.username = username
        self.poll_interval_s = poll_interval_s
        self._sleep = sleep
        self._clock = clock
        self._base = httpx.URL(self.base_url)
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout_s, transport=transport)

    @classmethod
    def from_config(cls, config: CliConfig | None = None, **kwargs: Any) -> PaiClient:
        """A client for the saved CLI config (file plus `PAI_URL`/`PAI_TOKEN`/`PAI_USER`)."""
        cfg = config if config is not None else load_config()
        return cls(cfg.url, token=cfg.token, username=cfg.username, **kwargs)

    # -- lifecycle ----------------------------------------------------------------------------------------

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> PaiClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- HTTP plumbing ------------------------------------------------------------------------------------

    def _same_origin(self, url: httpx.URL) -> bool:
        if url.is_relative_url:
            return True
        return (url.scheme, url.host, url.port) == (self._base.scheme, self._base.host, self._base.port)

    def _request(
        self,
        method: str,
        url: str,
        *,
        auth: bool = True,
        headers: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> httpx.Response:
        target = httpx.URL(url)
        same_origin = self._same_origin(target)
        all_headers = dict(headers or {})
        # Log URIs may point at another host (OpenPAI's log-manager, blob storage): never hand it our token.
        if auth and self.token and same_origin:
            all_headers["Authorization"] = f"Bearer {self.token}"
        where = self.base_url if same_origin else f"{target.scheme}://{target.netloc.decode()}"
        try:
            response = self._http.request(method, url, headers=all_headers, **kwargs)
        except httpx.ConnectError as exc:
            raise PaiConnectionError(
                where, f"cannot connect to {where} ({exc}); is the platform running? try `pai up`"
            ) from exc
        except httpx.TimeoutException as exc:
            raise PaiConnectionError(where, f"{where} did not answer in time ({exc!r})") from exc
        except httpx.TransportError as exc:
            raise PaiConnectionError(where, f"cannot talk to {where}: {exc!r}") from exc
        if not response.is_success:
            raise _error_from_response(response)
        return response

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as exc:
            raise PaiApiError(
                response.status_code,
                "InvalidResponse",
                f"expected JSON from {response.request.url}, got: {response.text[:200]!r}",
            ) from exc

    def job_key(self, name: str) -> str:
        """`user~job` stays as is; a bare `job` is taken to be this client's user's job."""
        if "~" in name:
            return name
        if not self.username:
            raise PaiError(
                "NoUserError",
                f"cannot tell whose job {name!r} is: give it as <user>~{name}, or log in with `pai login`",
            )
        return f"{self.username}~{name}"

    @staticmethod
    def _job_path(job_key: str) -> str:
        # Keys are `<user>~<name>`; `~` must stay literal because the route splits on it.
        return f"/api/v2/jobs/{quote(job_key, safe='~')}"

    # -- API ----------------------------------------------------------------------------------------------

    def login(self, username: str, password: str) -> str:
        """Basic login; keeps the returned token and user for later calls and returns the token."""
        response = self._request(
            "POST", "/api/v2/authn/basic/login", auth=False, json={"username": username, "password": password}
        )
        body = self._json(response)
        token = body.get("token") if isinstance(body, dict) else None
        if not isinstance(token, str) or not token:
            raise PaiApiError(response.status_code, "InvalidResponse", "login answer carries no token")
        user = body.get("user")
        self.token = token
        self.username = user if isinstance(user, str) and user else username
        return token

    def submit_job(self, yaml_text: str) -> str:
        """Submit a job protocol v2 YAML; returns its key `<user>~<name>`."""
        if not self.username:
            # Checked before submitting: a job accepted under a key we cannot name would be hard to find.
            raise PaiError("NoUserError", "the client has no username; log in first (`pai login`)")
        self._request(
            "POST",
            "/api/v2/jobs",
            content=yaml_text.encode("utf-8"),
            # OpenPAI only parses the body as YAML for text/* content types.
            headers={"Content-Type": "text/yaml"},
        )
        # Parsed only after the server accepted it, so a broken YAML gets the server's precise
        # InvalidProtocolError rather than a local parser message.
        try:
            protocol = yaml.safe_load(yaml_text)
        except yaml.YAMLError as exc:
            raise PaiError(
                "InvalidProtocolError", f"submitted, but the YAML cannot be read back: {exc}"
            ) from exc
        name = protocol.get("name") if isinstance(protocol, dict) else None
        if not isinstance(name, str) or not name:
            raise PaiError("InvalidProtocolError", "submitted, but the YAML has no `name`")
        return f"{self.username}~{name}"

    def get_job(self, job_key: str) -> JobDict:
        """The job detail (`jobStatus`, `taskRoles`, ...) of `<user>~<name>`."""
        body = self._json(self._request("GET", self._job_path(self.job_key(job_key))))
        if not isinstance(body, dict):
            raise PaiApiError(200, "InvalidResponse", f"job detail of {job_key} is not an object")
        return body

    def list_jobs(
        self,
        *,
        username: str | Iterable[str] | None = None,
        vc: str | None = None,
        state: str | None = None,
        keyword: str | None = None,
        offset: int | None = None,
        limit: int | None = None,
        **extra: str | int,
    ) -> list[JobDict]:
        """Job summaries, newest first; `extra` passes other OpenPAI filters (`order`, `tagsContain`, ...)."""
        params: dict[str, str | int] = dict(extra)
        if username is not None:
            params["username"] = username if isinstance(username, str) else ",".join(username)
        for key, value in (
            ("vc", vc),
            ("state", state),
            ("keyword", keyword),
            ("offset", offset),
            ("limit", limit),
        ):
            if value is not None:
                params[key] = value
        body = self._json(self._request("GET", "/api/v2/jobs", params=params))
        # With withTotalCount=true OpenPAI wraps the list as {totalCount, data}.
        if isinstance(body, dict):
            body = body.get("data", [])
        if not isinstance(body, list):
            raise PaiApiError(200, "InvalidResponse", "job list is not an array")
        return [job for job in body if isinstance(job, dict)]

    def task_log(
        self, job_key: str, task_role: str | None = None, index: int = 0, stream: str = "stdout"
    ) -> str:
        """The text of one task's log stream; `task_role=None` means the job's first task role.

        Follows OpenPAI's chain: the task's `containerLog` URL lists `{locations: [{name, uri}]}`, and the
        location named `stream` serves the text.
        """
        key = self.job_key(job_key)
        job = self.get_job(key)
        roles = job.get("taskRoles") or {}
        if not isinstance(roles, dict) or not roles:
            raise PaiError("NoTaskRoleError", f"job {key} has no task roles yet")
        role_name = task_role if task_role is not None else next(iter(roles))
        role = roles.get(role_name)
        if not isinstance(role, dict):
            raise PaiError(
                "NoTaskRoleError", f"job {key} has no task role {role_name!r}; it has: {', '.join(roles)}"
            )
        statuses = role.get("taskStatuses") or []
        if not isinstance(statuses, list) or not 0 <= index < len(statuses):
            count = len(statuses) if isinstance(statuses, list) else 0
            raise PaiError(
                "NoTaskError", f"task role {role_name} of job {key} has no task {index} ({count} tasks)"
            )
        task = statuses[index] if isinstance(statuses[index], dict) else {}
        log_url = task.get("containerLog")
        if not isinstance(log_url, str) or not log_url:
            raise PaiError(
                "NoTaskLogError",
                f"task {role_name}[{index}] of job {key} has no log yet (task state {task.get('taskState')})",
            )
        listing = self._json(self._request("GET", log_url))
        locations = listing.get("locations") if isinstance(listing, dict) else None
        names: list[str] = []
        for location in locations if isinstance(locations, list) else []:
            if not isinstance(location, dict):
                continue
            names.append(str(location.get("name")))
            uri = location.get("uri")
            if location.get("name") == stream and isinstance(uri, str) and uri:
                return self._request("GET", uri).text
        raise PaiError(
            "NoTaskLogError",
            f"task {role_name}[{index}] of job {key} has no {stream} log; "
            f"it has: {', '.join(names) or 'none'}",
        )

    # ---- dead letters (admins) ----------------------------------------------------------------------

    def dead_letters(
        self, service: str | None = None, consumer: str | None = None, after: int = 0, limit: int = 100
    ) -> dict[str, Any]:
        """{data: [summary...], next}: the messages consumers gave up on, oldest first, with their error."""
        params: dict[str, Any] = {"after": after, "limit": limit}
        if service:
            params["service"] = service
        if consumer:
            params["consumer"] = consumer
        found: dict[str, Any] = self._json(self._request("GET", "/api/v2/dead-letters", params=params))
        return found

    def dead_letter(self, seq: int) -> dict[str, Any]:
        letter: dict[str, Any] = self._json(self._request("GET", f"/api/v2/dead-letters/{seq}"))
        return letter

    def replay_dead_letter(self, seq: int) -> dict[str, Any]:
        done: dict[str, Any] = self._json(self._request("POST", f"/api/v2/dead-letters/{seq}/replay"))
        return done

    def wait_for_job(
        self,
        job_key: str,
        states: Collection[str] = FINAL_STATES,
        timeout_s: float | None = None,
        on_state: StateCallback | None = None,
    ) -> JobDict:
        """Poll the job every `poll_interval_s` until its state is in `states`; returns the last detail.

        `on_state(state, job)` is called for the first state seen and then on every change. Raises
        `PaiTimeoutError` after `timeout_s` (None waits for ever).
        """
        key = self.job_key(job_key)
        deadline = None if timeout_s is None else self._clock() + timeout_s
        last: str | None = None
        while True:
            job = self.get_job(key)
            state = job_state(job)
            if state != last:
                last = state
                if on_state is not None:
                    on_state(state, job)
            if state in states:
                return job
            if deadline is not None and self._clock() >= deadline:
                raise PaiTimeoutError(key, state, timeout_s or 0.0)
            self._sleep(self.poll_interval_s)
