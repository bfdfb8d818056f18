"""The auth service against a real NATS server and a real MongoDB-wire server: users, groups, tokens,
authorisation, events and the audit log."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest

from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import EVENTS_STREAM, Bus
from pai_common.contract.rpc import (
    AuditLogReply,
    AuditLogRequest,
    AuthMessageReply,
    AuthorizeReply,
    AuthorizeRequest,
    CreateApplicationTokenRequest,
    CreateGroupRequest,
    CreateUserRequest,
    DeleteGroupRequest,
    DeleteUserRequest,
    GetGroupRequest,
    GetUserRequest,
    GroupMembersReply,
    GroupMembersRequest,
    GroupReply,
    Identity,
    ListTokensRequest,
    ListUsersRequest,
    LoginReply,
    LoginRequest,
    RevokeTokenRequest,
    TokenListReply,
    TokenReply,
    UpdateGroupRequest,
    UpdateUserRequest,
    UserListReply,
    UserReply,
    VerifyTokenRequest,
)
from pai_common.database import connect_mongo, service_database
from pai_common.embedded import ServerProcess, start_nats
from pai_common.errors import (
    ConflictGroupError,
    ConflictUserError,
    ForbiddenUserError,
    IncorrectPasswordError,
    InvalidParametersError,
    NoGroupError,
    NoUserError,
    NoVirtualClusterError,
    RemoveAdminError,
    TooManyRequestsError,
    UnauthorizedUserError,
)
from pai_common.service import ServiceApp

ADMIN_PASSWORD = "admin-password-1"


@pytest.fixture(scope="module")
def nats_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("auth-nats"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def auth(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[ServiceApp]:
    settings = AuthSettings(
        nats_url=nats_srv.url,
        mongo_url=mongo_server.url,
        data_dir=tmp_path_factory.mktemp("auth-data"),
        admin_password=ADMIN_PASSWORD,
        # Cheap hashes keep the test fast; the production cost is the settings' default.
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )
    app = ServiceApp("auth", settings)
    AuthService(app, settings)
    app.name = f"auth_{uuid.uuid4().hex[:8]}"  # a database of this module's own
    await app.start()
    yield app
    await app.stop()


@pytest.fixture(scope="module")
async def bus(nats_srv: ServerProcess, auth: ServiceApp) -> AsyncIterator[Bus]:
    bus = await Bus.connect(nats_srv.url, "test")
    yield bus
    await bus.close()


async def ask(bus: Bus, req: Any) -> Any:
    return await bus.request(req, type(req).REPLY, timeout=10)  # type: ignore[arg-type]


async def login(bus: Bus, user: str, password: str, client: str = "10.0.0.1") -> str:
    reply: LoginReply = await ask(bus, LoginRequest(username=user, password=password, client=client))
    return reply.token


async def create_user(bus: Bus, name: str, password: str = "password-1", **extra: Any) -> None:
    reply = await ask(bus, CreateUserRequest(actor="admin", username=name, password=password, **extra))
    assert reply == AuthMessageReply(message="User is created successfully")


async def events(bus: Bus, subject: str) -> list[dict[str, Any]]:
    """Every event on ``subject`` so far, as raw JSON bodies."""
    sub = await bus.js.subscribe(subject, stream=EVENTS_STREAM, ordered_consumer=True)
    out: list[dict[str, Any]] = []
    while True:
        try:
            msg = await sub.next_msg(timeout=1)
        except Exception:
            break
        out.append({"_raw": msg.data.decode(), **json.loads(msg.data)})
    await sub.unsubscribe()
    return out


# ---- login and verification ----------------------------------------------------------------------------


async def test_admin_logs_in_and_is_admin(bus: Bus) -> None:
    token = await login(bus, "admin", ADMIN_PASSWORD)
    identity: Identity = await ask(bus, VerifyTokenRequest(token=token))
    assert identity.username == "admin" and identity.admin and not identity.application
    assert identity.token_id and identity.token_id in json.dumps(
        (await ask(bus, AuditLogRequest(actor="admin", target="admin"))).entries
    )


async def test_wrong_password_and_unknown_user(bus: Bus) -> None:
    with pytest.raises(IncorrectPasswordError, match="Password is incorrect"):
        await login(bus, "admin", "not-the-password", client="10.9.9.1")
    with pytest.raises(NoUserError, match="User nobody is not found"):
        await login(bus, "nobody", "whatever-1", client="10.9.9.2")


async def test_repeated_failures_are_throttled_per_user(bus: Bus) -> None:
    await create_user(bus, "victim", "victim-password")
    for i in range(5):
        with pytest.raises(IncorrectPasswordError):
            await login(bus, "victim", f"guess-{i}", client=f"10.1.0.{i}")
    # The right password is refused too while throttled: the guesser learns nothing.
    with pytest.raises(TooManyRequestsError) as info:
        await login(bus, "victim", "victim-password", client="10.1.0.99")
    assert info.value.status == 429
    assert "victim-password" not in info.value.message


async def test_one_client_spraying_many_users_is_throttled(bus: Bus) -> None:
    for i in range(20):
        with pytest.raises(NoUserError):
            await login(bus, f"spray{i}", "guess-123", client="10.2.0.1")
    with pytest.raises(TooManyRequestsError):
        await login(bus, "admin", ADMIN_PASSWORD, client="10.2.0.1")
    # Another address is not affected.
    assert await login(bus, "admin", ADMIN_PASSWORD, client="10.2.0.2")


# ---- users -----------------------------------------------------------------------------------------------


async def test_user_lifecycle_and_what_others_see(bus: Bus) -> None:
    private = {"jobSSH": {"key": "-----BEGIN PRIVATE KEY-----secret", "pubKey": "ssh-rsa AAA"}}
    await create_user(bus, "alice", email="alice@example.com", extension=private)
    with pytest.raises(ConflictUserError):
        await create_user(bus, "alice")
    own: UserReply = await ask(bus, GetUserRequest(actor="alice", username="alice"))
    assert own.user["extension"]["jobSSH"]["key"].startswith("-----BEGIN")
    assert own.user == {
        "username": "alice",
        "grouplist": ["default"],
        "email": "alice@example.com",
        "extension": private,
        "admin": False,
        "virtualCluster": ["default"],
        "storageConfig": [],
    }
    for reader in ("admin", "victim"):
        seen: UserReply = await ask(bus, GetUserRequest(actor=reader, username="alice"))
        assert seen.user["extension"]["jobSSH"] == {"key": "******", "pubKey": "ssh-rsa AAA"}
    listed: UserListReply = await ask(bus, ListUsersRequest(actor="victim"))
    assert "secret" not in json.dumps(listed.users)
    assert all("password" not in json.dumps(u) for u in listed.users)
    with pytest.raises(NoUserError):
        await ask(bus, GetUserRequest(actor="admin", username="ghost"))


async def test_only_admins_create_or_grant(bus: Bus) -> None:
    await create_user(bus, "bob")
    with pytest.raises(ForbiddenUserError, match="Non-admin"):
        await ask(bus, CreateUserRequest(actor="bob", username="mallory", password="password-1"))
    with pytest.raises(ForbiddenUserError, match="Non-admin"):
        await ask(bus, UpdateUserRequest(actor="bob", username="bob", admin=True))
    with pytest.raises(ForbiddenUserError):
        await ask(bus, UpdateUserRequest(actor="bob", username="alice", email="x@y"))
    with pytest.raises(NoVirtualClusterError):
        await ask(
            bus,
            CreateUserRequest(
                actor="admin", username="vcless", password="password-1", virtual_clusters=["x"]
            ),
        )


async def test_password_change_revokes_sessions_but_not_application_tokens(bus: Bus) -> None:
    await create_user(bus, "carol", "carol-password")
    session = await login(bus, "carol", "carol-password")
    app_token: TokenReply = await ask(bus, CreateApplicationTokenRequest(actor="carol"))
    with pytest.raises(InvalidParametersError, match="oldPassword"):
        await ask(bus, UpdateUserRequest(actor="carol", username="carol", password="new-password"))
    with pytest.raises(IncorrectPasswordError):
        await ask(
            bus,
            UpdateUserRequest(actor="carol", username="carol", password="new-password", old_password="wrong"),
        )
    await ask(
        bus,
        UpdateUserRequest(
            actor="carol", username="carol", password="new-password", old_password="carol-password"
        ),
    )
    with pytest.raises(UnauthorizedUserError):
        await ask(bus, VerifyTokenRequest(token=session))
    still: Identity = await ask(bus, VerifyTokenRequest(token=app_token.token))
    assert still.username == "carol" and still.application
    assert await login(bus, "carol", "new-password")
    revoked = [e for e in await events(bus, "pai.evt.token.revoked") if e["username"] == "carol"]
    assert revoked and revoked[-1]["reason"] == "password_changed"


async def test_deleting_users(bus: Bus) -> None:
    await create_user(bus, "dave")
    token = await login(bus, "dave", "password-1")
    with pytest.raises(RemoveAdminError):
        await ask(bus, DeleteUserRequest(actor="admin", username="admin"))
    with pytest.raises(ForbiddenUserError):
        await ask(bus, DeleteUserRequest(actor="dave", username="dave"))
    reply = await ask(bus, DeleteUserRequest(actor="admin", username="dave"))
    assert reply.message == "user is removed successfully"
    with pytest.raises(UnauthorizedUserError):
        await ask(bus, VerifyTokenRequest(token=token))
    with pytest.raises(NoUserError):
        await ask(bus, DeleteUserRequest(actor="admin", username="dave"))


async def test_the_last_admin_keeps_admin_rights(bus: Bus) -> None:
    with pytest.raises(RemoveAdminError):
        await ask(bus, UpdateUserRequest(actor="admin", username="admin", admin=False))
    with pytest.raises(ForbiddenUserError):
        await ask(
            bus,
            UpdateGroupRequest(actor="admin", groupname="admingroup", extension={"acls": {"admin": False}}),
        )


# ---- groups and authorisation ----------------------------------------------------------------------------


async def test_groups_grant_virtual_clusters_and_storages(bus: Bus) -> None:
    await create_user(bus, "erin")
    acls = {"acls": {"virtualClusters": ["vc1"], "storageConfigs": ["nfs1"]}}
    await ask(bus, CreateGroupRequest(actor="admin", groupname="team1", description="t", extension=acls))
    with pytest.raises(ConflictGroupError):
        await ask(bus, CreateGroupRequest(actor="admin", groupname="team1"))
    with pytest.raises(ForbiddenUserError):
        await ask(bus, CreateGroupRequest(actor="erin", groupname="team2"))
    with pytest.raises(InvalidParametersError, match="virtualClusters"):
        await ask(
            bus,
            CreateGroupRequest(actor="admin", groupname="bad", extension={"acls": {"virtualClusters": "vc"}}),
        )
    before: AuthorizeReply = await ask(bus, AuthorizeRequest(username="erin", virtual_cluster="vc1"))
    assert not before.allowed and before.virtual_clusters == ["default"]
    with pytest.raises(NoGroupError):
        await ask(bus, UpdateUserRequest(actor="admin", username="erin", add_group="nope"))
    await ask(bus, UpdateUserRequest(actor="admin", username="erin", add_group="team1"))
    after: AuthorizeReply = await ask(
        bus, AuthorizeRequest(username="erin", virtual_cluster="vc1", storage="nfs1")
    )
    assert after.allowed and after.groups == ["default", "team1"]
    assert after.virtual_clusters == ["default", "vc1"] and after.storage_configs == ["nfs1"]
    denied: AuthorizeReply = await ask(bus, AuthorizeRequest(username="erin", storage="other"))
    assert not denied.allowed
    admin: AuthorizeReply = await ask(
        bus, AuthorizeRequest(username="admin", virtual_cluster="any", storage="x")
    )
    assert admin.allowed and admin.admin
    members: GroupMembersReply = await ask(bus, GroupMembersRequest(actor="admin", groupname="team1"))
    assert members.members == [{"username": "erin", "clusterAdmin": False}]
    group: GroupReply = await ask(bus, GetGroupRequest(groupname="team1"))
    assert group.group["extension"]["acls"] == {
        "admin": False,
        "virtualClusters": ["vc1"],
        "storageConfigs": ["nfs1"],
    }
    await ask(bus, DeleteGroupRequest(actor="admin", groupname="team1"))
    gone: AuthorizeReply = await ask(bus, AuthorizeRequest(username="erin", virtual_cluster="vc1"))
    assert not gone.allowed and gone.groups == ["default"]
    with pytest.raises(NoGroupError):
        await ask(bus, GetGroupRequest(groupname="team1"))
    with pytest.raises(ForbiddenUserError):
        await ask(bus, DeleteGroupRequest(actor="admin", groupname="default"))
    changed = [e for e in await events(bus, "pai.evt.group.changed") if e["groupname"] == "team1"]
    assert [e["change"] for e in changed] == ["created", "deleted"]


async def test_admin_rights_come_from_any_group_with_the_admin_acl(bus: Bus) -> None:
    await create_user(bus, "frank")
    await ask(bus, CreateGroupRequest(actor="admin", groupname="ops", extension={"acls": {"admin": True}}))
    await ask(bus, UpdateUserRequest(actor="admin", username="frank", add_group="ops"))
    token = await login(bus, "frank", "password-1")
    identity: Identity = await ask(bus, VerifyTokenRequest(token=token))
    assert identity.admin
    await ask(bus, UpdateUserRequest(actor="admin", username="frank", remove_group="ops"))
    identity = await ask(bus, VerifyTokenRequest(token=token))
    assert not identity.admin


# ---- tokens ----------------------------------------------------------------------------------------


async def test_tokens_list_revoke_and_ownership(bus: Bus) -> None:
    await create_user(bus, "gina")
    first = await login(bus, "gina", "password-1")
    app_token: TokenReply = await ask(bus, CreateApplicationTokenRequest(actor="gina"))
    listed: TokenListReply = await ask(bus, ListTokensRequest(actor="gina"))
    assert listed.tokens == [first, app_token.token]
    other = await login(bus, "admin", ADMIN_PASSWORD)
    with pytest.raises(ForbiddenUserError):
        await ask(bus, RevokeTokenRequest(actor="gina", token=other))
    assert (await ask(bus, VerifyTokenRequest(token=other))).username == "admin"
    reply = await ask(bus, RevokeTokenRequest(actor="gina", token=first, reason="logout"))
    assert reply.message == "Logout successfully"
    with pytest.raises(UnauthorizedUserError):
        await ask(bus, VerifyTokenRequest(token=first))
    listed = await ask(bus, ListTokensRequest(actor="gina"))
    assert listed.tokens == [app_token.token]


# ---- events and audit ------------------------------------------------------------------------------


async def test_events_and_audit_never_carry_secrets(bus: Bus) -> None:
    await create_user(bus, "hank", "hank-secret-pw")
    token = await login(bus, "hank", "hank-secret-pw")
    await ask(bus, UpdateUserRequest(actor="admin", username="hank", password="hank-new-secret"))
    every = []
    for subject in ("pai.evt.user.changed", "pai.evt.group.changed", "pai.evt.token.>"):
        every += await events(bus, subject)
    assert any(e.get("username") == "hank" and e.get("change") == "created" for e in every)
    assert any(e.get("username") == "hank" and e.get("change") == "password_changed" for e in every)
    audit: AuditLogReply = await ask(bus, AuditLogRequest(actor="admin", target="hank", limit=1000))
    actions = [e["action"] for e in audit.entries]
    assert actions[-1] == "user.created" and "user.updated" in actions and "token.revoked" in actions
    assert audit.entries[0]["at"] >= audit.entries[-1]["at"]
    updated = next(e for e in audit.entries if e["action"] == "user.updated")
    assert updated["actor"] == "admin" and updated["details"]["fields"] == ["password"]
    text = json.dumps(every) + json.dumps(audit.entries)
    for secret in ("hank-secret-pw", "hank-new-secret", "$argon2", token, ADMIN_PASSWORD):
        assert secret not in text
    with pytest.raises(ForbiddenUserError):
        await ask(bus, AuditLogRequest(actor="hank"))


async def test_concurrent_logins_all_succeed(bus: Bus) -> None:
    await create_user(bus, "ivan")
    tokens = await asyncio.gather(*(login(bus, "ivan", "password-1", client="10.5.0.1") for _ in range(8)))
    assert len(set(tokens)) == 8
    for token in tokens:
        assert (await ask(bus, VerifyTokenRequest(token=token))).username == "ivan"


def test_request_models_refuse_bad_names_and_short_passwords() -> None:
    # The request models themselves refuse what the routes would: bad names, short passwords.
    with pytest.raises(ValueError):
        CreateUserRequest(actor="a", username="bad name", password="password-1")
    with pytest.raises(ValueError):
        CreateUserRequest(actor="a", username="ok", password="short")
    with pytest.raises(ValueError):
        CreateGroupRequest(actor="a", groupname="bad-name")


async def test_key_rotation_keeps_sessions_and_retirement_ends_them(bus: Bus, auth: ServiceApp) -> None:
    from pai_auth import keys as keyfile

    path = Path(auth.settings.data_dir) / "auth" / "jwt-keys.json"
    old_token = await login(bus, "admin", ADMIN_PASSWORD, client="10.7.0.1")
    old_kid = jwt.get_unverified_header(old_token)["kid"]
    keyfile.main(["rotate", str(auth.settings.data_dir)])
    new_kid = keyfile.load_or_create(path)[-1].kid
    for _ in range(100):  # the service rereads the file within a second
        token = await login(bus, "admin", ADMIN_PASSWORD, client="10.7.0.1")
        if jwt.get_unverified_header(token)["kid"] == new_kid:
            break
        await asyncio.sleep(0.1)
    assert jwt.get_unverified_header(token)["kid"] == new_kid != old_kid
    assert (await ask(bus, VerifyTokenRequest(token=old_token))).username == "admin"
    keyfile.main(["retire", str(auth.settings.data_dir)])
    for _ in range(100):
        try:
            await ask(bus, VerifyTokenRequest(token=old_token))
        except UnauthorizedUserError:
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("a token of a retired key still verifies")
    assert (await ask(bus, VerifyTokenRequest(token=token))).username == "admin"


async def test_groups_of_the_old_layout_keep_their_rights(
    mongo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> None:
    nats_alone = start_nats(tmp_path_factory.mktemp("auth-old-nats"))
    settings = AuthSettings(
        nats_url=nats_alone.url,
        mongo_url=mongo_server.url,
        data_dir=tmp_path_factory.mktemp("auth-old"),
        admin_password=ADMIN_PASSWORD,
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )
    app = ServiceApp("auth", settings)
    AuthService(app, settings)
    app.name = f"auth_{uuid.uuid4().hex[:8]}"
    client = connect_mongo(mongo_server.url)
    db = service_database(client, app.name)
    await db["groups"].insert_one({"_id": "admingroup", "acls": {"admin": True, "virtualClusters": []}})
    await db["groups"].insert_one({"_id": "legacy", "acls": {"virtualClusters": ["vc9"]}})
    await app.start()
    try:
        legacy = await db["groups"].find_one({"_id": "legacy"})
        assert legacy is not None and "acls" not in legacy
        assert legacy["extension"]["acls"] == {
            "admin": False,
            "virtualClusters": ["vc9"],
            "storageConfigs": [],
        }
        token = await login(app.bus, "admin", ADMIN_PASSWORD)
        identity: Identity = await ask(app.bus, VerifyTokenRequest(token=token))
        assert identity.admin
    finally:
        await app.stop()
        await client.close()
        nats_alone.stop()
