"""The sign-in RPCs: config, begin, return, exchange, logout; the records that make them one-time.

What a sign-in keeps between the browser's two visits lives in this service's database, not in a gateway,
so any gateway replica can finish what another began: ``oidc_states`` (by the state's hash: nonce, PKCE
verifier, the path to return to, the hash of the browser's binding cookie; ``oidc_state_ttl_s``) and
``oidc_codes`` (by the one-time login code's hash: the user; 60 s). Both are taken with one atomic
find-and-delete, so a replayed state or a reused code finds nothing.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

from pymongo.errors import DuplicateKeyError

from pai_auth import audit
from pai_auth.directory import USERS, Directory
from pai_auth.oidc import idtoken, mapping, onetime
from pai_auth.oidc.provider import Provider
from pai_auth.oidc.settings import OidcSettings, check_url
from pai_common.consumer import HandlerContext
from pai_common.contract.rpc import (
    LoginReply,
    OidcBeginReply,
    OidcBeginRequest,
    OidcConfigReply,
    OidcConfigRequest,
    OidcExchangeRequest,
    OidcLogoutReply,
    OidcLogoutRequest,
    OidcReturnReply,
    OidcReturnRequest,
)
from pai_common.errors import (
    ForbiddenUserError,
    InvalidParametersError,
    NoApiError,
    NoUserError,
    PaiError,
    UnauthorizedUserError,
)
from pai_common.service import ServiceApp

log = logging.getLogger(__name__)

STATES = "oidc_states"
CODES = "oidc_codes"
LOGIN_CODE_TTL_S = 60
NOT_CONFIGURED = "OpenID Connect sign-in is not configured on this platform (PAI_OIDC_ISSUER)."


def with_query(url: str, params: dict[str, str]) -> str:
    """``url`` with ``params`` added to whatever query it already has."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(params)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


class OidcLogin:
    def __init__(
        self,
        app: ServiceApp,
        settings: OidcSettings,
        directory: Directory,
        issue_login_token: Callable[[str], Awaitable[str]],
        provider: Provider | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.app = app
        self.settings = settings
        self.directory = directory
        self.issue_login_token = issue_login_token
        self.provider = provider or Provider(settings)
        self.clock = clock
        app.on_shutdown(self._close)

    def handlers(self) -> dict[Any, Callable[[Any], Awaitable[Any]]]:
        return {
            OidcConfigRequest: self.config,
            OidcBeginRequest: self.begin,
            OidcReturnRequest: self.finish,
            OidcExchangeRequest: self.exchange,
            OidcLogoutRequest: self.logout,
        }

    async def _close(self, app: ServiceApp) -> None:
        await self.provider.close()

    def _require_enabled(self) -> None:
        if not self.settings.oidc_enabled:
            raise NoApiError(NOT_CONFIGURED)

    async def config(self, req: OidcConfigRequest) -> OidcConfigReply:
        enabled = self.settings.oidc_enabled
        return OidcConfigReply(
            enabled=enabled,
            name=self.settings.oidc_label() if enabled else "",
            basic_login=self.settings.basic_login,
        )

    # ---- the browser leaves for the provider ---------------------------------------------------------

    async def begin(self, req: OidcBeginRequest) -> OidcBeginReply:
        self._require_enabled()
        meta = await self.provider.metadata()
        redirect_uri = self.settings.oidc_redirect_uri or req.redirect_uri
        try:
            check_url(redirect_uri, self.settings.oidc_allow_http, "the OIDC redirect URI")
        except ValueError as exc:
            raise InvalidParametersError(str(exc)) from None
        state, nonce, verifier = onetime.new_secret(), onetime.new_secret(), onetime.new_verifier()
        now = self.clock()
        states = self.app.db[STATES]
        await states.delete_many({"expires_at": {"$lte": now}})
        await states.insert_one(
            {
                "_id": onetime.digest(state),
                "nonce": nonce,
                "verifier": verifier,
                "redirect": req.redirect,
                "redirect_uri": redirect_uri,
                "binding": onetime.digest(req.binding),
                "expires_at": now + self.settings.oidc_state_ttl_s,
            }
        )
        params = {
            "response_type": "code",
            "client_id": self.settings.oidc_client_id,
            "redirect_uri": redirect_uri,
            "scope": self.settings.oidc_scopes,
            "state": state,
            "nonce": nonce,
            "code_challenge": onetime.challenge(verifier),
            "code_challenge_method": "S256",
        }
        return OidcBeginReply(authorize_url=with_query(meta.authorization_endpoint, params))

    # ---- the browser comes back ----------------------------------------------------------------------

    async def finish(self, req: OidcReturnRequest) -> OidcReturnReply:
        self._require_enabled()
        now = self.clock()
        doc = await self.app.db[STATES].find_one_and_delete({"_id": onetime.digest(req.state)})
        if doc is None or float(doc["expires_at"]) <= now:
            raise UnauthorizedUserError("This sign-in is unknown, expired or already used; start it again.")
        if not onetime.same(str(doc["binding"]), onetime.digest(req.binding)):
            raise UnauthorizedUserError("This sign-in was started in another browser; start it again here.")
        redirect = str(doc["redirect"])
        try:
            username = await self._sign_in(doc, req)
        except PaiError as exc:
            # The browser goes back where it came from, with the reason to show (never a secret).
            log.warning("oidc sign-in refused", extra={"reason": exc.message})
            return OidcReturnReply(redirect=redirect, error=exc.message)
        code = onetime.new_secret()
        codes = self.app.db[CODES]
        await codes.delete_many({"expires_at": {"$lte": now}})
        await codes.insert_one(
            {"_id": onetime.digest(code), "username": username, "expires_at": now + LOGIN_CODE_TTL_S}
        )
        log.info("oidc sign-in", extra={"username": username})
        return OidcReturnReply(redirect=redirect, login_code=code)

    async def _sign_in(self, state: dict[str, Any], req: OidcReturnRequest) -> str:
        if req.error:
            detail = f" ({req.error_description})" if req.error_description else ""
            raise UnauthorizedUserError(f"The identity provider refused the sign-in: {req.error}{detail}.")
        if not req.code:
            raise InvalidParametersError("The identity provider sent the browser back without a code.")
        answer = await self.provider.redeem(req.code, str(state["verifier"]), str(state["redirect_uri"]))
        claims = await self._verified(str(answer["id_token"]), str(state["nonce"]))
        return await self._upsert_user(claims)

    async def _verified(self, token: str, nonce: str) -> dict[str, Any]:
        meta = await self.provider.metadata()
        expected = idtoken.Expected(
            issuer=meta.issuer,
            client_id=self.settings.oidc_client_id,
            nonce=nonce,
            algorithms=meta.algorithms,
            leeway_s=self.settings.oidc_clock_skew_s,
            max_age_s=self.settings.oidc_state_ttl_s,
        )
        now = int(self.clock())
        try:
            try:
                return idtoken.verify(token, await self.provider.keys(), expected, now)
            except idtoken.UnknownKeyError:
                # The provider may have rotated its keys since they were fetched: look once more.
                return idtoken.verify(token, await self.provider.keys(refresh=True), expected, now)
        except idtoken.IdTokenError as exc:
            raise UnauthorizedUserError(f"The identity provider's ID token was refused: {exc}.") from None

    async def _upsert_user(self, claims: dict[str, Any]) -> str:
        """Create the user on first sign-in, else bring their email and mapped groups up to date."""
        link = {"issuer": self.settings.oidc_issuer, "subject": str(claims["sub"])}
        try:
            name = mapping.username(claims, self.settings.oidc_username_claim)
        except mapping.MappingError as exc:
            raise ForbiddenUserError(f"The identity cannot be a user here: {exc}.") from None
        external = mapping.external_groups(claims, self.settings.oidc_groups_claim)
        mail = mapping.email(claims)
        signed_in: list[str] = []

        async def work(tx: HandlerContext) -> None:
            users = tx.db[USERS]
            # The identity's user, whatever its name is now (a rename at the provider keeps the account).
            user = await users.find_one(
                {"oidc.issuer": link["issuer"], "oidc.subject": link["subject"]}, session=tx.session
            ) or await users.find_one({"_id": name}, session=tx.session)
            if user is not None and user.get("oidc") != link:
                if user.get("oidc"):
                    raise ForbiddenUserError(f"User {name} belongs to another identity of the provider.")
                if not self.settings.oidc_link_existing_users:
                    raise ForbiddenUserError(
                        f"User {name} already exists and signs in with a password; an admin may link it"
                        " (PAI_OIDC_LINK_EXISTING_USERS=true) or rename the provider's user."
                    )
            groups = await self.directory.groups(tx.session)
            if user is None:
                grouplist = mapping.grouplist([], groups, external)
                doc = {"_id": name, "grouplist": grouplist, "email": mail, "extension": {}, "oidc": link}
                await users.insert_one(doc, session=tx.session)
                self.directory.user_changed(tx, name, "created", grouplist, groups, name)
                details = {"via": "oidc", "grouplist": grouplist, "email": mail}
                await audit.record(tx, name, "user.created", name, details)
                signed_in.append(name)
                return
            username = str(user["_id"])
            signed_in.append(username)
            grouplist = mapping.grouplist(user.get("grouplist", []), groups, external)
            update: dict[str, Any] = {}
            if grouplist != user.get("grouplist", []):
                update["grouplist"] = grouplist
            if mail and mail != user.get("email"):
                update["email"] = mail
            if user.get("oidc") != link:
                update["oidc"] = link
            if not update:
                return
            await users.update_one({"_id": username}, {"$set": update}, session=tx.session)
            self.directory.user_changed(tx, username, "updated", grouplist, groups, username)
            changed: dict[str, Any] = {"via": "oidc", "fields": sorted(update)}
            if "grouplist" in update:
                changed["grouplist"] = grouplist
            await audit.record(tx, username, "user.updated", username, changed)

        try:
            await self.app.transact(work)
        except DuplicateKeyError:
            # The same new user's first sign-in, twice at once: the other one created it; update it now.
            await self.app.transact(work)
        return signed_in[-1]

    # ---- the one-time code becomes a token -----------------------------------------------------------

    async def exchange(self, req: OidcExchangeRequest) -> LoginReply:
        self._require_enabled()
        doc = await self.app.db[CODES].find_one_and_delete({"_id": onetime.digest(req.code)})
        if doc is None or float(doc["expires_at"]) <= self.clock():
            raise UnauthorizedUserError("This login code is unknown, expired or already used; sign in again.")
        username = str(doc["username"])
        if await self.app.db[USERS].find_one({"_id": username}, {"_id": 1}) is None:
            raise NoUserError(f"User {username} is not found.")
        token = await self.issue_login_token(username)
        return LoginReply(user=username, token=token, admin=await self.directory.is_admin(username))

    async def logout(self, req: OidcLogoutRequest) -> OidcLogoutReply:
        self._require_enabled()
        meta = await self.provider.metadata()
        if meta.end_session_endpoint is None:
            return OidcLogoutReply()
        params = {"client_id": self.settings.oidc_client_id}
        if req.post_logout_redirect_uri:
            params["post_logout_redirect_uri"] = req.post_logout_redirect_uri
        return OidcLogoutReply(end_session_url=with_query(meta.end_session_endpoint, params))
