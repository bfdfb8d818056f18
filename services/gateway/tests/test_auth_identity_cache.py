"""The gateway's identity cache: expiry and the invalidations the auth service's events ask for."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from pai_common.contract.rpc import Identity, VerifyTokenRequest
from pai_common.errors import UnauthorizedUserError
from pai_gateway.identity import INVALID, MAX_TOKEN_CHARS, IdentityCache, IdentityResolver, _token_from_header


def ident(user: str, token_id: str, admin: bool = False) -> Identity:
    return Identity(username=user, admin=admin, virtual_clusters=["default"], token_id=token_id)


def filled() -> IdentityCache:
    cache = IdentityCache(ttl_s=5)
    cache.put("ta1", ident("alice", "a1"), 0)
    cache.put("ta2", ident("alice", "a2"), 0)
    cache.put("tb1", ident("bob", "b1"), 0)
    return cache


def test_entries_expire() -> None:
    cache = filled()
    assert cache.get("ta1", 4.9) == ident("alice", "a1")
    assert cache.get("ta1", 5.0) is None
    assert cache.get("unknown", 0) is None


@pytest.mark.parametrize(
    ("event_type", "body", "left"),
    [
        ("token.revoked", {"username": "alice", "token_ids": ["a1"], "reason": "logout"}, {"ta2", "tb1"}),
        (
            "token.revoked",
            {"username": "alice", "token_ids": ["zz"], "reason": "revoked"},
            {"ta1", "ta2", "tb1"},
        ),
        ("token.revoked", {"username": "alice", "token_ids": [], "reason": "user_deleted"}, {"tb1"}),
        ("user.changed", {"username": "bob", "change": "updated"}, {"ta1", "ta2"}),
        ("group.changed", {"groupname": "g", "change": "updated"}, set()),
        ("token.issued", {"username": "alice", "token_id": "a3"}, {"ta1", "ta2", "tb1"}),
        ("job.submitted", {}, {"ta1", "ta2", "tb1"}),
    ],
)
def test_events_drop_what_they_make_stale(event_type: str, body: dict[str, Any], left: set[str]) -> None:
    cache = filled()
    cache.apply(event_type, body)
    assert {t for t in ("ta1", "ta2", "tb1") if cache.get(t, 1) is not None} == left


class SlowBus:
    """Answers a verification only after an invalidation happened meanwhile."""

    def __init__(self, cache: IdentityCache) -> None:
        self.cache = cache
        self.asked = 0

    async def request(self, req: VerifyTokenRequest, reply_type: type[Any], timeout: float = 5.0) -> Any:
        self.asked += 1
        self.cache.apply("token.revoked", {"username": "alice", "token_ids": ["a1"], "reason": "logout"})
        return ident("alice", "a1")


async def test_an_answer_overtaken_by_an_invalidation_is_not_cached() -> None:
    resolver = IdentityResolver(bus=None, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    bus = SlowBus(resolver.cache)
    resolver.bus = bus  # type: ignore[assignment]
    request = SimpleNamespace(headers={"authorization": "Bearer ta1"})
    await resolver.resolve(request)  # type: ignore[arg-type]
    await resolver.resolve(request)  # type: ignore[arg-type]
    assert bus.asked == 2 and len(resolver.cache) == 0


def test_an_overlong_token_is_refused_before_anything_else() -> None:
    assert _token_from_header("Bearer " + "x" * MAX_TOKEN_CHARS)[0] == "x" * MAX_TOKEN_CHARS
    with pytest.raises(UnauthorizedUserError) as info:
        _token_from_header("Bearer " + "x" * (MAX_TOKEN_CHARS + 1))
    assert info.value.message == INVALID
