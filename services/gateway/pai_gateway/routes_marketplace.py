"""Marketplace routes: shared job templates, each one RPC to the marketplace service.

``/api/v2/marketplace/templates`` in the API's style: a token is required, errors are ``{code, message}``,
the list is ``{totalCount, data}``. Who may see and change a template is decided by the service.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request
from pydantic import Field

from pai_common.contract.rpc import (
    CreateTemplateRequest,
    DeleteTemplateRequest,
    GetTemplateRequest,
    ListTemplatesRequest,
    StarTemplateRequest,
    TemplateListReply,
    TemplateMessageReply,
    TemplateReply,
    UpdateTemplateRequest,
    UseTemplateRequest,
)
from pai_common.errors import NoTemplateError
from pai_gateway.auth_deps import Body, parse_body
from pai_gateway.deps import User, rpc

router = APIRouter()
PATH = "/api/v2/marketplace/templates"


class VisibilityBody(Body):
    type: Literal["all", "groups"] = "all"
    groups: list[str] = Field(default_factory=list, max_length=64)


class TemplateBody(Body):
    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=8192)
    tags: list[str] | None = Field(default=None, max_length=32)
    # The job protocol v2 YAML of the template.
    protocol: str | None = Field(default=None, max_length=256 * 1024)
    visibility: VisibilityBody | None = None


def _id(template_id: str) -> str:
    if len(template_id) > 80:
        raise NoTemplateError(f"Template {template_id[:80]}... is not found.")
    return template_id


def _fields(body: TemplateBody) -> dict[str, Any]:
    return {
        "name": body.name,
        "description": body.description,
        "tags": body.tags,
        "protocol": body.protocol,
        "visibility": body.visibility.type if body.visibility else None,
        "groups": body.visibility.groups if body.visibility else None,
    }


@router.get(PATH)
async def list_templates(
    request: Request,
    user: User,
    keyword: Annotated[str, Query(max_length=256)] = "",
    tag: Annotated[str, Query(max_length=64)] = "",
    author: Annotated[str, Query(max_length=64)] = "",
    order: Literal["stars", "uses", "updated", "name"] = "stars",
    offset: Annotated[int, Query(ge=0)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> dict[str, Any]:
    req = ListTemplatesRequest(
        username=user.username,
        admin=user.admin,
        keyword=keyword,
        tag=tag,
        author=author,
        order=order,
        offset=offset,
        limit=limit,
    )
    reply = await rpc(request, req, TemplateListReply)
    return {"totalCount": reply.total, "data": reply.templates}


@router.post(PATH, status_code=201)
async def create_template(request: Request, user: User) -> dict[str, Any]:
    body = await parse_body(request, TemplateBody)
    req = CreateTemplateRequest(username=user.username, admin=user.admin, **_fields(body))
    return (await rpc(request, req, TemplateReply)).template


@router.get(PATH + "/{template_id}")
async def get_template(request: Request, template_id: str, user: User) -> dict[str, Any]:
    req = GetTemplateRequest(username=user.username, admin=user.admin, id=_id(template_id))
    return (await rpc(request, req, TemplateReply)).template


@router.put(PATH + "/{template_id}")
async def update_template(request: Request, template_id: str, user: User) -> dict[str, Any]:
    body = await parse_body(request, TemplateBody)
    req = UpdateTemplateRequest(
        username=user.username, admin=user.admin, id=_id(template_id), **_fields(body)
    )
    return (await rpc(request, req, TemplateReply)).template


@router.delete(PATH + "/{template_id}")
async def delete_template(request: Request, template_id: str, user: User) -> dict[str, Any]:
    req = DeleteTemplateRequest(username=user.username, admin=user.admin, id=_id(template_id))
    return {"message": (await rpc(request, req, TemplateMessageReply)).message}


async def _star(request: Request, template_id: str, user: Any, starred: bool) -> dict[str, Any]:
    req = StarTemplateRequest(username=user.username, admin=user.admin, id=_id(template_id), starred=starred)
    return (await rpc(request, req, TemplateReply)).template


@router.put(PATH + "/{template_id}/star")
async def star_template(request: Request, template_id: str, user: User) -> dict[str, Any]:
    return await _star(request, template_id, user, True)


@router.delete(PATH + "/{template_id}/star")
async def unstar_template(request: Request, template_id: str, user: User) -> dict[str, Any]:
    return await _star(request, template_id, user, False)


@router.post(PATH + "/{template_id}/uses")
async def use_template(request: Request, template_id: str, user: User) -> dict[str, Any]:
    req = UseTemplateRequest(username=user.username, admin=user.admin, id=_id(template_id))
    return (await rpc(request, req, TemplateReply)).template
