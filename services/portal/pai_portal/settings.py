"""What the portal reads at start (environment, prefix ``PAI_``)."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class PortalSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="PAI_", extra="ignore")

    portal_host: str = "127.0.0.1"
    portal_port: int = Field(default=9187, ge=1, le=65535)
    # A listening socket handed down by the launcher (`pai up` binds the portal's port and keeps it, so no
    # other process can take it before the portal starts): served instead of binding portal_port.
    portal_fd: int | None = Field(default=None, ge=0)
    # The REST API v2 the portal is a client of (the gateway), as seen from the portal's process.
    portal_api_url: str = "http://127.0.0.1:9186"
    # The key that encrypts session cookies (Fernet, url-safe base64 of 32 bytes). Unset: one is generated
    # once into <data dir>/portal-session.key (0600); replicas must share one, given here (a Secret).
    portal_session_key: str = ""
    # Mark cookies Secure: on wherever the portal is reached over HTTPS (a cluster's ingress).
    portal_cookie_secure: bool = False
    # A signed-in session lasts as long as the login token the API issued (7 days at most).
    portal_session_max_age_s: int = Field(default=7 * 24 * 3600, ge=60)
    portal_api_timeout_s: float = Field(default=30.0, gt=0)
    data_dir: Path = Path(".pai")
    # The service port of every platform process: /metrics, /healthz, /readyz (0 picks a free one).
    http_host: str = "127.0.0.1"
    http_port: int = Field(default=0, ge=0, le=65535)
    log_level: str = "INFO"
