"""ID token verification (pure): what is accepted, and each way a token must be refused."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from pai_auth.oidc import idtoken, onetime

NOW = 1_800_000_000
ISSUER = "https://idp.example"
RSA_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_KEY = ec.generate_private_key(ec.SECP256R1())
JWKS = {
    "keys": [
        {
            **RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True),
            "kid": "rsa-1",
            "use": "sig",
            "alg": "RS256",
        },
        {
            **ECAlgorithm.to_jwk(EC_KEY.public_key(), as_dict=True),
            "kid": "ec-1",
            "use": "sig",
            "alg": "ES256",
        },
        {"kty": "oct", "kid": "hmac", "k": "c2VjcmV0"},
        {**RSAAlgorithm.to_jwk(RSA_KEY.public_key(), as_dict=True), "kid": "enc", "use": "enc"},
    ]
}
KEYS = idtoken.signing_keys(JWKS)


def expected(**over: Any) -> idtoken.Expected:
    values: dict[str, Any] = {
        "issuer": ISSUER,
        "client_id": "pai",
        "nonce": "n-1",
        "algorithms": frozenset({"RS256", "ES256"}),
        "leeway_s": 60,
        "max_age_s": 600,
    }
    return idtoken.Expected(**{**values, **over})


def claims(**over: Any) -> dict[str, Any]:
    return {"iss": ISSUER, "sub": "s-1", "aud": "pai", "exp": NOW + 300, "iat": NOW, "nonce": "n-1", **over}


def signed(payload: dict[str, Any], kid: str = "rsa-1", key: Any = RSA_KEY, alg: str = "RS256") -> str:
    return jwt.encode(payload, key, algorithm=alg, headers={"kid": kid})


def refused(token: str, match: str, **over: Any) -> None:
    with pytest.raises(idtoken.IdTokenError, match=match):
        idtoken.verify(token, KEYS, expected(**over), NOW)


def test_only_asymmetric_signature_keys_are_kept() -> None:
    assert set(KEYS) == {"rsa-1", "ec-1"}


def test_a_good_token_gives_its_claims() -> None:
    assert idtoken.verify(signed(claims(email="a@b")), KEYS, expected(), NOW)["email"] == "a@b"
    assert idtoken.verify(signed(claims(), "ec-1", EC_KEY, "ES256"), KEYS, expected(), NOW)["sub"] == "s-1"


def test_tampered_payload() -> None:
    header, _, signature = signed(claims()).split(".")
    forged = base64.urlsafe_b64encode(json.dumps(claims(sub="admin")).encode()).rstrip(b"=").decode()
    refused(f"{header}.{forged}.{signature}", "signature does not match")


def test_wrong_audience_and_issuer() -> None:
    refused(signed(claims(aud="someone-else")), "meant for another client")
    refused(signed(claims(iss="https://evil.example")), "not issued by https://idp.example")


def test_several_audiences_need_this_client_as_authorized_party() -> None:
    refused(signed(claims(aud=["pai", "other"])), "authorized party")
    ok = idtoken.verify(signed(claims(aud=["pai", "other"], azp="pai")), KEYS, expected(), NOW)
    assert ok["azp"] == "pai"


def test_times() -> None:
    refused(signed(claims(exp=NOW - 61)), "expired 61 s ago")
    assert idtoken.verify(signed(claims(exp=NOW - 30)), KEYS, expected(), NOW)  # within the clock skew
    refused(signed(claims(iat=NOW + 120)), "issued in the future")
    refused(signed(claims(iat=NOW - 3600, exp=NOW + 300)), "too long for a sign-in")
    refused(signed(claims(nbf=NOW + 120)), "not valid yet")


def test_nonce_and_required_claims() -> None:
    refused(signed(claims(nonce="other")), "nonce")
    payload = claims()
    del payload["nonce"]
    refused(signed(payload), "no 'nonce' claim")
    refused(signed(claims(sub="")), "subject is empty")


def test_unknown_key_is_its_own_error() -> None:
    with pytest.raises(idtoken.UnknownKeyError) as caught:
        idtoken.verify(signed(claims(), kid="rotated"), KEYS, expected(), NOW)
    assert caught.value.kid == "rotated"


def test_none_and_symmetric_algorithms_are_refused() -> None:
    unsigned = jwt.encode(claims(), None, algorithm="none", headers={"kid": "rsa-1"})
    refused(unsigned, "signed with 'none'")
    # Key confusion: HS256 with the provider's public key as the shared secret.
    public_pem = RSA_KEY.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    header = base64.urlsafe_b64encode(b'{"alg":"HS256","kid":"rsa-1","typ":"JWT"}').rstrip(b"=")
    body = base64.urlsafe_b64encode(json.dumps(claims()).encode()).rstrip(b"=")
    mac = hmac.new(public_pem, header + b"." + body, hashlib.sha256).digest()
    forged = (header + b"." + body + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    refused(forged, "signed with 'HS256'")
    refused(signed(claims(), "hmac", b"secret" * 8, "HS256"), "signed with 'HS256'")


def test_algorithm_must_match_the_key_and_the_providers_list() -> None:
    refused(signed(claims(), "ec-1"), "is for ES256")
    refused(signed(claims(), "ec-1", EC_KEY, "ES256"), "accepted: RS256", algorithms=frozenset({"RS256"}))
    assert idtoken.allowed_algorithms(["HS256", "RS256", "none"]) == {"RS256"}
    assert idtoken.allowed_algorithms(None) == {"RS256"}


def test_garbage() -> None:
    refused("not-a-jwt", "not a signed JWT")


def test_pkce_challenge_is_rfc7636_s256() -> None:
    # RFC 7636 appendix B.
    assert onetime.challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk") == (
        "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM"
    )
    verifier = onetime.new_verifier()
    assert 43 <= len(verifier) <= 128 and onetime.new_secret() != onetime.new_secret()
