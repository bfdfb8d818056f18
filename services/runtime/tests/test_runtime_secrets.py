"""Rendering and masking of a job's secrets."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_runtime.secrets import MASK, SecretNotFoundError, mask, render, values

SECRETS = {"token": "tok-123", "db": {"user": "admin", "password": "hunter22"}, "port": 5432, "x": "ab"}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("curl -H 'Auth: <% $secrets.token %>' x", "curl -H 'Auth: tok-123' x"),
        ("<%$secrets.db.user%>:<% $secrets.db.password %>", "admin:hunter22"),
        ("psql -p <% $secrets.port %>", "psql -p 5432"),
        ("no reference here <% $parameters.x %>", "no reference here <% $parameters.x %>"),
        ("", ""),
    ],
)
def test_references_are_rendered(text: str, expected: str) -> None:
    assert render(text, SECRETS) == expected


@pytest.mark.parametrize("ref", ["$secrets.nope", "$secrets.db.nope", "$secrets.token.deeper", "$secrets.db"])
def test_an_unknown_or_non_scalar_reference_is_an_error(ref: str) -> None:
    with pytest.raises(SecretNotFoundError, match=r"\$secrets"):
        render(f"echo <% {ref} %>", SECRETS)


def test_values_are_the_leaves_longest_first() -> None:
    assert values(SECRETS) == ["hunter22", "tok-123", "admin", "5432"]  # "ab" is too short to mask
    assert values({"a": ["long-one", {"b": "other"}]}) == ["long-one", "other"]


def test_masking_hides_every_value() -> None:
    text = "connecting as admin with hunter22 and tok-123"
    assert mask(text, values(SECRETS)) == f"connecting as {MASK} with {MASK} and {MASK}"


@given(st.text(alphabet="abcdef", min_size=3, max_size=8), st.text(max_size=50), st.text(max_size=50))
def test_a_masked_text_never_holds_the_secret(secret: str, before: str, after: str) -> None:
    masked = mask(before + secret + after, values({"s": secret}))
    assert secret not in masked.replace(MASK, "\0")
