"""The auth shell: bootstrap admin, login, tokens, authorisation, users and groups over RPC."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import secrets
import time
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import Field, field_validator
from pymongo.errors import DuplicateKeyError

from pai_auth import audit, rights, scratch_memory, token_records, tokens
from pai_auth import keys as signing_keys
from pai_auth.directory import GROUPS, USERS, Directory
from pai_auth.oidc.flow import OidcLogin
from pai_auth.oidc.settings import OidcSettings
from pai_auth.throttle import LoginThrottle, ThrottlePolicy
from pai_auth.token_records import TOKENS
from pai_common.consumer import HandlerContext
from pai_common.contract.rpc import (
    AuditLogReply,
    AuditLogRequest,
    AuthMessageReply,
    AuthorizeReply,
    AuthorizeRequest,
    CreateApplicationTokenRequest,
    Identity,
    ListTokensRequest,
    LoginReply,
    LoginRequest,
    RevokeTokenRequest,
    TokenListReply,
    TokenReply,
    VerifyTokenRequest,
)
from pai_common.errors import (
    ForbiddenUserError,
    IncorrectPasswordError,
    NoUserError,
    TooManyRequestsError,
    UnauthorizedUserError,
)
from pai_common.service import ServiceApp

log = logging.getLogger(__name__)

CREDENTIALS_FILE = "admin-credentials.json"
KEYS_RECHECK_S = 1.0


class AuthSettings(OidcSettings):
    admin_user: str = Field(default="admin", pattern=r"^[\w.-]+$")
    admin_password: str | None = Field(default=None, min_length=6)
    # Shared signing keys for several replicas (a mounted Secret); unset: one file in the data directory.
    auth_keys_file: Path | None = None
    token_ttl_s: int = 7 * 24 * 3600
    # argon2id cost: OWASP's recommended minimum (t=2, 19 MiB, p=1). RFC 9106's 64 MiB option took 250 ms
    # per hash on the 2-core reference machine, so a burst of logins stalled the service; see the README.
    # Stored hashes of another cost are upgraded at the next successful login.
    argon2_time_cost: int = Field(default=2, ge=1)
    argon2_memory_kib: int = Field(default=19 * 1024, ge=8 * 1024)
    argon2_parallelism: int = Field(default=1, ge=1)
    # Login throttling (see throttle.py).
    login_window_s: float = Field(default=900.0, gt=0)
    login_user_limit: int = Field(default=5, ge=1)
    login_client_limit: int = Field(default=20, ge=1)

    @field_validator("admin_password", mode="before")
    @classmethod
    def _empty_is_unset(cls, value: object) -> object:
        # Compose passes an unset `${PAI_ADMIN_PASSWORD:-}` as "": generate one, as when it is absent.
        return None if value == "" else value


class AuthService:
    def __init__(self, app: ServiceApp, settings: AuthSettings) -> None:
        self.app = app
        self.settings = settings
        self.hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
        )
        # Checked against for unknown users, so that their answer takes as long as a wrong password's.
        self._dummy_hash = self.hasher.hash(secrets.token_urlsafe(16))
        self.throttle = LoginThrottle(
            ThrottlePolicy(
                window_s=settings.login_window_s,
                user_limit=settings.login_user_limit,
                client_limit=settings.login_client_limit,
            )
        )
        self.keys_path = settings.auth_keys_file or Path(settings.data_dir) / "auth" / "jwt-keys.json"
        # A shared file is the operator's: read it, never create it (see keys.py).
        self._load_keys = signing_keys.load if settings.auth_keys_file else signing_keys.load_or_create
        self.keys: list[signing_keys.SigningKey] = []
        self._keys_stamp: tuple[int, int] | None = None
        self._keys_checked = 0.0
        self.directory = Directory(app, self.hasher)
        self.oidc = OidcLogin(app, settings, self.directory, self._issue_login_token)
        app.rpc(
            {
                LoginRequest: self.login,
                VerifyTokenRequest: self.verify,
                AuthorizeRequest: self.authorize,
                ListTokensRequest: self.list_tokens,
                CreateApplicationTokenRequest: self.application_token,
                RevokeTokenRequest: self.revoke_token,
                AuditLogRequest: self.audit_log,
                **self.directory.handlers(),
                **self.oidc.handlers(),
            }
        )
        app.on_event(*audit.AUDITED_EVENTS)(audit.record_event)
        app.on_startup(self._bootstrap)

    def _current_keys(self) -> list[signing_keys.SigningKey]:
        """The signing keys, reread (at most once a second) when the key file changed: rotation and
        retirement take effect without a restart."""
        now = time.monotonic()
        if self.keys and now - self._keys_checked < KEYS_RECHECK_S:
            return self.keys
        self._keys_checked = now
        try:
            st = self.keys_path.stat()
            stamp = (st.st_mtime_ns, st.st_size)
        except OSError:
            stamp = None
        if stamp is None or stamp != self._keys_stamp:
            try:
                self.keys = self._load_keys(self.keys_path)
            except signing_keys.KeysFileError as exc:
                if not self.keys:
                    raise
                # A Secret being rewritten, a bad edit: keep signing with the keys in hand until it is fixed.
                log.error("signing keys not reloaded; keeping the previous ones", extra={"error": str(exc)})
                return self.keys
            self._keys_stamp = stamp
        return self.keys

    async def _bootstrap(self, app: ServiceApp) -> None:
        self._current_keys()
        await app.db[TOKENS].create_index("username")
        await app.db[audit.AUDIT].create_index("at")
        groups = app.db[GROUPS]
        for group in (
            {
                "_id": rights.ADMIN_GROUP,
                "description": "administrators",
                "externalName": "",
                "extension": {"acls": {"admin": True, "virtualClusters": [], "storageConfigs": []}},
            },
            {
                "_id": rights.DEFAULT_GROUP,
                "description": "everyone",
                "externalName": "",
                "extension": {"acls": {"admin": False, "virtualClusters": ["default"], "storageConfigs": []}},
            },
        ):
            await groups.update_one({"_id": group["_id"]}, {"$setOnInsert": group}, upsert=True)
        # Groups written before ACLs moved under `extension` (OpenPAI's place for them) keep their rights.
        async for old in groups.find({"acls": {"$exists": True}}):
            extension = {**(old.get("extension") or {}), "acls": old["acls"]}
            await groups.update_one(
                {"_id": old["_id"]},
                {"$set": {"extension": rights.normalize_acls(extension)}, "$unset": {"acls": ""}},
            )
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
                    "grouplist": [rights.ADMIN_GROUP, rights.DEFAULT_GROUP],
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

    async def _rights(self, username: str) -> tuple[list[str], rights.Rights] | None:
        user = await self.app.db[USERS].find_one({"_id": username}, {"grouplist": 1})
        if user is None:
            return None
        grouplist = list(user.get("grouplist", []))
        groups = {str(g["_id"]): g async for g in self.app.db[GROUPS].find({"_id": {"$in": grouplist}})}
        return grouplist, rights.rights_of(grouplist, groups)

    # ---- login and tokens ----------------------------------------------------------------------------

    async def login(self, req: LoginRequest) -> LoginReply:
        if not self.settings.basic_login:
            raise ForbiddenUserError(
                f"Basic login is turned off here; sign in with {self.settings.oidc_label()}"
                " (GET /api/v2/authn/oidc/login)."
            )
        wait = self.throttle.retry_after(req.username, req.client, time.monotonic())
        if wait > 0:
            # Refused before the password is looked at: a throttled guess teaches the guesser nothing.
            log.warning("login throttled", extra={"username": req.username, "client": req.client})
            seconds = int(wait) + 1
            raise TooManyRequestsError(f"Too many failed logins; try again in {seconds} s.", seconds)
        user = await self.app.db[USERS].find_one({"_id": req.username})
        # Users created by an OpenID Connect sign-in have no password: they are checked against the dummy.
        own_hash = user.get("password_hash") if user else None
        stored = str(own_hash) if own_hash else self._dummy_hash
        try:
            await asyncio.to_thread(self.hasher.verify, stored, req.password)
            ok = own_hash is not None
        except (VerificationError, InvalidHashError):
            ok = False
        if not ok:
            self.throttle.failed(req.username, req.client, time.monotonic())
            log.info("login failed", extra={"username": req.username, "client": req.client})
            if user is None:
                raise NoUserError(f"User {req.username} is not found.")
            raise IncorrectPasswordError("Password is incorrect.")
        assert user is not None
        self.throttle.succeeded(req.username)
        if self.hasher.check_needs_rehash(stored):
            new_hash = await asyncio.to_thread(self.hasher.hash, req.password)
            await self.app.db[USERS].update_one({"_id": req.username}, {"$set": {"password_hash": new_hash}})
        token = await self._issue(req.username, min(req.expiration_s, self.settings.token_ttl_s), False)
        found = await self._rights(req.username)
        return LoginReply(user=req.username, token=token, admin=bool(found and found[1].admin))

    async def _issue_login_token(self, username: str) -> str:
        return await self._issue(username, self.settings.token_ttl_s, False)

    async def _issue(self, username: str, ttl_s: int | None, application: bool) -> str:
        key = self._current_keys()[-1]
        now = int(time.time())
        token, claims = tokens.issue(key, username, now, ttl_s, application)

        async def work(tx: HandlerContext) -> None:
            await token_records.store(tx, claims, key.kid, now, username)

        await self.app.transact(work)
        return token

    async def verify(self, req: VerifyTokenRequest) -> Identity:
        claims = tokens.verify(req.token, self._current_keys(), int(time.time()))
        record: dict[str, Any] | None = await self.app.db[TOKENS].find_one({"_id": claims.jti})
        # A token is valid only while its record exists (logout, revocation and password change delete it).
        if record is None or record.get("username") != claims.username:
            raise UnauthorizedUserError(tokens.INVALID)
        found = await self._rights(claims.username)
        if found is None:
            raise UnauthorizedUserError(tokens.INVALID)
        _, user_rights = found
        return Identity(
            username=claims.username,
            admin=user_rights.admin,
            virtual_clusters=list(user_rights.virtual_clusters),
            application=claims.application,
            token_id=claims.jti,
        )

    async def list_tokens(self, req: ListTokensRequest) -> TokenListReply:
        now = int(time.time())
        keys = {k.kid: k for k in self._current_keys()}
        out: list[str] = []
        async for record in self.app.db[TOKENS].find({"username": req.actor}).sort("issued_at", 1):
            key = keys.get(str(record.get("kid")))
            expires = record.get("expires_at")
            if key is None or (expires is not None and int(expires) <= now):
                continue  # retired key or expired: no longer a token
            out.append(tokens.encode(key, token_records.claims_of(record), int(record["issued_at"])))
        return TokenListReply(tokens=out)

    async def application_token(self, req: CreateApplicationTokenRequest) -> TokenReply:
        if await self.app.db[USERS].find_one({"_id": req.actor}, {"_id": 1}) is None:
            raise NoUserError(f"User {req.actor} is not found.")
        return TokenReply(token=await self._issue(req.actor, None, True))

    async def revoke_token(self, req: RevokeTokenRequest) -> AuthMessageReply:
        claims = tokens.verify(req.token, self._current_keys(), int(time.time()))
        if claims.username != req.actor:
            raise ForbiddenUserError("A token can only be revoked by its owner.")

        async def work(tx: HandlerContext) -> None:
            await token_records.revoke(tx, req.actor, {"_id": claims.jti}, req.reason, req.actor)

        await self.app.transact(work)
        message = "Logout successfully" if req.reason == "logout" else "revoke successfully"
        return AuthMessageReply(message=message)

    # ---- authorisation and audit ---------------------------------------------------------------------

    async def authorize(self, req: AuthorizeRequest) -> AuthorizeReply:
        found = await self._rights(req.username)
        if found is None:
            raise NoUserError(f"User {req.username} is not found.")
        grouplist, r = found
        allowed = (req.virtual_cluster is None or r.may_use_vc(req.virtual_cluster)) and (
            req.storage is None or r.may_use_storage(req.storage)
        )
        return AuthorizeReply(
            username=req.username,
            admin=r.admin,
            groups=grouplist,
            virtual_clusters=list(r.virtual_clusters),
            storage_configs=list(r.storage_configs),
            allowed=allowed,
        )

    async def audit_log(self, req: AuditLogRequest) -> AuditLogReply:
        await self.directory.require_admin(req.actor)
        query: dict[str, Any] = {}
        if req.target:
            query["target"] = req.target
        if req.by:
            query["actor"] = req.by
        collection = self.app.db[audit.AUDIT]
        total = await collection.count_documents(query)
        docs = collection.find(query).sort([("at", -1), ("_id", -1)]).skip(req.offset).limit(req.limit)
        return AuditLogReply(entries=[audit.view(d) async for d in docs], total=total)


def _write_private(path: Path, data: dict[str, str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)


def build_app() -> ServiceApp:
    settings = AuthSettings()
    try:
        settings.check_sign_in()
    except ValueError as exc:
        raise SystemExit(f"auth: {exc}") from None
    app = ServiceApp("auth", settings)
    scratch_memory.unmap_large_blocks()  # before the first argon2 hash
    AuthService(app, settings)
    return app


def main() -> None:
    build_app().run()
