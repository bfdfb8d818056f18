"""Storage routes: OpenPAI's `GET /api/v2/storages` and `GET /api/v2/storages/{name}` for every user (only
what their groups grant), and the admin routes that define storages (create, replace, delete)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request

from pai_common.contract.rpc import (
    DeleteStorageRequest,
    GetStorageRequest,
    ListStoragesRequest,
    PutStorageRequest,
    StorageListReply,
    StorageMessageReply,
    StorageReply,
)
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_gateway.auth_deps import NO_APPLICATIONS, Human, json_object
from pai_gateway.deps import User, rpc

router = APIRouter()
NON_ADMIN = "Non-admin is not allow to do this operation."


def _admin(user: Human) -> None:
    if user.application:
        raise ForbiddenUserError(NO_APPLICATIONS)
    if not user.admin:
        raise ForbiddenUserError(NON_ADMIN)


def _default_only(value: str | None) -> bool:
    if value in (None, "false"):
        return False
    if value == "true":
        return True
    raise InvalidParametersError(f"default must be true or false, got {value!r}")


@router.get("/api/v2/storages")
async def list_storages(
    request: Request, user: User, default: Annotated[str | None, Query()] = None
) -> dict[str, Any]:
    req = ListStoragesRequest(username=user.username, admin=user.admin, default_only=_default_only(default))
    return {"storages": (await rpc(request, req, StorageListReply)).storages}


@router.get("/api/v2/storages/{name}")
async def get_storage(request: Request, name: str, user: User) -> dict[str, Any]:
    req = GetStorageRequest(name=name, username=user.username, admin=user.admin)
    return (await rpc(request, req, StorageReply)).storage


@router.post("/api/v2/storages", status_code=201)
async def create_storage(request: Request, user: Human) -> dict[str, str]:
    _admin(user)
    req = PutStorageRequest(
        mode="create", body=await json_object(request), actor=user.username, admin=user.admin
    )
    return {"message": (await rpc(request, req, StorageMessageReply)).message}


@router.put("/api/v2/storages/{name}")
async def replace_storage(request: Request, name: str, user: Human) -> dict[str, str]:
    _admin(user)
    req = PutStorageRequest(
        mode="update", name=name, body=await json_object(request), actor=user.username, admin=user.admin
    )
    return {"message": (await rpc(request, req, StorageMessageReply)).message}


@router.delete("/api/v2/storages/{name}")
async def delete_storage(request: Request, name: str, user: Human) -> dict[str, str]:
    _admin(user)
    req = DeleteStorageRequest(name=name, actor=user.username, admin=user.admin)
    return {"message": (await rpc(request, req, StorageMessageReply)).message}
