"""The ``PAI_OIDC_*`` settings of the auth service, and whether sign-in with a password stays on."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit

from pydantic import Field

from pai_common.settings import Settings

DEFAULT_SCOPES = "openid profile email groups"


class OidcSettings(Settings):
    # Basic (password) login; turn it off only with OIDC configured, or nobody can sign in.
    basic_login: bool = True
    # The provider's issuer URL; OIDC is off while it is empty.
    oidc_issuer: str = ""
    oidc_client_id: str = ""
    # A file holding the client secret (never the secret itself in the environment or the database);
    # none for a public client, which PKCE alone protects.
    oidc_client_secret_file: Path | None = None
    oidc_scopes: str = DEFAULT_SCOPES
    # The claim naming the user (its part before "@" when it is an address), else the email's.
    oidc_username_claim: str = "preferred_username"
    # The claim listing the user's groups at the provider, matched against each group's externalName.
    oidc_groups_claim: str = "groups"
    # The label of the "Sign in with ..." button; the issuer's host when empty.
    oidc_name: str = ""
    # The callback the provider sends the browser back to, as registered there; when empty, the gateway's
    # own URL as the browser reached it (`<origin>/api/v2/authn/oidc/return`).
    oidc_redirect_uri: str = ""
    # Seconds a sign-in may take at the provider before its state expires (one-time use either way).
    oidc_state_ttl_s: int = Field(default=600, ge=30, le=3600)
    oidc_clock_skew_s: int = Field(default=60, ge=0, le=600)
    # How long discovery is cached. The JWKS is refetched when a token names a key it does not hold (but
    # not more often than oidc_jwks_min_refresh_s) and when it is older than oidc_jwks_max_age_s, so a
    # key the provider retires stops being trusted within that time.
    oidc_discovery_ttl_s: float = Field(default=3600.0, gt=0)
    oidc_jwks_min_refresh_s: float = Field(default=1.0, ge=0)
    oidc_jwks_max_age_s: float = Field(default=300.0, ge=0)
    oidc_http_timeout_s: float = Field(default=10.0, gt=0)
    # Plain http to the provider is refused except on loopback, unless this is set.
    oidc_allow_http: bool = False
    # A first OIDC sign-in whose name is taken by a password user is refused unless this is set (then the
    # identity is linked to that user): otherwise whoever controls a name at the provider would take over
    # the platform's user of that name.
    oidc_link_existing_users: bool = False

    @property
    def oidc_enabled(self) -> bool:
        return bool(self.oidc_issuer)

    def oidc_label(self) -> str:
        return self.oidc_name or urlsplit(self.oidc_issuer).hostname or "OpenID Connect"

    def oidc_client_secret(self) -> str | None:
        if self.oidc_client_secret_file is None:
            return None
        return self.oidc_client_secret_file.read_text(encoding="utf-8").strip() or None

    def check_sign_in(self) -> None:
        """Refuse a configuration nobody could sign in with, at start rather than at the first login."""
        if not self.basic_login and not self.oidc_enabled:
            raise ValueError("PAI_BASIC_LOGIN=false needs OpenID Connect (PAI_OIDC_ISSUER) configured")
        if self.oidc_enabled:
            if not self.oidc_client_id:
                raise ValueError("PAI_OIDC_ISSUER is set but PAI_OIDC_CLIENT_ID is not")
            if "openid" not in self.oidc_scopes.split():
                raise ValueError(f"PAI_OIDC_SCOPES must include openid, got {self.oidc_scopes!r}")
            check_url(self.oidc_issuer, self.oidc_allow_http, "PAI_OIDC_ISSUER")
            if self.oidc_client_secret_file is not None and not self.oidc_client_secret_file.is_file():
                raise ValueError(f"PAI_OIDC_CLIENT_SECRET_FILE {self.oidc_client_secret_file} is not a file")


LOOPBACK_HOSTS = frozenset({"127.0.0.1", "::1", "localhost"})


def check_url(url: str, allow_http: bool, what: str) -> str:
    """An absolute https URL (plain http only on loopback or when allowed), or a ValueError naming it."""
    parts = urlsplit(url)
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"{what} must be an absolute http(s) URL, got {url!r}")
    if parts.scheme == "http" and not allow_http and parts.hostname not in LOOPBACK_HOSTS:
        raise ValueError(f"{what} must use https (got {url!r}); PAI_OIDC_ALLOW_HTTP=true allows plain http")
    return url
