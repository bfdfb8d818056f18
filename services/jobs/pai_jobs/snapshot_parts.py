"""A framework snapshot stored in parts, so that a change costs what changed, not the size of the job.

Every `framework.changed` carries the whole framework: each task's status, and each earlier attempt with
its tasks. Stored whole in the job document, a 501-task job's document was ~180 KB and every event
rewrote it: the embedded MongoDB-wire server copies a document it reads with a projection or updates
(even one field), so one event of that job cost ~45 ms of the database server's CPU and ~13 ms of this
service's, and its RPCs waited behind a consumer's batch of them for seconds (issue 17).

So the job document keeps the snapshot's **head** (everything but `tasks` and `attempts`) and
`snapshot_parts`, the digests of the parts, in order; each part is a document of its own in
`job_snapshot_parts`:

- `t<n>`: tasks ``n * TASKS_PER_PART`` up to the next part (in the snapshot's order);
- `a<i>`: the earlier attempt ``i`` (written once: a finished attempt does not change).

A change writes the head and the parts whose digest changed, and deletes the parts that are gone, all in
the transaction of the change: a task that moves on rewrites one part of 32 tasks. Reading joins the parts
back (`join`), in one request for any number of jobs. Pure: no I/O.

A snapshot no bigger than one part (`fits_inline`: most jobs, one task or a few) stays whole in the job
document, without parts: a change then rewrites as much as it would rewrite of one part, and neither the
change nor a read asks for the parts (two and a half writes and a read fewer per trivial job, issue 17).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from pai_common.contract.base import Message
from pai_common.contract.types import FrameworkSnapshot, JobAttemptRecord, TaskSnapshot

# The collection of the parts (the jobs service's own database).
PARTS: Final = "job_snapshot_parts"
# Tasks per part: a one-task change rewrites ~11 KB (32 tasks) instead of the whole job.
TASKS_PER_PART: Final = 32
# What the job document keeps of them: the digests per kind, in order.
DIGESTS: Final = "snapshot_parts"
TASKS: Final = "tasks"
ATTEMPTS: Final = "attempts"


class MissingPartError(Exception):
    """A part a job document names is not stored with the digest it names: a change committed between
    the reads of the document and of its parts (read them again), or, when it lasts, a damaged database
    (no answer built from it would be true)."""


def digest(items: Iterable[Message]) -> str:
    """What a part holds: its items as their JSON text (pydantic's serializer, the fields in the model's
    order: several times cheaper than building the dicts and writing them out again)."""
    h = hashlib.blake2b(digest_size=12)
    for item in items:
        h.update(item.model_dump_json().encode())
        h.update(b"\n")
    return h.hexdigest()


def part_id(job_key: str, name: str) -> str:
    return f"{job_key}/{name}"


@dataclass(frozen=True)
class Split:
    """A snapshot as stored: its head, its parts by name (as models: a part is made a document only when
    it is written) and their digests per kind (in order)."""

    head: dict[str, Any]
    parts: dict[str, list[TaskSnapshot] | JobAttemptRecord]
    digests: dict[str, list[str]]

    def value(self, name: str) -> Any:
        """The stored form of one part: a list of task dicts, or one attempt's dict."""
        part = self.parts[name]
        if isinstance(part, list):
            return [task.model_dump(mode="json") for task in part]
        return part.model_dump(mode="json")


def split(snapshot: FrameworkSnapshot) -> Split:
    tasks = snapshot.tasks
    parts: dict[str, list[TaskSnapshot] | JobAttemptRecord] = {}
    digests: dict[str, list[str]] = {TASKS: [], ATTEMPTS: []}
    for n, start in enumerate(range(0, len(tasks), TASKS_PER_PART)):
        chunk = tasks[start : start + TASKS_PER_PART]
        parts[f"t{n}"] = chunk
        digests[TASKS].append(digest(chunk))
    for i, record in enumerate(snapshot.attempts):
        parts[f"a{i}"] = record
        digests[ATTEMPTS].append(digest([record]))
    head = snapshot.model_dump(mode="json", exclude={TASKS, ATTEMPTS})
    return Split(head, parts, digests)


# No parts at all: what a snapshot kept whole in the job document has (`changes` against it deletes every
# stored part).
NONE: Final = Split({}, {}, {TASKS: [], ATTEMPTS: []})


def fits_inline(snapshot: FrameworkSnapshot) -> bool:
    """Whether ``snapshot`` is kept whole in the job document: its tasks, those of its earlier attempts
    included, fit one part."""
    return len(snapshot.tasks) + sum(len(a.tasks) for a in snapshot.attempts) <= TASKS_PER_PART


def names(digests: Mapping[str, list[str]]) -> list[str]:
    """The parts a job document's digests name, tasks first, in order."""
    return list(_named(digests))


def _named(digests: Mapping[str, list[str]]) -> dict[str, str]:
    out = {f"t{n}": d for n, d in enumerate(digests.get(TASKS, []))}
    out.update({f"a{i}": d for i, d in enumerate(digests.get(ATTEMPTS, []))})
    return out


def stored_part(job_key: str, name: str, digest_: str, value: Any) -> dict[str, Any]:
    """The document of one part: its digest goes with it, so that a reader can tell that it read the parts
    its job document names (and not those of a change that committed between its two reads)."""
    return {"_id": part_id(job_key, name), "job_key": job_key, "digest": digest_, "value": value}


@dataclass(frozen=True)
class Changes:
    """What to write so that the stored parts are ``new``'s: part documents to (re)write, ids to delete."""

    write: list[dict[str, Any]]
    delete: list[str]


def changes(job_key: str, stored: Mapping[str, list[str]] | None, new: Split) -> Changes:
    """Against the digests stored with the job (None: none stored, e.g. a snapshot kept whole by an
    earlier version of this service): the parts whose digest differs or that are new, and the stored
    parts the new snapshot no longer has."""
    before = _named(stored or {})
    after = _named(new.digests)
    write = [
        stored_part(job_key, name, d, new.value(name)) for name, d in after.items() if before.get(name) != d
    ]
    delete = sorted(part_id(job_key, name) for name in before if name not in after)
    return Changes(write, delete)


def join(
    head: Mapping[str, Any], digests: Mapping[str, list[str]], parts: Mapping[str, Mapping[str, Any]]
) -> dict[str, Any]:
    """The whole snapshot of a head and its digests, from the part documents read (by id)."""
    job_key = str(head.get("job_key"))
    named = _named(digests)

    def value(name: str) -> Any:
        doc = parts.get(part_id(job_key, name))
        if doc is None or doc.get("digest") != named[name]:
            raise MissingPartError(f"part {name} of the snapshot of job {job_key} is not the one it names")
        return doc["value"]

    snapshot = dict(head)
    tasks: list[Any] = []
    for n in range(len(digests.get(TASKS, []))):
        tasks += value(f"t{n}")
    snapshot[TASKS] = tasks
    snapshot[ATTEMPTS] = [value(f"a{i}") for i in range(len(digests.get(ATTEMPTS, [])))]
    return snapshot


def ids_of(docs: Iterable[Mapping[str, Any]]) -> list[str]:
    """Every part id the job documents name (those stored in parts)."""
    return [
        part_id(str(doc["_id"]), name)
        for doc in docs
        if doc.get("snapshot") is not None and DIGESTS in doc
        for name in names(doc[DIGESTS])
    ]


def newest_versions(snapshots: Iterable[tuple[str, int]]) -> dict[str, int]:
    """The highest version per job among (job key, version) pairs: of a consumer's batch, only the newest
    snapshot of each job is worth storing (each replaces the one before whole)."""
    newest: dict[str, int] = {}
    for key, version in snapshots:
        if version > newest.get(key, -1):
            newest[key] = version
    return newest
