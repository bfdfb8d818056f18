"""The audit log: who changed what and when, written in the same transaction as the change itself.

Changes other services make arrive as events (a job submitted, stopped or tagged, a storage defined or
deleted, a dead letter replayed, a node cordoned, an alert's action) and are appended by this service's
consumer, once each (the consumer skips what it has processed). The log is append-only for everyone, admins
included: entries are only ever inserted, and no route or RPC changes or removes one.

Entries never hold secrets: a password change is recorded as the field name, a token by its id, a storage
by its name and type.
"""

from __future__ import annotations

import time
from typing import Any

from pymongo import InsertOne

from pai_common.bookkeeping import FinalWrite
from pai_common.consumer import HandlerContext
from pai_common.contract.events import (
    AlertActionTaken,
    DeadLetterReplayed,
    JobStopRequested,
    JobSubmitted,
    JobTagsChanged,
    NodeSchedulableChanged,
    StorageChanged,
)
from pai_common.envelope import Envelope

AUDIT = "audit"


def entry(actor: str, action: str, target: str, details: dict[str, Any] | None, at_ms: int) -> dict[str, Any]:
    return {"at": at_ms, "actor": actor, "action": action, "target": target, "details": details or {}}


async def record(
    tx: HandlerContext, actor: str, action: str, target: str, details: dict[str, Any] | None = None
) -> None:
    await tx.db[AUDIT].insert_one(
        entry(actor, action, target, details, int(time.time() * 1000)), session=tx.session
    )


def view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc[k] for k in ("at", "actor", "action", "target", "details") if k in doc}


# The events whose facts the audit log holds, besides the changes this service makes itself.
AUDITED_EVENTS = (
    JobSubmitted,
    JobStopRequested,
    JobTagsChanged,
    StorageChanged,
    DeadLetterReplayed,
    NodeSchedulableChanged,
    AlertActionTaken,
)


def entry_of_event(body: object) -> dict[str, Any] | None:
    """The audit entry an event stands for (None: not an audited event)."""
    if isinstance(body, JobSubmitted):
        spec = body.spec
        details: dict[str, Any] = {"virtualCluster": spec.virtual_cluster}
        return entry(spec.user, "job.submitted", spec.job_key, details, spec.submitted_at)
    if isinstance(body, JobStopRequested):
        return entry(body.requested_by, "job.stop", body.job_key, None, body.requested_at)
    if isinstance(body, JobTagsChanged):
        action = "job.tag.removed" if body.removed else "job.tag.added"
        return entry(body.by, action, body.job_key, {"tag": body.tag}, body.at)
    if isinstance(body, StorageChanged):
        details = {"type": body.storage_type} if body.storage_type else {}
        return entry(body.by, f"storage.{body.change}", body.name, details, body.at)
    if isinstance(body, DeadLetterReplayed):
        details = {
            "seq": body.seq,
            "service": body.service,
            "type": body.message_type,
            "id": body.message_id,
            "error": body.error,
            "outcome": body.outcome,
        }
        return entry(body.by, "deadletter.replayed", body.consumer, details, body.at)
    if isinstance(body, NodeSchedulableChanged):
        action = "node.uncordon" if body.schedulable else ("node.drain" if body.drain else "node.cordon")
        return entry(body.by, action, body.node, {"reason": body.reason} if body.reason else {}, body.at)
    if isinstance(body, AlertActionTaken):
        details = {
            "alertname": body.alertname,
            "fingerprint": body.fingerprint,
            "outcome": body.outcome,
            "detail": body.detail,
        }
        return entry(body.actor, f"alert.{body.action}", body.target, details, body.at)
    return None


async def record_event(tx: HandlerContext, env: Envelope) -> None:
    """Other services' actions that the audit log holds too, from the events that announce them."""
    doc = entry_of_event(env.body)
    if doc is None:
        raise TypeError(f"the audit log takes no {env.type}")
    # In the consumer's transaction with its processed marker: one entry per event, however delivered.
    tx.kept(AUDIT, EventEntries).entries.append({**doc, "event": env.id})


class EventEntries:
    """The audit entries of a consumer's batch, inserted in one final write at the end of its transaction,
    with its bookkeeping (a job's submission is one entry, and a batch holds many)."""

    def __init__(self, tx: HandlerContext) -> None:
        self.tx = tx
        self.entries: list[dict[str, Any]] = []
        tx.on_before_commit(self.insert)

    async def insert(self) -> None:
        ns = self.tx.namespace(AUDIT)
        self.tx.write_at_end(FinalWrite(AUDIT, [InsertOne(entry, namespace=ns) for entry in self.entries]))
        self.entries = []
