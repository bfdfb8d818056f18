"""User routes of REST API v2 (``/api/v2/users`` and its alias ``/api/v2/user``): one RPC each.

Rights are checked by the auth service from the caller's groups; the gateway adds OpenPAI's rule that
application tokens may not manage accounts.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from fastapi import APIRouter, Request
from pydantic import Field

from pai_common.contract.rpc import (
    AuthMessageReply,
    CreateUserRequest,
    DeleteUserRequest,
    GetUserRequest,
    ListUsersRequest,
    UpdateUserRequest,
    UserListReply,
    UserReply,
)
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_gateway.auth_deps import Body, ExtensionBody, Human, parse_body
from pai_gateway.deps import User, rpc

router = APIRouter()
F = TypeVar("F", bound=Callable[..., Any])
PREFIXES = ("/api/v2/users", "/api/v2/user")
NAME = r"^[\w.-]+$"


def route(method: str, path: str, status_code: int = 200) -> Callable[[F], F]:
    def register(fn: F) -> F:
        for prefix in PREFIXES:
            router.add_api_route(prefix + path, fn, methods=[method], status_code=status_code)
        return fn

    return register


class CreateBody(Body):
    username: str = Field(min_length=1, max_length=64, pattern=NAME)
    password: str = Field(min_length=6, max_length=256)
    email: str = Field(default="", max_length=256)
    admin: bool = False
    virtualCluster: list[str] = Field(default_factory=list)
    extension: dict[str, Any] = Field(default_factory=dict)


class UserData(Body):
    username: str = Field(min_length=1, max_length=64)
    email: str | None = Field(default=None, max_length=256)
    virtualCluster: list[str] | None = None
    admin: bool | None = None
    password: str | None = Field(default=None, min_length=6, max_length=256)
    extension: dict[str, Any] | None = None


class UpdateBody(Body):
    data: UserData
    patch: bool = False


class MeData(Body):
    username: str | None = None
    email: str | None = Field(default=None, max_length=256)
    newPassword: str | None = Field(default=None, min_length=6, max_length=256)
    oldPassword: str | None = Field(default=None, max_length=256)
    extension: dict[str, Any] | None = None


class MeBody(Body):
    data: MeData
    patch: bool = False


class GrouplistBody(Body):
    grouplist: list[str]


class GroupBody(Body):
    groupname: str = Field(min_length=1, max_length=64)


class VirtualClusterBody(Body):
    virtualCluster: list[str]


class PasswordBody(Body):
    oldPassword: str | None = Field(default=None, max_length=256)
    newPassword: str = Field(min_length=6, max_length=256)


class EmailBody(Body):
    email: str = Field(max_length=256)


class AdminBody(Body):
    admin: bool


async def _update(request: Request, req: UpdateUserRequest) -> dict[str, str]:
    reply = await rpc(request, req, AuthMessageReply)
    return {"message": reply.message}


@route("GET", "/me")
async def get_me(request: Request, user: User) -> dict[str, Any]:
    reply = await rpc(request, GetUserRequest(actor=user.username, username=user.username), UserReply)
    return reply.user


@route("PUT", "/me", 201)
async def update_me(request: Request, user: Human) -> dict[str, str]:
    body = await parse_body(request, MeBody)
    if body.data.username not in (None, user.username):
        raise ForbiddenUserError(
            f"User {user.username} may change only their own profile here, not {body.data.username}."
        )
    req = UpdateUserRequest(
        actor=user.username,
        username=user.username,
        email=body.data.email,
        password=body.data.newPassword,
        old_password=body.data.oldPassword,
        extension=body.data.extension,
        merge_extension=body.patch,
        keep_token_id=user.token_id or None,
    )
    return await _update(request, req)


@route("GET", "")
@route("GET", "/")
async def list_users(request: Request, user: User) -> list[dict[str, Any]]:
    reply = await rpc(request, ListUsersRequest(actor=user.username), UserListReply)
    return reply.users


@route("GET", "/{username}")
async def get_user(request: Request, username: str, user: User) -> dict[str, Any]:
    reply = await rpc(request, GetUserRequest(actor=user.username, username=_name(username)), UserReply)
    return reply.user


@router.get("/api/v1/user/{username}")
async def get_user_v1(request: Request, username: str, user: User) -> dict[str, Any]:
    return await get_user(request, username, user)


@route("POST", "", 201)
@route("POST", "/", 201)
async def create_user(request: Request, user: Human) -> dict[str, str]:
    body = await parse_body(request, CreateBody)
    req = CreateUserRequest(
        actor=user.username,
        username=body.username,
        password=body.password,
        email=body.email,
        admin=body.admin,
        virtual_clusters=body.virtualCluster,
        extension=body.extension,
    )
    reply = await rpc(request, req, AuthMessageReply)
    return {"message": reply.message}


@route("PUT", "", 201)
@route("PUT", "/", 201)
async def update_user(request: Request, user: Human) -> dict[str, str]:
    body = await parse_body(request, UpdateBody)
    data = body.data
    req = UpdateUserRequest(
        actor=user.username,
        username=data.username,
        email=data.email,
        password=data.password,
        admin=data.admin,
        virtual_clusters=data.virtualCluster,
        extension=data.extension,
        merge_extension=body.patch,
        keep_token_id=user.token_id or None,
    )
    return await _update(request, req)


@route("DELETE", "/{username}")
async def delete_user(request: Request, username: str, user: Human) -> dict[str, str]:
    reply = await rpc(
        request, DeleteUserRequest(actor=user.username, username=_name(username)), AuthMessageReply
    )
    return {"message": reply.message}


@route("PUT", "/{username}/extension", 201)
async def update_extension(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, ExtensionBody)
    return await _update(
        request, UpdateUserRequest(actor=user.username, username=_name(username), extension=body.extension)
    )


@route("PUT", "/{username}/grouplist", 201)
async def update_grouplist(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, GrouplistBody)
    return await _update(
        request, UpdateUserRequest(actor=user.username, username=_name(username), grouplist=body.grouplist)
    )


@route("PUT", "/{username}/group", 201)
async def add_group(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, GroupBody)
    return await _update(
        request, UpdateUserRequest(actor=user.username, username=_name(username), add_group=body.groupname)
    )


@route("DELETE", "/{username}/group", 201)
async def remove_group(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, GroupBody)
    return await _update(
        request, UpdateUserRequest(actor=user.username, username=_name(username), remove_group=body.groupname)
    )


@route("PUT", "/{username}/virtualcluster", 201)
async def update_virtual_clusters(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, VirtualClusterBody)
    req = UpdateUserRequest(
        actor=user.username, username=_name(username), virtual_clusters=body.virtualCluster
    )
    return await _update(request, req)


@route("PUT", "/{username}/password", 201)
async def update_password(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, PasswordBody)
    req = UpdateUserRequest(
        actor=user.username,
        username=_name(username),
        password=body.newPassword,
        old_password=body.oldPassword,
        keep_token_id=user.token_id or None,
    )
    return await _update(request, req)


@route("PUT", "/{username}/email", 201)
async def update_email(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, EmailBody)
    return await _update(
        request, UpdateUserRequest(actor=user.username, username=_name(username), email=body.email)
    )


@route("PUT", "/{username}/admin", 201)
async def update_admin(request: Request, username: str, user: Human) -> dict[str, str]:
    body = await parse_body(request, AdminBody)
    return await _update(
        request, UpdateUserRequest(actor=user.username, username=_name(username), admin=body.admin)
    )


def _name(username: str) -> str:
    if not username or len(username) > 64:
        raise InvalidParametersError("username must be 1 to 64 characters")
    return username
