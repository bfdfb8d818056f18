"""The scheduler's shell around the HiveD allocator.

The allocator's state lives in a header document and one document per gang (``state_layout.py``), written
in the same transaction as the events its decisions cause: the header and the gangs that changed.
Allocation is single-writer by design: one consumer applies events in stream order. The allocator object is
kept in memory once a transaction that saved it committed, and a whole batch of events is decided on it and
saved once; the save is guarded by the version it stands for, so a state another process saved meanwhile
makes the transaction start again from the stored one, and a transaction that did not commit can never leak
into the next decision.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, cast

from nats.aio.msg import Msg
from pydantic import Field
from pydantic_settings import SettingsConfigDict
from pymongo import DeleteOne, ReplaceOne, UpdateOne
from pymongo.errors import OperationFailure

from pai_common.bookkeeping import FinalWrite, WriteOp
from pai_common.consumer import HandlerContext
from pai_common.contract.base import heartbeat_subject, name_of_token
from pai_common.contract.events import (
    JobAttemptCompleted,
    JobTaskCompleted,
    NodeHealthChanged,
    NodeRegistered,
    NodeSchedulableChanged,
    SchedulingAllocated,
    SchedulingDowngraded,
    SchedulingLost,
    SchedulingPending,
    SchedulingPreempting,
    SchedulingRejected,
    SchedulingReleased,
    SchedulingRequested,
)
from pai_common.contract.rpc import (
    JobPendingReply,
    JobPendingRequest,
    ListNodesRequest,
    ListVirtualClustersRequest,
    NodeReply,
    NodesReply,
    SetNodeSchedulableRequest,
    SkuTypesReply,
    SkuTypesRequest,
    VirtualClustersReply,
)
from pai_common.contract.types import Placement, Victim
from pai_common.envelope import Envelope
from pai_common.errors import InvalidParametersError, NoNodeError, NoVirtualClusterError
from pai_common.service import ServiceApp
from pai_common.settings import Settings
from pai_scheduler import lease, metrics, node_views, pending_events, state_layout, vc_views
from pai_scheduler.cluster_source import load_cluster
from pai_scheduler.hived.allocator import PROTECT_HEAD_AFTER_S, GroupState, HivedAllocator
from pai_scheduler.hived.config import ClusterConfig
from pai_scheduler.hived.decisions import (
    Allocated,
    Decision,
    Downgraded,
    Lost,
    Preempting,
    Rejected,
    Released,
)
from pai_scheduler.hived.errors import ConfigError, UnsupportedRequestError
from pai_scheduler.hived.requests import GangRequest
from pai_scheduler.job_gangs import (
    alloc_key,
    growth_key,
    parse_key,
    pending_by_attempt,
    pod_key,
    pods_of_attempt,
    requests_of,
)
from pai_scheduler.node_marks import Cordon, NodeMarks
from pai_scheduler.released_attempts import KEEP_S, ReleasedAttempts

log = logging.getLogger(__name__)

STATE = "allocator"  # the header (``_id: "cluster"``): version guard, counters, bindings, marks
GROUPS = "allocator_groups"  # one document per gang, ``_id`` its key
MIX = "allocator_mix"  # the recent request mix in chunks, ``_id`` the chunk's number
WAITING = "allocator_waiting"  # one document per waiting attempt: the gist of why it waits
RELEASED = "allocator_released"  # tombstones of attempts that ended before their request (``at``)
NODES = "nodes"
STATE_ID = "cluster"
LEGACY_REASONS_ID = "reasons"  # the old layout: every waiting attempt in one document beside the header
BATCH_MEMO = "scheduler.batch"
WRITE_CONFLICT = 112  # MongoDB's code: the consumer retries the transaction at once
HOST_IPS_MEMO = "scheduler.host_ips"


@dataclass(frozen=True)
class _Stored:
    """A state as stored at ``version``: the allocator, the node marks, each gang's document as stored
    (None: the old single-document layout, whose first save writes every gang), and the tombstones."""

    version: int
    alloc: HivedAllocator
    marks: NodeMarks
    docs: state_layout.Documents | None
    released: ReleasedAttempts
    # Node → host IP as read (or written) by the transaction that committed this state; None: not read.
    # Only the consumer's transactions write nodes, and each also saves the allocator: a state still the
    # stored one means its addresses are too.
    host_ips: dict[str, str] | None = None


@dataclass
class _Batch:
    """The allocator one transaction works on, and the preemptions still under way at its end."""

    alloc: HivedAllocator
    marks: NodeMarks
    version: int
    docs: state_layout.Documents | None  # as stored at ``version``: what the save compares with
    stored_released: ReleasedAttempts  # as stored at ``version``
    # Attempts placed pod by pod of which a task's completion released a pod: their request was applied,
    # so their end needs no tombstone even when every pod is gone by then (the usual path of such an
    # attempt). Kept in memory until the attempt's end; a restart forgets them, which only leaves a
    # tombstone, forgotten after KEEP_S.
    pods_released: set[str]
    released: ReleasedAttempts = field(init=False)
    _preempting: dict[str, Preempting] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.released = self.stored_released.copy()

    def decided(self, decisions: list[Decision]) -> None:
        for d in decisions:
            if isinstance(d, Preempting):
                self._preempting[d.key] = d
            else:  # placed, rejected or released since: no longer waiting for its victims
                self._preempting.pop(d.key, None)

    def preempting(self) -> list[Decision]:
        return list(self._preempting.values())


class SchedulerSettings(Settings):
    # `PAI_PROTECT_HEAD_AFTER_S=off` turns backfill protection off (plain HiveD: backfill always passes).
    model_config = SettingsConfigDict(env_prefix="PAI_", extra="ignore", env_parse_none_str="off")

    # A HiveD config (YAML) or a node inventory (CSV); `pai up` writes one for its simulated nodes.
    scheduler_cluster: Path | None = Field(default=None)
    # A node whose agent sends no heartbeat for this long is bad: no new work goes there.
    node_lost_s: float = Field(default=30.0, gt=0)
    # Backfill protection: once a guaranteed gang at the head of its VC's queue has waited this many
    # seconds, the cells of its best placement (and the quota to cover them) are held from later gangs of
    # its VC. A starvation guard: 24 h costs nothing on the simulated example workloads, where shorter
    # thresholds cost 4-178% average completion time, and bounds a starved gang's wait by it plus the
    # longest job then on its cells (benchmarks/sim_backfill.py; policy hived runs this default).
    protect_head_after_s: float | None = Field(default=PROTECT_HEAD_AFTER_S, gt=0)
    # How often the VC and node gauges of /metrics are recomputed from the allocator.
    gauges_s: float = Field(default=5.0, gt=0)
    # How long a cordon request waits for the allocator to apply it before answering "accepted".
    apply_wait_s: float = Field(default=3.0, ge=0)


class Scheduler:
    def __init__(self, app: ServiceApp, settings: SchedulerSettings) -> None:
        self.app = app
        self.settings = settings
        self.config: ClusterConfig
        self.fingerprint = ""  # of the cluster config file the stored state was made with
        self.protect = settings.protect_head_after_s
        # The state this process committed last (or read), with each gang's stored document.
        self._cached: _Stored | None = None
        self._last_heartbeat: dict[str, float] = {}
        self._watch_since = 0.0
        # Every waiting attempt's [reason, position] as last committed, kept once a transaction commits:
        # what `scheduler.pending` answers, and (by gist) what the reason documents hold.
        self._waiting: dict[str, list[Any]] | None = None
        self._waiting_at: int | None = None  # the allocator's version _waiting was committed with
        # As committed: attempts placed pod by pod of which a task's completion released a pod (_Batch).
        self._pods_released: set[str] = set()
        app.on_startup(self._load_config)
        app.on_startup(self._follow_heartbeats)
        app.background(self._watch_nodes)
        app.background(self._refresh_gauges)
        app.on_event(
            NodeRegistered,
            NodeHealthChanged,
            NodeSchedulableChanged,
            SchedulingRequested,
            JobAttemptCompleted,
            JobTaskCompleted,
        )(self.handle)
        app.rpc(
            {
                ListVirtualClustersRequest: self.virtual_clusters,
                SkuTypesRequest: self.sku_types,
                ListNodesRequest: self.nodes,
                JobPendingRequest: self.job_pending,
                SetNodeSchedulableRequest: self.set_schedulable,
            }
        )

    async def _load_config(self, app: ServiceApp) -> None:
        path = self.settings.scheduler_cluster or Path(self.settings.data_dir) / "cluster.csv"
        self.config = load_cluster(path)
        self.fingerprint = hashlib.sha256(path.read_bytes()).hexdigest()
        log.info("cluster config loaded", extra={"path": str(path), "vcs": len(self.config.virtual_clusters)})
        doc = await app.db[STATE].find_one({"_id": STATE_ID}, {"config": 1})
        if doc is None:
            return
        if doc.get("config") != self.fingerprint:
            await self._reconfigure(app)
            return
        try:
            stored = await self._read(None)
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"the stored allocation state cannot be read back ({exc})") from exc
        if stored.docs is None:
            await app.transact(self._convert)

    async def _convert(self, tx: HandlerContext) -> None:
        """State written in the old layout (the whole allocator in one document, the reasons in another):
        read it once and store it split, in one version-guarded transaction."""
        stored = await self._read(tx)
        await self._save(
            tx, stored.alloc, stored.marks, stored.released, stored.version, stored.docs, stored.released
        )
        versions = (stored.version, stored.version + 1)
        await self._refresh_reasons(tx, stored.alloc, stored.marks, [], versions)
        log.warning("allocator state converted to one document per gang", extra={"version": versions[1]})

    async def _reconfigure(self, app: ServiceApp) -> None:
        """The cluster config changed: HiveD's work-preserving reconfiguration. Work that still fits stays
        where it is; guaranteed work its VC no longer covers runs on as opportunistic; work whose cells
        are gone is stopped (and retried by the orchestrator)."""
        doc, snapshot, stored_docs = await self._read_documents(None)
        assert doc is not None
        alloc, decisions = HivedAllocator.reconfigure(snapshot, self.config, self.protect)
        marks = NodeMarks.from_doc(doc.get("marks"), snapshot.get("bad_nodes", []))
        marks = marks.restricted_to(alloc.cluster.nodes)
        registered = {d["_id"] async for d in app.db[NODES].find({}, {"_id": 1})}
        for node in alloc.cluster.nodes:
            if node not in registered:
                marks.down.add(node)  # a new node is bad until its agent registers
            if not marks.schedulable(node):
                alloc.set_node_health(node, False)

        released = await self._read_released(None)

        async def apply(tx: HandlerContext) -> None:
            await self._save(tx, alloc, marks, released, int(doc["version"]), stored_docs, released)
            host_ips = await self._host_ips(tx)
            for decision in decisions:
                self._emit(tx, alloc, decision, host_ips)
            await self._refresh_reasons(tx, alloc, marks, decisions)

        await app.transact(apply)
        kinds: dict[str, int] = {}
        for d in decisions:
            kinds[type(d).__name__] = kinds.get(type(d).__name__, 0) + 1
        log.warning("cluster config changed; running work reconfigured", extra={"decisions": kinds})

    # ---- node health -------------------------------------------------------------------------------

    async def _follow_heartbeats(self, app: ServiceApp) -> None:
        async def seen(msg: Msg) -> None:
            self._last_heartbeat[name_of_token(msg.subject.rsplit(".", 1)[-1])] = time.monotonic()

        self._watch_since = time.monotonic()
        await app.bus.nc.subscribe(heartbeat_subject("*"), cb=seen)

    async def _watch_nodes(self) -> None:
        """Turn heartbeats into health events: silent nodes go bad, nodes heard from again come back.

        The events go through the stream like any other, so the allocator changes only in its consumer.
        """
        interval = min(5.0, self.settings.node_lost_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                await self._check_nodes()
            except Exception as exc:
                log.warning("node health check failed", extra={"error": repr(exc)})

    async def _check_nodes(self) -> None:
        now = time.monotonic()
        if now - self._watch_since < self.settings.node_lost_s:
            return  # after a (re)start, give every agent time to be heard from
        alloc, marks, _ = await self._load(None)
        for node in sorted(alloc.cluster.nodes):
            last = self._last_heartbeat.get(node)
            silent = last is None or now - last > self.settings.node_lost_s
            bad = node in marks.down
            if silent and not bad:
                reason = f"no heartbeat from its runtime agent for {self.settings.node_lost_s:g}s"
            elif not silent and bad:
                reason = "its runtime agent is sending heartbeats again"
            else:
                continue
            await self.app.bus.publish_event(
                NodeHealthChanged(node=node, healthy=not silent, reason=reason),
                # One id per node and direction per minute: replicas and repeats collapse into one event.
                msg_id=f"health:{node}:{not silent}:{int(time.time() // 60)}",
            )
            log.info("node health changed", extra={"node": node, "healthy": not silent, "reason": reason})

    # ---- state ---------------------------------------------------------------------------------------

    def _fresh(self) -> tuple[HivedAllocator, NodeMarks]:
        alloc = HivedAllocator(self.config, self.protect)
        # A node is bad until its runtime agent registers: nothing is placed where nobody would run it.
        marks = NodeMarks(down=set(alloc.cluster.nodes))
        for node in list(alloc.cluster.nodes):
            alloc.set_node_health(node, False)
        return alloc, marks

    async def _load(self, ctx: HandlerContext | None) -> tuple[HivedAllocator, NodeMarks, int]:
        """The allocator as stored."""
        stored = await self._read(ctx)
        return stored.alloc, stored.marks, stored.version

    async def _read(self, ctx: HandlerContext | None, trust_cache: bool = False) -> _Stored:
        """The state as stored. ``trust_cache``: the one this process committed last, without asking
        whether it is still the stored one: for a transaction whose write is guarded by that version
        (``_save``), which finds out and starts again if it is not."""
        if trust_cache and self._cached is not None:
            return self._cached
        session = ctx.session if ctx else None
        doc = await self.app.db[STATE].find_one({"_id": STATE_ID}, {"version": 1}, session=session)
        if doc is None:
            return _Stored(0, *self._fresh(), state_layout.Documents(), ReleasedAttempts())
        version = int(doc["version"])
        if self._cached is not None and self._cached.version == version:
            return self._cached
        full, snapshot, docs = await self._read_documents(ctx)
        assert full is not None
        alloc = HivedAllocator.restore(self.config, snapshot, self.protect)
        marks = NodeMarks.from_doc(full.get("marks"), snapshot.get("bad_nodes", []))
        released = await self._read_released(ctx)
        self._cached = _Stored(int(full["version"]), alloc, marks, docs, released)
        return self._cached

    async def _read_documents(
        self, ctx: HandlerContext | None
    ) -> tuple[dict[str, Any] | None, dict[str, Any], state_layout.Documents | None]:
        """The header, the whole snapshot, and the documents beside the header (None in the old layout)."""
        session = ctx.session if ctx else None
        doc = await self.app.db[STATE].find_one({"_id": STATE_ID}, session=session)
        if doc is None:
            return None, {}, state_layout.Documents()
        if "snapshot" in doc:  # the old layout: the whole allocator in the header
            return doc, dict(doc["snapshot"]), None
        docs = state_layout.Documents(
            groups={str(d["_id"]): d["group"] async for d in self.app.db[GROUPS].find({}, session=session)},
            mix={int(d["_id"]): d["entries"] async for d in self.app.db[MIX].find({}, session=session)},
        )
        return doc, state_layout.join(doc["state"], docs), docs

    async def _read_released(self, ctx: HandlerContext | None) -> ReleasedAttempts:
        session = ctx.session if ctx else None
        return ReleasedAttempts.from_docs([d async for d in self.app.db[RELEASED].find({}, session=session)])

    async def _save(
        self,
        ctx: HandlerContext,
        alloc: HivedAllocator,
        marks: NodeMarks,
        released: ReleasedAttempts,
        version: int,
        stored: state_layout.Documents | None,
        stored_released: ReleasedAttempts,
        host_ips: dict[str, str] | None = None,
    ) -> None:
        """Store the allocator as version ``version + 1``: the header, guarded by ``version``, and the
        documents that differ from ``stored`` and ``stored_released`` (those at ``version``; ``stored``
        None: the old layout, converted here)."""
        header, docs = state_layout.split(alloc.snapshot())
        update: dict[str, Any] = {
            "$set": {
                "state": header,
                "marks": marks.to_doc(),
                "version": version + 1,
                "config": self.fingerprint,
            }
        }
        if stored is None:
            update["$unset"] = {"snapshot": ""}

        def check(matched: int) -> None:
            if matched != 1:
                self._cached = None  # another process saved a newer state: the retry reads it
                raise OperationFailure("allocator state changed concurrently; retrying", code=WRITE_CONFLICT)

        # Final writes: with the transaction's bookkeeping in one request where the server can.
        save_header = UpdateOne(
            {"_id": STATE_ID, "version": version}, update, upsert=version == 0, namespace=ctx.namespace(STATE)
        )
        ctx.write_at_end(FinalWrite(STATE, [save_header], check if version else None))
        if stored is None:
            for name in (GROUPS, MIX):
                await ctx.db[name].delete_many({}, session=ctx.session)
        groups, mix, committed = state_layout.writes(stored or state_layout.Documents(), docs)
        await self._write(ctx, GROUPS, {k: {"group": g} for k, g in groups.upsert.items()}, groups.delete)
        await self._write(ctx, MIX, {c: {"entries": e} for c, e in mix.upsert.items()}, mix.delete)
        added, removed = released.changes_from(stored_released)
        if added or removed:
            await self._write(ctx, RELEASED, {k: {"at": when} for k, when in added.items()}, removed)
        # Kept once committed only: a cached allocator always stands for a committed version.
        now_stored = _Stored(version + 1, alloc, marks, committed, released, host_ips)
        ctx.on_commit(partial(setattr, self, "_cached", now_stored))

    @staticmethod
    async def _write(
        ctx: HandlerContext, collection: str, upsert: dict[Any, dict[str, Any]], delete: list[Any]
    ) -> None:
        """Replace (or create) and delete documents by ``_id``, in one final write."""
        ns = ctx.namespace(collection)
        ops: list[WriteOp] = [
            ReplaceOne({"_id": k}, {"_id": k, **fields}, upsert=True, namespace=ns)
            for k, fields in upsert.items()
        ]
        ops += [DeleteOne({"_id": k}, namespace=ns) for k in delete]
        ctx.write_at_end(FinalWrite(collection, ops))

    # ---- events --------------------------------------------------------------------------------------

    async def _batch(self, ctx: HandlerContext) -> _Batch:
        """The allocator as this transaction left it: loaded by its first message, saved (with why each
        attempt waits) once after its last, so a batch costs one read and one write, not one per event."""
        batch = ctx.memo.get(BATCH_MEMO)
        if batch is None:
            # The state this process committed last (its version-guarded save checks it is still the stored
            # one), else the stored state.
            stored = await self._read(ctx, trust_cache=True)
            self._cached = None  # mutated by the batch; valid again only once committed
            batch = ctx.memo[BATCH_MEMO] = _Batch(
                stored.alloc,
                stored.marks.copy(),
                stored.version,
                stored.docs,
                stored.released,
                set(self._pods_released),
            )
            ctx.on_commit(partial(setattr, self, "_pods_released", batch.pods_released))
            if stored.host_ips is not None:
                ctx.memo[HOST_IPS_MEMO] = stored.host_ips

            async def save() -> None:
                batch.released.forget_older_than(time.time() - KEEP_S)
                await self._save(
                    ctx,
                    batch.alloc,
                    batch.marks,
                    batch.released,
                    batch.version,
                    batch.docs,
                    batch.stored_released,
                    ctx.memo.get(HOST_IPS_MEMO),  # None when a registration came after the last read
                )
                versions = (batch.version, batch.version + 1)
                await self._refresh_reasons(ctx, batch.alloc, batch.marks, batch.preempting(), versions)

            ctx.on_before_commit(save)
        return cast(_Batch, batch)

    async def _host_ips_once(self, ctx: HandlerContext) -> dict[str, str]:
        ips = ctx.memo.get(HOST_IPS_MEMO)
        if ips is None:
            ips = ctx.memo[HOST_IPS_MEMO] = await self._host_ips(ctx)
        return cast(dict[str, str], ips)

    async def handle(self, ctx: HandlerContext, env: Envelope) -> None:
        body = env.body
        batch = await self._batch(ctx)
        alloc, marks = batch.alloc, batch.marks
        # Wall-clock seconds: how long a VC's head has waited decides when backfill stops passing it.
        now = time.time()
        started = time.perf_counter()
        decisions: list[Decision]
        if isinstance(body, NodeRegistered):
            await ctx.db[NODES].replace_one(
                {"_id": body.node},
                {"_id": body.node, **body.model_dump(mode="json")},
                upsert=True,
                session=ctx.session,
            )
            ctx.memo.pop(HOST_IPS_MEMO, None)  # a later placement of the batch reads the new address
            if body.node not in alloc.cluster.nodes:
                log.warning(
                    "a node registered that the cluster config does not name", extra={"node": body.node}
                )
            # GPU health first: the node turning healthy retries the queue, which must not use its bad GPUs.
            decisions = self._apply_gpu_health(ctx, alloc, body, now)
            marks.down.discard(body.node)
            decisions += alloc.set_node_health(body.node, marks.schedulable(body.node), now=now)
        elif isinstance(body, NodeHealthChanged):
            # A GPU health report is this service's own echo of a registration, already applied; applying
            # it again could undo a newer registration that overtook it in the stream.
            if body.bad_gpus is None:
                if body.healthy:
                    marks.down.discard(body.node)
                else:
                    marks.down.add(body.node)
                decisions = alloc.set_node_health(body.node, marks.schedulable(body.node), now=now)
            else:
                decisions = []
        elif isinstance(body, NodeSchedulableChanged):
            decisions = self._apply_cordon(ctx, alloc, marks, body, now)
        elif isinstance(body, SchedulingRequested):
            if batch.released.take(alloc_key(body.job_key, body.attempt_id)):
                log.warning(
                    "a scheduling request came after its attempt had ended; nothing allocated",
                    extra={"job_key": body.job_key, "attempt_id": body.attempt_id},
                )
                decisions = []
            else:
                decisions = self._submit(alloc, body, now)
        elif isinstance(body, JobAttemptCompleted):
            decisions = alloc.release(alloc_key(body.job_key, body.attempt_id), now=now)
            found = bool(decisions)  # the attempt's own gang, held or waiting
            # An attempt placed pod by pod: whatever of it is still held or waiting goes too.
            # The waiting ones first, so that what the others give back never starts one of them.
            groups = alloc.groups()
            pods = pods_of_attempt(groups, body.job_key, body.attempt_id)
            for key in sorted(pods, key=lambda k: (groups[k] is not GroupState.PENDING, k)):
                decisions += alloc.release(key, now=now)
            attempt = alloc_key(body.job_key, body.attempt_id)
            if pods and not any(isinstance(d, Released) and d.key == attempt for d in decisions):
                decisions.append(Released(attempt))
            if not found and not pods and attempt not in batch.pods_released:
                batch.released.remember(attempt, now)  # its request may still come: it must allocate nothing
            batch.pods_released.discard(attempt)
        elif isinstance(body, JobTaskCompleted):
            # One of the two: a task placed on its own, or an elastic job's growth task.
            pod = pod_key(body.job_key, body.attempt_id, body.task_role, body.index)
            decisions = alloc.release(pod, now=now)
            if decisions:
                batch.pods_released.add(alloc_key(body.job_key, body.attempt_id))
            decisions += alloc.release(
                growth_key(body.job_key, body.attempt_id, body.task_role, body.index), now=now
            )
        else:
            raise TypeError(f"scheduler has no handler for {env.type}")
        decided = time.perf_counter() - started
        # Node addresses only matter to placements; most events place nothing.
        placed = any(isinstance(d, Allocated) for d in decisions)
        host_ips = await self._host_ips_once(ctx) if placed else {}
        for decision in decisions:
            self._emit(ctx, alloc, decision, host_ips)
        batch.decided(decisions)
        ctx.on_commit(partial(metrics.DECISION_SECONDS.labels(env.type).observe, decided))
        for d in decisions:
            preemptor = alloc.request_of(d.key) if isinstance(d, Preempting) else None
            if isinstance(d, Preempting) and preemptor is not None:
                ctx.on_commit(partial(metrics.PREEMPTIONS.labels(preemptor.vc).inc, len(d.victims)))

    def _apply_cordon(
        self,
        ctx: HandlerContext,
        alloc: HivedAllocator,
        marks: NodeMarks,
        body: NodeSchedulableChanged,
        now: float,
    ) -> list[Decision]:
        """Cordon or uncordon a node; a drain also stops the gangs running there (gracefully, through the
        orchestrator, which retries them elsewhere without counting; their cells are released as usual)."""
        if body.node not in alloc.cluster.nodes:
            log.warning("cordon of a node the cluster config does not name", extra={"node": body.node})
            return []
        if body.schedulable:
            marks.uncordon(body.node)
        else:
            marks.cordon(body.node, Cordon(body.by, body.at, body.reason, body.drain))
        decisions = alloc.set_node_health(body.node, marks.schedulable(body.node), now=now)
        if body.drain and not body.schedulable:
            why = f"node {body.node} is drained by {body.by}" + (f": {body.reason}" if body.reason else "")
            # An attempt placed pod by pod may hold several gangs there: it is stopped once.
            refs = dict.fromkeys(parse_key(key).ref() for key in node_views.gangs_on(alloc, body.node))
            for ref in refs:
                ctx.out.event(
                    SchedulingLost(job_key=ref.job_key, attempt_id=ref.attempt_id, reason=why, drain=True)
                )
        log.warning(
            "node cordon changed",
            extra={"node": body.node, "schedulable": body.schedulable, "drain": body.drain, "by": body.by},
        )
        return decisions

    def _submit(self, alloc: HivedAllocator, body: SchedulingRequested, now: float) -> list[Decision]:
        """The attempt's gang, or (gang allocation off) its pods one by one; refused whole when any of them
        can never be placed, so that no task of a refused attempt starts."""
        attempt = alloc_key(body.job_key, body.attempt_id)
        try:
            requests = requests_of(body)
        except (UnsupportedRequestError, ValueError) as exc:
            return [Rejected(attempt, str(exc))]
        if len(requests) > 1:
            seen: set[GangRequest] = set()
            for request in requests:
                shape = replace(request, key="")
                if shape in seen:
                    continue
                seen.add(shape)
                reason = alloc.rejection(request)
                if reason is not None:
                    role = request.members[0].role
                    return [Rejected(attempt, f"task role {role}: {reason}")]
        decisions: list[Decision] = []
        for request in requests:
            decisions += alloc.submit_all(request, now=now)
        return decisions

    def _apply_gpu_health(
        self, ctx: HandlerContext, alloc: HivedAllocator, body: NodeRegistered, now: float
    ) -> list[Decision]:
        """The registration's unhealthy GPUs become bad leaves (no new work; what runs there stays); the
        GPUs no longer listed recover. A change is published as ``node.health.changed`` with ``bad_gpus``
        so that monitoring and users see it."""
        # A bad FPGA is treated as a bad GPU: its leaf gets no new work (indices name leaves per node).
        bad_fpgas = {f.index for f in body.fpgas if not f.healthy}
        reported = sorted({g.index for g in body.gpus if not g.healthy} | bad_fpgas)
        if body.node not in alloc.cluster.nodes:
            return []
        unknown = alloc.unknown_leaves(body.node, reported)
        if unknown:
            log.warning(
                "unhealthy GPUs the cluster config does not name", extra={"node": body.node, "gpus": unknown}
            )
        before = alloc.bad_leaves().get(body.node, set())
        decisions = alloc.set_bad_leaves(body.node, reported, now=now)
        after = sorted(alloc.bad_leaves().get(body.node, set()))
        if set(after) != before:
            if after:
                gpus = [str(i) for i in after if i not in bad_fpgas]
                fpgas = [str(i) for i in after if i in bad_fpgas]
                what = [
                    f"{kind}(s) {', '.join(ids)}" for kind, ids in (("GPU", gpus), ("FPGA", fpgas)) if ids
                ]
                reason = f"its runtime agent reports {' and '.join(what)} unhealthy"
            else:
                reason = "its runtime agent reports all its GPUs healthy again"
            ctx.out.event(NodeHealthChanged(node=body.node, healthy=True, reason=reason, bad_gpus=after))
            log.warning("GPU health changed", extra={"node": body.node, "bad_gpus": after})
        return decisions

    async def _host_ips(self, ctx: HandlerContext) -> dict[str, str]:
        nodes = ctx.db[NODES].find({}, {"host_ip": 1}, session=ctx.session)
        return {d["_id"]: d.get("host_ip", "") async for d in nodes}

    def _emit(
        self, ctx: HandlerContext, alloc: HivedAllocator, d: Decision, host_ips: dict[str, str]
    ) -> None:
        parts = parse_key(d.key)
        ref = parts.ref()
        if isinstance(d, Allocated):
            request = alloc.request_of(d.key)
            asked = {m.role: m.leaves for m in request.members} if request else {}
            fpga = {s.name for s in alloc.config.sku_types if s.fpga}
            placements = [
                Placement(
                    task_role=p.role,
                    # A pod placed on its own is pod 0 of its gang; its key names the task.
                    index=p.index if parts.index is None else parts.index,
                    node=p.node,
                    # A pod that asked for no GPU sees none: it holds CPU leaves, or (on a cluster
                    # without any) GPU leaves for their CPU and memory, as OpenPAI does.
                    gpus=list(p.leaves)
                    if p.leaf_type not in fpga and (asked.get(p.role, 1) > 0 or p.is_share)
                    else [],
                    fpgas=list(p.leaves) if p.leaf_type in fpga else [],
                    host_ip=host_ips.get(p.node, ""),
                    gpu_milli=p.milli,
                    gpu_memory_mb=p.memory_mb,
                )
                for p in d.placements
            ]
            ctx.out.event(
                SchedulingAllocated(job_key=ref.job_key, attempt_id=ref.attempt_id, placements=placements)
            )
            log.info("gang allocated", extra={"key": d.key})
        elif isinstance(d, Preempting):
            victims = [self._victim(alloc, v) for v in d.victims]
            ctx.out.event(
                SchedulingPreempting(job_key=ref.job_key, attempt_id=ref.attempt_id, victims=victims)
            )
            log.info("gang preempting", extra={"key": d.key, "victims": list(d.victims)})
        elif isinstance(d, Rejected):
            ctx.out.event(SchedulingRejected(job_key=ref.job_key, attempt_id=ref.attempt_id, reason=d.reason))
            log.info("gang rejected", extra={"key": d.key, "reason": d.reason})
        elif isinstance(d, Released):
            # One per attempt: a task of an attempt placed pod by pod gives its cells back silently.
            if parts.task_role is None:
                ctx.out.event(SchedulingReleased(job_key=ref.job_key, attempt_id=ref.attempt_id))
        elif isinstance(d, Lost):
            ctx.out.event(SchedulingLost(job_key=ref.job_key, attempt_id=ref.attempt_id, reason=d.reason))
            log.warning("running gang lost its cells", extra={"key": d.key, "reason": d.reason})
        elif isinstance(d, Downgraded):
            preemptor = parse_key(d.preemptor).ref() if d.preemptor else None
            ctx.out.event(
                SchedulingDowngraded(job_key=ref.job_key, attempt_id=ref.attempt_id, preemptor=preemptor)
            )
            log.info("gang downgraded to opportunistic", extra={"key": d.key, "preemptor": d.preemptor})

    @staticmethod
    def _victim(alloc: HivedAllocator, key: str) -> Victim:
        parts = parse_key(key)
        return Victim(
            job_key=parts.job_key,
            attempt_id=parts.attempt_id,
            task_role=parts.task_role,
            index=parts.index,
            grace_cap_seconds=alloc.grace_cap(key),
            growth=parts.growth,
        )

    async def _refresh_reasons(
        self,
        ctx: HandlerContext,
        alloc: HivedAllocator,
        marks: NodeMarks,
        decisions: list[Decision],
        versions: tuple[int, int] | None = None,
    ) -> None:
        """Why each waiting attempt waits and its place in the queue (kept in memory once committed); store
        the gist of the reasons that changed, one document per attempt; publish ``scheduling.pending`` only
        for an attempt that starts waiting or whose cause changed (pending_events.py says why: one event per
        place moved made the events grow with attempts x placements).

        ``versions``: the allocator's version this transaction read and the one it writes. The reasons are
        written in the same transaction as the allocator, so those this process committed with the version
        read are the stored ones, and need no read."""
        if versions is not None and self._waiting is not None and self._waiting_at == versions[0]:
            before: dict[str, list[Any]] = dict(self._waiting)
            stored = state_layout.gists(before)
        else:
            before, stored = await self._stored_reasons(ctx)
        now = self._waiting_now(alloc, marks, decisions)
        for key in pending_events.to_publish(before, now):
            reason, position = now[key]
            ref = parse_key(key).ref()
            ctx.out.event(
                SchedulingPending(
                    job_key=ref.job_key,
                    attempt_id=ref.attempt_id,
                    reason=reason[:2000],
                    position=position,
                )
            )
        writes = state_layout.reason_writes(stored, now)
        await self._write(ctx, WAITING, {k: {"gist": g} for k, g in writes.upsert.items()}, writes.delete)
        ctx.on_commit(partial(self._committed_reasons, now, versions[1] if versions else None))

    async def _stored_reasons(self, ctx: HandlerContext) -> tuple[dict[str, list[Any]], dict[str, str]]:
        """What the last transaction stored of the waiting attempts: as ``to_publish`` reads it, and the
        gists the reason documents hold. The old layout's single document is read and deleted (the new
        documents are then all written)."""
        legacy = await ctx.db[STATE].find_one_and_delete({"_id": LEGACY_REASONS_ID}, session=ctx.session)
        if legacy is not None:
            await ctx.db[WAITING].delete_many({}, session=ctx.session)
            return dict(legacy["reasons"]), {}
        docs = ctx.db[WAITING].find({}, session=ctx.session)
        stored = {str(d["_id"]): str(d["gist"]) async for d in docs}
        return {k: [g, None] for k, g in stored.items()}, stored

    @staticmethod
    def _waiting_now(
        alloc: HivedAllocator, marks: NodeMarks, decisions: list[Decision]
    ) -> dict[str, list[Any]]:
        """Every waiting attempt's [reason, place in its VC's queue] (a preemptor's from its decision)."""
        note = marks.pending_note()
        now: dict[str, list[Any]] = {q.key: [q.cause + note, q.position] for q in alloc.pending()}
        for d in decisions:
            if isinstance(d, Preempting):
                n = len(d.victims)
                now[d.key] = [f"waiting for {n} lower-priority job(s) to be preempted", None]
        return pending_by_attempt(now)

    def _committed_reasons(self, waiting: dict[str, list[Any]], version: int | None) -> None:
        self._waiting, self._waiting_at = waiting, version

    # ---- RPC -----------------------------------------------------------------------------------------

    async def virtual_clusters(self, req: ListVirtualClustersRequest) -> VirtualClustersReply:
        alloc, _, _ = await self._load(None)
        return VirtualClustersReply(virtual_clusters=vc_views.virtual_clusters(alloc))

    async def job_pending(self, req: JobPendingRequest) -> JobPendingReply:
        """The job's latest waiting attempt with its reason and place, as committed: places move without
        an event each time, so this is where a reader gets the current one."""
        waiting = self._waiting
        if waiting is None:
            # Nothing committed by this process yet: the reasons of the stored state (the documents keep
            # only their gists; places and counts follow from the allocator).
            alloc, marks, _ = await self._load(None)
            waiting = self._waiting_now(alloc, marks, [])
        prefix = f"{req.job_key}#"
        attempts = [
            (parse_key(k).attempt_id, k)
            for k in waiting
            if k.startswith(prefix) and parse_key(k).job_key == req.job_key
        ]
        if not attempts:
            return JobPendingReply()
        attempt_id, key = max(attempts)
        reason, position = waiting[key]
        return JobPendingReply(attempt_id=attempt_id, reason=str(reason), position=position)

    async def nodes(self, req: ListNodesRequest) -> NodesReply:
        alloc, marks, _ = await self._load(None)
        return NodesReply(nodes=node_views.node_list(alloc, marks, await self._registrations()))

    async def set_schedulable(self, req: SetNodeSchedulableRequest) -> NodeReply:
        """Publish the change for the consumer to apply (the allocator changes only there), then wait a
        little for it so that the answer says what holds."""
        if req.drain and req.schedulable:
            raise InvalidParametersError("drain applies to a node being cordoned (schedulable: false)")
        alloc, _, _ = await self._load(None)
        if req.node not in alloc.cluster.nodes:
            raise NoNodeError(f"Node {req.node} is not found.")
        event = NodeSchedulableChanged(
            node=req.node,
            schedulable=req.schedulable,
            drain=req.drain,
            by=req.by,
            reason=req.reason,
            at=int(time.time() * 1000),
        )
        await self.app.bus.publish_event(event)
        deadline = time.monotonic() + self.settings.apply_wait_s
        while True:
            alloc, marks, _ = await self._load(None)
            cordon = marks.cordoned.get(req.node)
            applied = (
                (cordon is None) if req.schedulable else (cordon is not None and cordon.at_ms == event.at)
            )
            if applied or time.monotonic() >= deadline:
                break
            await asyncio.sleep(0.05)
        registration = (await self._registrations()).get(req.node)
        return NodeReply(node=node_views.node_view(alloc, marks, req.node, registration), applied=applied)

    async def _registrations(self) -> dict[str, dict[str, Any]]:
        return {str(d["_id"]): d async for d in self.app.db[NODES].find({})}

    async def _refresh_gauges(self) -> None:
        """Gauges from the allocator in memory; none this round while an event is being applied to it
        (reloading it here would cost a full restore, and the next round comes in a few seconds)."""
        while True:
            try:
                registrations = await self._registrations()
                cached = self._cached
                if cached is not None:
                    alloc, marks = cached.alloc, cached.marks
                    metrics.COLLECTOR.publish(metrics.families(alloc, marks, registrations, time.time()))
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("scheduler gauges not refreshed", extra={"error": repr(exc)})
            await asyncio.sleep(self.settings.gauges_s)

    async def sku_types(self, req: SkuTypesRequest) -> SkuTypesReply:
        alloc, _, _ = await self._load(None)
        if req.virtual_cluster is not None and req.virtual_cluster not in alloc.quota.vcs:
            raise NoVirtualClusterError(f"Virtual cluster {req.virtual_cluster} is not found.")
        return SkuTypesReply(sku_types=vc_views.sku_types(alloc, req.virtual_cluster))


def build_app() -> ServiceApp:
    settings = SchedulerSettings()
    app = ServiceApp("scheduler", settings)
    Scheduler(app, settings)
    return app


def main() -> None:
    # Only the lease holder schedules; other replicas wait as hot standbys (lease.py).
    lease.run(build_app())
