"""Who is calling: the token from the Authorization header, checked by the auth service.

Answers are cached for a few seconds so that a burst of requests costs one RPC; revocation therefore
takes effect within that time.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass, field

from fastapi import Request

from pai_common.bus import Bus
from pai_common.contract.rpc import Identity, VerifyTokenRequest
from pai_common.errors import UnauthorizedUserError

GUEST = "Guest is not allowed to do this operation."
MAX_CACHE = 10_000


@dataclass
class IdentityResolver:
    bus: Bus
    ttl_s: float
    timeout_s: float
    _cache: dict[str, tuple[float, Identity]] = field(default_factory=dict)

    async def resolve(self, request: Request) -> Identity:
        token, basic_user = _token_from_header(request.headers.get("authorization"))
        now = time.monotonic()
        hit = self._cache.get(token)
        if hit and hit[0] > now:
            identity = hit[1]
        else:
            identity = await self.bus.request(
                VerifyTokenRequest(token=token), Identity, timeout=self.timeout_s
            )
            if len(self._cache) >= MAX_CACHE:
                self._cache.clear()
            self._cache[token] = (now + self.ttl_s, identity)
        # "Basic user:token" works only with an application token of that very user.
        if basic_user is not None and (basic_user != identity.username or not identity.application):
            raise UnauthorizedUserError("Your token is invalid.")
        return identity


def _token_from_header(header: str | None) -> tuple[str, str | None]:
    if not header:
        raise UnauthorizedUserError(GUEST)
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value, None
    if scheme.lower() == "basic" and value:
        try:
            user, _, token = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise UnauthorizedUserError("Your token is invalid.") from None
        if user and token:
            return token, user
    raise UnauthorizedUserError(GUEST)
