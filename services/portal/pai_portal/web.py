"""What every page handler shares: the session, the CSRF check, rendering and redirects.

Handlers get the portal's parts from ``request.app.state.portal`` (set once by ``app.build_app``), so the
page modules are plain routers that never import each other.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment
from starlette.datastructures import FormData

from pai_portal.api import Api
from pai_portal.session import COOKIE, CSRF_FIELD, CSRF_HEADER, Session, SessionCodec
from pai_portal.settings import PortalSettings

# No inline script or style and nothing from another origin: what a user-supplied string could inject
# cannot run even if an escape were missed somewhere.
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
    "Cache-Control": "no-store",
}


@dataclass
class Portal:
    settings: PortalSettings
    api: Api
    codec: SessionCodec
    templates: Environment


class SignInRequired(Exception):
    """The page needs a signed-in user; the handler answers with a redirect to the sign-in page."""

    def __init__(self, next_url: str) -> None:
        super().__init__(next_url)
        self.next_url = next_url


class CsrfRejected(Exception):
    """A form came without the session's CSRF token (another site's form, or an old page)."""


class AdminRequired(Exception):
    """The page is for administrators."""


def portal(request: Request) -> Portal:
    p: Portal = request.app.state.portal
    return p


def session_of(request: Request) -> Session:
    existing = getattr(request.state, "session", None)
    if isinstance(existing, Session):
        return existing
    decoded = portal(request).codec.decode(request.cookies.get(COOKIE))
    session = decoded if decoded is not None else Session(changed=True)
    request.state.session = session
    return session


def user_session(request: Request) -> Session:
    """The signed-in session, or SignInRequired (with where to come back to)."""
    session = session_of(request)
    if not session.signed_in:
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        raise SignInRequired(target)
    return session


def admin_session(request: Request) -> Session:
    session = user_session(request)
    if not session.admin:
        raise AdminRequired()
    return session


def safe_next(value: str | None) -> str:
    """A place on this site to go after signing in: a path, never another origin."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return "/"
    return value


async def checked_form(request: Request) -> FormData:
    """The posted form, once its CSRF token matches the session's (field or X-CSRF-Token header)."""
    form = await request.form()
    token = form.get(CSRF_FIELD)
    presented = token if isinstance(token, str) else request.headers.get(CSRF_HEADER)
    if not session_of(request).csrf_ok(presented):
        raise CsrfRejected()
    return form


def form_text(form: FormData, name: str, default: str = "") -> str:
    value = form.get(name)
    return value if isinstance(value, str) else default


def finish(request: Request, response: Response) -> Response:
    session = session_of(request)
    if session.changed:
        settings = portal(request).settings
        response.set_cookie(
            COOKIE,
            portal(request).codec.encode(session),
            max_age=settings.portal_session_max_age_s,
            httponly=True,
            samesite="lax",
            secure=settings.portal_cookie_secure,
            path="/",
        )
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def render(request: Request, template_name: str, status_code: int = 200, **context: Any) -> Response:
    session = session_of(request)
    notice = session.take_notice() if not context.get("fragment") else None
    html = (
        portal(request)
        .templates.get_template(template_name)
        .render(
            request=request,
            session=session,
            csrf=session.csrf,
            notice=notice,
            now_ms=time.time() * 1000,
            path=request.url.path,
            **context,
        )
    )
    return finish(request, HTMLResponse(html, status_code=status_code))


def redirect(request: Request, url: str) -> Response:
    return finish(request, RedirectResponse(url, status_code=303))


def job_url(key: str, suffix: str = "") -> str:
    return f"/jobs/{quote(key, safe='~')}{suffix}"


def query(params: Mapping[str, Any]) -> str:
    """A query string of the non-empty parameters (list values repeat the name)."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        if value is None or value == "" or value == []:
            continue
        if isinstance(value, list | tuple):
            pairs.extend((key, str(v)) for v in value)
        else:
            pairs.append((key, str(value)))
    return urlencode(pairs)
