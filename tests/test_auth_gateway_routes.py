"""User, group and token routes: OpenPAI's paths, shapes and status codes, through the gateway's HTTP app
and a real auth service on a real NATS server and MongoDB-wire server."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest

from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import Bus
from pai_common.embedded import ServerProcess, start_nats
from pai_common.service import ServiceApp
from pai_gateway.http_app import build_http_app
from pai_gateway.settings import GatewaySettings

PASSWORD = "routes-admin-pw"


@pytest.fixture(scope="module")
def nats_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("routes-nats"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def http(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[httpx.AsyncClient]:
    settings = AuthSettings(
        nats_url=nats_srv.url,
        mongo_url=mongo_server.url,
        data_dir=tmp_path_factory.mktemp("routes-data"),
        admin_password=PASSWORD,
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )
    auth = ServiceApp("auth", settings)
    AuthService(auth, settings)
    auth.name = f"auth_{uuid.uuid4().hex[:8]}"
    await auth.start()
    bus = await Bus.connect(nats_srv.url, "gateway")
    app = build_http_app(lambda: bus, GatewaySettings(nats_url=nats_srv.url))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
        yield client
    await bus.close()
    await auth.stop()


async def bearer(http: httpx.AsyncClient, user: str, password: str) -> dict[str, str]:
    r = await http.post("/api/v2/authn/basic/login", json={"username": user, "password": password})
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"user", "token", "admin", "hasGitHubPAT"} and body["user"] == user
    return {"Authorization": f"Bearer {body['token']}"}


@pytest.fixture(scope="module")
async def admin(http: httpx.AsyncClient) -> dict[str, str]:
    return await bearer(http, "admin", PASSWORD)


async def test_login_accepts_forms_and_the_tokens_alias(http: httpx.AsyncClient) -> None:
    form = await http.post(
        "/api/v2/authn/basic/login",
        content=f"username=admin&password={PASSWORD}",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    )
    assert form.status_code == 200 and form.json()["admin"] is True
    alias = await http.post("/api/v2/tokens", json={"username": "admin", "password": PASSWORD})
    assert alias.status_code == 200 and alias.json()["token"]


async def test_users_crud_with_openpai_shapes(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    created = await http.post(
        "/api/v2/users",
        json={"username": "u1", "password": "u1-password", "email": "u1@x", "extension": {"a": 1}},
        headers=admin,
    )
    assert (created.status_code, created.json()) == (201, {"message": "User is created successfully"})
    one = await http.get("/api/v2/user/u1", headers=admin)
    assert one.status_code == 200
    assert one.json() == {
        "username": "u1",
        "grouplist": ["default"],
        "email": "u1@x",
        "extension": {"a": 1},
        "admin": False,
        "virtualCluster": ["default"],
        "storageConfig": [],
    }
    everyone = await http.get("/api/v2/users", headers=admin)
    assert [u["username"] for u in everyone.json()] == ["admin", "u1"]
    assert everyone.json()[0]["admin"] is True
    patch = {"data": {"username": "u1", "email": "new@x", "extension": {"b": 2}}, "patch": True}
    updated = await http.put("/api/v2/users", json=patch, headers=admin)
    assert (updated.status_code, updated.json()["message"]) == (201, "Update user information successfully.")
    after = (await http.get("/api/v2/users/u1", headers=admin)).json()
    assert after["email"] == "new@x" and after["extension"] == {"a": 1, "b": 2}
    replace = {"data": {"username": "u1", "extension": {"c": 3}}, "patch": False}
    assert (await http.put("/api/v2/users", json=replace, headers=admin)).status_code == 201
    assert (await http.get("/api/v2/users/u1", headers=admin)).json()["extension"] == {"c": 3}
    admin_flag = await http.put("/api/v2/users/u1/admin", json={"admin": True}, headers=admin)
    assert admin_flag.status_code == 201
    assert (await http.get("/api/v2/users/u1", headers=admin)).json()["admin"] is True
    refused = await http.delete("/api/v2/users/u1", headers=admin)
    assert (refused.status_code, refused.json()["code"]) == (403, "RemoveAdminError")
    await http.put("/api/v2/users/u1/admin", json={"admin": False}, headers=admin)
    deleted = await http.delete("/api/v2/users/u1", headers=admin)
    assert (deleted.status_code, deleted.json()) == (200, {"message": "user is removed successfully"})
    gone = await http.get("/api/v2/users/u1", headers=admin)
    assert (gone.status_code, gone.json()) == (
        400,
        {"code": "NoUserError", "message": "User u1 is not found."},
    )


async def test_me_and_own_password(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await http.post("/api/v2/users", json={"username": "u2", "password": "u2-password"}, headers=admin)
    me = await bearer(http, "u2", "u2-password")
    assert (await http.get("/api/v2/users/me", headers=me)).json()["username"] == "u2"
    wrong = await http.put(
        "/api/v2/users/u2/password", json={"oldPassword": "nope", "newPassword": "u2-new-pw"}, headers=me
    )
    assert (wrong.status_code, wrong.json()["code"]) == (400, "IncorrectPasswordError")
    other = await http.put("/api/v2/users/me", json={"data": {"username": "admin", "email": "x"}}, headers=me)
    # OpenPAI: naming another user through /users/me is forbidden.
    assert (other.status_code, other.json()["code"]) == (403, "ForbiddenUserError")
    ok = await http.put(
        "/api/v2/users/u2/password",
        json={"oldPassword": "u2-password", "newPassword": "u2-new-pw"},
        headers=me,
    )
    assert ok.status_code == 201
    assert await bearer(http, "u2", "u2-new-pw")


async def test_groups_crud_members_and_acls(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body: dict[str, Any] = {
        "groupname": "g1",
        "description": "team one",
        "externalName": "ext-g1",
        "extension": {"acls": {"virtualClusters": ["vc1"], "storageConfigs": ["s1"]}},
    }
    created = await http.post("/api/v2/groups", json=body, headers=admin)
    assert (created.status_code, created.json()) == (201, {"message": "group is created successfully"})
    dup = await http.post("/api/v2/group", json=body, headers=admin)
    assert (dup.status_code, dup.json()["code"]) == (409, "ConflictGroupError")
    bad = await http.post("/api/v2/groups", json={"groupname": "bad-name"}, headers=admin)
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidParametersError")
    listed = (await http.get("/api/v2/groups", headers=admin)).json()
    assert [g["groupname"] for g in listed] == ["admingroup", "default", "g1"]
    g1 = (await http.get("/api/v2/groups/g1", headers=admin)).json()
    assert g1 == {
        "groupname": "g1",
        "description": "team one",
        "externalName": "ext-g1",
        "extension": {"acls": {"admin": False, "virtualClusters": ["vc1"], "storageConfigs": ["s1"]}},
    }
    await http.post("/api/v2/users", json={"username": "u3", "password": "u3-password"}, headers=admin)
    grouplist = await http.put(
        "/api/v2/users/u3/grouplist", json={"grouplist": ["default", "g1"]}, headers=admin
    )
    assert grouplist.status_code == 201
    unknown = await http.put("/api/v2/users/u3/grouplist", json={"grouplist": ["nope"]}, headers=admin)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NoGroupError")
    members = await http.get("/api/v2/groups/g1/userlist", headers=admin)
    assert members.json() == [{"username": "u3", "clusterAdmin": False}]
    u3 = (await http.get("/api/v2/users/u3", headers=admin)).json()
    assert u3["virtualCluster"] == ["default", "vc1"] and u3["storageConfig"] == ["s1"]
    desc = await http.put("/api/v2/groups/g1/description", json={"description": "renamed"}, headers=admin)
    assert desc.status_code == 201
    assert (await http.get("/api/v2/groups/g1", headers=admin)).json()["description"] == "renamed"
    acl = await http.put(
        "/api/v2/groups/g1/extension",
        json={"extension": {"acls": {"virtualClusters": ["vc2"]}}},
        headers=admin,
    )
    assert acl.status_code == 201
    assert (await http.get("/api/v2/users/u3", headers=admin)).json()["virtualCluster"] == ["default", "vc2"]
    by_path = await http.put(
        "/api/v2/groups/g1/extension/acls/storageConfigs", json={"data": ["s2", "s3"]}, headers=admin
    )
    assert by_path.status_code == 201
    assert (await http.get("/api/v2/users/u3", headers=admin)).json()["storageConfig"] == ["s2", "s3"]
    bad_acl = await http.put("/api/v2/groups/g1/extension/acls/admin", json={"data": "yes"}, headers=admin)
    assert (bad_acl.status_code, bad_acl.json()["code"]) == (400, "InvalidParametersError")
    removed = await http.request("DELETE", "/api/v2/users/u3/group", json={"groupname": "g1"}, headers=admin)
    assert removed.status_code == 201
    assert (await http.get("/api/v2/users/u3", headers=admin)).json()["grouplist"] == ["default"]
    deleted = await http.delete("/api/v2/groups/g1", headers=admin)
    assert (deleted.status_code, deleted.json()) == (200, {"message": "group is removed successfully"})
    builtin = await http.delete("/api/v2/groups/admingroup", headers=admin)
    assert (builtin.status_code, builtin.json()["code"]) == (403, "ForbiddenUserError")


async def test_tokens_list_application_revoke_and_logout(http: httpx.AsyncClient) -> None:
    session = await bearer(http, "admin", PASSWORD)
    token = session["Authorization"].split(" ", 1)[1]
    listed = await http.get("/api/v2/tokens", headers=session)
    assert listed.status_code == 200 and token in listed.json()["tokens"]
    app = await http.post("/api/v2/tokens/application", headers=session)
    assert app.status_code == 200 and app.json()["application"] is True
    check = await http.get("/api/v2/tokens/check", headers={"Authorization": f"Bearer {app.json()['token']}"})
    assert check.json() == {
        "username": "admin",
        "application": True,
        "jobSpecific": False,
        "iat": check.json()["iat"],
        "admin": True,
    }
    session_check = (await http.get("/api/v2/tokens/check", headers=session)).json()
    assert session_check["exp"] > session_check["iat"] and session_check["application"] is False
    revoked = await http.delete(f"/api/v2/tokens/{app.json()['token']}", headers=session)
    assert (revoked.status_code, revoked.json()) == (200, {"message": "revoke successfully"})
    assert app.json()["token"] not in (await http.get("/api/v2/tokens", headers=session)).json()["tokens"]
    out = await http.delete("/api/v2/authn/basic/logout", headers=session)
    assert (out.status_code, out.json()) == (200, {"message": "Logout successfully"})


async def test_the_audit_log_route(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    page = await http.get("/api/v2/audit-log", params={"limit": 2}, headers=admin)
    assert page.status_code == 200
    assert len(page.json()["data"]) == 2 and page.json()["totalCount"] > 2
    assert set(page.json()["data"][0]) == {"at", "actor", "action", "target", "details"}
    bad = await http.get("/api/v2/audit-log", params={"limit": 0}, headers=admin)
    assert (bad.status_code, bad.json()["code"]) == (400, "InvalidParametersError")


async def test_openpai_codes_for_a_missing_user_and_group(
    http: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    missing = {"code": "NoUserError", "message": "User ghost is not found."}
    changes = [
        ("PUT", "/api/v2/users", {"data": {"username": "ghost", "email": "g@x"}, "patch": True}),
        ("DELETE", "/api/v2/users/ghost", None),
        ("PUT", "/api/v2/users/ghost/group/", {"groupname": "default"}),
        ("DELETE", "/api/v2/users/ghost/group/", {"groupname": "default"}),
        ("PUT", "/api/v2/users/ghost/grouplist/", {"grouplist": ["default"]}),
    ]
    for method, path, body in changes:
        response = await http.request(method, path, json=body, headers=admin)
        assert (response.status_code, response.json()) == (404, missing), (method, path)
    # Reading one answers 400, and so does login, as OpenPAI does.
    read = await http.get("/api/v2/users/ghost", headers=admin)
    assert (read.status_code, read.json()) == (400, missing)
    nobody = await http.get("/api/v2/groups/nothing_here/userlist", headers=admin)
    assert (nobody.status_code, nobody.json()) == (200, [])
    update = await http.put("/api/v2/groups", json={"data": {"groupname": "nothing_here"}}, headers=admin)
    assert (update.status_code, update.json()["code"]) == (404, "NoGroupError")


async def test_non_admins_get_openpai_words(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await http.post("/api/v2/users", json={"username": "u5", "password": "u5-password"}, headers=admin)
    me = await bearer(http, "u5", "u5-password")
    non_admin = {"code": "ForbiddenUserError", "message": "Non-admin is not allow to do this operation."}
    for method, path, body in [
        ("POST", "/api/v2/users", {"username": "u6", "password": "u6-password"}),
        ("PUT", "/api/v2/users", {"data": {"username": "admin", "email": "x@y"}, "patch": True}),
        ("DELETE", "/api/v2/users/admin", None),
        ("PUT", "/api/v2/users/u5/group", {"groupname": "admingroup"}),
        ("PUT", "/api/v2/users/u5/grouplist", {"grouplist": ["admingroup"]}),
        ("GET", "/api/v2/kubernetes/nodes", None),
        ("GET", "/api/v2/kubernetes/pods", None),
    ]:
        response = await http.request(method, path, json=body, headers=me)
        assert (response.status_code, response.json()) == (403, non_admin), (method, path)


async def test_every_route_answers_under_rest_server(http: httpx.AsyncClient, admin: dict[str, str]) -> None:
    info = await http.get("/rest-server/api/v2/info")
    assert info.status_code == 200 and info.json()["launcherType"] in ("k8s", "yarn")
    login = await http.post(
        "/rest-server/api/v2/authn/basic/login", json={"username": "admin", "password": PASSWORD}
    )
    assert login.status_code == 200
    users = await http.get("/rest-server/api/v2/users/", headers=admin)
    assert users.status_code == 200 and any(u["username"] == "admin" for u in users.json())
    unknown = await http.get("/rest-server/api/v2/nothing", headers=admin)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "NoApiError")
    assert (await http.get("/rest-server/api/v2")).text == "PAI RESTful API v2 (beta version)"
