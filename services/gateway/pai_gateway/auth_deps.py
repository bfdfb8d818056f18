"""What the user, group and token routes share: JSON bodies checked against a model, and the
"not an application token" rule OpenPAI applies to account management."""

from __future__ import annotations

import json
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict, ValidationError

from pai_common.contract.rpc import Identity
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_gateway.deps import User, read_body

NO_APPLICATIONS = "Applications are not allowed to do this operation."

B = TypeVar("B", bound=BaseModel)


class Body(BaseModel):
    """A request body: unknown fields are refused, as OpenPAI's Joi schemas do."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ExtensionBody(Body):
    """``{extension: {...}}``, merged into a user's or a group's extension."""

    extension: dict[str, Any]


async def _human(user: User) -> Identity:
    if user.application:
        raise ForbiddenUserError(NO_APPLICATIONS)
    return user


# A caller with a login token (application tokens may not manage accounts or tokens).
Human = Annotated[Identity, Depends(_human)]


async def json_object(request: Request) -> dict[str, Any]:
    """The request's body as a JSON object; InvalidParametersError otherwise."""
    raw = await read_body(request)
    try:
        data: Any = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidParametersError("the body is not valid JSON") from None
    if not isinstance(data, dict):
        raise InvalidParametersError("the body must be a JSON object")
    return data


async def parse_body(request: Request, model: type[B]) -> B:
    data = await json_object(request)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
        )
        raise InvalidParametersError(problems) from None
