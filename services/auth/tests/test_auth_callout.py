"""The NATS auth callout (pai_auth.callout) on a real nats-server configured with ``auth_callout``: a node
agent that presents its pod's service-account token gets its own node's user and nothing more; a token the
API server does not vouch for, one bound to another audience or another service account, or one whose
review names no node, gets no user at all. The TokenReview is answered by a small API server of the test's
own, which parses each request and builds each answer with the official client's models (V1TokenReview:
the Kubernetes API schema), over HTTP through the client's real request path. About 3 s.
"""

from __future__ import annotations

import asyncio
import base64
import json
import threading
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import nats
import pytest
from kubernetes import client as k8s
from nats.aio.client import Client
from nats.js.api import AckPolicy, ConsumerConfig

from pai_auth.callout import jwt
from pai_auth.callout.__main__ import serve
from pai_auth.callout.decision import NODE_NAME_KEY, Policy, Refused, Review, node_of, user_claims
from pai_auth.callout.settings import CalloutSettings
from pai_common import bus_permissions
from pai_common.bus import COMMANDS_STREAM, EVENTS_STREAM, Bus
from pai_common.contract.commands import KillTask
from pai_common.contract.events import JobCompleted
from pai_common.embedded import ServerProcess, start_nats
from pai_common.envelope import encode

AUDIENCE = "pai-nats"
AGENTS = "system:serviceaccount:pai:pai-runtime"
POLICY = Policy(AUDIENCE, AGENTS)
REFUSED_S = 0.5  # a refused request gets no answer: how long to wait for none
TOKEN_REVIEWS = "/apis/authentication.k8s.io/v1/tokenreviews"


def _sa_token(name: str, exp: int) -> str:
    """A token shaped like a projected service-account token (the fake API server decides what it is)."""
    claims = base64.urlsafe_b64encode(json.dumps({"exp": exp, "sub": name}).encode()).decode().rstrip("=")
    return f"eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln-{name}"


EXP = int(time.time()) + 3600
TOKENS = {name: _sa_token(name, EXP) for name in ("a", "b", "expired", "audience", "no-node", "other-sa")}


def _status(name: str, audiences: list[str]) -> k8s.V1TokenReviewStatus:
    """What a real API server answers for each of the test's tokens."""

    def user(username: str, node: str | None) -> k8s.V1UserInfo:
        extra = {"authentication.kubernetes.io/pod-name": [f"runtime-{name}"]}
        if node:
            extra[NODE_NAME_KEY] = [node]
        return k8s.V1UserInfo(username=username, uid="9d2e", groups=["system:serviceaccounts"], extra=extra)

    if name in ("a", "b") and AUDIENCE in audiences:
        return k8s.V1TokenReviewStatus(
            authenticated=True, audiences=[AUDIENCE], user=user(AGENTS, f"node-{name}")
        )
    if name == "no-node":  # a token not bound to a pod, or a cluster before 1.30
        return k8s.V1TokenReviewStatus(authenticated=True, audiences=[AUDIENCE], user=user(AGENTS, None))
    if name == "other-sa":  # any pod may ask for a token with our audience for its own account
        other = "system:serviceaccount:default:curious"
        return k8s.V1TokenReviewStatus(authenticated=True, audiences=[AUDIENCE], user=user(other, "node-a"))
    if name == "expired":
        return k8s.V1TokenReviewStatus(authenticated=False, audiences=[], error="token has expired")
    return k8s.V1TokenReviewStatus(
        authenticated=False,
        audiences=[],
        error='token audiences ["https://kubernetes.default.svc"] is invalid',
    )


@dataclass
class FakeApiServer:
    url: str = ""
    reviewed: list[dict[str, Any]] = field(default_factory=list)

    def handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self
        api = k8s.ApiClient()

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                assert self.path == TOKEN_REVIEWS, self.path
                # The request, read as the API server's schema reads it.
                review = api._ApiClient__deserialize(body, "V1TokenReview")
                assert (review.api_version, review.kind) == ("authentication.k8s.io/v1", "TokenReview")
                outer.reviewed.append(body)
                name = next((n for n, t in TOKENS.items() if t == review.spec.token), "unknown")
                answer = k8s.V1TokenReview(
                    api_version="authentication.k8s.io/v1",
                    kind="TokenReview",
                    metadata=k8s.V1ObjectMeta(creation_timestamp=None),
                    spec=review.spec,
                    status=_status(name, review.spec.audiences or []),
                )
                data = json.dumps(api.sanitize_for_serialization(answer)).encode()
                self.send_response(201)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler


@dataclass
class Cluster:
    server: ServerProcess
    users: dict[str, tuple[str, bus_permissions.Permissions]]
    api: FakeApiServer
    token_dir: Path

    def url(self, user: str) -> str:
        return bus_permissions.url_for(self.server.url, user, self.users[user][0])

    def token_file(self, name: str) -> Path:
        path = self.token_dir / name
        path.write_text(TOKENS.get(name, name) + "\n")
        return path


@pytest.fixture(scope="module")
def api_server() -> Iterator[FakeApiServer]:
    fake = FakeApiServer()
    server = ThreadingHTTPServer(("127.0.0.1", 0), fake.handler())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    fake.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield fake
    server.shutdown()


@pytest.fixture(scope="module")
async def cluster(
    tmp_path_factory: pytest.TempPathFactory, api_server: FakeApiServer
) -> AsyncIterator[Cluster]:
    seed = jwt.new_account_seed()
    users = {
        bus_permissions.CALLOUT: ("callout-pw-0123456789abcdef", bus_permissions.callout_permissions()),
        bus_permissions.OPERATOR: ("operator-pw-0123456789abcdef", bus_permissions.operator_permissions()),
    }
    config = bus_permissions.nats_config(users, callout_issuer=jwt.public_key(seed))
    data = tmp_path_factory.mktemp("callout")
    server = start_nats(data, authorization=config)
    cluster = Cluster(server, users, api_server, data)
    # The process as its Deployment runs it (python -m pai_auth.callout's serve), on this test's API server.
    (data / "seed").write_text(seed + "\n")
    settings = CalloutSettings(
        nats_url=cluster.url(bus_permissions.CALLOUT),
        callout_issuer_seed_file=data / "seed",
        callout_audience=AUDIENCE,
        callout_service_account=AGENTS,
        k8s_in_cluster=False,
        k8s_host=api_server.url,
    )
    stop, ready = asyncio.Event(), asyncio.Event()
    callout = asyncio.create_task(serve(settings, stop, ready))
    await asyncio.wait_for(ready.wait(), 10)
    operator = await Bus.connect(cluster.url(bus_permissions.OPERATOR), "operator")
    await operator.ensure_streams()
    await operator.close()
    yield cluster
    stop.set()
    await callout
    server.stop()


@dataclass
class Agent:
    bus: Bus
    errors: list[str]

    async def refused(self, part: str) -> None:
        for _ in range(100):
            if any("permissions violation" in e.lower() and part.lower() in e.lower() for e in self.errors):
                return
            await asyncio.sleep(0.05)
        raise AssertionError(f"no permission violation for {part!r}: {self.errors}")


async def _agent(cluster: Cluster, node: str, token: str) -> Agent:
    """A node agent's connection as the runtime makes it (Bus.connect with its token file)."""
    bus = await Bus.connect(
        cluster.server.url,
        "runtime",
        token_file=cluster.token_file(token),
        inbox_user=bus_permissions.node_durable(node),
    )
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    bus.nc._error_cb = on_error
    return Agent(bus, errors)


async def test_a_node_agent_gets_its_own_node_s_user_and_nothing_more(cluster: Cluster) -> None:
    operator = await Bus.connect(cluster.url(bus_permissions.OPERATOR), "operator")
    for node in ("node-a", "node-b"):
        kill = KillTask(job_key="a~b", attempt_id=0, task_role="r", index=0, node=node, reason="test")
        await operator.send_command(kill, node)
    events_before = (await operator.js.stream_info(EVENTS_STREAM)).state.messages

    agent = await _agent(cluster, "node-a", "a")
    js = agent.bus.nc.jetstream(timeout=REFUSED_S)
    own = bus_permissions.node_durable("node-a")
    config = ConsumerConfig(
        durable_name=own,
        name=own,
        ack_policy=AckPolicy.EXPLICIT,
        filter_subjects=["pai.cmd.runtime.node-a.>"],
    )
    await js.add_consumer(COMMANDS_STREAM, config=config)
    sub = await js.pull_subscribe_bind(durable=own, stream=COMMANDS_STREAM)
    [mine] = await sub.fetch(1, timeout=10)
    assert json.loads(mine.data)["node"] == "node-a"
    await mine.ack()
    # The API server was asked about the agent's token, for the platform's audience.
    assert {"token": TOKENS["a"], "audiences": [AUDIENCE]} in [r["spec"] for r in cluster.api.reviewed]

    # node-b's consumer, a consumer of its own on node-b's subjects, a plain subscription to them:
    other = bus_permissions.node_durable("node-b")
    with pytest.raises(Exception):  # noqa: B017 - a refused request gets no answer
        await js.add_consumer(
            COMMANDS_STREAM,
            config=ConsumerConfig(
                durable_name=other, name=other, filter_subjects=["pai.cmd.runtime.node-b.>"]
            ),
        )
    await agent.refused(f"CONSUMER.CREATE.{COMMANDS_STREAM}.{other}")
    await agent.bus.nc.subscribe("pai.cmd.runtime.node-b.>")
    await agent.refused("pai.cmd.runtime.node-b.>")
    await agent.bus.nc.publish("pai.hb.node-b", b"{}")
    await agent.refused("pai.hb.node-b")
    # A job event:
    _, headers, payload = encode(
        JobCompleted(job_key="a~b", state="SUCCEEDED", exit_code=0, completed_at=1), "runtime"
    )
    with pytest.raises(Exception):  # noqa: B017 - no PubAck comes for a refused publish
        await agent.bus.js.publish("pai.evt.job.completed", payload, headers=headers, timeout=REFUSED_S)
    await agent.refused("pai.evt.job.completed")
    assert (await operator.js.stream_info(EVENTS_STREAM)).state.messages == events_before
    # node-b's command is still there, for node-b's own agent.
    agent_b = await _agent(cluster, "node-b", "b")
    js_b = agent_b.bus.nc.jetstream(timeout=REFUSED_S)
    config_b = ConsumerConfig(
        durable_name=other,
        name=other,
        ack_policy=AckPolicy.EXPLICIT,
        filter_subjects=["pai.cmd.runtime.node-b.>"],
    )
    await js_b.add_consumer(COMMANDS_STREAM, config=config_b)
    [theirs] = await (await js_b.pull_subscribe_bind(durable=other, stream=COMMANDS_STREAM)).fetch(
        1, timeout=10
    )
    assert json.loads(theirs.data)["node"] == "node-b"
    for bus in (agent.bus, agent_b.bus, operator):
        await bus.close()


async def _refused_connect(cluster: Cluster, token: str | None) -> str:
    errors: list[str] = []

    async def on_error(exc: Exception) -> None:
        errors.append(str(exc))

    nc: Client | None = None
    with pytest.raises(Exception) as refused:
        nc = await nats.connect(
            cluster.server.url,
            token=TOKENS.get(token, token) if token else None,
            allow_reconnect=False,
            connect_timeout=5,
            error_cb=on_error,
        )
    if nc is not None:
        await nc.close()
    return " ".join([str(refused.value), *errors]).lower()


WHY = {
    "expired": "not authenticated: token has expired",
    "audience": "not authenticated: token audiences",
    "no-node": "names no node",
    "other-sa": "default:curious', not the node agents'",
    "not-a-token": "not authenticated",
    None: "presented no token",
}


@pytest.mark.parametrize("token", list(WHY))
async def test_a_connection_without_a_node_agent_s_valid_token_gets_no_user(
    cluster: Cluster, token: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="pai.auth.callout")
    assert "authorization violation" in await _refused_connect(cluster, token)
    # Refused by the callout, for the reason of that token (and the token itself is never logged).
    reasons = [
        getattr(r, "reason", "") for r in caplog.records if r.message == "auth callout: connection refused"
    ]
    assert any(WHY[token] in reason for reason in reasons), reasons
    assert not any(t in caplog.text for t in TOKENS.values())


def test_the_decision_names_why_it_refuses() -> None:
    def review(**kw: Any) -> Review:
        base: dict[str, Any] = {
            "authenticated": True,
            "audiences": [AUDIENCE],
            "username": AGENTS,
            "extra": {NODE_NAME_KEY: ["ip-10-0-0-1.ec2.internal"]},
        }
        return Review(**(base | kw))

    assert node_of(review(), POLICY) == "ip-10-0-0-1.ec2.internal"
    cases = {
        "token has expired": review(authenticated=False, error="token has expired"),
        "not bound to the audience": review(audiences=["https://kubernetes.default.svc"]),
        "not the node agents'": review(username="system:serviceaccount:default:curious"),
        "no shared node user": review(extra={}),
        "2 nodes": review(extra={NODE_NAME_KEY: ["node-a", "node-b"]}),
        "not a valid node name": review(extra={NODE_NAME_KEY: ["node-a.>"]}),
    }
    for reason, case in cases.items():
        with pytest.raises(Refused, match=reason):
            node_of(case, POLICY)
    # The user it makes has node-a's rights of pai up, named as pai up names it, and ends with its token.
    claims = user_claims("node-a", "UABC", expires_at=EXP)
    expected = bus_permissions.node_permissions("node-a").to_nats()
    assert claims["nats"]["pub"] == expected["publish"] and claims["nats"]["sub"] == expected["subscribe"]
    assert (claims["name"], claims["aud"], claims["exp"]) == ("runtime-node-a", "$G", EXP)


def test_jwts_are_signed_by_their_issuer_and_tampering_is_seen() -> None:
    seed = jwt.new_account_seed()
    token = jwt.encode({"sub": "UABC", "nats": {"type": "user"}}, jwt.keypair(seed))
    claims = jwt.decode(token, issuer_prefix="A")
    assert claims["iss"] == jwt.public_key(seed) and claims["sub"] == "UABC"
    header, _body, sig = token.split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims | {"sub": "UXYZ"}).encode()).decode().rstrip("=")
    with pytest.raises(jwt.JwtError, match="signature"):
        jwt.decode(f"{header}.{forged}.{sig}")
    with pytest.raises(jwt.JwtError, match="kind 'N'"):
        jwt.decode(token, issuer_prefix="N")
