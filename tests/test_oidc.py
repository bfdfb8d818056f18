"""OpenID Connect sign-in through the gateway's routes and the auth service (real NATS, real MongoDB-wire
server), against a real provider on loopback (tests/oidc_provider.py) that signs RS256 ID tokens and
checks the PKCE verifier, the client secret and the registered redirect URI.

The browser is played by httpx: it follows the gateway's 302 to the provider, the provider's 302 back to
the gateway, and keeps the gateway's cookies, as a browser does.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import Bus
from pai_common.embedded import ServerProcess, start_nats
from pai_common.service import ServiceApp
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings
from tests.oidc_provider import OpenIdProvider

PASSWORD = "oidc-admin-pw"
GATEWAY = "http://127.0.0.1:9999"
RETURN_URI = f"{GATEWAY}/api/v2/authn/oidc/return"


@pytest.fixture(scope="module")
def nats_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("oidc-nats"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def op() -> Iterator[OpenIdProvider]:
    with OpenIdProvider(redirect_uris=[RETURN_URI]) as provider:
        yield provider


@pytest.fixture(autouse=True)
def fresh_faults(op: OpenIdProvider) -> None:
    op.reset_faults()


def auth_settings(
    nats: ServerProcess, mongo: ServerProcess, data: Path, op: OpenIdProvider, **extra: Any
) -> AuthSettings:
    secret = data / "oidc-client-secret"
    secret.write_text(op.client_secret + "\n")
    return AuthSettings(
        nats_url=nats.url,
        mongo_url=mongo.url,
        data_dir=data,
        admin_password=PASSWORD,
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
        oidc_issuer=op.issuer,
        oidc_client_id=op.client_id,
        oidc_client_secret_file=secret,
        oidc_name="Test IdP",
        oidc_jwks_min_refresh_s=0,
        **extra,
    )


@dataclass
class Cluster:
    gateways: list[httpx.AsyncClient]
    admin: dict[str, str]

    @property
    def gw(self) -> httpx.AsyncClient:
        return self.gateways[0]


@pytest.fixture(scope="module")
async def cluster(
    nats_srv: ServerProcess,
    mongo_server: ServerProcess,
    op: OpenIdProvider,
    tmp_path_factory: pytest.TempPathFactory,
) -> AsyncIterator[Cluster]:
    """Two auth replicas (one queue group, one database) and two gateways: a sign-in may start on one
    replica and finish on another."""
    data = tmp_path_factory.mktemp("oidc-data")
    name = f"auth_{uuid.uuid4().hex[:8]}"
    settings = auth_settings(nats_srv, mongo_server, data, op)
    settings.check_sign_in()
    replicas = []
    for _ in range(2):
        auth = ServiceApp("auth", settings)
        AuthService(auth, settings)
        auth.name = name
        await auth.start()
        replicas.append(auth)
    buses = [await Bus.connect(nats_srv.url, "gateway") for _ in range(2)]
    clients = [
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=build_http_app(lambda b=b: b, GatewaySettings())),  # type: ignore[misc]
            base_url=GATEWAY,
        )
        for b in buses
    ]
    login = await clients[0].post(
        "/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD}
    )
    assert login.status_code == 200, login.text
    yield Cluster(clients, {"Authorization": f"Bearer {login.json()['token']}"})
    for c in clients:
        await c.aclose()
    for b in buses:
        await b.close()
    for auth in replicas:
        await auth.stop()


@dataclass
class Return:
    """Where the gateway's `return` sent the browser."""

    response: httpx.Response

    @property
    def location(self) -> str:
        return self.response.headers["location"]

    @property
    def params(self) -> dict[str, str]:
        return {k: v[0] for k, v in parse_qs(urlsplit(self.location).query).items()}


async def start(gw: httpx.AsyncClient, redirect: str = "/jobs") -> str:
    """The browser asks the gateway to sign in; answers the provider URL it is sent to."""
    r = await gw.get("/api/v2/authn/oidc/login", params={"redirect": redirect})
    assert r.status_code == 302, r.text
    assert r.headers["cache-control"] == "no-store"
    assert "pai_oidc_binding" in gw.cookies
    location = r.headers["location"]
    assert location.startswith(gw_op_issuer(location))
    return location


def gw_op_issuer(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/authorize"


async def at_provider(authorize_url: str) -> str:
    """The provider signs the user in and sends the browser back: answers the gateway URL."""
    async with httpx.AsyncClient() as browser:
        r = await browser.get(authorize_url)
    assert r.status_code == 302, r.text
    return str(r.headers["location"])


async def back(gw: httpx.AsyncClient, return_url: str) -> Return:
    r = await gw.get(return_url)
    assert r.status_code == 303, r.text
    return Return(r)


async def sign_in(
    cluster: Cluster, begin_on: int = 0, finish_on: int = 0, redirect: str = "/jobs"
) -> tuple[Return, str]:
    authorize = await start(cluster.gateways[begin_on], redirect)
    return_url = await at_provider(authorize)
    # The binding cookie travels with the browser, whichever gateway replica answers.
    cluster.gateways[finish_on].cookies.update(cluster.gateways[begin_on].cookies)
    return await back(cluster.gateways[finish_on], return_url), return_url


async def exchange(gw: httpx.AsyncClient, code: str) -> httpx.Response:
    return await gw.post("/api/v2/authn/oidc/exchange", json={"code": code})


async def create_group(cluster: Cluster, name: str, external: str, vcs: list[str] | None = None) -> None:
    body = {
        "groupname": name,
        "description": name,
        "externalName": external,
        "extension": {"acls": {"virtualClusters": vcs or [], "admin": False}},
    }
    r = await cluster.gw.post("/api/v2/groups", json=body, headers=cluster.admin)
    assert r.status_code == 201, r.text


# ---- the happy path -------------------------------------------------------------------------------------


async def test_config_says_sso_is_on_and_basic_login_too(cluster: Cluster) -> None:
    config = await cluster.gw.get("/api/v2/authn/oidc/config")
    assert config.json() == {"enabled": True, "name": "Test IdP", "basicLogin": True}
    info = await cluster.gw.get("/api/v2/authn/info")
    assert info.json() == {
        "authn_type": "OIDC",
        "loginURI": "/api/v1/authn/oidc/login",
        "loginURIMethod": "get",
    }


async def test_sign_in_creates_the_user_with_mapped_groups(cluster: Cluster, op: OpenIdProvider) -> None:
    await create_group(cluster, "mlteam", "ml-engineers", ["default"])
    await create_group(cluster, "opsteam", "ops-object-id")
    op.next_identity = {
        "sub": "sub-carol",
        "preferred_username": "carol@example.org",
        "email": "carol@example.org",
        "groups": ["ml-engineers", "unrelated"],
    }
    authorize = await start(cluster.gw, "/jobs?view=mine")
    query = parse_qs(urlsplit(authorize).query)
    assert query["code_challenge_method"] == ["S256"] and query["response_type"] == ["code"]
    assert query["redirect_uri"] == [RETURN_URI] and query["client_id"] == [op.client_id]
    landed = await back(cluster.gw, await at_provider(authorize))
    # Back to the path asked for, with the one-time code added to its own query.
    assert landed.location.startswith("/jobs?view=mine&pai_login_code=")
    assert "pai_oidc_binding" not in cluster.gw.cookies
    # The provider saw the PKCE verifier of the challenge (it refuses a wrong one) and our secret.
    assert op.token_requests[-1]["code_verifier"] and "client_secret" not in op.token_requests[-1]
    answer = await exchange(cluster.gw, landed.params["pai_login_code"])
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["user"], body["admin"], body["hasGitHubPAT"]) == ("carol", False, False)
    me = await cluster.gw.get("/api/v2/users/me", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.status_code == 200
    assert me.json()["grouplist"] == ["default", "mlteam"] and me.json()["email"] == "carol@example.org"
    audit = await cluster.gw.get("/api/v2/audit-log", params={"target": "carol"}, headers=cluster.admin)
    created = [e for e in audit.json()["data"] if e["action"] == "user.created"]
    assert created and created[0]["details"]["via"] == "oidc"


async def test_groups_follow_the_provider_at_every_sign_in(cluster: Cluster, op: OpenIdProvider) -> None:
    await create_group(cluster, "dteam", "d-group")
    await create_group(cluster, "eteam", "e-group")
    await create_group(cluster, "manual", "")
    op.next_identity = {"sub": "sub-dave", "preferred_username": "dave", "groups": ["d-group"]}
    first, _ = await sign_in(cluster)
    token = (await exchange(cluster.gw, first.params["pai_login_code"])).json()["token"]
    # An admin adds a group with no external name: the provider knows nothing of it, so it stays.
    added = await cluster.gw.put(
        "/api/v2/users/dave/group", json={"groupname": "manual"}, headers=cluster.admin
    )
    assert added.status_code == 201, added.text
    op.next_identity = {"sub": "sub-dave", "preferred_username": "dave", "groups": ["e-group"]}
    second, _ = await sign_in(cluster)
    assert (await exchange(cluster.gw, second.params["pai_login_code"])).status_code == 200
    dave = await cluster.gw.get("/api/v2/users/dave", headers=cluster.admin)
    assert dave.json()["grouplist"] == ["default", "manual", "eteam"]
    assert token  # the first session is still a session: a sign-in does not end the others
    audit = await cluster.gw.get("/api/v2/audit-log", params={"target": "dave"}, headers=cluster.admin)
    updated = [e for e in audit.json()["data"] if e["action"] == "user.updated"]
    assert updated[0]["details"]["grouplist"] == ["default", "manual", "eteam"]


async def test_a_sign_in_begun_on_one_replica_finishes_on_another(
    cluster: Cluster, op: OpenIdProvider
) -> None:
    op.next_identity = {"sub": "sub-erin", "preferred_username": "erin"}
    for _ in range(3):  # two auth replicas answer at random: several rounds cross them
        landed, _ = await sign_in(cluster, begin_on=0, finish_on=1)
        answer = await exchange(cluster.gateways[0], landed.params["pai_login_code"])
        assert answer.status_code == 200 and answer.json()["user"] == "erin"


async def test_two_first_sign_ins_at_once_make_one_user(cluster: Cluster, op: OpenIdProvider) -> None:
    op.next_identity = {"sub": "sub-twin", "preferred_username": "twin"}
    # Two browsers (each gateway client keeps its own cookies), both back at the same moment.
    returns = [await at_provider(await start(gw)) for gw in cluster.gateways]
    landed = await asyncio.gather(*(back(gw, url) for gw, url in zip(cluster.gateways, returns, strict=True)))
    for gw, one in zip(cluster.gateways, landed, strict=True):
        answer = await exchange(gw, one.params["pai_login_code"])
        assert answer.status_code == 200 and answer.json()["user"] == "twin", answer.text
    users = (await cluster.gw.get("/api/v2/users", headers=cluster.admin)).json()
    assert [u["username"] for u in users].count("twin") == 1


async def test_provider_key_rotation_needs_nothing_from_the_platform(
    cluster: Cluster, op: OpenIdProvider
) -> None:
    op.next_identity = {"sub": "sub-frank", "preferred_username": "frank"}
    first, _ = await sign_in(cluster)
    assert "pai_login_code" in first.params
    fetched = op.jwks_fetches
    op.rotate()  # the old key leaves the JWKS; new tokens name a kid the platform has not seen
    second, _ = await sign_in(cluster)
    assert "pai_login_code" in second.params, second.params
    assert op.jwks_fetches > fetched


# ---- what must be refused -------------------------------------------------------------------------------


async def refused_sign_in(cluster: Cluster, op: OpenIdProvider, username: str) -> str:
    op.next_identity = {"sub": f"sub-{username}", "preferred_username": username}
    landed, _ = await sign_in(cluster)
    assert "pai_login_code" not in landed.params
    assert landed.location.startswith("/jobs?pai_login_error=")
    gone = await cluster.gw.get(f"/api/v2/users/{username}", headers=cluster.admin)
    assert gone.status_code == 400 and gone.json()["code"] == "NoUserError", "a refused sign-in made a user"
    return landed.params["pai_login_error"]


async def test_tampered_id_token(cluster: Cluster, op: OpenIdProvider) -> None:
    op.tamper = True
    error = await refused_sign_in(cluster, op, "mallory")
    assert "signature does not match" in error
    assert (await cluster.gw.get("/api/v2/users/admin", headers=cluster.admin)).status_code == 200


async def test_id_token_for_another_audience(cluster: Cluster, op: OpenIdProvider) -> None:
    op.audience = "another-client"
    assert "meant for another client" in await refused_sign_in(cluster, op, "oscar")


async def test_expired_id_token(cluster: Cluster, op: OpenIdProvider) -> None:
    op.expired = True
    assert "expired" in await refused_sign_in(cluster, op, "olivia")


@asynccontextmanager
async def solo_gateway(
    nats: ServerProcess, mongo: ServerProcess, op: OpenIdProvider, data: Path, **extra: Any
) -> AsyncIterator[httpx.AsyncClient]:
    """One auth service of other settings and a gateway, on a NATS server the module's replicas do not
    answer on."""
    settings = auth_settings(nats, mongo, data, op, **extra)
    auth = ServiceApp("auth", settings)
    AuthService(auth, settings)
    auth.name = f"auth_{uuid.uuid4().hex[:8]}"
    await auth.start()
    bus = await Bus.connect(nats.url, "gateway")
    try:
        app = build_http_app(lambda: bus, GatewaySettings())
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=GATEWAY) as gw:
            yield gw
    finally:
        await bus.close()
        await auth.stop()


async def test_id_token_signed_by_a_retired_key(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, op: OpenIdProvider, tmp_path: Path
) -> None:
    """A key the provider no longer publishes is not trusted, even though the platform once fetched it
    (here the JWKS is never older than a sign-in: PAI_OIDC_JWKS_MAX_AGE_S=0)."""
    async with solo_gateway(fresh_nats, mongo_server, op, tmp_path, oidc_jwks_max_age_s=0) as gw:
        solo = Cluster([gw], {})
        op.next_identity = {"sub": "sub-kim", "preferred_username": "kim"}
        first, _ = await sign_in(solo)
        assert "pai_login_code" in first.params, first.params
        old = op.signing_kid
        op.rotate()
        op.sign_with = old
        fetched = op.jwks_fetches
        second, _ = await sign_in(solo)
        assert "does not publish" in second.params["pai_login_error"]
        assert op.jwks_fetches > fetched


async def test_id_token_signed_by_an_unknown_key(cluster: Cluster, op: OpenIdProvider) -> None:
    op.sign_with = "never-published"
    fetched = op.jwks_fetches
    assert "does not publish" in await refused_sign_in(cluster, op, "stranger")
    assert op.jwks_fetches > fetched  # looked once more, in case the provider had just rotated


async def test_nonce_of_another_sign_in(cluster: Cluster, op: OpenIdProvider) -> None:
    op.nonce = "a-nonce-from-elsewhere"
    assert "nonce" in await refused_sign_in(cluster, op, "nonny")


async def test_provider_refusal_is_shown(cluster: Cluster, op: OpenIdProvider) -> None:
    op.deny = "access_denied"
    error = await refused_sign_in(cluster, op, "denise")
    assert "access_denied" in error and "the user said no" in error


async def test_replayed_state(cluster: Cluster, op: OpenIdProvider) -> None:
    op.next_identity = {"sub": "sub-gina", "preferred_username": "gina"}
    landed, return_url = await sign_in(cluster)
    assert "pai_login_code" in landed.params
    # The same return URL again (a replay, or the back button): the state was used once and is gone.
    cluster.gw.cookies.set("pai_oidc_binding", "x" * 43, domain="127.0.0.1", path="/api/")
    again = await cluster.gw.get(return_url)
    assert again.status_code == 401
    assert again.json() == {
        "code": "UnauthorizedUserError",
        "message": "This sign-in is unknown, expired or already used; start it again.",
    }


async def test_sign_in_finished_in_another_browser(cluster: Cluster, op: OpenIdProvider) -> None:
    """Login CSRF: a victim's browser handed an attacker's return URL gets no session."""
    op.next_identity = {"sub": "sub-attacker", "preferred_username": "attacker"}
    authorize = await start(cluster.gw)
    return_url = await at_provider(authorize)
    async with httpx.AsyncClient(
        transport=cluster.gw._transport,  # the same gateway, without the starting browser's cookie
        base_url=GATEWAY,
    ) as victim:
        r = await victim.get(return_url)
    assert r.status_code == 401 and "another browser" in r.json()["message"]


async def test_one_time_code_works_once(cluster: Cluster, op: OpenIdProvider) -> None:
    op.next_identity = {"sub": "sub-hank", "preferred_username": "hank"}
    landed, _ = await sign_in(cluster)
    code = landed.params["pai_login_code"]
    assert (await exchange(cluster.gw, code)).status_code == 200
    reused = await exchange(cluster.gateways[1], code)
    assert reused.status_code == 401
    assert reused.json()["message"] == "This login code is unknown, expired or already used; sign in again."
    bad = await exchange(cluster.gw, "")
    assert bad.status_code == 400 and bad.json()["code"] == "InvalidParametersError"


async def test_a_password_users_name_is_not_taken_over(cluster: Cluster, op: OpenIdProvider) -> None:
    made = await cluster.gw.post(
        "/api/v2/users", json={"username": "ivan", "password": "ivan-password"}, headers=cluster.admin
    )
    assert made.status_code == 201
    op.next_identity = {"sub": "sub-not-ivan", "preferred_username": "ivan"}
    landed, _ = await sign_in(cluster)
    assert "already exists and signs in with a password" in landed.params["pai_login_error"]


async def test_user_names_the_platform_cannot_have(cluster: Cluster, op: OpenIdProvider) -> None:
    op.next_identity = {"sub": "sub-weird", "preferred_username": "we ird"}
    landed, _ = await sign_in(cluster)
    assert "not a user name" in landed.params["pai_login_error"]


@pytest.mark.parametrize("redirect", ["//evil.example/x", "https://evil.example/", "/\\evil", "jobs", "/a b"])
async def test_login_redirects_only_to_paths_of_this_site(cluster: Cluster, redirect: str) -> None:
    r = await cluster.gw.get("/api/v2/authn/oidc/login", params={"redirect": redirect})
    assert r.status_code == 400 and r.json()["code"] == "InvalidParametersError"


async def test_return_without_state_or_with_junk(cluster: Cluster) -> None:
    missing = await cluster.gw.get("/api/v2/authn/oidc/return", params={"code": "x"})
    assert missing.status_code == 400
    junk = await cluster.gw.get("/api/v2/authn/oidc/return", params={"state": "s" * 1000, "code": "x"})
    assert junk.status_code == 400 and "state" in junk.json()["message"]


async def test_logout_revokes_and_ends_the_provider_session(cluster: Cluster, op: OpenIdProvider) -> None:
    op.next_identity = {"sub": "sub-judy", "preferred_username": "judy"}
    landed, _ = await sign_in(cluster)
    token = (await exchange(cluster.gw, landed.params["pai_login_code"])).json()["token"]
    bearer = {"Authorization": f"Bearer {token}"}
    out = await cluster.gw.get("/api/v2/authn/oidc/logout", params={"redirect": "/bye"}, headers=bearer)
    assert out.status_code == 302
    target = urlsplit(out.headers["location"])
    assert f"{target.scheme}://{target.netloc}" == op.issuer and target.path == "/logout"
    assert parse_qs(target.query)["post_logout_redirect_uri"] == [f"{GATEWAY}/bye"]
    assert (await cluster.gw.get("/api/v2/users/me", headers=bearer)).status_code == 401


async def test_cli_code_page_escapes_what_it_shows(cluster: Cluster) -> None:
    page = await cluster.gw.get("/api/v2/authn/oidc/code", params={"pai_login_error": "<script>x</script>"})
    assert page.status_code == 200 and "<script>" not in page.text and "&lt;script&gt;" in page.text
    shown = await cluster.gw.get("/api/v2/authn/oidc/code", params={"pai_login_code": "abc-123"})
    assert "<code>abc-123</code>" in shown.text and shown.headers["cache-control"] == "no-store"


# ---- basic login switched off ---------------------------------------------------------------------------


async def test_basic_login_can_be_switched_off(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, op: OpenIdProvider, tmp_path: Path
) -> None:
    async with solo_gateway(fresh_nats, mongo_server, op, tmp_path, basic_login=False) as gw:
        config = await gw.get("/api/v2/authn/oidc/config")
        login = await gw.post("/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD})
    assert config.json()["basicLogin"] is False
    assert login.status_code == 403
    assert login.json()["message"].startswith("Basic login is turned off here; sign in with Test IdP")


def test_basic_login_off_needs_oidc(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs OpenID Connect"):
        AuthSettings(data_dir=tmp_path, basic_login=False).check_sign_in()
    with pytest.raises(ValueError, match="must use https"):
        AuthSettings(data_dir=tmp_path, oidc_issuer="http://idp.example", oidc_client_id="x").check_sign_in()
