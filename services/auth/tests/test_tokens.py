"""Token issue and verification, and the signing-key file."""

from __future__ import annotations

import base64
import json
import os
import stat
import time
from pathlib import Path

import jwt
import pytest

from pai_auth import keys as keyfile
from pai_auth import tokens
from pai_auth.keys import SigningKey
from pai_common.errors import UnauthorizedUserError

KEY = SigningKey("kid-1", "a-secret-that-is-long-enough-for-hs256-and-hs512-0123456789abcdefgh")
OTHER = SigningKey("kid-2", "another-secret-that-is-long-enough-for-hs256-and-hs512-9876543210zyx")
NOW = 1_700_000_000  # in the past of the wall clock: PyJWT's own iat check does not interfere


def _b64(obj: object) -> str:
    raw = json.dumps(obj, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _refused(token: str, keys: list[SigningKey], now: int = NOW) -> UnauthorizedUserError:
    with pytest.raises(UnauthorizedUserError) as info:
        tokens.verify(token, keys, now)
    err = info.value
    # Whatever the cause, the caller learns nothing more than this.
    assert err.message == "Your token is invalid." == str(err)
    assert err.status == 401 and err.code == "UnauthorizedUserError"
    assert err.__cause__ is None and (err.__context__ is None or err.__suppress_context__)
    return err


# ---- round trip ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("application", [False, True])
def test_issue_then_verify(application: bool) -> None:
    token, claims = tokens.issue(KEY, "alice", NOW, 3600, application=application)
    assert claims.username == "alice" and claims.application is application
    assert claims.expires_at == NOW + 3600
    assert jwt.get_unverified_header(token)["kid"] == "kid-1"
    assert jwt.get_unverified_header(token)["alg"] == "HS256"
    assert tokens.verify(token, [OTHER, KEY], NOW + 10) == claims


def test_every_token_has_its_own_id() -> None:
    a = tokens.issue(KEY, "alice", NOW, 60)[1]
    b = tokens.issue(KEY, "alice", NOW, 60)[1]
    assert a.jti != b.jti and len(a.jti) == 32


def test_a_token_without_ttl_never_expires() -> None:
    token, claims = tokens.issue(KEY, "app", NOW, None, application=True)
    assert claims.expires_at is None
    assert "exp" not in jwt.decode(token, options={"verify_signature": False})
    assert tokens.verify(token, [KEY], NOW + 10 * 365 * 86400) == claims


def test_an_expired_token_is_refused() -> None:
    token, claims = tokens.issue(KEY, "alice", NOW, 60)
    assert tokens.verify(token, [KEY], NOW + 59) == claims
    _refused(token, [KEY], NOW + 60)
    _refused(token, [KEY], NOW + 10_000)


def test_expiry_follows_the_clock_passed_in_not_the_wall_clock() -> None:
    # Expired long ago by the wall clock, valid by the injected clock.
    token, claims = tokens.issue(KEY, "alice", 1000, 60)
    assert tokens.verify(token, [KEY], 1030) == claims


def test_issued_at_follows_the_clock_passed_in_not_the_wall_clock() -> None:
    later = int(time.time()) + 3600
    token, claims = tokens.issue(KEY, "alice", later, 60)
    assert tokens.verify(token, [KEY], later + 1) == claims


# ---- refusals ------------------------------------------------------------------------------------------


def test_a_token_signed_by_an_unknown_key_id_is_refused() -> None:
    token, _ = tokens.issue(OTHER, "alice", NOW, 60)
    _refused(token, [KEY])
    _refused(token, [])


def test_a_token_without_key_id_is_refused() -> None:
    token = jwt.encode({"username": "alice", "jti": "j", "iat": NOW}, KEY.secret, algorithm="HS256")
    _refused(token, [KEY])


@pytest.mark.parametrize("signature", ["", "AAAA"])
def test_alg_none_is_refused(signature: str) -> None:
    header = _b64({"alg": "none", "typ": "JWT", "kid": KEY.kid})
    payload = _b64({"username": "admin", "application": False, "jti": "x", "iat": NOW})
    _refused(f"{header}.{payload}.{signature}", [KEY])


@pytest.mark.parametrize("alg", ["HS384", "HS512"])
def test_other_algorithms_are_refused_even_with_the_right_secret(alg: str) -> None:
    token = jwt.encode(
        {"username": "alice", "jti": "j", "iat": NOW}, KEY.secret, algorithm=alg, headers={"kid": KEY.kid}
    )
    _refused(token, [KEY])


def test_a_token_signed_with_another_secret_is_refused() -> None:
    forged = SigningKey(KEY.kid, "a-guessed-secret-that-is-long-enough-for-hs256-xyz")
    token, _ = tokens.issue(forged, "admin", NOW, 60)
    _refused(token, [KEY])


def test_a_tampered_payload_is_refused() -> None:
    token, _ = tokens.issue(KEY, "alice", NOW, 60)
    header, _, signature = token.split(".")
    payload = jwt.decode(token, options={"verify_signature": False})
    payload["username"] = "admin"
    _refused(f"{header}.{_b64(payload)}.{signature}", [KEY])
    payload["username"] = "alice"
    payload["exp"] = NOW + 10**9
    _refused(f"{header}.{_b64(payload)}.{signature}", [KEY])


def test_a_tampered_signature_is_refused() -> None:
    token, _ = tokens.issue(KEY, "alice", NOW, 60)
    head, body, signature = token.split(".")
    flipped = ("B" if signature[0] == "A" else "A") + signature[1:]
    _refused(f"{head}.{body}.{flipped}", [KEY])


@pytest.mark.parametrize("missing", ["username", "jti", "iat"])
def test_a_token_missing_a_required_claim_is_refused(missing: str) -> None:
    claims = {"username": "alice", "jti": "j", "iat": NOW}
    del claims[missing]
    token = jwt.encode(claims, KEY.secret, algorithm="HS256", headers={"kid": KEY.kid})
    _refused(token, [KEY])


@pytest.mark.parametrize(
    "garbage",
    ["", "abc", "a.b.c", "a.b", "....", "Bearer x", _b64([1, 2]) + "." + _b64({}) + ".", "\x00\xff"],
)
def test_garbage_is_refused(garbage: str) -> None:
    _refused(garbage, [KEY])


# ---- key file ------------------------------------------------------------------------------------------


def test_the_key_file_is_created_private(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "jwt-keys.json"
    old = os.umask(0)  # even with a permissive umask
    try:
        keys = keyfile.load_or_create(path)
    finally:
        os.umask(old)
    assert len(keys) == 1 and keys[0].kid and len(keys[0].secret) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert keyfile.load_or_create(path) == keys  # loading again changes nothing
    assert not path.with_suffix(".tmp").exists()


def test_rotation_keeps_old_tokens_valid_and_signs_with_the_new_key(tmp_path: Path) -> None:
    path = tmp_path / "jwt-keys.json"
    keys = keyfile.load_or_create(path)
    old_token, old_claims = tokens.issue(keys[-1], "alice", NOW, 3600)

    rotated = keyfile.rotate(path)
    assert rotated[:-1] == keys and len(rotated) == 2
    new_key = rotated[-1]
    assert new_key.kid != keys[0].kid and new_key.secret != keys[0].secret
    assert keyfile.load_or_create(path) == rotated
    assert stat.S_IMODE(path.stat().st_mode) == 0o600

    assert tokens.verify(old_token, rotated, NOW + 1) == old_claims
    new_token, new_claims = tokens.issue(rotated[-1], "bob", NOW, 3600)
    assert jwt.get_unverified_header(new_token)["kid"] == new_key.kid
    assert tokens.verify(new_token, rotated, NOW + 1) == new_claims

    # Retiring the old key retires the tokens it signed.
    _refused(old_token, [new_key], NOW + 1)
    assert tokens.verify(new_token, [new_key], NOW + 1) == new_claims


def test_an_empty_key_file_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "jwt-keys.json"
    path.write_text(json.dumps({"keys": []}))
    with pytest.raises(ValueError, match="no signing key"):
        keyfile.load_or_create(path)
