"""Storage definitions and grants: the pure rules (what an admin may define, what anyone is shown, what a
job mounts), then the storage service with the real auth service on a real bus: a group's storageConfigs
ACL grants a storage, at once."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from pai_auth.shell import AuthService, AuthSettings
from pai_common.bus import Bus
from pai_common.contract.rpc import (
    CreateGroupRequest,
    CreateUserRequest,
    DeleteStorageRequest,
    GetStorageRequest,
    ListStoragesRequest,
    PutStorageRequest,
    ResolveStoragesReply,
    ResolveStoragesRequest,
    StorageCredentialsReply,
    StorageCredentialsRequest,
    StorageListReply,
    StorageMessageReply,
    StorageReply,
    UpdateUserRequest,
)
from pai_common.embedded import ServerProcess, start_nats
from pai_common.errors import (
    ConflictStorageError,
    ForbiddenUserError,
    InvalidParametersError,
    NoStorageError,
)
from pai_common.service import ServiceApp
from pai_storage import definitions, grants
from pai_storage.shell import StorageService

STORES: dict[str, dict[str, Any]] = {
    name: definitions.check(body).doc
    for name, body in {
        "data": {"name": "data", "type": "local", "data": {"path": "/srv/data"}, "default": True},
        "nfs": {"name": "nfs", "type": "nfs", "data": {"server": "10.0.0.5", "path": "/export"}},
        "home": {"name": "home", "type": "local", "share": False, "data": {"path": "/srv/home"}},
    }.items()
}

# ---- the rules -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("admin", "configs", "names"),
    [
        (False, [], []),
        (False, ["data"], ["data"]),
        (False, ["nfs", "missing"], ["nfs"]),
        (True, [], ["data", "nfs", "home"]),
    ],
)
def test_visible(admin: bool, configs: list[str], names: list[str]) -> None:
    assert [s["_id"] for s in grants.visible(STORES.values(), admin, configs)] == names


def test_every_wrong_field_is_named_and_credentials_are_kept_apart() -> None:
    with pytest.raises(definitions.DefinitionError) as bad:
        definitions.check(
            {
                "name": "bad name",
                "type": "nfs",
                "share": "yes",
                "mountOptions": ["vers=4,rw"],
                "data": {"server": "a b", "path": "relative", "extra": "x"},
                "colour": "red",
            }
        )
    text = str(bad.value)
    for field in ("colour", "name", "share", "mountOptions[0]", "data.server", "data.path", "data.extra"):
        assert f"{field}:" in text, field
    checked = definitions.check(
        {
            "name": "blob",
            "type": "azureBlob",
            "data": {"accountName": "acct01", "containerName": "train-data", "accountKey": "S3CRET=="},
        }
    )
    assert checked.credentials == {"accountKey": "S3CRET=="}
    shown = definitions.detail(checked.doc)
    assert "S3CRET" not in repr(shown) and "S3CRET" not in repr(checked.doc)
    assert shown == {
        "name": "blob", "share": True, "volumeName": "blob", "default": False, "type": "azureBlob",
        "storageType": "azureBlob",
        "data": {"accountName": "acct01", "containerName": "train-data"}, "readOnly": False,
    }  # fmt: skip
    # An update that leaves the credentials out keeps them.
    again = definitions.check(
        {"type": "azureBlob", "data": {"accountName": "acct01", "containerName": "c-2"}},
        "blob",
        {"accountKey": "S3CRET=="},
    )
    assert again.credentials == {"accountKey": "S3CRET=="}


def test_what_a_job_mounts() -> None:
    # Nothing named: the user's default storages that a group grants.
    assert [m.name for m in grants.resolve(STORES, "ann", False, ["data", "nfs"], None)] == ["data"]
    assert grants.resolve(STORES, "ann", False, ["nfs"], None) == []
    mounts = grants.resolve(
        STORES, "ann", False, ["home", "nfs"], [{"name": "home"}, {"name": "nfs", "mountPath": "/data/n"}]
    )
    assert [(m.mount_path, m.sub_path) for m in mounts] == [("/mnt/home", "ann"), ("/data/n", None)]
    assert mounts[1].data == {"server": "10.0.0.5", "path": "/export"}
    with pytest.raises(NoStorageError, match="Storage nope is not found"):
        grants.resolve(STORES, "ann", False, ["nope"], [{"name": "nope"}])
    with pytest.raises(ForbiddenUserError, match="ann is not allowed to access nfs"):
        grants.resolve(STORES, "ann", False, ["data"], [{"name": "nfs"}])
    with pytest.raises(InvalidParametersError, match="system folder"):
        grants.resolve(STORES, "ann", True, [], [{"name": "nfs", "mountPath": "/etc/x"}])
    with pytest.raises(InvalidParametersError, match="mounted twice"):
        grants.resolve(
            STORES, "ann", True, [], [{"name": "nfs", "mountPath": "/m"}, {"name": "data", "mountPath": "/m"}]
        )
    # A prerequisite pointing into a storage mounts it too.
    both = grants.resolve(STORES, "ann", False, ["data", "nfs"], None, ["nfs"])
    assert [m.name for m in both] == ["data", "nfs"]


# ---- the service with the auth service, on a real bus -------------------------------------------------


@pytest.fixture(scope="module")
def nats_srv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    server = start_nats(tmp_path_factory.mktemp("storage-nats"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
async def bus(
    nats_srv: ServerProcess, mongo_server: ServerProcess, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[Bus]:
    data = tmp_path_factory.mktemp("storage-data")
    auth_settings = AuthSettings(
        nats_url=nats_srv.url,
        mongo_url=mongo_server.url,
        data_dir=data,
        admin_password="storage-admin-pw",
        argon2_time_cost=1,
        argon2_memory_kib=8 * 1024,
        argon2_parallelism=1,
    )
    auth = ServiceApp("auth", auth_settings)
    AuthService(auth, auth_settings)
    auth.name = f"auth_{uuid.uuid4().hex[:8]}"
    storage = ServiceApp("storage", auth_settings)
    StorageService(storage)
    storage.name = f"storage_{uuid.uuid4().hex[:8]}"
    await auth.start()
    await storage.start()
    client = await Bus.connect(nats_srv.url, "test")
    yield client
    await client.close()
    await storage.stop()
    await auth.stop()


async def ask(bus: Bus, req: Any, reply: Any) -> Any:
    return await bus.request(req, reply, timeout=10)


async def put(bus: Bus, body: dict[str, Any], actor: str) -> StorageMessageReply:
    req = PutStorageRequest(mode="create", body=body, actor=actor, admin=actor == "admin")
    reply: StorageMessageReply = await ask(bus, req, StorageMessageReply)
    return reply


async def delete(bus: Bus, name: str) -> StorageMessageReply:
    req = DeleteStorageRequest(name=name, actor="admin", admin=True)
    reply: StorageMessageReply = await ask(bus, req, StorageMessageReply)
    return reply


async def names(bus: Bus, **req: Any) -> list[str]:
    return [s["name"] for s in (await ask(bus, ListStoragesRequest(**req), StorageListReply)).storages]


async def test_a_group_acl_grants_a_storage(bus: Bus) -> None:
    for body in (
        {"name": "team", "type": "nfs", "default": True, "data": {"server": "nfs.local", "path": "/team"}},
        {
            "name": "files",
            "type": "samba",
            "data": {"address": "//smb.local/share", "username": "u1", "password": "pw-never-shown"},
        },
    ):
        created = await put(bus, body, "admin")
        assert created.message == f"Storage {body['name']} is created successfully."
    with pytest.raises(ConflictStorageError, match="already exists"):
        await ask(
            bus, PutStorageRequest(mode="create", body=body, actor="admin", admin=True), StorageMessageReply
        )
    with pytest.raises(ForbiddenUserError):
        await ask(
            bus, PutStorageRequest(mode="create", body=body, actor="sam", admin=False), StorageMessageReply
        )
    await ask(
        bus,
        CreateUserRequest(actor="admin", username="sam", password="sam-password"),
        CreateUserRequest.REPLY,
    )
    assert await names(bus, username="sam") == []
    assert await names(bus, username="admin", admin=True) == ["files", "team"]
    with pytest.raises(ForbiddenUserError, match="sam is not allowed to access team"):
        await ask(bus, GetStorageRequest(name="team", username="sam"), StorageReply)
    with pytest.raises(NoStorageError, match="Storage ghost is not found"):
        await ask(bus, GetStorageRequest(name="ghost", username="sam"), StorageReply)
    await ask(
        bus,
        CreateGroupRequest(
            actor="admin", groupname="teamx", extension={"acls": {"storageConfigs": ["team", "files"]}}
        ),
        CreateGroupRequest.REPLY,
    )
    await ask(
        bus, UpdateUserRequest(actor="admin", username="sam", add_group="teamx"), UpdateUserRequest.REPLY
    )
    # The grant takes effect at once: no cache to wait for.
    assert await names(bus, username="sam") == ["files", "team"]
    assert await names(bus, username="sam", default_only=True) == ["team"]
    shown = (await ask(bus, GetStorageRequest(name="files", username="sam"), StorageReply)).storage
    assert shown["data"] == {"address": "//smb.local/share", "username": "u1"}
    assert "pw-never-shown" not in repr(shown)
    creds = await ask(bus, StorageCredentialsRequest(storage="files", node="node-0"), StorageCredentialsReply)
    assert creds.values == {"password": "pw-never-shown"}
    # A job of sam's naming nothing mounts sam's defaults; its submission holds the storage.
    resolved = await ask(bus, ResolveStoragesRequest(username="sam", job_key="sam~j1"), ResolveStoragesReply)
    assert [(m.name, m.mount_path, m.type) for m in resolved.mounts] == [("team", "/mnt/team", "nfs")]
    with pytest.raises(ConflictStorageError, match=r"unfinished jobs \(sam~j1\)"):
        await ask(bus, DeleteStorageRequest(name="team", actor="admin", admin=True), StorageMessageReply)
    deleted = await ask(
        bus, DeleteStorageRequest(name="files", actor="admin", admin=True), StorageMessageReply
    )
    assert deleted.message == "Storage files is deleted successfully."
    with pytest.raises(NoStorageError):
        await ask(bus, StorageCredentialsRequest(storage="files", node="node-0"), StorageCredentialsReply)
