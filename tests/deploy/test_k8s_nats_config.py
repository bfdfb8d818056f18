"""The shipped NATS configuration run by a real nats-server, with the certificates and passwords that
deploy/k8s/make-secrets.sh makes: services connect over TLS as their own users and may publish only what
the contract names them the producer of. About 5 s.

What differs from the cluster, and why: one server instead of three (the `cluster {}` block, whose routes
name the StatefulSet's pods, is left out), and the ports and the store directory are this machine's. The
`tls {}` and `authorization {}` blocks are the shipped ones, verbatim.
"""

from __future__ import annotations

import asyncio
import base64
import os
import re
import subprocess
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from nats.errors import Error as NatsError
from nats.errors import TimeoutError as NatsTimeoutError

from pai_common import bus_permissions
from pai_common.bus import Bus
from pai_common.embedded import _binary, free_port, wait_for_port
from tests.deploy.manifests import K8S, by_name, nats_users, render

SERVICES = sorted(p.name for p in (K8S.parents[1] / "services").iterdir() if (p / "pyproject.toml").is_file())


@dataclass
class ShippedNats:
    port: int
    ca: Path
    passwords: dict[str, str]
    callout_seed: str

    def url(self, user: str, password: str | None = None) -> str:
        return f"tls://{user}:{password or self.passwords[user]}@localhost:{self.port}"


def _secret(folder: Path, name: str) -> dict[str, str]:
    doc = yaml.safe_load((folder / f"{name}.yaml").read_text())
    return {k: base64.b64decode(v).decode() for k, v in doc["data"].items()}


@pytest.fixture(scope="module")
def shipped_nats(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ShippedNats]:
    tmp = tmp_path_factory.mktemp("shipped-nats")
    secrets = tmp / "secrets"
    subprocess.run(
        [str(K8S / "make-secrets.sh"), "--out", str(secrets), "--no-apply"], check=True, timeout=120
    )
    tls = tmp / "nats-tls"
    tls.mkdir()
    for key, value in _secret(secrets, "nats-tls").items():
        (tls / key).write_text(value)
    passwords = _secret(secrets, "pai-nats-users")

    conf = by_name(render(K8S / "overlays" / "production"), "ConfigMap")["nats-config"]["data"]["nats.conf"]
    port, http = free_port(), free_port()
    conf = re.sub(r"^cluster \{.*?^\}\n", "", conf, flags=re.DOTALL | re.MULTILINE)
    assert "routes" not in conf
    conf = conf.replace("listen: 0.0.0.0:4222", f"listen: 127.0.0.1:{port}")
    conf = conf.replace("http: 0.0.0.0:8222", f"http: 127.0.0.1:{http}")
    conf = conf.replace("store_dir: /data", f"store_dir: {tmp / 'store'}")
    conf = conf.replace("/etc/nats-tls/", f"{tls}/")
    (tmp / "nats.conf").write_text(conf)

    callout = _secret(secrets, "pai-nats-callout")
    env = {**os.environ, "POD_NAME": "nats-0", "NATS_CALLOUT_ISSUER": callout["issuer"]}
    env.update({nats_users.password_env(s): pw for s, pw in passwords.items()})
    log = open(tmp / "nats.log", "wb")
    proc = subprocess.Popen(
        [_binary("nats-server"), "-c", str(tmp / "nats.conf")], env=env, stdout=log, stderr=log
    )
    try:
        wait_for_port(port, 20.0, proc)
        yield ShippedNats(port, tls / "ca.crt", passwords, callout["seed"])
    finally:
        proc.terminate()
        proc.wait(10)


class _Errors:
    """The asynchronous errors the server sent this connection (permission violations arrive so)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    async def record(self, exc: Exception) -> None:
        self.seen.append(str(exc))


async def _connect(nats: ShippedNats, user: str) -> tuple[Bus, _Errors]:
    import ssl

    import nats as nats_client

    errors = _Errors()
    context = ssl.create_default_context(cafile=str(nats.ca))
    nc = await nats_client.connect(
        nats.url(user),
        tls=context,
        error_cb=errors.record,
        allow_reconnect=False,
        # Each user's replies arrive in an inbox of its own (pai_common.bus_permissions).
        inbox_prefix=bus_permissions.inbox_prefix(user),
    )
    return Bus(nc, user), errors


@pytest.fixture
async def runtime_bus(shipped_nats: ShippedNats) -> AsyncIterator[tuple[Bus, _Errors]]:
    # The streams are the services' to create; a node agent only waits for them.
    service = await Bus.connect(shipped_nats.url("jobs"), "jobs", shipped_nats.ca)
    await service.ensure_streams(1)
    await service.close()
    bus, errors = await _connect(shipped_nats, "orchestrator")
    yield bus, errors
    await bus.close()


async def test_a_service_connects_over_tls_as_itself_and_publishes_its_events(
    shipped_nats: ShippedNats,
) -> None:
    # The way every service connects (ServiceApp): its URL with its password, the platform's CA.
    bus = await Bus.connect(shipped_nats.url("jobs"), "jobs", shipped_nats.ca)
    try:
        await bus.ensure_streams(1)
        ack = await bus.js.publish("pai.evt.job.submitted", b"{}", timeout=5)
        assert ack.stream == "PAI_EVENTS"
    finally:
        await bus.close()


async def test_a_service_may_not_publish_another_services_events(runtime_bus: tuple[Bus, Any]) -> None:
    bus, errors = runtime_bus
    await bus.ensure_streams(1, create=False)
    assert (await bus.js.publish("pai.evt.framework.changed", b"{}", timeout=5)).stream == "PAI_EVENTS"
    with pytest.raises((NatsTimeoutError, asyncio.TimeoutError)):
        await bus.js.publish("pai.evt.job.submitted", b"{}", timeout=1)  # the jobs service's event
    await bus.nc.flush()
    assert any("permissions violation for publish" in e.lower() for e in errors.seen), errors.seen


async def test_no_service_may_delete_a_stream(runtime_bus: tuple[Bus, Any]) -> None:
    bus, errors = runtime_bus
    await bus.ensure_streams(1, create=False)
    with pytest.raises((NatsTimeoutError, asyncio.TimeoutError, NatsError)):
        await bus.js.delete_stream("PAI_EVENTS")
    assert any("permissions violation" in e.lower() for e in errors.seen), errors.seen
    assert (await bus.js.stream_info("PAI_EVENTS")).config.name == "PAI_EVENTS"


async def test_wrong_passwords_and_plain_connections_are_refused(shipped_nats: ShippedNats) -> None:
    import ssl

    import nats as nats_client

    context = ssl.create_default_context(cafile=str(shipped_nats.ca))
    with pytest.raises(NatsError):
        await nats_client.connect(
            shipped_nats.url("jobs", "not-the-password"),
            tls=context,
            allow_reconnect=False,
            connect_timeout=3,
        )
    with pytest.raises((NatsError, OSError, asyncio.TimeoutError)):
        await nats_client.connect(
            f"nats://jobs:{shipped_nats.passwords['jobs']}@127.0.0.1:{shipped_nats.port}",
            allow_reconnect=False,
            connect_timeout=3,
        )


def test_every_service_has_a_user() -> None:
    assert len(SERVICES) >= 9


class _NodeReviewer:
    """The API server's side, as pai_auth's test_auth_callout serves it over HTTP: here the shipped NATS
    configuration and make-secrets.sh's key are what is tested, so the review is answered directly."""

    async def review(self, token: str) -> Any:
        from pai_auth.callout.decision import NODE_NAME_KEY, Review

        if token != "token-of-node-a":
            return Review(authenticated=False, error="token has expired")
        return Review(
            authenticated=True,
            audiences=["pai-nats"],
            username="system:serviceaccount:pai:pai-runtime",
            extra={NODE_NAME_KEY: ["node-a"]},
        )


async def test_a_node_agent_connects_with_its_token_as_its_node_s_user(shipped_nats: ShippedNats) -> None:
    """The shipped auth_callout block with make-secrets.sh's issuer: the callout, as its own static user,
    answers; a node agent with a token gets its own node's user, and none without a good one."""
    import ssl

    import nats as nats_client

    from pai_auth.callout.decision import Policy
    from pai_auth.callout.responder import CalloutResponder

    callout = await Bus.connect(shipped_nats.url("auth-callout"), "auth-callout", shipped_nats.ca)
    responder = CalloutResponder(
        callout.nc, _NodeReviewer(), Policy("pai-nats", "system:serviceaccount:pai:pai-runtime"),
        shipped_nats.callout_seed,
    )  # fmt: skip
    await responder.start()
    context = ssl.create_default_context(cafile=str(shipped_nats.ca))
    errors = _Errors()
    agent = await nats_client.connect(
        f"tls://localhost:{shipped_nats.port}",
        tls=context,
        token="token-of-node-a",
        error_cb=errors.record,
        allow_reconnect=False,
        inbox_prefix=bus_permissions.inbox_prefix(bus_permissions.node_durable("node-a")),
    )
    try:
        await agent.publish("pai.hb.node-a", b"{}")
        await agent.publish("pai.hb.node-b", b"{}")
        await agent.flush()
        for _ in range(50):
            if errors.seen:
                break
            await asyncio.sleep(0.05)
        assert [e for e in errors.seen if "permissions violation" in e.lower()], errors.seen
        assert all("pai.hb.node-b" in e for e in errors.seen), errors.seen
        with pytest.raises(NatsError):
            await nats_client.connect(
                f"tls://localhost:{shipped_nats.port}",
                tls=context,
                token="someone-else",
                allow_reconnect=False,
                connect_timeout=3,
            )
        # The callout's own user may answer, and do nothing else.
        await callout.nc.publish("pai.evt.job.submitted", b"{}")
        with pytest.raises((NatsTimeoutError, asyncio.TimeoutError)):
            await callout.js.publish("pai.evt.job.submitted", b"{}", timeout=1)
    finally:
        await agent.close()
        await responder.stop()
        await callout.close()
