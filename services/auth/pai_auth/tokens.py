"""Token issue and verification, pure apart from the clock passed in."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import jwt

from pai_auth.keys import SigningKey
from pai_common.errors import UnauthorizedUserError

ALGORITHM = "HS256"
INVALID = "Your token is invalid."


@dataclass(frozen=True)
class Claims:
    username: str
    jti: str
    application: bool
    expires_at: int | None


def issue(
    key: SigningKey, username: str, now: int, ttl_s: int | None, application: bool = False
) -> tuple[str, Claims]:
    jti = uuid.uuid4().hex
    expires = now + ttl_s if ttl_s is not None else None
    claims = Claims(username, jti, application, expires)
    return encode(key, claims, now), claims


def encode(key: SigningKey, claims: Claims, issued_at: int) -> str:
    """The token of these claims. Deterministic, so a stored record (which never holds the token itself)
    gives back the very token that was issued, as long as its signing key is kept."""
    payload: dict[str, Any] = {
        "username": claims.username,
        "application": claims.application,
        "jti": claims.jti,
        "iat": issued_at,
    }
    if claims.expires_at is not None:
        payload["exp"] = claims.expires_at
    return jwt.encode(payload, key.secret, algorithm=ALGORITHM, headers={"kid": key.kid})


def verify(token: str, keys: list[SigningKey], now: int) -> Claims:
    """Check signature, algorithm and expiry; anything wrong is the same 401 to the caller."""
    try:
        header = jwt.get_unverified_header(token)
        key = next((k for k in keys if k.kid == header.get("kid")), None)
        if key is None:
            raise UnauthorizedUserError(INVALID)
        # Only HS256 is accepted: "none" and every other algorithm are refused by the library.
        payload = jwt.decode(
            token,
            key.secret,
            algorithms=[ALGORITHM],
            # Expiry is checked below against the clock passed in, and so is nothing else time-based:
            # a verifier whose clock lags the issuer's must not refuse a fresh token.
            options={"require": ["username", "jti", "iat"], "verify_exp": False, "verify_iat": False},
        )
    except jwt.PyJWTError:
        raise UnauthorizedUserError(INVALID) from None
    expires = payload.get("exp")
    if expires is not None and int(expires) <= now:
        raise UnauthorizedUserError(INVALID)
    return Claims(str(payload["username"]), str(payload["jti"]), bool(payload.get("application")), expires)
