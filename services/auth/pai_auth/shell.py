"""The auth shell: bootstrap admin, login and token verification over RPC."""

from __future__ import annotations

import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from pydantic import Field
from pymongo.errors import DuplicateKeyError

from pai_auth import keys as signing_keys
from pai_auth import tokens
from pai_common.contract.rpc import Identity, LoginReply, LoginRequest, VerifyTokenRequest
from pai_common.errors import IncorrectPasswordError, NoUserError, UnauthorizedUserError
from pai_common.service import ServiceApp
from pai_common.settings import Settings

log = logging.getLogger(__name__)

USERS = "users"
GROUPS = "groups"
TOKENS = "tokens"
ADMIN_GROUP = "admingroup"
DEFAULT_GROUP = "default"
CREDENTIALS_FILE = "admin-credentials.json"


class AuthSettings(Settings):
    admin_user: str = Field(default="admin", pattern=r"^[\w.-]+$")
    admin_password: str | None = Field(default=None, min_length=6)
    token_ttl_s: int = 7 * 24 * 3600


class AuthService:
    def __init__(self, app: ServiceApp, settings: AuthSettings) -> None:
        self.app = app
        self.settings = settings
        self.hasher = PasswordHasher()  # argon2id with the library's current parameters
        self.keys_path = Path(settings.data_dir) / "auth" / "jwt-keys.json"
        self.keys: list[signing_keys.SigningKey] = []
        app.rpc({LoginRequest: self.login, VerifyTokenRequest: self.verify})
        app.on_startup(self._bootstrap)

    async def _bootstrap(self, app: ServiceApp) -> None:
        self.keys = signing_keys.load_or_create(self.keys_path)
        groups = app.db[GROUPS]
        for group in (
            {
                "_id": ADMIN_GROUP,
                "description": "administrators",
                "acls": {"admin": True, "virtualClusters": []},
            },
            {
                "_id": DEFAULT_GROUP,
                "description": "everyone",
                "acls": {"admin": False, "virtualClusters": ["default"]},
            },
        ):
            await groups.update_one({"_id": group["_id"]}, {"$setOnInsert": group}, upsert=True)
        name = self.settings.admin_user
        if await app.db[USERS].find_one({"_id": name}, {"_id": 1}):
            return
        password = self.settings.admin_password
        generated = password is None
        if password is None:
            password = secrets.token_urlsafe(18)
        try:
            await app.db[USERS].insert_one(
                {
                    "_id": name,
                    "password_hash": self.hasher.hash(password),
                    "grouplist": [ADMIN_GROUP, DEFAULT_GROUP],
                    "email": "",
                    "extension": {},
                }
            )
        except DuplicateKeyError:
            return  # another replica bootstrapped first
        if generated:
            _write_private(
                Path(self.settings.data_dir) / CREDENTIALS_FILE, {"username": name, "password": password}
            )
        log.info("bootstrap admin created", extra={"username": name, "password_generated": generated})

    async def _identity(self, username: str, application: bool) -> Identity:
        user = await self.app.db[USERS].find_one({"_id": username})
        if user is None:
            raise UnauthorizedUserError(tokens.INVALID)
        groups = [g async for g in self.app.db[GROUPS].find({"_id": {"$in": user.get("grouplist", [])}})]
        admin = any(g.get("acls", {}).get("admin") for g in groups)
        vcs = sorted({vc for g in groups for vc in g.get("acls", {}).get("virtualClusters", [])})
        return Identity(username=username, admin=admin, virtual_clusters=vcs, application=application)

    async def login(self, req: LoginRequest) -> LoginReply:
        user = await self.app.db[USERS].find_one({"_id": req.username})
        if user is None:
            raise NoUserError(f"User {req.username} is not found.")
        try:
            self.hasher.verify(user["password_hash"], req.password)
        except VerificationError:
            raise IncorrectPasswordError("Password is incorrect.") from None
        now = int(time.time())
        token, claims = tokens.issue(
            self.keys[-1], req.username, now, min(req.expiration_s, self.settings.token_ttl_s)
        )
        await self.app.db[TOKENS].insert_one(
            {"_id": claims.jti, "username": req.username, "expires_at": claims.expires_at, "revoked": False}
        )
        identity = await self._identity(req.username, application=False)
        return LoginReply(user=req.username, token=token, admin=identity.admin)

    async def verify(self, req: VerifyTokenRequest) -> Identity:
        claims = tokens.verify(req.token, self.keys, int(time.time()))
        record: dict[str, Any] | None = await self.app.db[TOKENS].find_one({"_id": claims.jti})
        # A token is valid only while its record exists and is not revoked (logout, password change).
        if record is None or record.get("revoked") or record.get("username") != claims.username:
            raise UnauthorizedUserError(tokens.INVALID)
        return await self._identity(claims.username, claims.application)


def _write_private(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)


def build_app() -> ServiceApp:
    settings = AuthSettings()
    app = ServiceApp("auth", settings)
    AuthService(app, settings)
    return app


def main() -> None:
    build_app().run()
