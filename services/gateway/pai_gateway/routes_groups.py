"""Group routes of REST API v2 (``/api/v2/groups`` and its alias ``/api/v2/group``), and the audit log."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Query, Request
from pydantic import Field

from pai_common.contract.rpc import (
    AuditLogReply,
    AuditLogRequest,
    AuthMessageReply,
    CreateGroupRequest,
    DeleteGroupRequest,
    GetGroupRequest,
    GroupListReply,
    GroupMembersReply,
    GroupMembersRequest,
    GroupReply,
    ListGroupsRequest,
    UpdateGroupRequest,
)
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_gateway.auth_deps import Body, ExtensionBody, Human, parse_body
from pai_gateway.deps import User, rpc

router = APIRouter()
F = TypeVar("F", bound=Callable[..., Any])
PREFIXES = ("/api/v2/groups", "/api/v2/group")
GROUP_NAME = r"^[A-Za-z0-9_]+$"
NON_ADMIN = "Non-admin is not allow to do this operation."


def route(method: str, path: str, status_code: int = 200) -> Callable[[F], F]:
    def register(fn: F) -> F:
        for prefix in PREFIXES:
            router.add_api_route(prefix + path, fn, methods=[method], status_code=status_code)
        return fn

    return register


class CreateBody(Body):
    groupname: str = Field(min_length=1, max_length=64, pattern=GROUP_NAME)
    description: str = Field(default="", max_length=1024)
    externalName: str = Field(default="", max_length=256)
    extension: dict[str, Any] = Field(default_factory=dict)


class GroupData(Body):
    groupname: str = Field(min_length=1, max_length=64)
    description: str | None = Field(default=None, max_length=1024)
    externalName: str | None = Field(default=None, max_length=256)
    extension: dict[str, Any] | None = None


class UpdateBody(Body):
    data: GroupData
    patch: bool = False


class DescriptionBody(Body):
    description: str = Field(max_length=1024)


class ExternalNameBody(Body):
    externalName: str = Field(max_length=256)


@route("GET", "")
@route("GET", "/")
async def list_groups(request: Request, user: User) -> list[dict[str, Any]]:
    return (await rpc(request, ListGroupsRequest(), GroupListReply)).groups


@route("GET", "/{groupname}")
async def get_group(request: Request, groupname: str, user: User) -> dict[str, Any]:
    return (await rpc(request, GetGroupRequest(groupname=_name(groupname)), GroupReply)).group


@route("GET", "/{groupname}/userlist")
async def group_members(request: Request, groupname: str, user: User) -> list[dict[str, Any]]:
    reply = await rpc(
        request, GroupMembersRequest(actor=user.username, groupname=_name(groupname)), GroupMembersReply
    )
    return reply.members


@route("POST", "", 201)
@route("POST", "/", 201)
async def create_group(request: Request, user: Human) -> dict[str, str]:
    body = await parse_body(request, CreateBody)
    req = CreateGroupRequest(
        actor=user.username,
        groupname=body.groupname,
        description=body.description,
        external_name=body.externalName,
        extension=body.extension,
    )
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


@route("PUT", "", 201)
@route("PUT", "/", 201)
async def update_group(request: Request, user: Human) -> dict[str, str]:
    body = await parse_body(request, UpdateBody)
    req = UpdateGroupRequest(
        actor=user.username,
        groupname=body.data.groupname,
        description=body.data.description,
        external_name=body.data.externalName,
        extension=body.data.extension,
        merge_extension=body.patch,
    )
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


@route("PUT", "/{groupname}/extension", 201)
async def update_extension(request: Request, groupname: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, ExtensionBody)
    req = UpdateGroupRequest(
        actor=user.username, groupname=_name(groupname), extension=body.extension, merge_extension=False
    )
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


class AttributeBody(Body):
    data: Any


@route("PUT", "/{groupname}/extension/{attribute:path}", 201)
async def update_extension_attribute(
    request: Request, groupname: str, attribute: str, user: Human
) -> dict[str, str]:
    """OpenPAI's path-addressed update: ``/extension/acls/virtualClusters`` with ``{data: [...]}``."""
    body = await parse_body(request, AttributeBody)
    keys = [k for k in attribute.split("/") if k]
    if not keys or len(keys) > 8:
        raise InvalidParametersError("name an extension attribute, e.g. extension/acls/virtualClusters")
    patch: Any = body.data
    for key in reversed(keys):
        patch = {key: patch}
    req = UpdateGroupRequest(actor=user.username, groupname=_name(groupname), extension=patch)
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


@route("PUT", "/{groupname}/description", 201)
async def update_description(request: Request, groupname: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, DescriptionBody)
    req = UpdateGroupRequest(actor=user.username, groupname=_name(groupname), description=body.description)
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


@route("PUT", "/{groupname}/externalname", 201)
async def update_external_name(request: Request, groupname: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, ExternalNameBody)
    req = UpdateGroupRequest(actor=user.username, groupname=_name(groupname), external_name=body.externalName)
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


@route("DELETE", "/{groupname}")
async def delete_group(request: Request, groupname: str, user: Human) -> dict[str, str]:
    req = DeleteGroupRequest(actor=user.username, groupname=_name(groupname))
    return {"message": (await rpc(request, req, AuthMessageReply)).message}


@router.get("/api/v2/audit-log")
async def audit_log(
    request: Request,
    user: Human,
    target: str | None = None,
    actor: str | None = None,
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> dict[str, Any]:
    """Admins only: every change of users, groups, rights and tokens, newest first."""
    if not user.admin:
        raise ForbiddenUserError(NON_ADMIN)
    req = AuditLogRequest(actor=user.username, target=target, by=actor, offset=offset, limit=limit)
    reply = await rpc(request, req, AuditLogReply)
    return {"totalCount": reply.total, "data": reply.entries}


def _name(groupname: str) -> str:
    if not groupname or len(groupname) > 64:
        raise InvalidParametersError("groupname must be 1 to 64 characters")
    return groupname
