"""NATS JWTs: the ``ed25519-nkey`` JWTs nats-server sends (authorization requests) and expects back
(authorization responses and the user claims inside them).

Header ``{"typ":"JWT","alg":"ed25519-nkey"}``; the signature is the issuer nkey's Ed25519 signature of
``<header>.<claims>`` (base64url without padding), and the issuer is the claims' ``iss`` public nkey.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from typing import Any

import nacl.exceptions
import nacl.signing
import nkeys

HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


class JwtError(ValueError):
    """A token that is not a NATS JWT, or whose signature is not its issuer's."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError) as exc:
        raise JwtError(f"not base64url: {exc}") from None


def new_account_seed() -> str:
    """A fresh account nkey seed (``SA...``): the callout's issuer."""
    return bytes(nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_ACCOUNT)).decode()


def keypair(seed: str) -> nkeys.KeyPair:
    try:
        return nkeys.from_seed(seed.strip().encode())
    except nkeys.NkeysError as exc:
        raise JwtError(f"not an nkey seed: {type(exc).__name__}") from None


def public_key(seed: str) -> str:
    return bytes(keypair(seed).public_key).decode()


def _raw_public(key: str) -> bytes:
    """The 32 Ed25519 bytes of an encoded public nkey (checksum verified)."""
    try:
        raw = base64.b32decode(key + "=" * (-len(key) % 8))
    except (binascii.Error, ValueError):
        raise JwtError(f"not a public nkey: {key[:8]!r}…") from None
    body, crc = raw[:-2], int.from_bytes(raw[-2:], "little")
    if len(body) != 33 or binascii.crc_hqx(body, 0) != crc or not nkeys.valid_public_prefix_byte(body[0]):
        raise JwtError(f"not a public nkey: {key[:8]!r}…")
    return body[1:]


def encode(claims: dict[str, Any], signer: nkeys.KeyPair) -> str:
    """Sign ``claims`` (``iss`` and ``iat`` are set here, and ``jti`` from their hash, as NATS does)."""
    body = dict(claims)
    body["iss"] = bytes(signer.public_key).decode()
    body.setdefault("iat", int(time.time()))
    body["jti"] = ""
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).digest()
    body["jti"] = base64.b32encode(digest).decode().rstrip("=")
    signing_input = f"{_b64(json.dumps(HEADER).encode())}.{_b64(json.dumps(body).encode())}"
    return f"{signing_input}.{_b64(signer.sign(signing_input.encode()))}"


def decode(token: str, issuer_prefix: str = "") -> dict[str, Any]:
    """The claims of a NATS JWT whose signature is its ``iss``'s (and whose issuer is of the given kind:
    ``N`` a server, ``A`` an account); JwtError otherwise."""
    parts = token.strip().split(".")
    if len(parts) != 3:
        raise JwtError("not a JWT (three dot-separated parts)")
    try:
        header = json.loads(_unb64(parts[0]))
        claims = json.loads(_unb64(parts[1]))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise JwtError("not a JWT (its header or claims are not JSON)") from None
    if not isinstance(header, dict) or header.get("alg") != HEADER["alg"]:
        raise JwtError(f"not an ed25519-nkey JWT: {header!r}"[:200])
    if not isinstance(claims, dict) or not isinstance(claims.get("iss"), str):
        raise JwtError("a JWT without an issuer")
    issuer = claims["iss"]
    if not issuer.startswith(issuer_prefix):
        raise JwtError(f"issued by {issuer[:8]}…, not by a key of kind {issuer_prefix!r}")
    try:
        nacl.signing.VerifyKey(_raw_public(issuer)).verify(
            f"{parts[0]}.{parts[1]}".encode(), _unb64(parts[2])
        )
    except nacl.exceptions.BadSignatureError:
        raise JwtError("its signature is not its issuer's") from None
    return claims
