"""The gateway while the bus is down: every route that needs the bus answers 503 with Retry-After at once
(not after its RPC timeout), never 500, and a 503 never hides a job that exists.

Real parts: a NATS server of each test's own, killed (SIGKILL, as benchmarks/chaos.py's kill-nats-server)
and started again on the same port and store while the gateway's HTTP app runs; the real jobs service on
the shared MongoDB-wire server. The RPC timeouts are set to minutes and every call is guarded by
asyncio.wait_for with a guard far shorter: an answer within the guard is an answer that did not wait for
the timeout (no wall-clock figure is asserted).
"""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from pai_common import bus_permissions
from pai_common.bus import Bus
from pai_common.contract.base import RpcReply, RpcRequest
from pai_common.contract.rpc import (
    GetJobRequest,
    Identity,
    ReplayDeadLetterRequest,
    ResolveStoragesRequest,
    SubmitJobRequest,
)
from pai_common.embedded import ServerProcess, start_nats, wait_for_port
from pai_common.errors import SERVICE_UNAVAILABLE_RETRY_AFTER_S
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_common.testing import no_storages
from pai_gateway import deps
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings
from pai_jobs.shell import JobsService
from tests.chaos import faults

# Far longer than any guard below: an answer inside a guard did not wait for these.
RPC_TIMEOUT_S = 300.0
GUARD_S = 20.0
YAML = {"Content-Type": "text/yaml"}
ALICE = Identity(username="alice", admin=True, virtual_clusters=["default"])


def job_yaml(name: str) -> str:
    return faults._job(name, {"main": (1, 0, "true")})


async def known_vcs() -> set[str]:
    return {"default"}


@dataclass
class Gateway:
    http: httpx.AsyncClient
    bus: Bus
    nats: ServerProcess

    async def call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request, which must be answered within the guard (a hang fails the test)."""
        return await asyncio.wait_for(self.http.request(method, path, **kwargs), GUARD_S)

    async def kill_nats(self) -> None:
        self.nats.proc.kill()
        self.nats.proc.wait()
        await until(lambda: not self.bus.nc.is_connected)

    async def restart_nats(self) -> None:
        self.nats.respawn()
        await asyncio.to_thread(wait_for_port, self.nats.port, GUARD_S, self.nats.proc)
        await until(lambda: self.bus.nc.is_connected)


async def until(check: Callable[[], bool], guard_s: float = 60.0) -> None:
    """Wait for a condition (a hang guard, not a timing assertion)."""
    async with asyncio.timeout(guard_s):
        while not check():
            await asyncio.sleep(0.02)


def assert_503(response: httpx.Response, *words: str) -> None:
    assert response.status_code == 503, response.text
    body = response.json()
    assert set(body) == {"code", "message"}, body
    assert body["code"] == "ServiceUnavailableError", body
    assert response.headers["Retry-After"] == str(SERVICE_UNAVAILABLE_RETRY_AFTER_S)
    for word in words:
        assert word in body["message"], body


@pytest.fixture
def nats_srv(tmp_path: Path) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path)
    yield server
    server.stop()


def settings() -> GatewaySettings:
    return GatewaySettings(rpc_timeout_s=RPC_TIMEOUT_S, submit_timeout_s=RPC_TIMEOUT_S)


@pytest.fixture
async def gateway(nats_srv: ServerProcess) -> AsyncIterator[Gateway]:
    bus = await Bus.connect(nats_srv.url, "gateway")
    await bus.ensure_streams()
    app = build_http_app(lambda: bus, settings())
    app.dependency_overrides[deps._identity] = lambda: ALICE
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
        yield Gateway(http, bus, nats_srv)
    await bus.close()


@pytest.fixture
async def jobs(nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path: Path) -> AsyncIterator[None]:
    app = ServiceApp(
        "jobs", Settings(nats_url=nats_srv.url, mongo_url=mongo_server.url, data_dir=tmp_path / "jobs")
    )
    JobsService(app, virtual_clusters=known_vcs)
    app.rpc({ResolveStoragesRequest: no_storages})
    app.name = f"jobs_{uuid.uuid4().hex[:8]}"  # a database of this test's own
    await app.start()
    yield
    await app.stop()


async def test_while_the_bus_is_down_every_route_that_needs_it_answers_503_at_once(
    gateway: Gateway, jobs: None
) -> None:
    before = await gateway.call("POST", "/api/v2/jobs", content=job_yaml("before"), headers=YAML)
    assert before.status_code == 202, before.text

    await gateway.kill_nats()
    refused = await gateway.call("POST", "/api/v2/jobs", content=job_yaml("refused"), headers=YAML)
    assert_503(refused, "the request was not sent")
    for method, path in (
        ("GET", "/api/v2/jobs"),
        ("GET", "/api/v2/jobs/alice~before"),
        ("GET", "/api/v2/jobs/counts"),
        ("PUT", "/api/v2/jobs/alice~before/executionType"),
        ("GET", "/api/v2/virtual-clusters"),
        ("GET", "/api/v2/dead-letters"),  # reads JetStream itself, not through an RPC
    ):
        answer = await gateway.call(method, path, json={"value": "STOP"} if method == "PUT" else None)
        assert_503(answer, "bus")

    await gateway.restart_nats()
    # The jobs service is back on the bus once a submission is accepted again (503s until then).
    after = await submit_until_accepted(gateway, "after")
    assert after.status_code == 202, after.text
    # The submission answered 503 was never sent, and was not sent later either: nothing made the job.
    missing = await gateway.call("GET", "/api/v2/jobs/alice~refused")
    assert missing.status_code == 404, missing.text
    assert missing.json()["code"] == "NoJobError"
    listed = await gateway.call("GET", "/api/v2/jobs")
    assert sorted(j["name"] for j in listed.json()) == ["after", "before"]


async def submit_until_accepted(gateway: Gateway, name: str) -> httpx.Response:
    async with asyncio.timeout(120):  # hang guard
        while True:
            answer = await gateway.call("POST", "/api/v2/jobs", content=job_yaml(name), headers=YAML)
            if answer.status_code != 503:
                return answer
            await asyncio.sleep(0.2)


async def test_a_token_is_not_refused_while_the_bus_is_down_it_is_answered_503(
    nats_srv: ServerProcess,
) -> None:
    """Without the identity stand-in: the token check itself is an RPC to auth, so a caller whose token
    cannot be checked gets 503, not 401 (its token may be good) and not 500."""
    bus = await Bus.connect(nats_srv.url, "gateway")
    app = build_http_app(lambda: bus, settings())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        gateway = Gateway(http, bus, nats_srv)
        await gateway.kill_nats()
        answer = await gateway.call("GET", "/api/v2/jobs", headers={"Authorization": "Bearer some-token"})
        assert_503(answer, "the request was not sent")
    await bus.close()


@dataclass
class Holder:
    """A stand-in for a service that takes requests and keeps them (so that they are in flight)."""

    taken: asyncio.Event
    bus: Bus


async def holding(nats: ServerProcess, *req_types: type[RpcRequest]) -> Holder:
    taken = asyncio.Event()
    bus = await Bus.connect(nats.url, "holder")

    async def hold(req: RpcRequest) -> RpcReply:
        taken.set()
        await asyncio.Event().wait()  # never answers: the bus goes down first
        raise AssertionError("unreachable")

    await bus.serve_rpc(dict.fromkeys(req_types, hold))
    return Holder(taken, bus)


async def test_a_request_in_flight_when_the_bus_drops_is_answered_at_once_outcome_unknown(
    gateway: Gateway,
) -> None:
    holder = await holding(gateway.nats, GetJobRequest, SubmitJobRequest)
    try:
        for method, path, body, words in (
            ("GET", "/api/v2/jobs/alice~held", None, ("whether it acted is not known",)),
            # A submission that may have reached the jobs service is not said to have failed: whether the
            # job exists is not known, and the same submission sent again tells (202 if it exists).
            ("POST", "/api/v2/jobs", job_yaml("held"), ("whether the job was created is not known",)),
        ):
            holder.taken.clear()
            request = asyncio.create_task(
                gateway.call(method, path, content=body, headers=YAML if body else None)
            )
            await asyncio.wait_for(holder.taken.wait(), GUARD_S)
            assert not request.done()
            await gateway.kill_nats()
            assert_503(await request, *words)
            await gateway.restart_nats()
    finally:
        await holder.bus.close()


async def test_a_service_with_no_responder_is_503_at_once(gateway: Gateway) -> None:
    """The bus is up but the jobs service is not running (restarting): 503 after NO_RESPONDERS_WAIT_S."""
    answer = await gateway.call("POST", "/api/v2/jobs", content=job_yaml("nobody"), headers=YAML)
    assert_503(answer, "service jobs is not running")
    answer = await gateway.call("GET", "/api/v2/jobs/alice~nobody")
    assert_503(answer, "service jobs is not running")


# A jobs service that takes requests and never answers, in a process of its own (so that it can be killed).
HOLDER = """
import asyncio, sys
from pai_common import bus_permissions
from pai_common.bus import Bus
from pai_common.contract.rpc import GetJobRequest, SubmitJobRequest

async def main() -> None:
    bus = await Bus.connect(sys.argv[1], "jobs")

    async def hold(req):
        print("taken", flush=True)
        await asyncio.Event().wait()

    await bus.serve_rpc({GetJobRequest: hold, SubmitJobRequest: hold})
    print("ready", flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""


async def start_holder(nats: ServerProcess) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", HOLDER, nats.url, stdout=asyncio.subprocess.PIPE
    )
    assert proc.stdout is not None
    assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"
    return proc


async def test_a_request_whose_service_dies_with_it_is_answered_at_once_outcome_unknown(
    gateway: Gateway,
) -> None:
    """SIGKILL of the service that had the request (benchmarks/chaos.py's kill-jobs, kill-several): the
    bus stays up, no answer will ever come, and the gateway learns it from NATS micro discovery (no
    instance of the service runs any more) instead of waiting for its timeout."""
    for method, path, body, words in (
        ("GET", "/api/v2/jobs/alice~held", None, ("service jobs stopped running", "not known")),
        ("POST", "/api/v2/jobs", job_yaml("held"), ("whether the job was created is not known",)),
    ):
        holder = await start_holder(gateway.nats)
        assert holder.stdout is not None
        try:
            request = asyncio.create_task(
                gateway.call(method, path, content=body, headers=YAML if body else None)
            )
            assert await asyncio.wait_for(holder.stdout.readline(), GUARD_S) == b"taken\n"
            # The gateway has seen the jobs service running under its own name (learnt on the first
            # request to it): from then on, no instance running means nobody has the request.
            await until(lambda: gateway.bus.responders.seen("jobs"))
            assert not request.done()
            holder.kill()
            await holder.wait()
            assert_503(await request, *words)
        finally:
            if holder.returncode is None:
                holder.kill()
                await holder.wait()


async def test_a_request_whose_taker_was_replaced_at_once_is_not_waited_for(gateway: Gateway) -> None:
    """The blind spot of benchmarks/chaos.py's kill-jobs (31 s in one run of three): the killed jobs service
    was back (pai up restarts it in about 2 s) before the watch looked, and the watch followed the new
    instance, which never had the request. An instance that started after the request was sent is not
    waited for: the request is answered 503 "not known" at once."""
    holder = await start_holder(gateway.nats)
    assert holder.stdout is not None
    replacement: asyncio.subprocess.Process | None = None
    try:
        request = asyncio.create_task(gateway.call("GET", "/api/v2/jobs/alice~held"))
        assert await asyncio.wait_for(holder.stdout.readline(), GUARD_S) == b"taken\n"
        await until(lambda: gateway.bus.responders.seen("jobs"))
        # The replacement runs before the taker dies, so whenever the watch looks, it finds it running.
        replacement = await start_holder(gateway.nats)
        holder.kill()
        await holder.wait()
        assert_503(await request, "service jobs stopped running", "not known")
    finally:
        for proc in (holder, replacement):
            if proc is not None and proc.returncode is None:
                proc.kill()
                await proc.wait()


async def test_a_stopped_service_still_holds_its_request_which_waits_for_it(nats_srv: ServerProcess) -> None:
    """SIGSTOP (a slow, not dead, service): its subscriptions stay, so the request is not given up as lost;
    it waits for its timeout (here a short one, past the watch's first rounds) as before."""
    bus = await Bus.connect(nats_srv.url, "gateway")
    app = build_http_app(lambda: bus, GatewaySettings(rpc_timeout_s=8.0))
    app.dependency_overrides[deps._identity] = lambda: ALICE
    holder = await start_holder(nats_srv)
    assert holder.stdout is not None
    try:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as http:
            request = asyncio.create_task(asyncio.wait_for(http.get("/api/v2/jobs/alice~held"), 60))
            assert await asyncio.wait_for(holder.stdout.readline(), GUARD_S) == b"taken\n"
            await until(lambda: bus.responders.seen("jobs"))
            holder.send_signal(signal.SIGSTOP)
            assert_503(await request, "service jobs did not answer in 8s")
    finally:
        holder.kill()
        await holder.wait()
        await bus.close()


async def test_a_service_is_discoverable_under_the_platform_bus_permissions(tmp_path: Path) -> None:
    """The watch above needs every service to answer $SRV.PING from the gateway on a secured bus (`pai up`'s
    users and permissions). A service with consumers registers endpoints twice (its RPCs, then each
    consumer's dead-letter replay); as two micro services they answered each PING twice on one
    connection, the server refused both answers, and the service looked absent."""
    users = {s: (f"pw-{s}", bus_permissions.service_permissions(s)) for s in ("gateway", "jobs")}
    server = start_nats(tmp_path, authorization=bus_permissions.nats_config(users))

    def url(user: str) -> str:
        return server.url.replace("nats://", f"nats://{user}:pw-{user}@")

    jobs = await Bus.connect(url("jobs"), "jobs")
    gateway = await Bus.connect(url("gateway"), "gateway")
    try:
        await jobs.serve_rpc({GetJobRequest: _unanswered})
        await jobs.serve_rpc({ReplayDeadLetterRequest: _unanswered}, target="jobs")
        found = await gateway.responders.instances("jobs")
        assert found is not None and len(found) == 1, found
    finally:
        await gateway.close()
        await jobs.close()
        server.stop()


async def _unanswered(req: RpcRequest) -> RpcReply:
    raise AssertionError("not asked here")
