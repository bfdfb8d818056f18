"""Where OpenPAI's clients address the API: under `/rest-server` (OpenPAI's reverse proxy), and with or
without a trailing slash (its swagger writes some paths with one, `/users/{user}/group/`).

An ASGI middleware rewrites the path before routing, so every route answers at all of these addresses.
"""

from __future__ import annotations

from typing import Final

from starlette.types import ASGIApp, Receive, Scope, Send

PREFIX: Final = "/rest-server"


def canonical_path(path: str) -> str:
    """The path the routes are registered under: no `/rest-server` prefix, no trailing slash."""
    if path == PREFIX or path.startswith(PREFIX + "/"):
        path = path[len(PREFIX) :] or "/"
    if len(path) > 1 and path.endswith("/"):
        path = path.rstrip("/") or "/"
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
