"""A small but real OpenID Connect provider for the tests, served on loopback by the test itself.

It serves what a provider must for the authorization code flow with PKCE: the discovery document, its
signing keys (JWKS), an authorization endpoint and a token endpoint. Its ID tokens are RS256 JWTs signed
with RSA keys it generates. It checks what a provider checks (client id and secret, the registered
redirect URI, the PKCE verifier against the challenge, one use per code), so a platform that gets any of
that wrong fails against it. The authorization endpoint signs in ``next_identity`` without a login form:
the tests play the user who already has a session at the provider.

Knobs make it misbehave the way a forged or broken answer would (``tamper``, ``audience``, ``expired``,
``sign_with``, ``nonce``, ``deny``), and ``rotate`` replaces its signing key.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote_plus, urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from jwt.algorithms import RSAAlgorithm


@dataclass
class Grant:
    client_id: str
    redirect_uri: str
    nonce: str
    challenge: str
    identity: dict[str, Any]


@dataclass
class OpenIdProvider:
    client_id: str = "pai-platform"
    client_secret: str = "provider-secret-of-the-tests"
    redirect_uris: list[str] = field(default_factory=list)
    # Who the authorization endpoint signs in next (claims beyond iss/aud/exp/iat/nonce).
    next_identity: dict[str, Any] = field(
        default_factory=lambda: {"sub": "u-1", "preferred_username": "alice"}
    )
    # Faults: change the payload after signing; another audience; an already expired token; sign with a
    # key the JWKS does not publish; a nonce of its own; refuse at the authorization endpoint.
    tamper: bool = False
    audience: str | None = None
    expired: bool = False
    sign_with: str | None = None
    nonce: str | None = None
    deny: str | None = None
    deny_description: str = "the user said no"
    keys: dict[str, rsa.RSAPrivateKey] = field(default_factory=dict)
    published: list[str] = field(default_factory=list)
    codes: dict[str, Grant] = field(default_factory=dict)
    jwks_fetches: int = 0
    token_requests: list[dict[str, str]] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # ---- life --------------------------------------------------------------------------------------------

    def start(self) -> OpenIdProvider:
        self.rotate()
        provider = self

        class Handler(_Handler):
            op = provider

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    def __enter__(self) -> OpenIdProvider:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def issuer(self) -> str:
        assert self._server is not None, "start the provider first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def rotate(self, keep_old: bool = False) -> str:
        """A new signing key; the old ones leave the JWKS unless ``keep_old``. Answers the new kid."""
        kid = secrets.token_hex(6)
        with self._lock:
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.published = [*self.published, kid] if keep_old else [kid]
        return kid

    @property
    def signing_kid(self) -> str:
        return self.published[-1]

    def reset_faults(self) -> None:
        self.tamper = self.expired = False
        self.audience = self.sign_with = self.nonce = self.deny = None
        self.deny_description = "the user said no"

    # ---- what the endpoints answer ----------------------------------------------------------------------

    def discovery(self) -> dict[str, Any]:
        base = self.issuer
        return {
            "issuer": base,
            "authorization_endpoint": f"{base}/authorize",
            "token_endpoint": f"{base}/token",
            "jwks_uri": f"{base}/jwks",
            "end_session_endpoint": f"{base}/logout",
            "response_types_supported": ["code"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "code_challenge_methods_supported": ["S256"],
            "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
            "scopes_supported": ["openid", "profile", "email", "groups"],
        }

    def jwks(self) -> dict[str, Any]:
        with self._lock:
            self.jwks_fetches += 1
            keys = []
            for kid in self.published:
                jwk = RSAAlgorithm.to_jwk(self.keys[kid].public_key(), as_dict=True)
                keys.append({**jwk, "kid": kid, "use": "sig", "alg": "RS256"})
        return {"keys": keys}

    def authorize(self, query: dict[str, str]) -> tuple[int, dict[str, str], str]:
        if query.get("client_id") != self.client_id:
            return 400, {}, "unknown client_id"
        redirect_uri = query.get("redirect_uri", "")
        if redirect_uri not in self.redirect_uris:
            return 400, {}, f"redirect_uri {redirect_uri!r} is not registered"
        state = query.get("state", "")

        def back(params: dict[str, str]) -> tuple[int, dict[str, str], str]:
            return 302, {"Location": f"{redirect_uri}?{urlencode({**params, 'state': state})}"}, ""

        if self.deny:
            return back({"error": self.deny, "error_description": self.deny_description})
        problems = []
        if query.get("response_type") != "code":
            problems.append("response_type must be code")
        if "openid" not in query.get("scope", "").split():
            problems.append("scope must include openid")
        if query.get("code_challenge_method") != "S256" or not query.get("code_challenge"):
            problems.append("PKCE with S256 is required")
        if not state or not query.get("nonce"):
            problems.append("state and nonce are required")
        if problems:
            return back({"error": "invalid_request", "error_description": "; ".join(problems)})
        code = secrets.token_urlsafe(24)
        with self._lock:
            self.codes[code] = Grant(
                self.client_id,
                redirect_uri,
                query["nonce"],
                query["code_challenge"],
                dict(self.next_identity),
            )
        return back({"code": code})

    def token(self, form: dict[str, str], authorization: str | None) -> tuple[int, dict[str, Any]]:
        with self._lock:
            self.token_requests.append(dict(form))
        client_id, secret = form.get("client_id", ""), form.get("client_secret")
        if authorization and authorization.startswith("Basic "):
            pair = base64.b64decode(authorization[6:]).decode()
            client_id, _, encoded = pair.partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(encoded)
        if client_id != self.client_id or secret != self.client_secret:
            return 401, {"error": "invalid_client"}
        if form.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            grant = self.codes.pop(form.get("code", ""), None)  # one use only
        if grant is None or grant.redirect_uri != form.get("redirect_uri"):
            return 400, {"error": "invalid_grant"}
        verifier = form.get("code_verifier", "")
        digest = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        if digest != grant.challenge:
            return 400, {"error": "invalid_grant", "error_description": "PKCE verification failed"}
        return 200, {
            "access_token": secrets.token_urlsafe(16),
            "token_type": "Bearer",
            "expires_in": 300,
            "id_token": self.id_token(grant),
        }

    def id_token(self, grant: Grant) -> str:
        now = int(time.time())
        claims = {
            **grant.identity,
            "iss": self.issuer,
            "aud": self.audience or grant.client_id,
            "iat": now - 3600 if self.expired else now,
            "exp": now - 1800 if self.expired else now + 300,
            "nonce": self.nonce or grant.nonce,
        }
        kid = self.sign_with or self.signing_kid
        if kid not in self.keys:
            self.keys[kid] = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        token = jwt.encode(claims, self.keys[kid], algorithm="RS256", headers={"kid": kid})
        if self.tamper:
            header, _, signature = token.split(".")
            forged = {**claims, "preferred_username": "admin", "groups": ["pai-admins"]}
            body = base64.urlsafe_b64encode(json.dumps(forged).encode()).rstrip(b"=").decode()
            token = f"{header}.{body}.{signature}"
        return token


class _Handler(BaseHTTPRequestHandler):
    op: OpenIdProvider

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the tests assert on answers, not on access logs

    def _send(self, status: int, body: Any = None, headers: dict[str, str] | None = None) -> None:
        data = b"" if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if body is not None and not isinstance(body, bytes):
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        if parts.path == "/.well-known/openid-configuration":
            self._send(200, self.op.discovery())
        elif parts.path == "/jwks":
            self._send(200, self.op.jwks())
        elif parts.path == "/authorize":
            status, headers, text = self.op.authorize(query)
            self._send(status, text.encode() if text else None, headers)
        elif parts.path == "/logout":
            target = query.get("post_logout_redirect_uri")
            self._send(302, None, {"Location": target}) if target else self._send(200, b"signed out")
        else:
            self._send(404, {"error": "not_found"})

    def do_POST(self) -> None:
        if urlsplit(self.path).path != "/token":
            self._send(404, {"error": "not_found"})
            return
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        status, body = self.op.token(form, self.headers.get("Authorization"))
        self._send(status, body)
