"""CloudEvents 1.0 attributes carried as NATS headers around a pydantic-validated JSON body."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import ValidationError

from pai_common.contract.base import Command, Event, Message
from pai_common.contract.commands import COMMANDS_BY_TYPE
from pai_common.contract.events import EVENTS_BY_TYPE
from pai_common.telemetry import inject_headers

SPEC_VERSION = "1.0"
H_ID = "ce-id"
H_SOURCE = "ce-source"
H_TYPE = "ce-type"
H_SUBJECT = "ce-subject"
H_TIME = "ce-time"
H_SPECVERSION = "ce-specversion"
H_CONTENT_TYPE = "content-type"
# JetStream deduplicates on this header within the stream's duplicate window.
H_MSG_ID = "Nats-Msg-Id"

MAX_BODY_BYTES = 1024 * 1024

_REGISTRY: dict[str, type[Event] | type[Command]] = {**EVENTS_BY_TYPE, **COMMANDS_BY_TYPE}


class MalformedMessage(Exception):
    """A message that no retry can fix: unknown type, missing attributes or an invalid body."""


@dataclass(frozen=True)
class Envelope:
    id: str
    type: str
    source: str
    subject: str
    time: str
    body: Message
    headers: dict[str, str]


def new_id() -> str:
    return uuid.uuid4().hex


def encode(
    message: Event | Command, source: str, msg_id: str | None = None
) -> tuple[str, dict[str, str], bytes]:
    """Return (id, headers, payload) for a message; the trace context of the caller goes along."""
    mid = msg_id or new_id()
    subject = message.subject_key() if isinstance(message, Event) else getattr(message, "job_key", "")
    headers = {
        H_ID: mid,
        H_MSG_ID: mid,
        H_SOURCE: f"pai/{source}",
        H_TYPE: message.TYPE,
        H_SUBJECT: subject,
        H_TIME: datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        H_SPECVERSION: SPEC_VERSION,
        H_CONTENT_TYPE: "application/json",
    }
    inject_headers(headers)
    return mid, headers, message.model_dump_json().encode()


def decode(headers: dict[str, str] | None, payload: bytes) -> Envelope:
    headers = dict(headers or {})
    for attribute in (H_ID, H_TYPE, H_SOURCE, H_SPECVERSION):
        if not headers.get(attribute):
            raise MalformedMessage(f"missing CloudEvents attribute {attribute}")
    if headers[H_SPECVERSION] != SPEC_VERSION:
        raise MalformedMessage(f"unsupported CloudEvents specversion {headers[H_SPECVERSION]!r}")
    if len(payload) > MAX_BODY_BYTES:
        raise MalformedMessage(f"body of {len(payload)} bytes exceeds {MAX_BODY_BYTES}")
    model = _REGISTRY.get(headers[H_TYPE])
    if model is None:
        raise MalformedMessage(f"unknown message type {headers[H_TYPE]!r}")
    try:
        body = model.model_validate_json(payload)
    except ValidationError as exc:
        raise MalformedMessage(f"invalid {headers[H_TYPE]} body: {exc.errors(include_url=False)}") from exc
    return Envelope(
        id=headers[H_ID],
        type=headers[H_TYPE],
        source=headers[H_SOURCE],
        subject=headers.get(H_SUBJECT, ""),
        time=headers.get(H_TIME, ""),
        body=body,
        headers=headers,
    )
