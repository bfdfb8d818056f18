"""The provider over HTTP: its discovery document, its signing keys (JWKS) and its token endpoint.

Discovery is cached for ``oidc_discovery_ttl_s``; the JWKS for ``oidc_jwks_max_age_s``, and fetched again
at once when a token names a key it does not hold (at most every ``oidc_jwks_min_refresh_s``): a provider's
key rotation needs nothing from the platform, and a key it retires is dropped within the max age.
Every URL the provider gives is checked like the issuer (https unless loopback).
"""

from __future__ import annotations

import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus

import httpx
import jwt

from pai_auth.oidc import idtoken
from pai_auth.oidc.settings import OidcSettings, check_url
from pai_common.errors import ServiceUnavailableError, UnauthorizedUserError

DISCOVERY_PATH = "/.well-known/openid-configuration"
MAX_DOCUMENT_BYTES = 1 << 20


@dataclass(frozen=True)
class Metadata:
    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    jwks_uri: str
    end_session_endpoint: str | None
    algorithms: frozenset[str]
    # client_secret_basic unless the provider supports only client_secret_post.
    secret_in_body: bool


def parse_metadata(doc: Any, issuer: str, allow_http: bool) -> Metadata:
    """The parts of a discovery document the sign-in needs, or a ValueError saying what is wrong."""
    if not isinstance(doc, dict):
        raise ValueError("the discovery document is not a JSON object")
    # OpenID Connect Discovery 4.3: the document's issuer must be exactly the one configured.
    if doc.get("issuer") != issuer:
        raise ValueError(f"the discovery document names issuer {doc.get('issuer')!r}, not {issuer!r}")

    def url(name: str, required: bool = True) -> str | None:
        value = doc.get(name)
        if value is None and not required:
            return None
        if not isinstance(value, str):
            raise ValueError(f"the discovery document has no {name}")
        return check_url(value, allow_http, name)

    methods = doc.get("token_endpoint_auth_methods_supported") or ["client_secret_basic"]
    algorithms = idtoken.allowed_algorithms(doc.get("id_token_signing_alg_values_supported"))
    if not algorithms:
        raise ValueError("the provider signs ID tokens with no asymmetric algorithm this platform accepts")
    pkce = doc.get("code_challenge_methods_supported")
    if pkce is not None and "S256" not in pkce:
        raise ValueError("the provider does not support PKCE with S256")
    return Metadata(
        issuer=issuer,
        authorization_endpoint=str(url("authorization_endpoint")),
        token_endpoint=str(url("token_endpoint")),
        jwks_uri=str(url("jwks_uri")),
        end_session_endpoint=url("end_session_endpoint", required=False),
        algorithms=algorithms,
        secret_in_body="client_secret_basic" not in methods and "client_secret_post" in methods,
    )


def basic_auth(client_id: str, secret: str) -> str:
    """RFC 6749 2.3.1: id and secret are form-encoded before they are joined and base64-encoded."""
    pair = f"{quote_plus(client_id)}:{quote_plus(secret)}".encode()
    return "Basic " + base64.b64encode(pair).decode("ascii")


class Provider:
    def __init__(
        self,
        settings: OidcSettings,
        http: httpx.AsyncClient | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.http = http or httpx.AsyncClient(timeout=settings.oidc_http_timeout_s, follow_redirects=False)
        self.clock = clock
        self._metadata: Metadata | None = None
        self._metadata_at = 0.0
        self._keys: dict[str, jwt.PyJWK] = {}
        self._keys_at: float | None = None

    async def close(self) -> None:
        await self.http.aclose()

    async def _get_json(self, url: str, what: str) -> Any:
        try:
            response = await self.http.get(url, headers={"Accept": "application/json"})
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"The identity provider did not answer for its {what} ({type(exc).__name__})."
            ) from None
        if response.status_code != 200 or len(response.content) > MAX_DOCUMENT_BYTES:
            raise ServiceUnavailableError(
                f"The identity provider answered {response.status_code} for its {what} ({url})."
            )
        try:
            return response.json()
        except ValueError:
            raise ServiceUnavailableError(f"The identity provider's {what} is not JSON ({url}).") from None

    async def metadata(self) -> Metadata:
        now = self.clock()
        if self._metadata is not None and now - self._metadata_at < self.settings.oidc_discovery_ttl_s:
            return self._metadata
        issuer = self.settings.oidc_issuer
        doc = await self._get_json(issuer.rstrip("/") + DISCOVERY_PATH, "discovery document")
        try:
            self._metadata = parse_metadata(doc, issuer, self.settings.oidc_allow_http)
        except ValueError as exc:
            raise ServiceUnavailableError(f"The identity provider is misconfigured: {exc}.") from None
        self._metadata_at = now
        return self._metadata

    async def keys(self, refresh: bool = False) -> dict[str, jwt.PyJWK]:
        """The provider's signing keys; ``refresh`` refetches them unless they were fetched just now."""
        now = self.clock()
        age = None if self._keys_at is None else now - self._keys_at
        stale = age is None or age >= self.settings.oidc_jwks_max_age_s
        if stale or (refresh and age is not None and age >= self.settings.oidc_jwks_min_refresh_s):
            meta = await self.metadata()
            doc = await self._get_json(meta.jwks_uri, "signing keys (JWKS)")
            if not isinstance(doc, dict):
                raise ServiceUnavailableError("The identity provider's JWKS is not a JSON object.")
            self._keys = idtoken.signing_keys(doc)
            self._keys_at = now
        return self._keys

    async def redeem(self, code: str, verifier: str, redirect_uri: str) -> dict[str, Any]:
        """The token endpoint's answer for an authorization code (with its PKCE verifier)."""
        meta = await self.metadata()
        form = {
            "grant_type": "authorization_code",
            "code": code,
            "redirect_uri": redirect_uri,
            "code_verifier": verifier,
            "client_id": self.settings.oidc_client_id,
        }
        headers = {"Accept": "application/json"}
        secret = self.settings.oidc_client_secret()
        if secret is not None:
            if meta.secret_in_body:
                form["client_secret"] = secret
            else:
                headers["Authorization"] = basic_auth(self.settings.oidc_client_id, secret)
        try:
            response = await self.http.post(meta.token_endpoint, data=form, headers=headers)
        except httpx.HTTPError as exc:
            raise ServiceUnavailableError(
                f"The identity provider's token endpoint did not answer ({type(exc).__name__})."
            ) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code >= 500:
            raise ServiceUnavailableError(
                f"The identity provider's token endpoint answered {response.status_code}."
            )
        if response.status_code != 200 or not isinstance(body, dict):
            error = body.get("error") if isinstance(body, dict) else None
            # RFC 6749 5.2: invalid_grant is a used, expired or foreign code; the user starts again.
            raise UnauthorizedUserError(
                f"The identity provider refused the sign-in code ({error or response.status_code});"
                " sign in again."
            )
        if not isinstance(body.get("id_token"), str):
            raise UnauthorizedUserError(
                "The identity provider answered without an ID token (is 'openid' among the scopes?)."
            )
        return body
