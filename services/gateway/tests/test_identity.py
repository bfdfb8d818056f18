"""Who is calling: the Authorization header, and the identity resolver in front of the auth service."""

from __future__ import annotations

import asyncio
import base64
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_common.contract.rpc import Identity, VerifyTokenRequest
from pai_common.errors import UnauthorizedUserError
from pai_gateway.identity import GUEST, IdentityResolver, _token_from_header

INVALID = "Your token is invalid."


def _basic(raw: str | bytes) -> str:
    if isinstance(raw, str):
        raw = raw.encode()
    return "Basic " + base64.b64encode(raw).decode()


def _refused(header: str | None) -> str:
    with pytest.raises(UnauthorizedUserError) as info:
        _token_from_header(header)
    assert info.value.status == 401
    return info.value.message


# ---- the header ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc.def.ghi", "abc.def.ghi"),
        ("bearer abc", "abc"),
        ("BEARER abc", "abc"),
        ("Bearer   abc  ", "abc"),
    ],
)
def test_bearer(header: str, token: str) -> None:
    assert _token_from_header(header) == (token, None)


@pytest.mark.parametrize(
    ("raw", "user", "token"),
    [
        ("alice:abc.def.ghi", "alice", "abc.def.ghi"),
        ("alice:tok:with:colons", "alice", "tok:with:colons"),
        ("渡辺:t", "渡辺", "t"),
    ],
)
def test_basic_user_and_token(raw: str, user: str, token: str) -> None:
    assert _token_from_header(_basic(raw)) == (token, user)
    assert _token_from_header("basic " + _basic(raw).split(" ", 1)[1]) == (token, user)


@pytest.mark.parametrize("header", [None, ""])
def test_no_header_is_a_guest(header: str | None) -> None:
    assert _refused(header) == GUEST == "Guest is not allowed to do this operation."


@pytest.mark.parametrize(
    "header",
    [
        "Basic not-base64!!",
        "Basic YWxpY2U6dG9",  # bad padding
        "Basic YWxp Y2U6",  # a space inside
        _basic(b"\xff\xfe:\x80"),  # not UTF-8
    ],
)
def test_malformed_basic_is_an_invalid_token(header: str) -> None:
    assert _refused(header) == INVALID


@pytest.mark.parametrize("raw", ["alice", "alice:", ":token", ":"])
def test_basic_without_user_or_token_is_refused(raw: str) -> None:
    assert _refused(_basic(raw)) in (GUEST, INVALID)


@pytest.mark.parametrize(
    "header",
    ["Token abc", "Digest abc", "abc", "Bearer", "Bearer ", "Bearer    ", "Basic", "Basic ", "Bearer\tabc"],
)
def test_unknown_scheme_or_empty_credentials_are_refused(header: str) -> None:
    assert _refused(header) == GUEST


@given(st.text(min_size=1).filter(lambda t: t.strip() == t and " " not in t and t != ""))
def test_bearer_round_trip(token: str) -> None:
    assert _token_from_header(f"Bearer {token}") == (token, None)


@given(
    st.text(min_size=1).filter(lambda u: ":" not in u),
    st.text(min_size=1),
)
def test_basic_round_trip(user: str, token: str) -> None:
    assert _token_from_header(_basic(f"{user}:{token}")) == (token, user)


# ---- the resolver --------------------------------------------------------------------------------------


class FakeBus:
    def __init__(self, identities: dict[str, Identity]) -> None:
        self.identities = identities
        self.asked: list[str] = []

    async def request(self, req: VerifyTokenRequest, reply_type: type[Any], timeout: float = 5.0) -> Any:
        assert reply_type is Identity
        self.asked.append(req.token)
        if req.token not in self.identities:
            raise UnauthorizedUserError(INVALID)
        return self.identities[req.token]


def _request(header: str | None) -> Any:
    headers = {} if header is None else {"authorization": header}
    return SimpleNamespace(headers=headers)


ALICE = Identity(username="alice", admin=False, virtual_clusters=["default"])
ALICE_APP = Identity(username="alice", admin=False, virtual_clusters=["default"], application=True)


async def test_resolve_asks_auth_once_then_uses_the_cache() -> None:
    bus = FakeBus({"t1": ALICE})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    assert await resolver.resolve(_request("Bearer t1")) == ALICE
    assert await resolver.resolve(_request("Bearer t1")) == ALICE
    assert bus.asked == ["t1"]


async def test_resolve_asks_again_once_the_cache_entry_expired() -> None:
    bus = FakeBus({"t1": ALICE})
    resolver = IdentityResolver(bus=bus, ttl_s=0, timeout_s=1)  # type: ignore[arg-type]
    await resolver.resolve(_request("Bearer t1"))
    await resolver.resolve(_request("Bearer t1"))
    assert bus.asked == ["t1", "t1"]


async def test_resolve_refuses_without_asking_when_there_is_no_header() -> None:
    bus = FakeBus({})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    with pytest.raises(UnauthorizedUserError, match="Guest"):
        await resolver.resolve(_request(None))
    assert bus.asked == []


async def test_a_refused_token_is_not_cached() -> None:
    bus = FakeBus({})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    for _ in range(2):
        with pytest.raises(UnauthorizedUserError):
            await resolver.resolve(_request("Bearer bad"))
    assert bus.asked == ["bad", "bad"]


async def test_basic_needs_an_application_token_of_that_very_user() -> None:
    bus = FakeBus({"app": ALICE_APP, "session": ALICE})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    assert await resolver.resolve(_request(_basic("alice:app"))) == ALICE_APP
    with pytest.raises(UnauthorizedUserError) as info:
        await resolver.resolve(_request(_basic("bob:app")))  # someone else's token
    assert info.value.message == INVALID
    with pytest.raises(UnauthorizedUserError) as info:
        await resolver.resolve(_request(_basic("alice:session")))  # not an application token
    assert info.value.message == INVALID
    # A cached answer is checked the same way.
    with pytest.raises(UnauthorizedUserError):
        await resolver.resolve(_request(_basic("bob:app")))
    assert bus.asked == ["app", "session"]


class SlowBus(FakeBus):
    """Answers only once released: requests that arrive meanwhile find the question in flight."""

    def __init__(self, identities: dict[str, Identity]) -> None:
        super().__init__(identities)
        self.release = asyncio.Event()

    async def request(self, req: VerifyTokenRequest, reply_type: type[Any], timeout: float = 5.0) -> Any:
        self.asked.append(req.token)
        await self.release.wait()
        if req.token not in self.identities:
            raise UnauthorizedUserError(INVALID)
        return self.identities[req.token]


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_requests_that_miss_the_cache_together_share_one_verification() -> None:
    bus = SlowBus({"t1": ALICE})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(resolver.resolve(_request("Bearer t1"))) for _ in range(20)]
    await _settle()
    bus.release.set()
    assert await asyncio.gather(*waiting) == [ALICE] * 20
    assert bus.asked == ["t1"]
    assert await resolver.resolve(_request("Bearer t1")) == ALICE  # and the answer is cached
    assert bus.asked == ["t1"]


async def test_a_refusal_is_shared_by_the_requests_waiting_for_it_and_not_cached() -> None:
    bus = SlowBus({})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    waiting = [asyncio.create_task(resolver.resolve(_request("Bearer bad"))) for _ in range(3)]
    await _settle()
    bus.release.set()
    answers = await asyncio.gather(*waiting, return_exceptions=True)
    assert all(isinstance(a, UnauthorizedUserError) for a in answers), answers
    with pytest.raises(UnauthorizedUserError):
        await resolver.resolve(_request("Bearer bad"))
    assert bus.asked == ["bad", "bad"]


async def test_a_request_after_an_invalidation_does_not_share_the_answer_asked_before_it() -> None:
    bus = SlowBus({"t1": ALICE})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    before = asyncio.create_task(resolver.resolve(_request("Bearer t1")))
    await _settle()
    resolver.cache.apply("user.changed", {"username": "alice"})  # e.g. alice lost a virtual cluster
    after = asyncio.create_task(resolver.resolve(_request("Bearer t1")))
    await _settle()
    assert bus.asked == ["t1", "t1"]  # asked again, not joined to the older question
    bus.release.set()
    assert await before == ALICE and await after == ALICE
    await resolver.resolve(_request("Bearer t1"))
    assert bus.asked == ["t1", "t1"]  # the newer answer was cached, the older one was not needed


async def test_a_caller_that_gives_up_does_not_cancel_the_others_answer() -> None:
    bus = SlowBus({"t1": ALICE})
    resolver = IdentityResolver(bus=bus, ttl_s=60, timeout_s=1)  # type: ignore[arg-type]
    leaving = asyncio.create_task(resolver.resolve(_request("Bearer t1")))
    staying = asyncio.create_task(resolver.resolve(_request("Bearer t1")))
    await _settle()
    leaving.cancel()
    await _settle()
    bus.release.set()
    assert await staying == ALICE
    assert bus.asked == ["t1"]
