"""The marketplace routes in front of the real marketplace and auth services (real NATS, real
MongoDB-wire server): publish, search, visibility to groups, edit rights, stars and uses, errors."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi import Request

from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import Bus
from pai_common.contract.rpc import (
    AuthMessageReply,
    CreateGroupRequest,
    CreateUserRequest,
    Identity,
    UpdateUserRequest,
)
from pai_common.embedded import ServerProcess, start_nats
from pai_common.service import ServiceApp
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings
from pai_marketplace.shell import MarketplaceService, seed_templates

PATH = "/api/v2/marketplace/templates"
PROTOCOL = "protocolVersion: 2\nname: train\ntaskRoles:\n  worker:\n    instances: 1\n"


@pytest.fixture(scope="module")
def nats_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("market-nats"))
    yield server
    server.stop()


class _Caller:
    """Who calls, from the bearer value (token checks are the auth routes' tests' business); the user's
    groups still come from the real auth service, through the marketplace's own RPC to it."""

    async def resolve(self, request: Request) -> Identity:
        who = request.headers.get("authorization", "").removeprefix("Bearer ")
        if not who:
            from pai_common.errors import UnauthorizedUserError

            raise UnauthorizedUserError("No authorization token")
        return Identity(username=who, admin=who == "admin", virtual_clusters=["default"])


@pytest.fixture(scope="module")
async def api(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    data: Path = tmp_path_factory.mktemp("market-data")
    settings = AuthSettings(
        nats_url=nats_srv.url,
        mongo_url=mongo_server.url,
        data_dir=data,
        admin_password="market-admin-pw",
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )
    auth = ServiceApp("auth", settings)
    AuthService(auth, settings)
    auth.name = f"auth_{uuid.uuid4().hex[:8]}"
    market = ServiceApp("marketplace", settings)
    MarketplaceService(market)
    market.name = f"market_{uuid.uuid4().hex[:8]}"
    await auth.start()
    await market.start()
    bus = await Bus.connect(nats_srv.url, "test")
    for request in (
        CreateGroupRequest(actor="admin", groupname="team", extension={"acls": {"virtualClusters": []}}),
        CreateUserRequest(actor="admin", username="ann", password="ann-password"),
        CreateUserRequest(actor="admin", username="bob", password="bob-password"),
        UpdateUserRequest(actor="admin", username="ann", add_group="team"),
    ):
        await bus.request(request, AuthMessageReply)
    http = build_http_app(lambda: bus, GatewaySettings(nats_url=nats_srv.url))
    http.state.resolver = _Caller
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=http), base_url="http://gw") as client:
        yield client
    await bus.close()
    await market.stop()
    await auth.stop()


def as_(user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {user}"}


async def test_shipped_templates_are_listed_and_searchable(api: httpx.AsyncClient) -> None:
    listed = await api.get(PATH, headers=as_("bob"))
    assert listed.status_code == 200, listed.text
    ids = {t["id"] for t in listed.json()["data"]}
    assert {s["id"] for s in seed_templates()} <= ids
    assert all("protocol" not in t for t in listed.json()["data"])
    found = await api.get(PATH, params={"keyword": "ALL-REDUCE"}, headers=as_("bob"))
    assert [t["id"] for t in found.json()["data"]] == ["distributed-allreduce"]
    one = await api.get(f"{PATH}/hello-world", headers=as_("bob"))
    assert one.json()["protocol"].startswith("# A first job")
    assert one.json()["editable"] is False
    assert (await api.get(PATH)).json()["code"] == "UnauthorizedUserError"


async def test_publish_visibility_and_rights(api: httpx.AsyncClient) -> None:
    body = {
        "name": "Team trainer",
        "description": "for the team",
        "tags": ["team"],
        "protocol": PROTOCOL,
        "visibility": {"type": "groups", "groups": ["team"]},
    }
    made = await api.post(PATH, json=body, headers=as_("ann"))
    assert made.status_code == 201, made.text
    tid = made.json()["id"]
    assert made.json()["author"] == "ann" and made.json()["editable"] is True
    # bob is not in `team`: the template does not exist for him.
    hidden = await api.get(f"{PATH}/{tid}", headers=as_("bob"))
    assert (hidden.status_code, hidden.json()["code"]) == (404, "NoTemplateError")
    assert tid not in {t["id"] for t in (await api.get(PATH, headers=as_("bob"))).json()["data"]}
    assert (await api.get(f"{PATH}/{tid}", headers=as_("admin"))).status_code == 200
    # Opening it to everyone lets bob see it, but not change it.
    opened = await api.put(f"{PATH}/{tid}", json={"visibility": {"type": "all"}}, headers=as_("ann"))
    assert opened.status_code == 200 and opened.json()["visibility"]["type"] == "all"
    assert (await api.get(f"{PATH}/{tid}", headers=as_("bob"))).status_code == 200
    refused = await api.put(f"{PATH}/{tid}", json={"name": "mine"}, headers=as_("bob"))
    assert (refused.status_code, refused.json()["code"]) == (403, "ForbiddenUserError")
    assert (await api.delete(f"{PATH}/{tid}", headers=as_("bob"))).status_code == 403
    # Stars: once per user, the count but not the names; uses count up.
    for _ in range(2):
        starred = await api.put(f"{PATH}/{tid}/star", headers=as_("bob"))
    assert (starred.json()["starCount"], starred.json()["starred"]) == (1, True)
    mine = await api.get(f"{PATH}/{tid}", headers=as_("ann"))
    assert (mine.json()["starCount"], mine.json()["starred"]) == (1, False)
    unstarred = await api.delete(f"{PATH}/{tid}/star", headers=as_("bob"))
    assert unstarred.json()["starCount"] == 0
    used = await api.post(f"{PATH}/{tid}/uses", headers=as_("bob"))
    assert used.json()["useCount"] == 1
    # The admin may delete anyone's template.
    assert (await api.delete(f"{PATH}/{tid}", headers=as_("admin"))).status_code == 200
    assert (await api.get(f"{PATH}/{tid}", headers=as_("ann"))).status_code == 404


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"name": "x", "protocol": "a: ["}, "protocol: not YAML"),
        ({"name": "", "protocol": PROTOCOL}, "name: required"),
        ({"name": "x", "protocol": PROTOCOL, "visibility": {"type": "groups"}}, "name at least one group"),
        ({"name": "x", "protocol": PROTOCOL, "owner": "eve"}, "owner"),
        ({"name": "x", "protocol": PROTOCOL, "tags": ["a,b"]}, "no commas"),
    ],
)
async def test_bad_templates_are_refused_precisely(
    api: httpx.AsyncClient, body: dict[str, object], words: str
) -> None:
    answer = await api.post(PATH, json=body, headers=as_("ann"))
    assert answer.status_code == 400, answer.text
    assert answer.json()["code"] == "InvalidParametersError"
    assert words in answer.json()["message"]


async def test_unknown_and_overlong_ids(api: httpx.AsyncClient) -> None:
    for tid in ("nope", "x" * 81):
        answer = await api.get(f"{PATH}/{tid}", headers=as_("ann"))
        assert (answer.status_code, answer.json()["code"]) == (404, "NoTemplateError")
        assert (await api.post(f"{PATH}/{tid}/uses", headers=as_("ann"))).status_code == 404
