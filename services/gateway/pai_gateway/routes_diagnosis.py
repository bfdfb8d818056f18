"""The exit spec (admins only): read the one in effect or the shipped one, replace or overlay it, reset it.

OpenPAI configures its exit spec at deploy time and has no such API; these routes are this project's.
The upload is YAML or JSON text; the diagnosis service validates it before it takes effect.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request

from pai_common.contract.rpc import ExitSpecReply, GetExitSpecRequest, PutExitSpecRequest
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_gateway.deps import User, read_body, rpc

router = APIRouter()
PATH = "/api/v2/diagnosis/exit-spec"


def _admin_only(user: Any) -> None:
    if not user.admin:
        raise ForbiddenUserError("Only admins may read or change the exit spec.")


def _view(reply: ExitSpecReply) -> dict[str, Any]:
    return {
        "revision": reply.revision,
        "source": reply.source,
        "updatedBy": reply.updated_by,
        "updatedAt": reply.updated_at,
        "spec": reply.spec,
    }


@router.get(PATH)
async def get_exit_spec(request: Request, user: User, builtin: bool = False) -> dict[str, Any]:
    _admin_only(user)
    req = GetExitSpecRequest(builtin=builtin, username=user.username, admin=user.admin)
    return _view(await rpc(request, req, ExitSpecReply))


@router.put(PATH)
async def put_exit_spec(
    request: Request, user: User, mode: Literal["replace", "overlay"] = "replace"
) -> dict[str, Any]:
    _admin_only(user)
    raw = await read_body(request)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidParametersError("the exit spec must be UTF-8 text (YAML or JSON)") from exc
    req = PutExitSpecRequest(text=text, mode=mode, username=user.username, admin=user.admin)
    return _view(await rpc(request, req, ExitSpecReply))


@router.delete(PATH)
async def reset_exit_spec(request: Request, user: User) -> dict[str, Any]:
    _admin_only(user)
    req = PutExitSpecRequest(mode="reset", username=user.username, admin=user.admin)
    return _view(await rpc(request, req, ExitSpecReply))
