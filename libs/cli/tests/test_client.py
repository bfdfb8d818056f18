"""Unit tests of the SDK's transport: errors, retries, where the token goes, the fallbacks for a server
without the job stream.

``httpx.MockTransport`` stands in for the server here only for what a running platform cannot be made to
do on demand (a 503 with Retry-After, a log on another host, a stock OpenPAI without the stream); the
SDK and the CLI against the real platform are tested in ``tests/acceptance/test_sdk.py`` and
``test_cli_surface.py``.
"""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import httpx
import pytest

from pai_cli import AsyncPaiClient, PaiClient, errors, routes
from pai_cli.models import FINAL_STATES, JobDetail
from pai_cli.transport import RetryPolicy, retry_after_s

BASE = "http://pai.test"
HELLO_YAML = "protocolVersion: 2\nname: hello\ntype: job\n"

Handler = Callable[[httpx.Request], httpx.Response]


class Recorder:
    """Wraps a handler and keeps every request it saw."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.handler(request)


def make_client(
    handler: Handler, sleeps: list[float] | None = None, **kwargs: Any
) -> tuple[PaiClient, Recorder]:
    recorder = Recorder(handler)
    sink = sleeps if sleeps is not None else []
    return PaiClient(BASE, transport=httpx.MockTransport(recorder), sleep=sink.append, **kwargs), recorder


def closed_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def job_detail(state: str, task_roles: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "name": "hello",
        "jobStatus": {"username": "alice", "state": state},
        "taskRoles": task_roles or {},
    }


# ---- errors ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("response", "kind", "code", "message"),
    [
        (
            httpx.Response(
                409, json={"code": "ConflictJobError", "message": "Job alice~hello already exists."}
            ),
            errors.ConflictError,
            "ConflictJobError",
            "Job alice~hello already exists.",
        ),
        (
            httpx.Response(401, json={"code": "UnauthorizedUserError", "message": "Your token is invalid."}),
            errors.UnauthorizedError,
            "UnauthorizedUserError",
            "Your token is invalid.",
        ),
        (
            httpx.Response(400, json={"code": "InvalidProtocolError", "message": "taskRoles: required"}),
            errors.InvalidRequestError,
            "InvalidProtocolError",
            "taskRoles: required",
        ),
        (
            httpx.Response(403, json={"code": "ForbiddenUserError", "message": "no"}),
            errors.ForbiddenError,
            "ForbiddenUserError",
            "no",
        ),
        (httpx.Response(500, text="boom"), errors.ServerError, "Internal Server Error", "boom"),
        # express-rate-limit answers in plain text: the raw text becomes the message.
        (
            httpx.Response(429, text="Too many requests, please try again later."),
            errors.RateLimitedError,
            "Too Many Requests",
            "Too many requests, please try again later.",
        ),
        (
            httpx.Response(422, json={"detail": "bad body"}),
            errors.InvalidRequestError,
            "Unprocessable Entity",
            "bad body",
        ),
    ],
)
def test_each_failure_has_its_error_type(
    response: httpx.Response, kind: type[errors.PaiApiError], code: str, message: str
) -> None:
    client, _ = make_client(lambda r: response, token="t", username="alice", retry=RetryPolicy(max_retries=0))
    with pytest.raises(kind) as info:
        client.submit_job(HELLO_YAML)
    assert (info.value.status, info.value.code, info.value.message) == (response.status_code, code, message)


def test_connection_refused_becomes_connection_error_naming_the_url() -> None:
    url = f"http://127.0.0.1:{closed_port()}"
    with (
        PaiClient(url, token="t", username="alice") as client,
        pytest.raises(errors.PaiConnectionError) as info,
    ):
        client.get_job("hello")
    assert info.value.url == url and url in info.value.message and "pai up" in info.value.message


def test_an_answer_of_the_wrong_shape_is_an_invalid_response() -> None:
    client, _ = make_client(lambda r: httpx.Response(200, json={"jobStatus": "nope"}), token="t")
    with pytest.raises(errors.InvalidResponseError, match="unexpected shape"):
        client.get_job("bob~train")


def test_bare_job_names_need_a_user() -> None:
    client, rec = make_client(lambda r: httpx.Response(200, json=job_detail("RUNNING")), token="t")
    assert client.get_job("bob~train").state == "RUNNING"
    assert rec.requests[0].url.path == "/api/v2/jobs/bob~train"
    with pytest.raises(errors.PaiError) as info:
        client.get_job("train")
    assert info.value.code == "NoUserError" and len(rec.requests) == 1


# ---- retries --------------------------------------------------------------------------------------------


def scripted(*responses: httpx.Response) -> Handler:
    remaining = list(responses)
    return lambda request: remaining.pop(0) if len(remaining) > 1 else remaining[0]


def busy(status: int, retry_after: str | None = None) -> httpx.Response:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return httpx.Response(status, json={"code": "X", "message": "busy"}, headers=headers)


def test_429_is_retried_after_what_the_server_asks_even_for_a_submission() -> None:
    sleeps: list[float] = []
    client, rec = make_client(
        scripted(busy(429, "2"), busy(429, "1"), httpx.Response(202, json={"status": 202, "message": "ok"})),
        sleeps,
        token="t",
        username="alice",
    )
    assert client.submit_job(HELLO_YAML) == "alice~hello"
    assert sleeps == [2.0, 1.0] and len(rec.requests) == 3


def test_503_is_retried_only_for_idempotent_requests() -> None:
    sleeps: list[float] = []
    client, rec = make_client(
        scripted(busy(503), httpx.Response(200, json=job_detail("RUNNING"))), sleeps, token="t"
    )
    assert client.get_job("a~b").state == "RUNNING"
    assert sleeps == [0.5]
    # A job submission names its job: sent again, it answers for the job that exists, never a second one.
    sleeps.clear()
    client, rec = make_client(
        scripted(busy(503, "1"), httpx.Response(202, json={"status": 202, "message": "ok"})),
        sleeps,
        token="t",
        username="alice",
    )
    assert client.submit_job(HELLO_YAML) == "alice~hello"
    assert sleeps == [1.0] and len(rec.requests) == 2
    assert rec.requests[0].content == rec.requests[1].content
    # Another POST that timed out may have been acted on: it goes back to the caller, not to the server.
    client, rec = make_client(scripted(busy(503, "1")), sleeps, token="t")
    with pytest.raises(errors.ServiceUnavailableError) as info:
        client._run(routes.replay_dead_letter(client, 7))
    assert len(rec.requests) == 1 and info.value.retry_after_s == 1.0


def test_retries_are_bounded_in_number_and_in_wait() -> None:
    sleeps: list[float] = []
    client, rec = make_client(scripted(busy(429, "1")), sleeps, token="t", retry=RetryPolicy(max_retries=2))
    with pytest.raises(errors.RateLimitedError):
        client.list_users()
    assert len(rec.requests) == 3 and sleeps == [1.0, 1.0]
    client, rec = make_client(scripted(busy(429, "900")), sleeps, token="t")
    with pytest.raises(errors.RateLimitedError) as info:
        client.list_users()
    assert len(rec.requests) == 1 and info.value.retry_after_s == 900.0


def test_retry_after_as_an_http_date() -> None:
    response = httpx.Response(429, headers={"Retry-After": "Wed, 21 Oct 2015 07:28:10 GMT"})
    assert retry_after_s(response, now=1445412480.0) == 10.0


async def test_the_async_client_retries_too() -> None:
    sleeps: list[float] = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    responses = [busy(429, "3"), httpx.Response(200, json=[{"username": "a"}])]
    transport = httpx.MockTransport(lambda r: responses.pop(0))
    async with AsyncPaiClient(BASE, token="t", transport=transport, sleep=sleep) as client:
        users = await client.list_users()
    assert [u.username for u in users] == ["a"] and sleeps == [3.0]


# ---- where the token goes -------------------------------------------------------------------------------


def log_server(stdout_uri: str) -> Handler:
    roles = {"worker": {"taskStatuses": [{"taskIndex": 0, "taskState": "RUNNING", "containerLog": "/logs"}]}}

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/logs":
            return httpx.Response(200, json={"locations": [{"name": "stdout", "uri": stdout_uri}]})
        if request.url.host == "log-manager.other":
            return httpx.Response(200, text="from elsewhere\n")
        return httpx.Response(200, json=job_detail("RUNNING", roles))

    return handler


def test_the_token_never_goes_to_another_host() -> None:
    client, rec = make_client(log_server("http://log-manager.other/x"), token="tok")
    assert client.task_log("alice~hello") == "from elsewhere\n"
    assert rec.requests[0].headers["authorization"] == "Bearer tok"
    assert (
        rec.requests[-1].url.host == "log-manager.other" and "authorization" not in rec.requests[-1].headers
    )


# ---- a server without the job stream (a stock OpenPAI) --------------------------------------------------


def no_stream(states: list[str]) -> Handler:
    remaining = list(states)

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/stream"):
            return httpx.Response(404, json={"code": "NoApiError", "message": "API not found"})
        state = remaining.pop(0) if len(remaining) > 1 else remaining[0]
        return httpx.Response(200, json=job_detail(state))

    return handler


def test_wait_for_job_polls_where_there_is_no_stream() -> None:
    sleeps: list[float] = []
    client, _ = make_client(no_stream(["WAITING", "RUNNING", "RUNNING", "SUCCEEDED"]), sleeps)
    seen: list[str] = []
    job = client.wait_for_job("alice~hello", on_state=lambda state, job: seen.append(state))
    assert isinstance(job, JobDetail) and job.state == "SUCCEEDED" and job.state in FINAL_STATES
    assert seen == ["WAITING", "RUNNING", "SUCCEEDED"] and sleeps == [0.5, 0.5, 0.5]


def test_wait_for_job_times_out() -> None:
    now = [0.0]
    client, _ = make_client(no_stream(["RUNNING"]), clock=lambda: now[0])
    client._sleep = lambda s: now.__setitem__(0, now[0] + s)
    with pytest.raises(errors.PaiTimeoutError) as info:
        client.wait_for_job("alice~hello", timeout_s=2.0)
    assert info.value.state == "RUNNING"


def test_a_yaml_the_server_accepts_with_a_tab_after_a_key_is_named_right() -> None:
    # The jobs service reads YAML with libyaml, which (like js-yaml) allows a tab after `key:`; PyYAML's pure
    # parser refuses it, and the CLI used to say "cannot be read back" for a job that was running.
    client, rec = make_client(
        scripted(httpx.Response(202, json={"status": 202, "message": "ok"})), [], token="t", username="alice"
    )
    assert client.submit_job("protocolVersion:\t2\nname:\ttabbed\ntype: job\n") == "alice~tabbed"
    assert len(rec.requests) == 1
