"""The framework snapshot in parts (pure): split and join give the snapshot back, a change writes the
parts that changed and deletes those that are gone, a torn read is refused, a batch keeps each job's
newest snapshot."""

from __future__ import annotations

import pytest

from pai_common.contract.types import FrameworkSnapshot, JobAttemptRecord, TaskSnapshot
from pai_jobs.snapshot_parts import (
    TASKS_PER_PART,
    MissingPartError,
    changes,
    ids_of,
    join,
    newest_versions,
    part_id,
    split,
)


def snapshot(tasks: int, running: int = 0, attempts: int = 0) -> FrameworkSnapshot:
    return FrameworkSnapshot(
        job_key="u~j",
        version=1,
        state="AttemptRunning",
        attempt_id=attempts,
        tasks=[
            TaskSnapshot(
                task_role="w" if i % 3 else "ps",
                index=i,
                state="TaskAttemptRunning" if i < running else "TaskAttemptPreparing",
                ports={"http": [1000 + i]},
            )
            for i in range(tasks)
        ],
        attempts=[
            JobAttemptRecord(
                attempt_id=a,
                state="AttemptCompleted",
                tasks=[TaskSnapshot(task_role="w", index=0, state="X")],
            )
            for a in range(attempts)
        ],
    )


def stored(s: FrameworkSnapshot) -> dict[str, dict[str, object]]:
    """Every part of ``s`` as the database would hold it."""
    parts = split(s)
    return {doc["_id"]: doc for doc in changes(s.job_key, None, parts).write}


@pytest.mark.parametrize("tasks", [0, 1, TASKS_PER_PART, TASKS_PER_PART + 1, 501])
def test_split_and_join_give_the_snapshot_back(tasks: int) -> None:
    s = snapshot(tasks, running=tasks // 2, attempts=2)
    parts = split(s)
    assert "tasks" not in parts.head and "attempts" not in parts.head
    assert len(parts.digests["tasks"]) == -(-tasks // TASKS_PER_PART)
    assert join(parts.head, parts.digests, stored(s)) == s.model_dump(mode="json")
    doc = {"_id": "u~j", "snapshot": parts.head, "snapshot_parts": parts.digests}
    assert sorted(ids_of([doc])) == sorted(stored(s))


def test_a_change_writes_the_parts_that_changed_only() -> None:
    before, after = split(snapshot(501, running=40)), split(snapshot(501, running=41))
    change = changes("u~j", before.digests, after)
    # Task 40 is in the second part (32-63): that part alone, with its 32 tasks.
    assert [doc["_id"] for doc in change.write] == [part_id("u~j", "t1")]
    assert len(change.write[0]["value"]) == TASKS_PER_PART and change.delete == []
    assert changes("u~j", after.digests, after).write == []
    # The same content gives the same digests (another process computes them alike).
    assert split(snapshot(501, running=41)).digests == after.digests


def test_parts_that_are_gone_are_deleted_and_new_ones_written() -> None:
    before = split(snapshot(100, attempts=1))
    after = split(snapshot(10, attempts=2))
    change = changes("u~j", before.digests, after)
    assert change.delete == [part_id("u~j", n) for n in ("t1", "t2", "t3")]
    assert [doc["_id"] for doc in change.write] == [part_id("u~j", "t0"), part_id("u~j", "a1")]
    # Nothing stored in parts yet (a snapshot an earlier version stored whole): every part is written.
    assert len(changes("u~j", None, after).write) == 1 + 2


def test_a_part_missing_or_of_another_change_is_refused() -> None:
    s = snapshot(100, running=5)
    parts = split(s)
    docs = stored(s)
    missing = {k: v for k, v in docs.items() if k != part_id("u~j", "t2")}
    with pytest.raises(MissingPartError, match="t2"):
        join(parts.head, parts.digests, missing)
    newer = stored(snapshot(100, running=6))
    with pytest.raises(MissingPartError, match="t0"):
        join(parts.head, parts.digests, {**docs, part_id("u~j", "t0"): newer[part_id("u~j", "t0")]})


def test_a_batch_keeps_each_jobs_newest_version() -> None:
    assert newest_versions([("a", 3), ("b", 1), ("a", 7), ("a", 5), ("b", 1)]) == {"a": 7, "b": 1}
    assert newest_versions([]) == {}
