"""Which storages a user sees: granted by the storage's groups or by a group's storageConfigs ACL."""

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
    ListStoragesRequest,
    StorageListReply,
    UpdateUserRequest,
)
from pai_common.embedded import ServerProcess, start_nats
from pai_common.service import ServiceApp
from pai_storage.grants import visible
from pai_storage.shell import STORAGES, StorageService

STORES = [
    {"_id": "local", "groups": ["default"]},
    {"_id": "nfs", "groups": []},
    {"_id": "team", "groups": ["team"]},
]


@pytest.mark.parametrize(
    ("admin", "groups", "configs", "names"),
    [
        (False, [], [], []),
        (False, ["default"], [], ["local"]),
        (False, ["default"], ["nfs"], ["local", "nfs"]),
        (False, ["team"], ["missing"], ["team"]),
        (True, [], [], ["local", "nfs", "team"]),
    ],
)
def test_visible(admin: bool, groups: list[str], configs: list[str], names: list[str]) -> None:
    assert [s["_id"] for s in visible(STORES, admin, groups, configs)] == names


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
    await storage.db[STORAGES].insert_one({"_id": "nfs", "type": "nfs", "groups": []})
    client = await Bus.connect(nats_srv.url, "test")
    yield client
    await client.close()
    await storage.stop()
    await auth.stop()


async def names(bus: Bus, **req: Any) -> list[str]:
    reply = await bus.request(ListStoragesRequest(**req), StorageListReply, timeout=10)
    return [s["name"] for s in reply.storages]


async def test_a_group_acl_grants_a_storage(bus: Bus) -> None:
    await bus.request(
        CreateUserRequest(actor="admin", username="sam", password="sam-password"),
        CreateUserRequest.REPLY,  # type: ignore[arg-type]
        timeout=10,
    )
    assert await names(bus, username="sam") == ["local"]
    assert await names(bus, username="admin", admin=True) == ["local", "nfs"]
    await bus.request(
        CreateGroupRequest(
            actor="admin", groupname="nfsusers", extension={"acls": {"storageConfigs": ["nfs"]}}
        ),
        CreateGroupRequest.REPLY,  # type: ignore[arg-type]
        timeout=10,
    )
    await bus.request(
        UpdateUserRequest(actor="admin", username="sam", add_group="nfsusers"),
        UpdateUserRequest.REPLY,  # type: ignore[arg-type]
        timeout=10,
    )
    assert await names(bus, username="sam") == ["local", "nfs"]
