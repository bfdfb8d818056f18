"""Which waiting attempts get a ``scheduling.pending`` event, and what a reader is told between events. Pure.

A waiting attempt's place in its VC's queue moves each time a gang ahead of it is placed, and the counts in
its reason (leaves in use, free leaves, reservations) move with every placement and release. Publishing each
such move made the event flood quadratic: with n attempts queued, every placement republished all n of them
(413 queued jobs gave 55,165 events, each one a job document write and a job event in the jobs service).

So an event is published only when an attempt starts waiting, or when the *cause* of its wait changes: its
reason with every number masked (``gist``). A cause changes when the cluster changes in kind (a node goes
bad or is cordoned, a backfill hold or a preemption starts, borrowing applies), not when one more gang is
placed, so the events grow with attempts and such changes, not with attempts x placements. The event still
carries the full reason and the place in the queue as they were then (a record for the job's history).

What a user reads is current, not the last event: the scheduler keeps every waiting attempt's reason and
place in memory once the transaction that decided them commits (and stores each one's gist, a document per
attempt, in that transaction: ``state_layout.py``), and answers ``scheduler.pending``
(``JobPendingRequest``) from the committed copy; the jobs service asks it when it shows a waiting job.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_NUMBER = re.compile(r"\d+(?:\.\d+)?")


def gist(reason: str) -> str:
    """The reason with its numbers masked: what stays the same while only counts and places move."""
    return _NUMBER.sub("#", reason)


def to_publish(before: Mapping[str, list[Any]], now: Mapping[str, list[Any]]) -> list[str]:
    """The attempt keys of ``now`` ([reason, position] by key) that get an event, given what was committed
    ``before``: those that did not wait before, and those whose reason changed beyond its numbers."""
    out = []
    for key, (reason, _) in now.items():
        old = before.get(key)
        if old is None or gist(str(old[0])) != gist(reason):
            out.append(key)
    return out
