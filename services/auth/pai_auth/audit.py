"""The audit log: who changed what and when, written in the same transaction as the change itself.

Changes other services make that an admin must be able to trace (a node cordoned, an alert's action)
arrive as events and are appended by this service's consumer (once each: the consumer skips what it has
processed).

Entries never hold secrets: a password change is recorded as the field name, a token by its id.
"""

from __future__ import annotations

import time
from typing import Any

from pai_common.consumer import HandlerContext
from pai_common.contract.events import AlertActionTaken, NodeSchedulableChanged
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


async def record_event(tx: HandlerContext, env: Envelope) -> None:
    """Other services' actions that the audit log holds too, from the events that announce them."""
    body = env.body
    if isinstance(body, NodeSchedulableChanged):
        action = "node.uncordon" if body.schedulable else ("node.drain" if body.drain else "node.cordon")
        details: dict[str, Any] = {"reason": body.reason} if body.reason else {}
        doc = entry(body.by, action, body.node, details, body.at)
    elif isinstance(body, AlertActionTaken):
        details = {
            "alertname": body.alertname,
            "fingerprint": body.fingerprint,
            "outcome": body.outcome,
            "detail": body.detail,
        }
        doc = entry(body.actor, f"alert.{body.action}", body.target, details, body.at)
    else:
        raise TypeError(f"the audit log takes no {env.type}")
    await tx.db[AUDIT].insert_one(doc, session=tx.session)
