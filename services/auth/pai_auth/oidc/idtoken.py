"""Verifying an ID token against the provider's published keys. Pure: keys, clock and expectations are
passed in.

Only asymmetric algorithms are accepted, and only those the provider declares: a token signed with HS256
(say, with the provider's public key as the secret) or ``none`` is refused before any key is looked at.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

import jwt

from pai_auth.oidc import onetime

ASYMMETRIC_ALGORITHMS = frozenset(
    {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512", "EdDSA"}
)
REQUIRED_CLAIMS = ("iss", "sub", "aud", "exp", "iat", "nonce")


class IdTokenError(Exception):
    """The ID token must not be trusted; the message says why (it names no secret)."""


class UnknownKeyError(IdTokenError):
    """The token names a key the JWKS does not hold (yet): the caller refetches the JWKS once."""

    def __init__(self, kid: str | None) -> None:
        super().__init__(f"it is signed with key {kid!r}, which the provider does not publish")
        self.kid = kid


@dataclass(frozen=True)
class Expected:
    issuer: str
    client_id: str
    nonce: str
    algorithms: frozenset[str]
    leeway_s: int
    # Refuse tokens issued longer ago than this (a sign-in takes minutes, not days).
    max_age_s: int


def signing_keys(jwks: Mapping[str, Any]) -> dict[str, jwt.PyJWK]:
    """The usable signature keys of a JWKS document by ``kid``; symmetric and encryption keys are left out.

    A key without a ``kid`` is kept under "" (used only when it is the provider's single key).
    """
    keys: dict[str, jwt.PyJWK] = {}
    for raw in jwks.get("keys") or []:
        if not isinstance(raw, Mapping) or raw.get("kty") == "oct" or raw.get("use", "sig") != "sig":
            continue
        try:
            key = jwt.PyJWK(dict(raw))
        except (jwt.PyJWKError, jwt.InvalidKeyError, ValueError, TypeError):
            continue  # a key type this library cannot use is not one the provider signs our tokens with
        keys[str(raw.get("kid") or "")] = key
    return keys


def allowed_algorithms(declared: Collection[str] | None) -> frozenset[str]:
    """The provider's declared signing algorithms that are asymmetric (RS256 when it declares none)."""
    wanted = set(declared) if declared else {"RS256"}
    return frozenset(wanted & ASYMMETRIC_ALGORITHMS)


def verify(token: str, keys: Mapping[str, jwt.PyJWK], expected: Expected, now: int) -> dict[str, Any]:
    """The ID token's claims when signature, algorithm, issuer, audience, times and nonce all hold."""
    try:
        header = jwt.get_unverified_header(token)
    except jwt.PyJWTError:
        raise IdTokenError("it is not a signed JWT") from None
    alg = header.get("alg")
    if alg not in expected.algorithms:
        allowed = ", ".join(sorted(expected.algorithms)) or "none"
        raise IdTokenError(f"it is signed with {alg!r}; accepted: {allowed}")
    kid = header.get("kid")
    key = keys.get(str(kid)) if kid is not None else (next(iter(keys.values())) if len(keys) == 1 else None)
    if key is None:
        raise UnknownKeyError(kid)
    if key.algorithm_name and key.algorithm_name != alg:
        raise IdTokenError(f"key {kid!r} is for {key.algorithm_name}, the token says {alg}")
    try:
        claims: dict[str, Any] = jwt.decode(
            token,
            key.key,
            algorithms=[str(alg)],
            audience=expected.client_id,
            issuer=expected.issuer,
            # Times are checked below against the clock passed in.
            options={
                "require": list(REQUIRED_CLAIMS),
                "verify_exp": False,
                "verify_iat": False,
                "verify_nbf": False,
            },
        )
    except jwt.InvalidSignatureError:
        raise IdTokenError("its signature does not match its content") from None
    except jwt.InvalidAudienceError:
        raise IdTokenError(f"it is meant for another client (audience is not {expected.client_id})") from None
    except jwt.InvalidIssuerError:
        raise IdTokenError(f"it was not issued by {expected.issuer}") from None
    except jwt.MissingRequiredClaimError as exc:
        raise IdTokenError(f"it has no {exc.claim!r} claim") from None
    except jwt.PyJWTError as exc:
        raise IdTokenError(f"it cannot be decoded ({type(exc).__name__})") from None
    _check_times(claims, expected, now)
    audiences = claims["aud"] if isinstance(claims["aud"], list) else [claims["aud"]]
    # OIDC Core 3.1.3.7: with several audiences, the authorized party must be this client.
    if len(audiences) > 1 and claims.get("azp") != expected.client_id:
        raise IdTokenError("it has several audiences and this platform is not its authorized party")
    if not isinstance(claims["nonce"], str) or not onetime.same(claims["nonce"], expected.nonce):
        raise IdTokenError("its nonce is not the one this sign-in sent")
    if not isinstance(claims["sub"], str) or not claims["sub"]:
        raise IdTokenError("its subject is empty")
    return claims


def _check_times(claims: Mapping[str, Any], expected: Expected, now: int) -> None:
    exp, iat = claims["exp"], claims["iat"]
    if not isinstance(exp, int | float) or not isinstance(iat, int | float):
        raise IdTokenError("its exp and iat must be numbers")
    if exp + expected.leeway_s <= now:
        raise IdTokenError(f"it expired {int(now - exp)} s ago")
    if iat - expected.leeway_s > now:
        raise IdTokenError("it is issued in the future")
    if now - iat > expected.max_age_s + expected.leeway_s:
        raise IdTokenError(f"it was issued {int(now - iat)} s ago, too long for a sign-in")
    nbf = claims.get("nbf")
    if isinstance(nbf, int | float) and nbf - expected.leeway_s > now:
        raise IdTokenError("it is not valid yet")
