"""Login throttling: per user, per client address, sliding window, doubling delay. Pure, with a clock."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_auth.throttle import LoginThrottle, ThrottlePolicy

POLICY = ThrottlePolicy(window_s=900, user_limit=5, client_limit=20, base_delay_s=1, max_delay_s=900)


def fail(t: LoginThrottle, n: int, user: str = "alice", client: str = "1.1.1.1", at: float = 0.0) -> None:
    for _ in range(n):
        t.failed(user, client, at)


def test_a_few_failures_are_free() -> None:
    t = LoginThrottle(POLICY)
    fail(t, 4)
    assert t.retry_after("alice", "1.1.1.1", 0.0) == 0


def test_the_limit_locks_the_user_from_any_address() -> None:
    t = LoginThrottle(POLICY)
    fail(t, 5, at=100.0)
    assert t.retry_after("alice", "1.1.1.1", 100.0) == 1.0
    assert t.retry_after("alice", "2.2.2.2", 100.5) == 0.5
    assert t.retry_after("bob", "2.2.2.2", 100.0) == 0
    assert t.retry_after("alice", "2.2.2.2", 101.0) == 0


@pytest.mark.parametrize(("failures", "delay"), [(5, 1), (6, 2), (7, 4), (10, 32), (15, 900), (40, 900)])
def test_the_delay_doubles_with_each_further_failure(failures: int, delay: float) -> None:
    t = LoginThrottle(POLICY)
    fail(t, failures, at=10.0)
    assert t.retry_after("alice", "", 10.0) == delay


def test_failures_leave_the_window() -> None:
    t = LoginThrottle(POLICY)
    fail(t, 5, at=0.0)
    assert t.retry_after("alice", "", 899.0) == 0  # the delay is over long before
    fail(t, 1, at=899.0)
    assert t.retry_after("alice", "", 899.0) == 2.0  # six in the window
    assert t.retry_after("alice", "", 901.0) == 0  # five of them have left it
    fail(t, 1, at=901.0)
    assert t.retry_after("alice", "", 901.0) == 0  # two in the window


def test_success_clears_the_user_but_not_the_address() -> None:
    t = LoginThrottle(POLICY)
    for i in range(20):
        t.failed(f"user{i}", "6.6.6.6", 0.0)
    t.succeeded("user0")
    assert t.retry_after("user0", "7.7.7.7", 0.0) == 0
    assert t.retry_after("someone", "6.6.6.6", 0.0) == 1.0
    t.succeeded("someone")
    assert t.retry_after("someone", "6.6.6.6", 0.0) == 1.0


def test_memory_is_bounded() -> None:
    t = LoginThrottle(ThrottlePolicy(max_keys=10))
    for i in range(100):
        t.failed(f"u{i}", "", float(i))
    assert len(t._failures) == 10


@given(st.lists(st.tuples(st.sampled_from(["a", "b"]), st.floats(0, 5000)), max_size=60))
def test_never_locked_below_the_limit_within_the_window(events: list[tuple[str, float]]) -> None:
    t = LoginThrottle(POLICY)
    for user, at in sorted(events, key=lambda e: e[1]):
        t.failed(user, "", at)
    end = max((at for _, at in events), default=0.0)
    for user in ("a", "b"):
        recent = [at for u, at in events if u == user and at > end - POLICY.window_s]
        wait = t.retry_after(user, "", end)
        assert wait >= 0
        if len(recent) < POLICY.user_limit:
            assert wait == 0
