"""The one-time values of a sign-in: state, nonce, PKCE verifier and challenge, login codes. Pure."""

from __future__ import annotations

import base64
import hashlib
import secrets


def new_secret() -> str:
    """256 random bits, URL-safe: a state, a nonce or a one-time login code."""
    return secrets.token_urlsafe(32)


def new_verifier() -> str:
    """A PKCE code verifier (RFC 7636: 43 to 128 characters of [A-Za-z0-9-._~])."""
    return secrets.token_urlsafe(48)


def challenge(verifier: str) -> str:
    """The S256 code challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def digest(value: str) -> str:
    """What the database keeps of a state, binding or code: its hash, never the value a browser holds."""
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def same(a: str, b: str) -> bool:
    return secrets.compare_digest(a.encode("utf-8"), b.encode("utf-8"))
