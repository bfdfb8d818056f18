"""The pure parts behind `logs -f` and `watch`: Server-Sent Events, following a tail-only log, which log
to follow."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pai_cli.cli_common import format_time
from pai_cli.follow import FollowState, pick_location
from pai_cli.logtail import LogFollower, overlap
from pai_cli.models import JobDetail, StreamEvent
from pai_cli.sse import SseParser


def parse(text: str) -> list[StreamEvent]:
    parser = SseParser()
    return [e for line in text.split("\n") if (e := parser.feed(line)) is not None]


def test_sse_events_comments_and_multiline_data() -> None:
    events = parse(
        'id: 1\nevent: job\ndata: {"jobStatus":{"state":"RUNNING"}}\n\n'
        ": keep-alive\n\n"
        'id: 2\nevent: end\ndata: {"state":\ndata: "SUCCEEDED"}\n\n'
    )
    assert [(e.event, e.id) for e in events] == [("job", 1), ("end", 2)]
    assert events[0].data == {"jobStatus": {"state": "RUNNING"}} and events[1].data == {"state": "SUCCEEDED"}


def test_following_with_the_log_size_is_exact_even_for_repeating_logs() -> None:
    follower = LogFollower()
    assert follower.update("tick\ntick\n", 10) == "tick\ntick\n"
    assert follower.update("tick\ntick\n", 15) == "tick\n"  # same window, but the log grew by 5 bytes
    assert follower.update("tick\ntick\n", 15) == ""
    assert follower.update("ick\ntock\n", 25) == "[... 1 bytes not shown ...]\nick\ntock\n"


def test_following_without_the_size_matches_the_tails() -> None:
    follower = LogFollower()
    assert follower.update("line 1\nline 2\n") == "line 1\nline 2\n"
    assert follower.update("line 2\nline 3\n") == "line 3\n"
    assert follower.update("line 2\nline 3\n") == ""
    follower.reset()
    assert follower.update("other\n") == "other\n"


@given(st.text(max_size=40), st.text(max_size=40), st.integers(min_value=1, max_value=30))
def test_tail_matching_recovers_what_was_appended(start: str, added: str, window: int) -> None:
    """With the new tail still overlapping the old one, what follows the longest overlap is a suffix of
    what was appended (all of it, unless the log repeats itself)."""
    before, after = (start)[-window:], (start + added)[-window:]
    k = overlap(before, after)
    assert before.endswith(after[:k])
    assert (start + added).endswith(after[k:])


def detail(container_log: str | None, state: str = "RUNNING") -> JobDetail:
    task = {"taskIndex": 0, "taskState": state, "containerLog": container_log}
    return JobDetail.model_validate(
        {
            "name": "j",
            "jobStatus": {"username": "u", "state": state},
            "taskRoles": {"w": {"taskStatuses": [task]}},
        }
    )


def test_follow_state_from_detail_and_events() -> None:
    state = FollowState(None, 0)
    state.from_detail(detail(None, "WAITING"))
    assert (state.role, state.container_log, state.ended) == ("w", None, False)
    state.from_event(
        StreamEvent(event="task", data={"taskRoleName": "w", "taskIndex": 0, "containerLog": "/l/0"})
    )
    state.from_event(
        StreamEvent(event="task", data={"taskRoleName": "w", "taskIndex": 1, "containerLog": "/x"})
    )
    assert state.container_log == "/l/0"
    state.from_event(StreamEvent(event="end", data={"state": "FAILED"}))
    assert state.ended and state.job_state == "FAILED"


def test_pick_location() -> None:
    listing = {"locations": [{"name": "stdout", "uri": "/a"}, {"name": "stderr", "uri": "/b"}]}
    assert pick_location(listing, "stderr") == "/b"
    assert pick_location(listing, "all") is None and pick_location(None, "stdout") is None


def test_gpus_as_openpai_bit_mask_or_list() -> None:
    assert detail_gpus(0b1011) == [0, 1, 3] and detail_gpus([2, 3]) == [2, 3] and detail_gpus(None) == []


def detail_gpus(value: object) -> list[int]:
    task = {"taskIndex": 0, "containerGpus": value}
    job = JobDetail.model_validate({"name": "j", "taskRoles": {"w": {"taskStatuses": [task]}}})
    return job.task_roles["w"].task_statuses[0].gpus


def test_times_in_either_of_openpais_forms() -> None:
    assert format_time("2026-01-02T03:04:05Z") == format_time(1767323045000) != "-"
    assert format_time(None) == "-" and format_time("not a time") == "not a time"


@given(st.text(alphabet="ab\x00", max_size=30), st.text(alphabet="ab\x00", max_size=30))
def test_overlap_is_the_longest_end_that_starts_the_next(before: str, after: str) -> None:
    longest = max(k for k in range(min(len(before), len(after)) + 1) if before.endswith(after[:k]))
    assert overlap(before, after) == longest
