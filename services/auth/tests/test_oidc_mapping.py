"""From ID token claims to a platform user (pure): the name, and groups through externalName."""

from __future__ import annotations

from typing import Any

import pytest

from pai_auth.oidc import mapping
from pai_auth.oidc.provider import basic_auth, parse_metadata

GROUPS: dict[str, dict[str, Any]] = {
    "admingroup": {"externalName": ""},
    "default": {"externalName": ""},
    "ml": {"externalName": "ml-engineers"},
    "azure": {"externalName": "8d1e-object-id"},
    "manual": {"externalName": ""},
}


@pytest.mark.parametrize(
    ("claims", "name"),
    [
        ({"preferred_username": "alice"}, "alice"),
        ({"preferred_username": "alice@corp.example"}, "alice"),  # a UPN, as Azure AD sends
        ({"email": "bob.smith@corp.example"}, "bob.smith"),
        ({"preferred_username": "", "email": "c_d@x"}, "c_d"),
    ],
)
def test_user_name(claims: dict[str, Any], name: str) -> None:
    assert mapping.username(claims, "preferred_username") == name


@pytest.mark.parametrize(
    ("claims", "message"),
    [
        ({"preferred_username": "a b"}, "not a user name"),
        ({"sub": "x"}, "neither a 'preferred_username' nor an 'email'"),
        ({"preferred_username": "x" * 65}, "not a user name"),
    ],
)
def test_names_that_cannot_be_users(claims: dict[str, Any], message: str) -> None:
    with pytest.raises(mapping.MappingError, match=message):
        mapping.username(claims, "preferred_username")


def test_groups_claim_shapes() -> None:
    assert mapping.external_groups({"groups": ["a", "", 3, "b"]}, "groups") == {"a", "b"}
    assert mapping.external_groups({"roles": "a"}, "roles") == {"a"}
    assert mapping.external_groups({"groups": {"a": 1}}, "groups") == frozenset()


def test_first_sign_in_gets_default_and_mapped_groups() -> None:
    assert mapping.grouplist([], GROUPS, frozenset({"ml-engineers", "8d1e-object-id", "nobody"})) == [
        "default",
        "azure",
        "ml",
    ]


def test_later_sign_ins_keep_manual_groups_and_follow_the_provider_for_mapped_ones() -> None:
    current = ["default", "admingroup", "manual", "ml", "deleted-group"]
    assert mapping.grouplist(current, GROUPS, frozenset({"8d1e-object-id"})) == [
        "default",
        "admingroup",
        "manual",
        "azure",
    ]


def test_discovery_document_checks() -> None:
    issuer = "https://idp.example"
    doc = {
        "issuer": issuer,
        "authorization_endpoint": f"{issuer}/auth",
        "token_endpoint": f"{issuer}/token",
        "jwks_uri": f"{issuer}/keys",
        "id_token_signing_alg_values_supported": ["RS256", "HS256"],
        "token_endpoint_auth_methods_supported": ["client_secret_post"],
    }
    meta = parse_metadata(doc, issuer, allow_http=False)
    assert meta.algorithms == {"RS256"} and meta.secret_in_body and meta.end_session_endpoint is None
    with pytest.raises(ValueError, match="names issuer"):
        parse_metadata({**doc, "issuer": "https://other"}, issuer, allow_http=False)
    with pytest.raises(ValueError, match="must use https"):
        parse_metadata({**doc, "token_endpoint": "http://idp.example/token"}, issuer, allow_http=False)
    with pytest.raises(ValueError, match="no asymmetric algorithm"):
        parse_metadata({**doc, "id_token_signing_alg_values_supported": ["HS256"]}, issuer, allow_http=False)
    with pytest.raises(ValueError, match="PKCE"):
        parse_metadata({**doc, "code_challenge_methods_supported": ["plain"]}, issuer, allow_http=False)


def test_client_secret_basic_encodes_before_joining() -> None:
    # RFC 6749 2.3.1: "a:b" as a secret must not split the pair in the wrong place.
    assert basic_auth("my client", "a:b") == "Basic bXkrY2xpZW50OmElM0Fi"
