"""Sessions in one encrypted, HttpOnly, SameSite=Lax cookie, and the CSRF token every form carries.

The portal keeps no state: the cookie holds what it needs (the user's name, whether they are an admin,
the API token they signed in with, the CSRF secret, a one-shot notice) encrypted and authenticated with
Fernet, so the browser can neither read nor change it and the token never reaches a page or a script.
A visitor who is not signed in still gets a session (with only a CSRF secret), so that the sign-in form
is protected too. Signing in issues a new session (new CSRF secret); signing out drops it.
"""

from __future__ import annotations

import hmac
import json
import os
import secrets
from dataclasses import asdict, dataclass, field
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken

COOKIE = "pai_portal_session"
CSRF_FIELD = "csrf_token"
CSRF_HEADER = "X-CSRF-Token"


@dataclass
class Session:
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    user: str = ""
    admin: bool = False
    token: str = ""
    # A notice to show once on the next page (what the last action did), and its kind.
    notice: str = ""
    notice_kind: str = "info"
    # The state of a single sign-on round trip this browser started (a login CSRF guard).
    sso_state: str = ""
    sso_next: str = ""
    changed: bool = False

    @property
    def signed_in(self) -> bool:
        return bool(self.user and self.token)

    def flash(self, message: str, kind: str = "info") -> None:
        if self.notice and self.notice_kind == kind:
            message = f"{self.notice} {message}"
        self.notice, self.notice_kind, self.changed = message, kind, True

    def take_notice(self) -> tuple[str, str] | None:
        if not self.notice:
            return None
        taken = (self.notice, self.notice_kind)
        self.notice, self.changed = "", True
        return taken

    def csrf_ok(self, presented: str | None) -> bool:
        return bool(presented) and hmac.compare_digest(self.csrf, presented or "")


class SessionCodec:
    def __init__(self, key: bytes, max_age_s: int) -> None:
        self.fernet = Fernet(key)
        self.max_age_s = max_age_s

    def encode(self, session: Session) -> str:
        data = asdict(session)
        data.pop("changed")
        return self.fernet.encrypt(json.dumps(data, separators=(",", ":")).encode()).decode()

    def decode(self, value: str | None) -> Session | None:
        """The session a cookie holds; None when absent, forged, from another key or expired."""
        if not value:
            return None
        try:
            raw = self.fernet.decrypt(value.encode(), ttl=self.max_age_s)
            data = json.loads(raw)
            return Session(**{k: v for k, v in data.items() if k in Session.__dataclass_fields__})
        except (InvalidToken, ValueError, TypeError):
            return None


def load_key(configured: str, data_dir: Path) -> bytes:
    """The configured key, or one generated once into the data directory (mode 0600)."""
    if configured:
        key = configured.encode()
        Fernet(key)  # refuse a malformed key at start, not at the first request
        return key
    path = data_dir / "portal-session.key"
    if path.exists():
        return path.read_bytes().strip()
    data_dir.mkdir(parents=True, exist_ok=True)
    key = Fernet.generate_key()
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another portal process wrote it first
        return path.read_bytes().strip()
    with os.fdopen(fd, "wb") as out:
        out.write(key)
    return key
