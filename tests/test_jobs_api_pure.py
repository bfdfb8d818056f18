"""The gateway's pure parts of the job API: per-user rate limits and the job stream's change events."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pai_gateway.job_stream import changes
from pai_gateway.rate_limit import PRUNE_AT, FixedWindowLimiter

# ---- rate limits --------------------------------------------------------------------------------------


def test_limit_per_user_and_window() -> None:
    limiter = FixedWindowLimiter(limit=2, window_s=60)
    assert limiter.hit("alice", 0) is None
    assert limiter.hit("alice", 10) is None
    assert limiter.hit("alice", 20) == pytest.approx(40)
    assert limiter.hit("bob", 20) is None  # users do not share a window
    assert limiter.hit("alice", 59.5) == pytest.approx(0.5)
    assert limiter.hit("alice", 60) is None  # a new window
    assert limiter.hit("alice", 61) is None
    assert limiter.hit("alice", 62) is not None


def test_zero_turns_the_limit_off() -> None:
    limiter = FixedWindowLimiter(limit=0, window_s=60)
    assert all(limiter.hit("alice", 0) is None for _ in range(1000))


def test_memory_stays_bounded() -> None:
    limiter = FixedWindowLimiter(limit=1, window_s=1)
    for i in range(PRUNE_AT * 2):
        limiter.hit(f"user{i}", float(i))
    assert len(limiter._windows) <= PRUNE_AT + 1


@given(
    st.lists(st.tuples(st.sampled_from(["a", "b", "c"]), st.floats(0, 1000)), max_size=200), st.integers(1, 5)
)
def test_never_more_than_the_limit_in_any_window(hits: list[tuple[str, float]], limit: int) -> None:
    limiter = FixedWindowLimiter(limit=limit, window_s=10)
    allowed: dict[str, list[float]] = {}
    for user, now in sorted(hits, key=lambda h: h[1]):
        if limiter.hit(user, now) is None:
            allowed.setdefault(user, []).append(now)
    for times in allowed.values():
        # Fixed windows: any two windows of 10 s hold at most 2 * limit; one window start holds at most limit.
        for t in times:
            assert len([u for u in times if t <= u < t + 10]) <= 2 * limit


# ---- the job stream -----------------------------------------------------------------------------------


def _detail(state: str, tasks: list[str], exit_code: int | None = None) -> dict[str, Any]:
    return {
        "name": "j",
        "jobStatus": {"state": state, "appExitCode": exit_code},
        "taskRoles": {
            "worker": {
                "taskRoleStatus": {"name": "worker"},
                "taskStatuses": [{"taskIndex": i, "taskState": s} for i, s in enumerate(tasks)],
            }
        },
    }


def test_the_first_poll_sends_everything() -> None:
    events = changes(None, _detail("WAITING", ["WAITING", "WAITING"]))
    assert [e.event for e in events] == ["job", "task", "task"]
    assert events[0].data == {"name": "j", "jobStatus": {"state": "WAITING", "appExitCode": None}}
    assert events[2].data == {"taskRoleName": "worker", "taskIndex": 1, "taskState": "WAITING"}


def test_only_what_changed_is_sent() -> None:
    before = _detail("RUNNING", ["RUNNING", "WAITING"])
    after = _detail("RUNNING", ["RUNNING", "RUNNING"])
    assert changes(before, before) == []
    (event,) = changes(before, after)
    assert (event.event, event.data["taskIndex"], event.data["taskState"]) == ("task", 1, "RUNNING")


@pytest.mark.parametrize("final", ["SUCCEEDED", "FAILED", "STOPPED"])
def test_a_final_state_ends_the_stream(final: str) -> None:
    events = changes(_detail("RUNNING", ["RUNNING"]), _detail(final, ["RUNNING"], 0))
    assert [e.event for e in events] == ["job", "end"]
    assert events[-1].data == {"state": final}


def test_events_are_server_sent_event_frames() -> None:
    (event, *_) = changes(None, _detail("WAITING", []))
    frame = event.encode(7)
    assert frame.startswith("id: 7\nevent: job\ndata: ") and frame.endswith("\n\n")
    assert json.loads(frame.split("data: ", 1)[1]) == event.data
    assert "\n" not in frame.split("data: ", 1)[1].rstrip("\n")
