"""The audit log: who changed what and when, written in the same transaction as the change itself.

Entries never hold secrets: a password change is recorded as the field name, a token by its id.
"""

from __future__ import annotations

import time
from typing import Any

from pai_common.consumer import HandlerContext

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
