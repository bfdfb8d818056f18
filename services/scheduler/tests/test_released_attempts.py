"""Tombstones of attempts that ended before their request (pure)."""

from __future__ import annotations

from pai_scheduler.released_attempts import ReleasedAttempts


def test_a_tombstone_is_taken_once_and_forgotten_when_old() -> None:
    released = ReleasedAttempts()
    released.remember("u~a#0", 100.0)
    released.remember("u~a#0", 200.0)  # a second completion keeps the first time
    released.remember("u~b#1", 150.0)
    assert released.at == {"u~a#0": 100.0, "u~b#1": 150.0}
    assert released.take("u~a#0") is True
    assert released.take("u~a#0") is False
    assert released.take("u~c#0") is False
    released.remember("u~d#0", 300.0)
    released.forget_older_than(200.0)
    assert released.at == {"u~d#0": 300.0}


def test_changes_are_what_turns_the_stored_tombstones_into_these() -> None:
    stored = ReleasedAttempts.from_docs([{"_id": "u~b#0", "at": 2.5}, {"_id": "u~a#0", "at": 1}])
    assert list(stored.at) == ["u~a#0", "u~b#0"]  # oldest first, as the expiry reads them
    now = stored.copy()
    assert now.changes_from(stored) == ({}, [])
    now.take("u~b#0")
    now.remember("u~c#2", 9.0)
    assert now.changes_from(stored) == ({"u~c#2": 9.0}, ["u~b#0"])
    assert stored.at == {"u~a#0": 1.0, "u~b#0": 2.5}  # the copy is its own
