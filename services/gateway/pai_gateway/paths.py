"""Where OpenPAI's clients address the API: under `/rest-server/api/...` (OpenPAI's reverse proxy), and
with or without a trailing slash (its swagger writes some paths with one, `/users/{user}/group/`).

An ASGI middleware rewrites the path before routing, so every route answers at all of these addresses.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX: Final = "/rest-server"
API: Final = "/api/"


def canonical_path(path: str) -> str:
    """The path an API route is registered under: no `/rest-server` prefix, no trailing slash. Other
    paths (the web portal's) are left as they are."""
    if path.startswith(PREFIX + API) or path == PREFIX + API.rstrip("/"):
        path = path[len(PREFIX) :]
    if path.startswith(API) and path.endswith("/"):
        path = path.rstrip("/")
    return path


class OpenPaiPaths:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path = scope["path"]
            canonical = canonical_path(path)
            if canonical != path:
                scope = {**scope, "path": canonical}
                raw = scope.get("raw_path")
                if isinstance(raw, bytes):
                    scope["raw_path"] = canonical_path(raw.decode("latin-1")).encode("latin-1")
        await self.app(scope, receive, send)
