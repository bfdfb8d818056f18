"""Alerts as the handler keeps and shows them (pure).

Stored one document per alert (Alertmanager's fingerprint); shown in the shape of Alertmanager's alert
API, which is what OpenPAI's ``GET /api/v2/alerts`` hands on. A notification older than what is stored
(an earlier firing, delivered late) changes nothing.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from pai_common.contract.rpc import ReceivedAlert

# Alertmanager's "no end yet" time: what endsAt carries while an alert fires.
ZERO_TIME = "0001-01-01T00:00:00Z"


def fingerprint(alert: ReceivedAlert) -> str:
    """Alertmanager's fingerprint, or one of our own (the labels identify an alert) when it sent none."""
    if alert.fingerprint:
        return alert.fingerprint
    return hashlib.sha256(json.dumps(alert.labels, sort_keys=True).encode()).hexdigest()[:16]


def stored(alert: ReceivedAlert, receiver: str, at_ms: int) -> dict[str, Any]:
    return {
        "_id": fingerprint(alert),
        "status": alert.status,
        "labels": dict(alert.labels),
        "annotations": dict(alert.annotations),
        "starts_at": alert.starts_at,
        "ends_at": alert.ends_at or ZERO_TIME,
        "generator_url": alert.generator_url,
        "receiver": receiver,
        "updated_at": at_ms,
    }


def newer_or_same(doc: Mapping[str, Any] | None, alert: ReceivedAlert) -> bool:
    """Whether the notification is about the stored firing or a later one (RFC 3339 UTC sorts as text)."""
    return doc is None or alert.starts_at >= str(doc.get("starts_at", ""))


def view(doc: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "labels": doc["labels"],
        "annotations": doc["annotations"],
        "startsAt": doc["starts_at"],
        "endsAt": doc["ends_at"],
        "generatorURL": doc["generator_url"],
        "status": {"state": "active", "silencedBy": [], "inhibitedBy": []},
        "receivers": [doc["receiver"]] if doc["receiver"] else [],
        "fingerprint": doc["_id"],
    }


def visible_to(labels: Mapping[str, str], username: str, admin: bool) -> bool:
    """OpenPAI's rule: admins see every alert, users those about their own jobs."""
    return admin or ("job_name" in labels and labels.get("username") == username)


def job_owner(labels: Mapping[str, str]) -> str | None:
    if labels.get("username"):
        return labels["username"]
    job = labels.get("job_name", "")
    return job.split("~", 1)[0] if "~" in job else None


def node_of(labels: Mapping[str, str]) -> str | None:
    return labels.get("node") or labels.get("node_name") or None
