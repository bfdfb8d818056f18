"""The portal application: page routers, templates (autoescaped), local static assets, error pages."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from jinja2 import ChainableUndefined, Environment, FileSystemLoader
from starlette.exceptions import HTTPException as StarletteHTTPException

from pai_portal import format
from pai_portal.api import Api, ApiError
from pai_portal.pages import admin, auth, cluster, job, jobs, marketplace, submit
from pai_portal.session import COOKIE, SessionCodec, load_key
from pai_portal.settings import PortalSettings
from pai_portal.web import AdminRequired, CsrfRejected, Portal, SignInRequired, finish, render, session_of

HERE = Path(__file__).resolve().parent


def templates() -> Environment:
    env = Environment(
        loader=FileSystemLoader(HERE / "templates"),
        # Every value is escaped unless a template marks it safe (only the server-made SVG charts are).
        autoescape=True,
        # API answers vary by version: a field that is absent reads as empty, never as an error.
        undefined=ChainableUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["when"] = format.when
    env.filters["state_class"] = format.state_class
    env.filters["gpu_indexes"] = format.gpu_indexes
    env.globals["duration"] = format.duration
    env.globals["urlquote"] = lambda value: quote(str(value), safe="")
    return env


def build_app(settings: PortalSettings) -> FastAPI:
    key = load_key(settings.portal_session_key, settings.data_dir)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await app.state.portal.api.close()

    app = FastAPI(title="OpenPAI portal", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.portal = Portal(
        settings=settings,
        api=Api(settings.portal_api_url, settings.portal_api_timeout_s),
        codec=SessionCodec(key, settings.portal_session_max_age_s),
        templates=templates(),
    )
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")
    for module in (auth, cluster, jobs, job, submit, admin, marketplace):
        app.include_router(module.router)

    @app.get("/healthz", include_in_schema=False)
    @app.get("/readyz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @app.exception_handler(SignInRequired)
    async def sign_in(request: Request, exc: SignInRequired) -> Response:
        return finish(request, RedirectResponse(f"/login?next={quote(exc.next_url)}", status_code=303))

    @app.exception_handler(CsrfRejected)
    async def csrf(request: Request, exc: CsrfRejected) -> Response:
        message = "This form is out of date or did not come from this site. Reload the page and try again."
        return render(request, "error.html", 403, title="Form refused", message=message)

    @app.exception_handler(AdminRequired)
    async def admin_only(request: Request, exc: AdminRequired) -> Response:
        return render(
            request,
            "error.html",
            403,
            title="Administrators only",
            message="This page is for administrators.",
        )

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> Response:
        if exc.status == 401:
            # The token expired or was revoked elsewhere: the session is over.
            session = session_of(request)
            session.user, session.token, session.admin, session.changed = "", "", False, True
            session.flash("Your session has ended; sign in again.", "error")
            response = RedirectResponse(f"/login?next={quote(request.url.path)}", status_code=303)
            return finish(request, response)
        status = exc.status if 400 <= exc.status < 600 else 502
        retry = exc.retry_after_s
        message = exc.message
        page = render(request, "error.html", status, title=exc.code, message=message, retry_after_s=retry)
        if retry is not None:
            # A browser or proxy that honours it waits as the API asked.
            page.headers["Retry-After"] = str(retry)
        return page

    @app.exception_handler(RequestValidationError)
    async def bad_query(request: Request, exc: RequestValidationError) -> Response:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'][1:]) or 'request'}: {e['msg']}" for e in exc.errors()
        )
        return render(request, "error.html", 400, title="Bad request", message=problems)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code == 404:
            return render(
                request, "error.html", 404, title="Not found", message=f"There is no page {request.url.path}."
            )
        return render(request, "error.html", exc.status_code, title="Error", message=str(exc.detail))

    return app


__all__ = ["COOKIE", "build_app"]
