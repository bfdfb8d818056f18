"""What every route module needs: the bus, the caller's identity, bounded bodies and the RPC timeout.

The application object carries them in ``app.state`` (set once by ``build_http_app``), so route modules
are plain ``APIRouter``s that never import each other.
"""

from __future__ import annotations

import asyncio
import re
from typing import Annotated, TypeVar

from fastapi import Depends, Request

from pai_common.bus import Bus
from pai_common.contract.base import RpcReply, RpcRequest
from pai_common.contract.rpc import Identity
from pai_common.errors import NoJobError, PayloadTooLargeError, RequestTimeoutError
from pai_gateway.identity import IdentityResolver
from pai_gateway.settings import GatewaySettings

JOB_KEY_PATTERN = r"^[\w.-]+~[\w-]+$"

R = TypeVar("R", bound=RpcReply)


def settings_of(request: Request) -> GatewaySettings:
    settings: GatewaySettings = request.app.state.settings
    return settings


def bus_of(request: Request) -> Bus:
    bus: Bus = request.app.state.bus_provider()
    # While the bus is down every route that needs it answers 503 at once, not after a timeout.
    bus.ensure_up()
    return bus


async def rpc(
    request: Request,
    body: RpcRequest,
    reply: type[R],
    target: str | None = None,
    timeout: float | None = None,
) -> R:
    """One RPC on the bus with the gateway's timeout (unless the route gives its own)."""
    wait = settings_of(request).rpc_timeout_s if timeout is None else timeout
    return await bus_of(request).request(body, reply, target=target, timeout=wait)


async def _identity(request: Request) -> Identity:
    resolver: IdentityResolver = request.app.state.resolver()
    return await resolver.resolve(request)


# Every route that takes a ``User`` needs a valid token.
User = Annotated[Identity, Depends(_identity)]


async def read_body(request: Request) -> bytes:
    """The request body, refused as soon as it grows past the gateway's limit or arrives too slowly."""
    settings = settings_of(request)
    limit = settings.max_body_bytes
    body = b""
    try:
        async with asyncio.timeout(settings.body_timeout_s):
            async for chunk in request.stream():
                body += chunk
                if len(body) > limit:
                    raise PayloadTooLargeError(f"request body exceeds {limit} bytes")
    except TimeoutError:
        raise RequestTimeoutError(
            f"the request body did not arrive within {settings.body_timeout_s:g}s"
        ) from None
    return body


def job_key(framework_name: str) -> str:
    """``user~job`` from the path, or the 404 OpenPAI answers for a name that cannot exist."""
    if not re.match(JOB_KEY_PATTERN, framework_name):
        raise NoJobError(f"Job {framework_name} is not found.")
    return framework_name


def first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else text
