"""The jobs shell: submission, queries and job mutations over RPC; the read model and the job events kept
current from the events of the other services."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pymongo import DeleteOne, InsertOne, ReplaceOne, ReturnDocument, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import BulkWriteError, DuplicateKeyError, PyMongoError

from pai_common.bookkeeping import FinalWrite
from pai_common.bus import rpc_time_left
from pai_common.consumer import HandlerContext
from pai_common.contract.base import Event
from pai_common.contract.events import (
    FrameworkChanged,
    JobAttemptCompleted,
    JobDependencyResolved,
    JobElasticResized,
    JobPreemptionNoticed,
    JobStopRequested,
    JobSubmitted,
    JobTagsChanged,
    SchedulingDowngraded,
    SchedulingPending,
    SchedulingPreempting,
    SchedulingRejected,
)
from pai_common.contract.rpc import (
    GetJobRequest,
    JobAttemptsReply,
    JobAttemptsRequest,
    JobConfigReply,
    JobConfigRequest,
    JobCountsReply,
    JobCountsRequest,
    JobDetailReply,
    JobEventsReply,
    JobEventsRequest,
    JobExecutionTypeRequest,
    JobListReply,
    JobMutationReply,
    JobPendingReply,
    JobPendingRequest,
    JobSecretsReply,
    JobSecretsRequest,
    JobTagRequest,
    ListJobsRequest,
    ListLiveTasksRequest,
    ListVirtualClustersRequest,
    LiveTasksReply,
    ResolveStoragesReply,
    ResolveStoragesRequest,
    SubmitJobReply,
    SubmitJobRequest,
    TaskAttemptsReply,
    TaskAttemptsRequest,
    TaskPlacementReply,
    TaskPlacementRequest,
    VirtualClustersReply,
)
from pai_common.contract.states import public_state
from pai_common.contract.types import JobSpec
from pai_common.database import is_transient
from pai_common.envelope import Envelope
from pai_common.errors import (
    ConflictJobError,
    ForbiddenUserError,
    InvalidProtocolError,
    NoJobError,
    NoTagError,
    PaiError,
    ServiceUnavailableError,
    TooManyRequestsError,
)
from pai_common.service import ServiceApp
from pai_jobs import dependencies, job_events, list_plan, live_wait, metrics, snapshot_parts, storages
from pai_jobs.admission import Admission, Turns
from pai_jobs.group_commit import GroupCommit
from pai_jobs.job_events import JobEvent
from pai_jobs.list_sync import UPDATE_COUNTER, ListSync
from pai_jobs.protocol import parse_job
from pai_jobs.queries import list_filter, list_sort
from pai_jobs.snapshot_parts import PARTS, MissingPartError, Split
from pai_jobs.vc_names import VirtualClusterNames
from pai_jobs.views import (
    FRAMEWORK_COMPLETED_STATE,
    attempt_snapshot,
    job_attempt,
    job_attempts,
    job_detail,
    live_task_records,
    task_attempts,
)

log = logging.getLogger(__name__)

JOBS = "jobs"
# The raw `secrets` of each job, apart from the read model, so that no query of the API can reach them.
SECRETS = "job_secrets"
EVENTS = "job_events"
# The list's own small documents and counters (see list_plan), and the submission sequence.
LIST = "job_list"
COUNTS = "job_counts"
COUNTERS = "counters"
SEQ_COUNTER = "job_seq"
# A submission commits only if its asker still waits this long: enough for the commit itself.
COMMIT_MARGIN_S = 1.0
# How often the job gauges of /metrics are read back from the read model.
GAUGES_S = 10.0
# How long a job detail waits for the scheduler's current queue place before showing none: the scheduler
# answers from memory, so a slower answer means it is busy or away, and the detail must not wait on it.
LIVE_WAIT_TIMEOUT_S = 1.0
# After the scheduler did not answer, details show no place for this long without asking it: `jobs.get`
# takes its requests one at a time, so a scheduler that is away must not cost every detail a timeout.
LIVE_WAIT_PAUSE_S = 5.0

# How long a submission's write is tried again while it conflicts with other writes. The gateway waits
# for the answer longer than a submission's turn (its submit_wait_s) plus this.
STORE_PATIENCE_S = 30.0
# Jobs whose tasks may still exist (OpenPAI's pod list shows them).
LIVE_STATES = ("WAITING", "RUNNING", "STOPPING")
# What building a list entry reads of a job document: never the tasks, the attempts or the config (a job
# stored by an earlier version may hold its snapshot whole).
ENTRY_PROJECTION = {"snapshot.tasks": 0, "snapshot.attempts": 0, "config": 0}
# How many times a read of job documents and their snapshot parts is tried when a change committed between
# the two reads (snapshot_parts.MissingPartError).
READ_TRIES = 5
# The transaction memo's key for the newest snapshot version per job of a consumer's batch.
NEWEST = "newest_snapshots"
# The transaction memo's key for the reads and writes of the batch's snapshots (SnapshotBatch).
SNAPSHOT_BATCH = "snapshot_batch"

Db = AsyncDatabase[dict[str, Any]]


def now_ms() -> int:
    return int(time.time() * 1000)


def _owner_or_admin(doc: dict[str, Any], username: str, admin: bool, action: str) -> None:
    if not admin and doc["user"] != username:
        raise ForbiddenUserError(f"User {username} is not allowed to {action} job {doc['_id']}.")


async def _record(ctx: HandlerContext, event: JobEvent) -> None:
    """Record ``event`` in the transaction's one ordered write of job events (``EventRecords``)."""
    EventRecords.of(ctx).add(event)


class EventRecords:
    """The job events a transaction records, written at its end in one ordered final write: a consumer's
    batch records one or two per job, and nothing in a handler reads them back."""

    def __init__(self, tx: HandlerContext) -> None:
        self.tx = tx
        self.upserts: list[UpdateOne] = []
        tx.on_before_commit(self.flush)

    @staticmethod
    def of(tx: HandlerContext) -> EventRecords:
        return tx.kept(EVENTS, EventRecords)

    def add(self, event: JobEvent) -> None:
        query, update = event.upsert()
        # The order events are recorded in: what sorts two of the same millisecond (two producers'
        # events published back to back), instead of their ids' hashes.
        update["$setOnInsert"]["recorded_ns"] = time.time_ns()
        self.upserts.append(UpdateOne(query, update, upsert=True, namespace=self.tx.namespace(EVENTS)))

    async def flush(self) -> None:
        # Ordered: two records of one event (a repeat) count up in the order they came.
        self.tx.write_at_end(FinalWrite(EVENTS, self.upserts))
        self.upserts = []


async def _next_seq(db: Db, session: AsyncClientSession | None, name: str = SEQ_COUNTER) -> int:
    return (await _take_seqs(db, session, 1, name))[0]


def _apply_counts(tx: HandlerContext, changes: dict[str, int]) -> None:
    """Count ``changes`` up at the transaction's end, in one write for all of them (a submission changes
    five counters)."""
    ns = tx.namespace(COUNTS)
    updates = [
        UpdateOne({"_id": key}, {"$inc": {"n": delta}}, upsert=True, namespace=ns)
        for key, delta in sorted(changes.items())
    ]
    tx.write_at_end(FinalWrite(COUNTS, updates))


async def list_update_seq(tx: HandlerContext) -> int:
    """The `update_seq` of this transaction's list writes: the counter is counted up once per transaction
    and every entry it writes shares the number. Taking it still makes two list-writing transactions
    conflict, so they commit in number order and a reader that reads above its watermark after a commit
    sees all of that commit's entries (list_sync); a batch of framework changes pays one round trip for
    it instead of one per change."""
    seq = tx.memo.get(UPDATE_COUNTER)
    if seq is None:
        seq = tx.memo[UPDATE_COUNTER] = await _next_seq(tx.db, tx.session, UPDATE_COUNTER)
    assert isinstance(seq, int)
    return seq


class ListWrites:
    """The list entries and counter changes of one transaction, written once at its end (one final write
    each, whatever the number of changes in a consumer's batch). A job changed twice keeps its last entry;
    the counter changes add up."""

    def __init__(self, tx: HandlerContext) -> None:
        self.tx = tx
        self.entries: dict[str, dict[str, Any]] = {}
        self.counts: dict[str, int] = {}
        tx.on_before_commit(self.flush)

    @staticmethod
    def of(tx: HandlerContext) -> ListWrites:
        return tx.kept(LIST, ListWrites)

    async def put(self, old: dict[str, Any] | None, entry: dict[str, Any]) -> None:
        """``entry`` replaces ``old`` (None: no entry yet) with this transaction's update number."""
        entry = {**entry, "update_seq": await list_update_seq(self.tx)}
        self.entries[entry["_id"]] = entry
        for key, delta in list_plan.count_changes(old, entry).items():
            self.counts[key] = self.counts.get(key, 0) + delta

    async def flush(self) -> None:
        ns = self.tx.namespace(LIST)
        replaces = [ReplaceOne({"_id": key}, e, upsert=True, namespace=ns) for key, e in self.entries.items()]
        self.tx.write_at_end(FinalWrite(LIST, replaces))
        _apply_counts(self.tx, {k: d for k, d in self.counts.items() if d})
        self.entries, self.counts = {}, {}


async def refresh_list_entry(tx: HandlerContext, job_key: str) -> None:
    """Rebuild a job's list entry and its counters from the job document (in the caller's transaction)."""
    db, session = tx.db, tx.session
    job = await db[JOBS].find_one({"_id": job_key}, ENTRY_PROJECTION, session=session)
    if job is None or "seq" not in job:
        return
    writes = ListWrites.of(tx)
    before = writes.entries.get(job_key) or await db[LIST].find_one({"_id": job_key}, session=session)
    kept = {k: v for k, v in before.items() if k != "update_seq"} if before is not None else None
    entry = list_plan.list_entry(job)
    if kept == entry:
        # Most framework changes (a task started, an attempt moved on) leave the list entry as it was:
        # no write, and no bump of the update sequence every list write contends for.
        return
    await writes.put(kept, entry)


async def write_list_entry(tx: HandlerContext, before: dict[str, Any], after: dict[str, Any]) -> None:
    """Rewrite a job's list entry and counters for a change of its document from ``before`` to ``after``
    (both with ``ENTRY_PROJECTION``'s fields), without reading them: the stored entry is ``before``'s."""
    if "seq" not in before:
        return  # not listed yet: backfill_list gives it a seq and an entry from the document then
    old = list_plan.list_entry(before)
    entry = list_plan.list_entry(after)
    if old != entry:  # as in refresh_list_entry: no write, no bump of the update sequence
        await ListWrites.of(tx).put(old, entry)


def newest_in_batch(tx: HandlerContext) -> dict[str, int]:
    """The newest snapshot version per job among the `framework.changed` events of this transaction."""
    newest = tx.memo.get(NEWEST)
    if newest is None:
        newest = tx.memo[NEWEST] = snapshot_parts.newest_versions(
            (env.body.snapshot.job_key, env.body.snapshot.version)
            for env in tx.batch
            if isinstance(env.body, FrameworkChanged)
        )
    assert isinstance(newest, dict)
    return newest


# The events besides `framework.changed` whose handlers read or write the job document itself; the others
# (an attempt's end, a preemption, a rejection, ...) only record job events.
TOUCH_THE_JOB_DOCUMENT: tuple[type[Event], ...] = (SchedulingPending, SchedulingDowngraded)


class SnapshotBatch:
    """The job documents the `framework.changed` events of one transaction read and write: read in one
    request and written in one final write at the end, for the jobs that no other event of the batch
    touches the document of (a consumer's batch carries the snapshots of several jobs: two requests per
    batch instead of two per job; an attempt's end, which comes with its job's last snapshot, only
    records a job event). A job whose document another event of the batch touches
    (``TOUCH_THE_JOB_DOCUMENT``) is read and written at its turn, as each handler runs, so that every
    handler sees what the ones before it wrote."""

    def __init__(self, tx: HandlerContext) -> None:
        self.tx = tx
        newest = newest_in_batch(tx)
        others = {env.body.subject_key() for env in tx.batch if isinstance(env.body, TOUCH_THE_JOB_DOCUMENT)}
        self.keys = [key for key in newest if key not in others]
        self.docs: dict[str, dict[str, Any]] | None = None if len(self.keys) > 1 else {}
        self.updates: list[UpdateOne] = []
        self.pending: set[str] = set()
        tx.on_before_commit(self.flush_at_end)

    @staticmethod
    def of(tx: HandlerContext) -> SnapshotBatch:
        return tx.kept(SNAPSHOT_BATCH, SnapshotBatch)

    async def before(self, job_key: str) -> dict[str, Any] | None:
        """The job document as stored (``ENTRY_PROJECTION``), or None when there is no such job."""
        db, session = self.tx.db, self.tx.session
        if self.docs is None:
            self.docs = {
                d["_id"]: d
                async for d in db[JOBS].find({"_id": {"$in": self.keys}}, ENTRY_PROJECTION, session=session)
            }
        if job_key in self.docs:
            return self.docs.pop(job_key)  # once: read again if the job comes back in the batch
        if job_key in self.pending:
            await self.flush()  # the job came back after its write was left to the end: write it first
        return await db[JOBS].find_one({"_id": job_key}, ENTRY_PROJECTION, session=session)

    async def update(self, job_key: str, update: dict[str, Any]) -> None:
        if job_key in self.keys and job_key not in self.pending:
            self.updates.append(UpdateOne({"_id": job_key}, update, namespace=self.tx.namespace(JOBS)))
            self.pending.add(job_key)
            return
        await self.tx.db[JOBS].update_one({"_id": job_key}, update, session=self.tx.session)

    async def flush(self) -> None:
        """Write the updates left to the end now (a job came back in the batch, and will be read)."""
        await FinalWrite(JOBS, self.updates).write_alone(self.tx.db, self.tx.session)
        self.updates, self.pending = [], set()

    async def flush_at_end(self) -> None:
        self.tx.write_at_end(FinalWrite(JOBS, self.updates))
        self.updates, self.pending = [], set()


async def write_parts(tx: HandlerContext, job_key: str, stored: Any, new: Split) -> None:
    """Store ``new``'s parts whose digest is not among ``stored`` (the job document's digests), delete
    those it no longer has: one request, in the caller's transaction."""
    change = snapshot_parts.changes(job_key, stored, new)
    ops: list[ReplaceOne[dict[str, Any]] | DeleteOne] = [
        ReplaceOne({"_id": doc["_id"]}, doc, upsert=True) for doc in change.write
    ]
    ops += [DeleteOne({"_id": part}) for part in change.delete]
    if ops:
        await tx.db[PARTS].bulk_write(ops, session=tx.session)


async def join_parts(db: Db, docs: list[dict[str, Any]]) -> None:
    """Put back, in place, the tasks and attempts of each job document whose snapshot is stored in parts
    (one request for all of them). MissingPartError when a part read is not the one a document names."""
    ids = snapshot_parts.ids_of(docs)
    if not ids:
        return
    parts = {doc["_id"]: doc async for doc in db[PARTS].find({"_id": {"$in": ids}})}
    for doc in docs:
        digests = doc.pop(snapshot_parts.DIGESTS, None)
        if doc.get("snapshot") is not None and digests is not None:
            doc["snapshot"] = snapshot_parts.join(doc["snapshot"], digests, parts)


async def read_jobs(db: Db, find: Callable[[], Awaitable[list[dict[str, Any]]]]) -> list[dict[str, Any]]:
    """Job documents as ``find`` reads them, each snapshot whole: read again when a change committed
    between the read of the documents and that of their parts."""
    for tries_left in reversed(range(READ_TRIES)):
        docs = await find()
        try:
            await join_parts(db, docs)
            return docs
        except MissingPartError:
            if not tries_left:
                raise
    raise AssertionError("unreachable")


def submit_queue_limit() -> int:
    """`PAI_JOBS_SUBMIT_QUEUE`: how many submissions one jobs process lets wait for their turn (256)."""
    return max(1, int(os.environ.get("PAI_JOBS_SUBMIT_QUEUE", "256")))


def list_index_enabled() -> bool:
    """`PAI_JOBS_LIST_INDEX=0` serves every list from the database plan alone."""
    return os.environ.get("PAI_JOBS_LIST_INDEX", "1") != "0"


class JobsService:
    def __init__(
        self,
        app: ServiceApp,
        list_index: bool | None = None,
        virtual_clusters: Callable[[], Awaitable[set[str]]] | None = None,
    ) -> None:
        """`virtual_clusters` answers which VCs exist; by default the scheduler, which owns them, is asked."""
        self.app = app
        use_index = list_index_enabled() if list_index is None else list_index
        # The in-memory list of this process (None: the database plan serves every list).
        self.lists = ListSync(lambda: app.db) if use_index else None
        # Writes of this process run one at a time, the RPC writes and the event handlers' transactions
        # alike: every one bumps the same counters (the submission sequence, the list's update sequence,
        # the per-value counts), so running them together only makes them conflict and back off
        # (measured: submit p50 2.6 s at 8 concurrent, instead of ~0.1 s; and each conflicting batch of
        # events handled again one by one).
        self._turns = Turns()
        app.serialize_writes(self._turns.batch_turn)
        self.admission = Admission(limit=submit_queue_limit())
        self.vcs = VirtualClusterNames(virtual_clusters or self._vc_names)
        # Submissions ready while a write is under way are stored together, in one transaction.
        self.submissions: GroupCommit[NewJob] = GroupCommit(
            self._store_together,
            self._store_alone,
            key=lambda new: new.spec.job_key,
            late=self._late,
            # Only a name taken is one submission's own failure; a write that kept conflicting is everyone's.
            split=lambda exc: not isinstance(exc, PyMongoError) or _duplicate_key(exc),
            # The writer holds the process's turn while submissions keep coming (Turns: they go first).
            turn=self._turns,
        )
        self._live_wait_paused_until = 0.0  # time.monotonic(); see LIVE_WAIT_PAUSE_S
        app.rpc(
            {
                SubmitJobRequest: self.submit,
                GetJobRequest: self.get,
                ListJobsRequest: self.list_jobs,
                JobCountsRequest: self.counts,
                JobConfigRequest: self.config,
                JobExecutionTypeRequest: self.execution_type,
                JobTagRequest: self.tag,
                JobEventsRequest: self.events,
                JobAttemptsRequest: self.attempts,
                TaskAttemptsRequest: self.task_attempts,
                JobSecretsRequest: self.secrets,
                ListLiveTasksRequest: self.live_tasks,
            },
            # Submissions are taken at once, each in its own task: admission bounds them (see submit), and
            # those ready together are stored together (group_commit).
            concurrent=frozenset({SubmitJobRequest}),
        )
        app.on_event(FrameworkChanged)(self.on_framework_changed)
        app.on_event(SchedulingPending)(self.on_pending)
        app.on_event(SchedulingDowngraded)(self.on_downgraded)
        app.on_event(SchedulingPreempting)(self.on_preempting)
        app.on_event(SchedulingRejected)(self.on_rejected)
        app.on_event(JobAttemptCompleted)(self.on_attempt_completed)
        app.on_event(JobDependencyResolved)(self.on_dependency_resolved)
        app.on_event(JobPreemptionNoticed)(self.on_preemption_noticed)
        app.on_event(JobElasticResized)(self.on_elastic_resized)
        app.on_startup(self._indexes)
        app.background(self._backfill)
        app.background(self._gauges)
        if self.lists is not None:
            app.background(self.lists.run)

    async def _indexes(self, app: ServiceApp) -> None:
        await create_indexes(app)

    async def _gauges(self) -> None:
        await metrics.refresh_forever(self.app.db, COUNTS, LIST, GAUGES_S)

    async def _backfill(self) -> None:
        # After the service is ready: looking for jobs without `seq` reads the whole `jobs` collection
        # on the embedded server (about 20 s at 100,000 jobs).
        try:
            backfilled = await backfill_list(self.app)
        except Exception as exc:
            log.warning("job list backfill failed; the next start tries again", extra={"error": repr(exc)})
            return
        if backfilled:
            log.info("job list entries backfilled", extra={"jobs": backfilled})

    async def _job(self, job_key: str, projection: dict[str, Any] | None = None) -> dict[str, Any]:
        """The job document (its snapshot whole when the projection includes it)."""

        async def find() -> list[dict[str, Any]]:
            doc = await self.app.db[JOBS].find_one({"_id": job_key}, projection)
            if doc is None:
                raise NoJobError(f"Job {job_key} is not found.")
            return [doc]

        return (await read_jobs(self.app.db, find))[0]

    async def _transact(self, work: Callable[[HandlerContext], Awaitable[None]]) -> None:
        """A mutation's transaction, run again while it conflicts with the event handlers: a job whose
        tasks change all the time (hundreds placed one by one) is written by them constantly, and a STOP
        must not fail on that."""
        await self._turns.acquire()
        try:
            await self._store(work, time.monotonic() + STORE_PATIENCE_S)
        finally:
            self._turns.release()

    # ---- submission ---------------------------------------------------------------------------------

    async def submit(self, req: SubmitJobRequest) -> SubmitJobReply:
        """Store a job, or say truly why not.

        Submissions run concurrently up to the write (see admission): a burst is refused early with 429
        rather than queued past the caller's patience. A submission of the same user, name and content as
        a stored job is answered as that job's was (a client retrying one that succeeded is not refused);
        other content under a taken name is 409.
        """
        wait = self.admission.refusal()
        if wait is not None:
            raise TooManyRequestsError(
                f"{self.admission.waiting} submissions are waiting; nothing was done: retry in {wait} s.",
                wait,
            )
        self.admission.waiting += 1
        try:
            now = asyncio.get_running_loop().time()
            deadline = now + req.wait_ms / 1000
            asker_left = rpc_time_left()
            if asker_left is not None:
                # The gateway answers 503 once it stops waiting: a job stored after that would exist though
                # its submitter was told it does not (202 if and only if the job exists).
                deadline = min(deadline, now + asker_left - COMMIT_MARGIN_S)
            return await self._submit(req, deadline)
        finally:
            self.admission.waiting -= 1

    async def _submit(self, req: SubmitJobRequest, deadline: float) -> SubmitJobReply:
        parsed = parse_job(req.protocol_yaml, req.username, now_ms())
        spec = parsed.spec
        digest = content_digest(parsed.raw)
        try:
            resolved = await self._admit(req, spec, parsed.raw)
        except PaiError:
            # A retry of a submission that was stored gets the answer it got then, whatever changed since
            # (the user's VCs, a storage): 202 if and only if the job exists. The stored job is read only
            # on this path: a new job's insert meets the duplicate key of an existing one by itself.
            if await self._already_submitted(spec.job_key, digest):
                return SubmitJobReply(job_key=spec.job_key)
            raise
        spec = storages.with_mounts(spec, resolved.mounts)
        doc = new_job_document(spec.model_dump(mode="json"), parsed.masked, digest)
        try:
            # With the submissions ready at the same moment, in one transaction (group_commit); refused
            # with 429, nothing done, if the write's turn does not come by the deadline.
            await self.submissions.store(NewJob(spec, doc, parsed.raw, deadline), deadline)
        except PyMongoError as exc:
            if _duplicate_key(exc):
                if await self._already_submitted(spec.job_key, digest):
                    return SubmitJobReply(job_key=spec.job_key)
                # Names are never reused, even after the first job finished (as OpenPAI does).
                raise ConflictJobError(f"Job {spec.job_key} already exists.") from None
            # Conflicts kept aborting the write. Aborted means not stored, unless the last commit's outcome
            # was lost on the way back: the stored job tells.
            if is_transient(exc) and await self._already_submitted(spec.job_key, digest):
                return SubmitJobReply(job_key=spec.job_key)
            wait = self.admission.retry_after_s()
            raise TooManyRequestsError(
                f"The jobs service is busy: job {spec.job_key} was not created; retry in {wait} s.", wait
            ) from exc
        log.info("job submitted", extra={"job_key": spec.job_key, "vc": spec.virtual_cluster})
        return SubmitJobReply(job_key=spec.job_key)

    async def _admit(self, req: SubmitJobRequest, spec: JobSpec, raw: dict[str, Any]) -> ResolveStoragesReply:
        """The checks a submission passes before it is stored; the storages it mounts."""
        try:
            await self.vcs.check(spec.virtual_cluster)
            if not req.admin and spec.virtual_cluster not in req.virtual_clusters:
                raise ForbiddenUserError(
                    f"User {req.username} is not allowed to do operation in {spec.virtual_cluster}"
                )
            await self._check_dependencies(spec)
            # Storages are checked before the job exists: one the user may not use, or that does not
            # exist, refuses the submission (403 / 404 naming it) instead of failing the job at launch.
            return await self.app.bus.request(
                ResolveStoragesRequest(
                    username=req.username,
                    admin=req.admin,
                    requests=storages.requested(raw),
                    referenced=storages.referenced(raw),
                    job_key=spec.job_key,
                ),
                ResolveStoragesReply,
            )
        except ServiceUnavailableError as exc:
            # The scheduler or the storage service did not answer: busy, like this service when its queue
            # is full, and nothing has been done.
            wait = max(self.admission.retry_after_s(), 1)
            raise TooManyRequestsError(
                f"Job {spec.job_key} was not created: {exc.message}; retry in {wait} s.", wait
            ) from exc

    def _late(self, new: NewJob) -> Exception:
        wait = self.admission.retry_after_s()
        return TooManyRequestsError(
            f"The jobs service is busy: job {new.spec.job_key} was not created; retry in {wait} s.", wait
        )

    async def _store_alone(self, new: NewJob) -> None:
        await self._store_together([new])

    async def _store_together(self, batch: list[NewJob]) -> None:
        loop = asyncio.get_running_loop()

        async def store(tx: HandlerContext) -> None:
            await store_new_jobs(tx, batch)
            # Checked last, just before the commit (and at every retry): a write that conflicts is tried
            # again for up to STORE_PATIENCE_S, and a job committed once its submitter was answered 503
            # would make that answer untrue. A late one aborts the batch; it is then written one by one,
            # the late ones refused.
            late = [new for new in batch if new.deadline <= loop.time()]
            if late:
                raise self._late(late[0])

        # The turn is the writer's, held from one batch to the next (GroupCommit's `turn`).
        started = time.monotonic()
        try:
            await self._store(store, started + STORE_PATIENCE_S)
        finally:
            # Per job: the retry-after estimate counts the submissions waiting, not the batches.
            self.admission.record_write((time.monotonic() - started) / len(batch))

    async def _check_dependencies(self, spec: JobSpec) -> None:
        """Every dependency names a stored job (400 naming the ones that do not)."""
        if not spec.dependencies:
            return
        keys = [d.job_key for d in spec.dependencies]
        found = {doc["_id"] async for doc in self.app.db[JOBS].find({"_id": {"$in": keys}}, {"_id": 1})}
        missing = dependencies.unknown(spec.dependencies, found)
        if missing:
            raise InvalidProtocolError(json.dumps([{"field": f, "message": m} for f, m in missing]))

    async def _store(self, store: Callable[[HandlerContext], Awaitable[None]], give_up_at: float) -> None:
        """The submission's transaction, run again while it conflicts with another replica's writes (they
        update the same counters), until `give_up_at`. Safe to repeat: a job stored by an attempt whose
        answer was lost makes the next one fail with a duplicate key."""
        pause = 0.05
        while True:
            try:
                await self.app.transact(store)
                return
            except PyMongoError as exc:
                if not is_transient(exc) or time.monotonic() + pause > give_up_at:
                    raise
            await asyncio.sleep(pause * (0.5 + random.random()))
            pause = min(pause * 2, 1.0)

    async def _already_submitted(self, job_key: str, digest: str) -> bool:
        """Whether the job is stored, submitted with this very content; ConflictJobError if it is stored
        with other content."""
        stored = await self.app.db[JOBS].find_one({"_id": job_key}, {"content_sha256": 1})
        if stored is None:
            return False
        if stored.get("content_sha256") != digest:
            raise ConflictJobError(f"Job {job_key} already exists.")
        return True

    async def live_tasks(self, req: ListLiveTasksRequest) -> LiveTasksReply:
        async def find() -> list[dict[str, Any]]:
            projection = {"spec": 1, "snapshot": 1, snapshot_parts.DIGESTS: 1}
            cursor = self.app.db[JOBS].find({"state": {"$in": list(LIVE_STATES)}}, projection).sort("_id", 1)
            return await cursor.to_list()

        docs = await read_jobs(self.app.db, find)
        return LiveTasksReply(tasks=[task for doc in docs for task in live_task_records(doc)])

    async def _vc_names(self) -> set[str]:
        reply = await self.app.bus.request(ListVirtualClustersRequest(), VirtualClustersReply)
        return set(reply.virtual_clusters)

    # ---- queries ------------------------------------------------------------------------------------

    async def get(self, req: GetJobRequest) -> JobDetailReply:
        doc = await self._job(req.job_key)
        if req.attempt_id is None:
            detail = job_detail(doc)
            if live_wait.asks_scheduler(doc, detail):
                live_wait.apply(detail, await self._live_wait(req.job_key))
            return JobDetailReply(detail=detail)
        snapshot = attempt_snapshot(doc, req.attempt_id)
        if snapshot is None:
            raise NoJobError(f"Job {req.job_key} has no attempt {req.attempt_id}.")
        return JobDetailReply(detail=job_detail(doc, snapshot))

    async def _live_wait(self, job_key: str) -> JobPendingReply | None:
        """The scheduler's current reason and place for a waiting job (live_wait.py says why they are asked
        for, not stored); None when it does not answer soon: the detail then shows no place."""
        if time.monotonic() < self._live_wait_paused_until:
            return None
        try:
            return await self.app.bus.request(
                JobPendingRequest(job_key=job_key), JobPendingReply, timeout=LIVE_WAIT_TIMEOUT_S
            )
        except ServiceUnavailableError as exc:
            log.info(
                "no current queue place from the scheduler", extra={"key": job_key, "error": exc.message}
            )
            self._live_wait_paused_until = time.monotonic() + LIVE_WAIT_PAUSE_S
            return None

    async def list_jobs(self, req: ListJobsRequest) -> JobListReply:
        query = list_filter(req)  # also refuses values no job can have
        sort = list_sort(req)
        index = await self.lists.current() if self.lists is not None else None
        if index is not None:
            found = index.page(req)
            return JobListReply(
                jobs=index.summaries(found.keys), total=found.total if req.count_total else -1
            )
        if req.order_field == list_plan.SEQ_ORDER_FIELD:
            page = await self._page_by_seq(req)
        else:
            cursor = (
                self.app.db[LIST].find(query, {"summary": 1}).sort(sort).skip(req.offset).limit(req.limit)
            )
            page = [list_plan.summary_of(doc) async for doc in cursor]
        if not req.count_total:
            total = -1
        elif req.offset == 0 and len(page) < req.limit:
            total = len(page)  # the page holds every match: no second query
        else:
            total = await self._count(req, query)
        return JobListReply(jobs=page, total=total)

    async def counts(self, req: JobCountsRequest) -> JobCountsReply:
        users = list(dict.fromkeys(req.usernames))
        index = await self.lists.current() if self.lists is not None else None
        if index is not None:
            states = index.state_counts(users, req.virtual_cluster)
        else:
            match: dict[str, Any] = {}
            if users:
                match["user"] = {"$in": users}
            if req.virtual_cluster:
                match["vc"] = req.virtual_cluster
            grouped = await self.app.db[LIST].aggregate(
                [{"$match": match}, {"$group": {"_id": "$state", "n": {"$sum": 1}}}]
            )
            states = {str(row["_id"]): int(row["n"]) async for row in grouped if row["n"]}
        return JobCountsReply(states=dict(sorted(states.items())), total=sum(states.values()))

    async def _page_by_seq(self, req: ListJobsRequest) -> list[dict[str, Any]]:
        """See list_plan: one exact seq range without filters; else seq windows, sized by the counters,
        until the page (after `offset` matches) is full."""
        counter = await self.app.db[COUNTERS].find_one({"_id": SEQ_COUNTER})
        top = int(counter["value"]) if counter else 0
        jobs = self.app.db[LIST]
        direct = list_plan.direct_window(req, top)
        if direct is not None:
            cursor = jobs.find(direct.query({}), {"summary": 1, "seq": 1})
            page = sorted([doc async for doc in cursor], key=lambda d: d["seq"], reverse=req.order == "DESC")
            return [list_plan.summary_of(doc) for doc in page]
        keys = list_plan.driver_count_keys(req)
        counts = {doc["_id"]: int(doc["n"]) async for doc in self.app.db[COUNTS].find({"_id": {"$in": keys}})}
        drivers = list_plan.choose_drivers(req, counts, top)
        paging = list_plan.Paging(req)
        width = list_plan.first_width(req, paging.need, top, drivers)
        for window in list_plan.windows(top, width, paging.descending):
            batch: list[dict[str, Any]] = []
            for part in drivers.parts:
                batch += await jobs.find(window.query(part), {"_id": 0}).to_list()
            if paging.add(batch):
                break
        return paging.page()

    async def _count(self, req: ListJobsRequest, query: dict[str, Any]) -> int:
        keys = list_plan.count_plan(req)
        if keys is None:
            return await self.app.db[LIST].count_documents(query)
        counts = self.app.db[COUNTS].find({"_id": {"$in": keys}}, {"n": 1})
        return sum([int(doc["n"]) async for doc in counts])

    async def config(self, req: JobConfigRequest) -> JobConfigReply:
        doc = await self._job(req.job_key, {"config": 1})
        return JobConfigReply(config=doc["config"])

    async def events(self, req: JobEventsRequest) -> JobEventsReply:
        await self._job(req.job_key, {"_id": 1})
        query: dict[str, Any] = {"job_key": req.job_key}
        if req.type is not None:
            query["type"] = req.type
        cursor = self.app.db[EVENTS].find(query).sort([("first_at", 1), ("recorded_ns", 1), ("_id", 1)])
        events = [job_events.event_view(doc) async for doc in cursor]
        return JobEventsReply(events=events, total=len(events))

    async def attempts(self, req: JobAttemptsRequest) -> JobAttemptsReply:
        doc = await self._job(req.job_key)
        if req.attempt_id is None:
            return JobAttemptsReply(attempts=job_attempts(doc))
        attempt = job_attempt(doc, req.attempt_id)
        if attempt is None:
            raise NoJobError(f"Job {req.job_key} has no attempt {req.attempt_id}.")
        return JobAttemptsReply(attempts=[attempt])

    async def task_attempts(self, req: TaskAttemptsRequest) -> TaskAttemptsReply:
        doc = await self._job(req.job_key)
        status = task_attempts(doc, req.attempt_id, req.task_role, req.index)
        if status is None:
            raise NoJobError(
                f"Job {req.job_key} has no task {req.task_role}[{req.index}] in attempt {req.attempt_id}."
            )
        return TaskAttemptsReply(status=status)

    async def secrets(self, req: JobSecretsRequest) -> JobSecretsReply:
        """For the runtime agent of the node a task attempt of the job is placed on, and no one else.

        The placement is the orchestrator's, not this service's read model: the read model learns it from
        an event that may arrive after the agent asks (it did, for every multi-role job). An orchestrator
        that does not answer is a ServiceUnavailableError, which the agent retries."""
        await self._job(req.job_key, {"_id": 1})
        where = await self.app.bus.request(
            TaskPlacementRequest(
                job_key=req.job_key,
                attempt_id=req.attempt_id,
                task_role=req.task_role,
                index=req.index,
                task_attempt_id=req.task_attempt_id,
            ),
            TaskPlacementReply,
        )
        task = f"{req.task_role}[{req.index}] (attempt {req.attempt_id}.{req.task_attempt_id})"
        if where.node != req.node:
            why = where.reason or f"it is placed on {where.node}"
            raise ForbiddenUserError(f"Node {req.node} runs no task {task} of job {req.job_key}: {why}.")
        stored = await self.app.db[SECRETS].find_one({"_id": req.job_key})
        return JobSecretsReply(secrets=dict(stored["secrets"]) if stored else {})

    # ---- mutations ----------------------------------------------------------------------------------

    async def execution_type(self, req: JobExecutionTypeRequest) -> JobMutationReply:
        doc = await self._job(req.job_key, {"user": 1, "state": 1})
        _owner_or_admin(doc, req.username, req.admin, "stop")
        message = f"Execute job {req.job_key} successfully."
        if req.value == "START":
            # As OpenPAI: accepted, but a job is started once; a stopped job is never resumed.
            return JobMutationReply(message=message)
        at = now_ms()

        async def stop(tx: HandlerContext) -> None:
            # Only the first request changes anything, so a repeated STOP publishes nothing new.
            result = await tx.db[JOBS].update_one(
                {"_id": req.job_key, "execution_type": {"$ne": "STOP"}},
                {"$set": {"execution_type": "STOP", "stop_requested_at": at}},
                session=tx.session,
            )
            if result.modified_count == 0:
                return
            await refresh_list_entry(tx, req.job_key)
            await _record(tx, job_events.stop_requested(req.job_key, req.username, at))
            tx.out.event(
                JobStopRequested(job_key=req.job_key, requested_by=req.username, requested_at=at),
                msg_id=f"stop:{req.job_key}",
            )

        await self._transact(stop)
        log.info("job stop requested", extra={"job_key": req.job_key, "by": req.username})
        return JobMutationReply(message=message)

    async def tag(self, req: JobTagRequest) -> JobMutationReply:
        doc = await self._job(req.job_key, {"user": 1, "tags": 1})
        _owner_or_admin(doc, req.username, req.admin, "tag")

        async def change(tx: HandlerContext) -> None:
            jobs = tx.db[JOBS]
            if req.remove:
                result = await jobs.update_one(
                    {"_id": req.job_key, "tags": req.tag}, {"$pull": {"tags": req.tag}}, session=tx.session
                )
                if result.modified_count == 0:
                    # OpenPAI's words, its space before the period included.
                    raise NoTagError(f"Tag {req.tag} is not found for job {req.job_key} .")
            else:
                result = await jobs.update_one(
                    {"_id": req.job_key}, {"$addToSet": {"tags": req.tag}}, session=tx.session
                )
                if result.modified_count == 0:
                    return  # it had the tag already: nothing changed, nothing to audit
            await refresh_list_entry(tx, req.job_key)
            # For the audit log (auth): who tagged which job.
            tx.out.event(
                JobTagsChanged(
                    job_key=req.job_key, tag=req.tag, removed=req.remove, by=req.username, at=now_ms()
                )
            )

        await self._transact(change)
        if req.remove:
            return JobMutationReply(message=f"Delete tag {req.tag} from job {req.job_key} successfully.")
        return JobMutationReply(message=f"Add tag {req.tag} for job {req.job_key} successfully.")

    # ---- events of the other services ---------------------------------------------------------------

    async def on_framework_changed(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, FrameworkChanged)
        snap = env.body.snapshot
        # Each snapshot replaces the one before whole: of a consumer's batch, only each job's newest is
        # stored (the others are marked handled with it, in the same transaction). A job with hundreds of
        # tasks changes several times a second, and its events come in batches.
        if snap.version < newest_in_batch(ctx).get(snap.job_key, snap.version):
            return
        # The document as it was (without its parts), then the fields set: the list entry before is the one
        # of that document (every write of what a list entry shows rebuilds the entry in the same
        # transaction), and the one after is that document with the fields just set, so the list entry is
        # not read (ListWrites). Two requests on the _id index, not one find-and-modify: the embedded
        # MongoDB-wire server answers a find-and-modify by scanning the whole collection (36 ms with 4,000
        # jobs against 1 ms for the pair), which made every job's events dearer as jobs accumulated (the
        # 10,000-job fill). A concurrent write of the same job between the two is a write conflict: the
        # transaction reruns.
        batch = SnapshotBatch.of(ctx)
        before = await batch.before(snap.job_key)
        # Only a newer version replaces what is stored: late and duplicated snapshots change nothing. As the
        # condition `snapshot_version < version` was: a job without a version is not replaced.
        if before is None or not before.get("snapshot_version", snap.version) < snap.version:
            return
        digests_before = before.get(snapshot_parts.DIGESTS)
        update: dict[str, Any]
        if snapshot_parts.fits_inline(snap):
            fields = read_model_fields(snap.model_dump(mode="json"))
            update = {"$set": fields}
            if digests_before is not None:
                # Kept in parts until now (the job shrank, or an earlier version stored it so): they go.
                await write_parts(ctx, snap.job_key, digests_before, snapshot_parts.NONE)
                update["$unset"] = {snapshot_parts.DIGESTS: ""}
        else:
            stored = snapshot_parts.split(snap)
            await write_parts(ctx, snap.job_key, digests_before, stored)
            fields = {**read_model_fields(stored.head), snapshot_parts.DIGESTS: stored.digests}
            update = {"$set": fields}
        await batch.update(snap.job_key, update)
        await write_list_entry(ctx, before, {**before, **fields})

    async def on_pending(self, ctx: HandlerContext, env: Envelope) -> None:
        """A new wait or a new cause of it (the scheduler does not publish each move of a job's place in its
        queue): stored as the fallback reason of the job detail and recorded in the job's events. The place
        stored is the one at publication, for the record; the detail asks the scheduler for the current one
        (live_wait.py)."""
        assert isinstance(env.body, SchedulingPending)
        p = env.body
        # A reason about an earlier attempt never replaces one about a later attempt. Written without an
        # `$or` (no reason yet, or one about this attempt or an earlier one): with it the MongoDB-wire server
        # scanned the whole jobs collection for each of these frequent events instead of using the _id index
        # (270 ms each with 400 jobs, which left the job list hundreds of events behind under a burst).
        await ctx.db[JOBS].update_one(
            {"_id": p.job_key, "pending.attempt_id": {"$not": {"$gt": p.attempt_id}}},
            {"$set": {"pending": {"attempt_id": p.attempt_id, "reason": p.reason, "position": p.position}}},
            session=ctx.session,
        )
        at = job_events.epoch_ms(env.time, now_ms())
        await _record(ctx, job_events.pending(p.job_key, p.attempt_id, p.reason, p.position, at))

    async def on_downgraded(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, SchedulingDowngraded)
        d = env.body
        preemptor = f"{d.preemptor.job_key}#{d.preemptor.attempt_id}" if d.preemptor else None
        await ctx.db[JOBS].update_one(
            {"_id": d.job_key},
            {"$set": {"downgraded": {"attempt_id": d.attempt_id, "preemptor": preemptor}}},
            session=ctx.session,
        )
        at = job_events.epoch_ms(env.time, now_ms())
        await _record(ctx, job_events.downgraded(d.job_key, d.attempt_id, preemptor, at))

    async def on_preempting(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, SchedulingPreempting)
        p = env.body
        at = job_events.epoch_ms(env.time, now_ms())
        preemptor = f"{p.job_key}#{p.attempt_id}"
        # Victims may be tasks of one attempt placed one by one (gangAllocation false): one record each.
        attempts = list(dict.fromkeys((v.job_key, v.attempt_id) for v in p.victims))
        victims = [f"{job_key}#{attempt_id}" for job_key, attempt_id in attempts]
        await _record(ctx, job_events.preempting(p.job_key, p.attempt_id, victims, at))
        # An elastic job that only loses growth tasks is shrunk, not preempted: ElasticShrank says so.
        shrunk = {(v.job_key, v.attempt_id) for v in p.victims if v.growth}
        stopped = {(v.job_key, v.attempt_id) for v in p.victims if not v.growth}
        for job_key, attempt_id in attempts:
            if (job_key, attempt_id) in stopped or (job_key, attempt_id) not in shrunk:
                await _record(ctx, job_events.preempted(job_key, attempt_id, preemptor, at))

    async def on_rejected(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, SchedulingRejected)
        r = env.body
        at = job_events.epoch_ms(env.time, now_ms())
        await _record(ctx, job_events.rejected(r.job_key, r.attempt_id, r.reason, at))

    async def on_attempt_completed(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobAttemptCompleted)
        c = env.body
        at = job_events.epoch_ms(env.time, now_ms())
        await _record(ctx, job_events.attempt_completed(c.job_key, c.attempt_id, c.exit_code, at))

    async def on_dependency_resolved(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobDependencyResolved)
        at = job_events.epoch_ms(env.time, now_ms())
        await _record(ctx, job_events.dependency_resolved(env.body, at))

    async def on_preemption_noticed(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobPreemptionNoticed)
        await _record(ctx, job_events.preemption_noticed(env.body))

    async def on_elastic_resized(self, ctx: HandlerContext, env: Envelope) -> None:
        assert isinstance(env.body, JobElasticResized)
        await _record(ctx, job_events.elastic_resized(env.body, job_events.epoch_ms(env.time, now_ms())))


@dataclass(frozen=True)
class NewJob:
    """A submission checked and rendered, ready to be stored."""

    spec: JobSpec
    doc: dict[str, Any]
    raw: dict[str, Any]
    # Event-loop time by which it is committed or not at all: the submitter stops waiting soon after.
    deadline: float


async def _take_seqs(db: Db, session: AsyncClientSession | None, n: int, name: str) -> list[int]:
    """``n`` consecutive values of a counter in one write."""
    counter = await db[COUNTERS].find_one_and_update(
        {"_id": name},
        {"$inc": {"value": n}},
        upsert=True,
        return_document=ReturnDocument.AFTER,
        session=session,
    )
    assert counter is not None  # upserted
    top = int(counter["value"])
    return list(range(top - n + 1, top + 1))


async def store_new_jobs(tx: HandlerContext, batch: list[NewJob]) -> None:
    """Store submitted jobs and what follows from them in the caller's transaction: each job with its
    seq, its list entry (with the next update_seq) and counters, its secrets, its `submitted` job event
    (and its waiting-for-dependencies one) and its job.submitted event. The job documents are written at
    once (a name taken fails there); the list entries, counters and job events are final writes, sent with
    the outbox's messages in one request; one write per collection for the whole batch."""
    db, session = tx.db, tx.session
    # The seqs are taken in the same transaction as the inserts: refused jobs leave no gap.
    seqs = await _take_seqs(db, session, len(batch), SEQ_COUNTER)
    jobs = [{**new.doc, "seq": seq} for new, seq in zip(batch, seqs, strict=True)]
    await db[JOBS].insert_many(jobs, session=session)
    update_seqs = await _take_seqs(db, session, len(batch), UPDATE_COUNTER)
    entries = [
        {**list_plan.list_entry(job), "update_seq": useq} for job, useq in zip(jobs, update_seqs, strict=True)
    ]
    tx.write_at_end(FinalWrite(LIST, [InsertOne(entry, namespace=tx.namespace(LIST)) for entry in entries]))
    changes: dict[str, int] = {}
    for entry in entries:
        for key, delta in list_plan.count_changes(None, entry).items():
            changes[key] = changes.get(key, 0) + delta
    _apply_counts(tx, changes)
    secrets = [
        {"_id": new.spec.job_key, "secrets": new.raw["secrets"]} for new in batch if new.spec.has_secrets
    ]
    if secrets:
        await db[SECRETS].insert_many(secrets, session=session)
    records = [job_events.submitted(new.spec.job_key, new.spec.submitted_at).upsert() for new in batch]
    records += [
        job_events.waiting_for_dependencies(new.spec, new.spec.submitted_at).upsert()
        for new in batch
        if new.spec.dependencies
    ]
    ns = tx.namespace(EVENTS)
    tx.write_at_end(
        FinalWrite(EVENTS, [UpdateOne(query, update, upsert=True, namespace=ns) for query, update in records])
    )
    for new in batch:
        tx.out.event(JobSubmitted(spec=new.spec), msg_id=f"submitted:{new.spec.job_key}")


def _duplicate_key(exc: PyMongoError) -> bool:
    """A name taken: the single insert's error, or one of a batch's write errors."""
    if isinstance(exc, DuplicateKeyError):
        return True
    if isinstance(exc, BulkWriteError):
        return any(e.get("code") == 11000 for e in (exc.details or {}).get("writeErrors", []))
    return False


def content_digest(raw: dict[str, Any]) -> str:
    """What a submission asked for, secrets included, independent of YAML formatting and key order."""
    text = json.dumps(raw, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_job_document(
    spec: dict[str, Any], masked_config: dict[str, Any], digest: str | None = None
) -> dict[str, Any]:
    """A job as the read model stores it at submission (the benchmark loads jobs through this too)."""
    roles: list[dict[str, Any]] = spec["task_roles"]
    return {
        "content_sha256": digest,
        "_id": spec["job_key"],
        "name": spec["name"],
        "user": spec["user"],
        "vc": spec["virtual_cluster"],
        "priority": spec["priority"],
        "state": "WAITING",
        "retries": 0,
        "completed_at": None,
        "submitted_at": spec["submitted_at"],
        "total_tasks": sum(r["instances"] for r in roles),
        "total_gpus": sum(r["instances"] * r["gpu"] for r in roles),
        "spec": spec,
        "config": masked_config,
        "snapshot": None,
        "snapshot_version": 0,
        "tags": [],
        "execution_type": "START",
    }


def read_model_fields(snapshot: dict[str, Any]) -> dict[str, Any]:
    """What a framework snapshot changes in a job document, the top-level copies for queries included."""
    return {
        "snapshot": snapshot,
        "snapshot_version": snapshot["version"],
        "state": public_state(snapshot["state"], snapshot.get("exit_code")),
        "retries": snapshot.get("retries", 0),
        "completed_at": snapshot.get("completed_at")
        if snapshot["state"] == FRAMEWORK_COMPLETED_STATE
        else None,
    }


async def create_indexes(app: ServiceApp) -> None:
    for keys, name in list_plan.DRIVER_INDEXES:
        await app.db[LIST].create_index(keys, name=name)
    await app.db[LIST].create_index([("update_seq", 1)], name="list_update_seq")
    await app.db[EVENTS].create_index([("job_key", 1), ("first_at", 1)])


class _AlreadyDone(Exception):
    pass


async def backfill_list(app: ServiceApp) -> int:
    """Give jobs stored before the list had its own documents a seq and a list entry, oldest first."""
    done = 0
    while True:
        cursor = app.db[JOBS].find({"seq": {"$exists": False}}, {"_id": 1}).sort("submitted_at", 1).limit(500)
        legacy = [doc["_id"] async for doc in cursor]
        if not legacy:
            return done
        for key in legacy:

            async def give_seq(tx: HandlerContext, key: str = key) -> None:
                seq = await _next_seq(tx.db, tx.session)
                result = await tx.db[JOBS].update_one(
                    {"_id": key, "seq": {"$exists": False}}, {"$set": {"seq": seq}}, session=tx.session
                )
                if result.modified_count == 0:
                    # Another replica did it; this transaction, counter included, rolls back.
                    raise _AlreadyDone
                await refresh_list_entry(tx, key)

            try:
                await app.transact(give_seq)
            except _AlreadyDone:
                continue
            done += 1


def build_app() -> ServiceApp:
    app = ServiceApp("jobs")
    JobsService(app)
    return app


def main() -> None:
    build_app().run()
