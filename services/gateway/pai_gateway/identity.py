"""Who is calling: the token from the Authorization header, checked by the auth service.

Answers are cached for a few seconds so that a burst of requests costs one RPC, and the requests that
miss the cache together (a client's concurrent requests when its entry has just expired) share one RPC
too: without that, 64 clients of one token sent 64 verifications at once every few seconds, auth answered
them one by one, and the last waited past the gateway's timeout (503s in ``benchmarks/load.py``). The
auth service's
``token.revoked``, ``user.changed`` and ``group.changed`` events drop the entries they concern at once:
the gateway listens to them on core NATS (every replica hears every event; JetStream delivers the same
subjects to plain subscribers), so revocation is immediate in practice and bounded by the TTL when an
event is missed.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from pai_common.bus import Bus
from pai_common.contract.base import event_subject
from pai_common.contract.events import GroupChanged, TokenRevoked, UserChanged
from pai_common.contract.rpc import Identity, VerifyTokenRequest
from pai_common.errors import UnauthorizedUserError

log = logging.getLogger(__name__)

GUEST = "Guest is not allowed to do this operation."
INVALID = "Your token is invalid."
MAX_CACHE = 10_000
# No token this platform issues comes near; a longer one is refused before it reaches a model or a log.
MAX_TOKEN_CHARS = 4096


@dataclass
class IdentityCache:
    """Token → identity for ``ttl_s`` seconds, with the invalidations the auth service's events ask for.

    Pure apart from the clock passed in.
    """

    ttl_s: float
    # Bumped by every invalidation: an answer that was asked for before it is not cached (it may be stale).
    generation: int = 0
    _entries: dict[str, tuple[float, Identity]] = field(default_factory=dict)

    def get(self, token: str, now: float) -> Identity | None:
        hit = self._entries.get(token)
        if hit is None:
            return None
        if hit[0] <= now:
            del self._entries[token]
            return None
        return hit[1]

    def put(self, token: str, identity: Identity, now: float) -> None:
        if len(self._entries) >= MAX_CACHE:
            self._entries.clear()
        self._entries[token] = (now + self.ttl_s, identity)

    def drop_tokens(self, token_ids: set[str]) -> int:
        return self._drop(lambda i: i.token_id in token_ids)

    def drop_user(self, username: str) -> int:
        return self._drop(lambda i: i.username == username)

    def clear(self) -> None:
        self.generation += 1
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)

    def _drop(self, match: Any) -> int:
        self.generation += 1
        gone = [t for t, (_, identity) in self._entries.items() if match(identity)]
        for token in gone:
            del self._entries[token]
        return len(gone)

    def apply(self, event_type: str, body: dict[str, Any]) -> None:
        """Drop what an auth event makes stale."""
        if event_type == TokenRevoked.TYPE:
            self.drop_tokens({str(t) for t in body.get("token_ids", [])})
            if body.get("reason") == "user_deleted":
                self.drop_user(str(body.get("username", "")))
        elif event_type == UserChanged.TYPE:
            self.drop_user(str(body.get("username", "")))
        elif event_type == GroupChanged.TYPE:
            self.clear()  # any member's rights may have changed


INVALIDATING_EVENTS = (TokenRevoked, UserChanged, GroupChanged)


@dataclass
class IdentityResolver:
    bus: Bus
    ttl_s: float
    timeout_s: float
    cache: IdentityCache = field(init=False)
    _subscribed: bool = False
    # (token, cache generation) → the verification in flight: an answer asked for before an invalidation
    # is never shared with a request that came after it.
    _inflight: dict[tuple[str, int], asyncio.Future[Identity]] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.cache = IdentityCache(self.ttl_s)

    async def resolve(self, request: Request) -> Identity:
        token, basic_user = _token_from_header(request.headers.get("authorization"))
        await self._listen()
        now = time.monotonic()
        identity = self.cache.get(token, now)
        if identity is None:
            identity = await self._verify(token, now)
        # "Basic user:token" works only with an application token of that very user.
        if basic_user is not None and (basic_user != identity.username or not identity.application):
            raise UnauthorizedUserError(INVALID)
        return identity

    async def _verify(self, token: str, now: float) -> Identity:
        """Ask auth, or wait for the same question already asked (the same answer, or the same error)."""
        key = (token, self.cache.generation)
        shared = self._inflight.get(key)
        if shared is None:
            shared = asyncio.ensure_future(
                self.bus.request(VerifyTokenRequest(token=token), Identity, timeout=self.timeout_s)
            )
            self._inflight[key] = shared
            shared.add_done_callback(lambda done: self._settled(key, done, now))
        # Shielded: a caller that gives up (its client left) does not cancel the others' answer.
        return await asyncio.shield(shared)

    def _settled(self, key: tuple[str, int], done: asyncio.Future[Identity], now: float) -> None:
        if self._inflight.get(key) is done:
            del self._inflight[key]
        if done.cancelled() or done.exception() is not None:
            return  # an error is not cached: the next request asks again
        if key[1] == self.cache.generation:  # nothing was invalidated while it was asked
            self.cache.put(key[0], done.result(), now)

    async def _listen(self) -> None:
        """Subscribe to the invalidating events once, on first use (the bus exists only by then)."""
        if self._subscribed:
            return
        self._subscribed = True
        nc = getattr(self.bus, "nc", None)
        if nc is None:
            return
        for event in INVALIDATING_EVENTS:
            await nc.subscribe(event_subject(event.TYPE), cb=self._on_event)

    async def _on_event(self, msg: Any) -> None:
        try:
            body = json.loads(msg.data or b"{}")
            event_type = msg.subject.split(".", 2)[2]
        except (ValueError, IndexError):
            log.warning("unreadable auth event ignored", extra={"subject": getattr(msg, "subject", "")})
            return
        if isinstance(body, dict):
            self.cache.apply(event_type, body)


def _token_from_header(header: str | None) -> tuple[str, str | None]:
    if not header:
        raise UnauthorizedUserError(GUEST)
    scheme, _, value = header.partition(" ")
    value = value.strip()
    if len(value) > MAX_TOKEN_CHARS:
        raise UnauthorizedUserError(INVALID)
    if scheme.lower() == "bearer" and value:
        return value, None
    if scheme.lower() == "basic" and value:
        try:
            user, _, token = base64.b64decode(value, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError):
            raise UnauthorizedUserError(INVALID) from None
        if user and token:
            return token, user
    raise UnauthorizedUserError(GUEST)
