"""Sign in (password, or the platform's single sign-on when it offers one) and sign out."""

from __future__ import annotations

import secrets
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Request
from fastapi.responses import Response

from pai_portal.api import ApiError
from pai_portal.session import Session
from pai_portal.web import checked_form, form_text, portal, redirect, render, safe_next, session_of

router = APIRouter()
SSO_DONE = "/login/sso/done"
# The longest single sign-on failure reason the sign-in page shows (the gateway passes at most 1,024).
MAX_REASON = 300


async def _sso_config(request: Request) -> dict[str, Any]:
    """The single sign-on settings of the API; a platform without the route has none."""
    try:
        config = await portal(request).api.get("/api/v2/authn/oidc/config", None)
    except ApiError:
        return {"enabled": False, "name": "", "basicLogin": True}
    if not isinstance(config, dict):
        return {"enabled": False, "name": "", "basicLogin": True}
    return {
        "enabled": bool(config.get("enabled")),
        "name": str(config.get("name") or "single sign-on"),
        "basicLogin": bool(config.get("basicLogin", True)),
    }


def _signed_in(request: Request, user: str, token: str, admin: bool) -> Session:
    # A new session (and so a new CSRF secret) for every sign-in.
    fresh = Session(user=user, token=token, admin=admin, changed=True)
    request.state.session = fresh
    return fresh


@router.get("/login")
async def login_page(request: Request, next: str = "/") -> Response:
    session = session_of(request)
    if session.signed_in:
        return redirect(request, safe_next(next))
    return render(request, "login.html", next=safe_next(next), sso=await _sso_config(request), error=None)


@router.post("/login")
async def login(request: Request) -> Response:
    form = await checked_form(request)
    username = form_text(form, "username").strip()
    password = form_text(form, "password")
    target = safe_next(form_text(form, "next", "/"))
    sso = await _sso_config(request)
    if not username or not password:
        error = "Enter your user name and password."
        return render(request, "login.html", 400, next=target, sso=sso, error=error, username=username)
    try:
        answer = await portal(request).api.call(
            "POST",
            "/api/v2/authn/basic/login",
            None,
            json_body={"username": username, "password": password},
        )
    except ApiError as exc:
        status = exc.status if 400 <= exc.status < 600 else 400
        return render(
            request, "login.html", status, next=target, sso=sso, error=exc.message, username=username
        )
    session = _signed_in(request, str(answer["user"]), str(answer["token"]), bool(answer.get("admin")))
    session.flash(f"Signed in as {session.user}.")
    return redirect(request, target)


@router.post("/logout")
async def logout(request: Request) -> Response:
    await checked_form(request)
    session = session_of(request)
    if session.token:
        # Revoke the token on the platform too; signing out here must not leave it usable elsewhere.
        try:
            await portal(request).api.call("DELETE", "/api/v2/authn/basic/logout", session.token)
        except ApiError:
            pass
    fresh = Session(changed=True)
    fresh.flash("Signed out.")
    request.state.session = fresh
    return redirect(request, "/login")


@router.get("/login/sso")
async def sso_start(request: Request, next: str = "/") -> Response:
    """Start the platform's single sign-on; the state ties the answer to this browser's session.

    A link, not a form: the pages' Content-Security-Policy says `form-action 'self'`, which browsers apply
    to every redirect a form submission leads to, so a form could never reach the provider. Nothing is
    lost by a GET: another site sending a browser here only starts a sign-in the user then makes as
    themselves, and the state (kept in the session, checked on the way back) still refuses a return that
    this browser did not begin."""
    session = session_of(request)
    session.sso_state = secrets.token_urlsafe(24)
    session.sso_next = safe_next(next)
    session.changed = True
    # The path carries the state and no query: the API appends `?pai_login_code=...` to it.
    back = f"{SSO_DONE}/{session.sso_state}"
    return redirect(request, f"/api/v2/authn/oidc/login?redirect={quote(back, safe='')}")


def sso_failure(reason: str) -> str:
    """What the sign-in page says when the platform sends the browser back with `pai_login_error`: the
    reason as given (the template escapes it), cut to a length a page can show."""
    reason = " ".join(reason.split()).rstrip(".")
    if len(reason) > MAX_REASON:
        reason = reason[: MAX_REASON - 1] + "…"
    return f"Single sign-on failed: {reason or 'no reason was given'}. Sign in again."


@router.get(SSO_DONE + "/{state}")
async def sso_done(
    request: Request, state: str, pai_login_code: str = "", pai_login_error: str = ""
) -> Response:
    session = session_of(request)
    sso = await _sso_config(request)
    expected, next = session.sso_state, session.sso_next
    session.sso_state, session.sso_next, session.changed = "", "", True
    if not expected or not secrets.compare_digest(expected, state):
        # The reason is shown only for a round trip this browser began: a link made elsewhere must not
        # put its own words on this site's sign-in page.
        error = "That sign-in did not start in this browser, or it was already used. Sign in again."
        return render(request, "login.html", 400, next=safe_next(next), sso=sso, error=error)
    if not pai_login_code:
        error = sso_failure(pai_login_error)
        return render(request, "login.html", 401, next=safe_next(next), sso=sso, error=error)
    try:
        answer = await portal(request).api.call(
            "POST", "/api/v2/authn/oidc/exchange", None, json_body={"code": pai_login_code}
        )
    except ApiError as exc:
        return render(request, "login.html", 400, next=safe_next(next), sso=sso, error=exc.message)
    fresh = _signed_in(request, str(answer["user"]), str(answer["token"]), bool(answer.get("admin")))
    fresh.flash(f"Signed in as {fresh.user}.")
    return redirect(request, safe_next(next))
