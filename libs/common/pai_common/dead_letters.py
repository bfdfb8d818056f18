"""Dead letters: the messages a consumer could not handle, kept on ``PAI_DEAD_LETTERS`` with why.

A consumer sends a message there (``Bus.dead_letter``) when it is malformed or its handler kept failing,
on the subject ``pai.dlq.<service>.<durable>``, with the original headers plus ``pai-error`` and
``pai-consumer``. An admin lists and inspects them (the gateway reads the stream) and replays one: the
service that owns the consumer handles it again through the same handler, transaction and processed
marker as a live message (so a replay of something already handled changes nothing), and removes it from
the stream once handled.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from nats.js.api import RawStreamMsg
from nats.js.errors import NotFoundError

from pai_common.bus import DEAD_LETTER_STREAM, Bus
from pai_common.contract.base import DEAD_LETTER_PREFIX
from pai_common.envelope import H_ID, H_SUBJECT, H_TYPE, Envelope, MalformedMessage, decode
from pai_common.errors import DeadLetterReplayError, NoDeadLetterError

ERROR_HEADER = "pai-error"
CONSUMER_HEADER = "pai-consumer"
# On a service's notice of a message it could never publish (outbox.py): the subject it was meant for.
UNPUBLISHED_HEADER = "pai-outbox-subject"
UNPUBLISHED_COLLECTION = "outbox_dead_letters"
# Headers only a dead letter has; a replay hands the handler the message as it was first delivered.
_ADDED = (ERROR_HEADER, CONSUMER_HEADER, UNPUBLISHED_HEADER)
MAX_LIST = 1000


def subject_of(service: str, durable: str) -> str:
    return f"{DEAD_LETTER_PREFIX}.{service}.{durable}"


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    subject: str
    time: datetime | None
    headers: dict[str, str]
    data: bytes

    @property
    def service(self) -> str:
        parts = self.subject.split(".")
        return parts[2] if len(parts) > 3 else ""

    @property
    def consumer(self) -> str:
        return self.headers.get(CONSUMER_HEADER) or self.subject.split(".", 3)[-1]

    def summary(self) -> dict[str, Any]:
        """What a list shows of it (OpenPAI-style camelCase, as the rest of the API)."""
        return {
            "seq": self.seq,
            "service": self.service,
            "consumer": self.consumer,
            "type": self.headers.get(H_TYPE, ""),
            "id": self.headers.get(H_ID, ""),
            "subject": self.headers.get(H_SUBJECT, ""),
            "error": self.headers.get(ERROR_HEADER, ""),
            "deadLetteredAt": self.time.isoformat() if self.time else None,
            "size": len(self.data),
        }

    def detail(self) -> dict[str, Any]:
        """The summary plus the message as it was delivered: its headers and its body."""
        original = {k: v for k, v in self.headers.items() if k not in _ADDED}
        return {**self.summary(), "headers": original, "body": _readable(self.data)}

    def check_replayable(self) -> None:
        """A notice of a message its service could never publish (too big for the bus) has no consumer:
        replaying it could only fail the same way; the whole message is kept in the service's database."""
        if UNPUBLISHED_HEADER in self.headers:
            raise DeadLetterReplayError(
                f"dead letter {self.seq} is a message the {self.service} service could never publish "
                f"({self.headers.get(ERROR_HEADER, '')}); it cannot be replayed: the whole message is in "
                f"its database's {UNPUBLISHED_COLLECTION} collection"
            )

    def envelope(self) -> Envelope:
        """The message as its consumer first received it; a malformed one can never be handled."""
        self.check_replayable()
        headers = {k: v for k, v in self.headers.items() if k not in _ADDED}
        try:
            return decode(headers, self.data)
        except MalformedMessage as exc:
            raise DeadLetterReplayError(f"dead letter {self.seq} cannot be replayed: {exc}") from None


def _readable(data: bytes) -> Any:
    """The body as JSON where it is JSON, as text where it is text, otherwise base64."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}
    try:
        return json.loads(text)
    except ValueError:
        return text


def _of(raw: RawStreamMsg) -> DeadLetter:
    return DeadLetter(
        seq=int(raw.seq or 0),
        subject=raw.subject or "",
        time=raw.time,
        headers={str(k): str(v) for k, v in (raw.headers or {}).items()},
        data=raw.data or b"",
    )


async def fetch(bus: Bus, seq: int) -> DeadLetter:
    """One dead letter by its sequence number in the stream; NoDeadLetterError if there is none."""
    try:
        raw = await bus.js.get_msg(DEAD_LETTER_STREAM, seq)
    except NotFoundError:
        raise NoDeadLetterError(f"Dead letter {seq} is not found.") from None
    if not (raw.subject or "").startswith(f"{DEAD_LETTER_PREFIX}."):
        raise NoDeadLetterError(f"Dead letter {seq} is not found.")
    return _of(raw)


async def page(
    bus: Bus, service: str | None = None, consumer: str | None = None, after: int = 0, limit: int = 100
) -> tuple[list[DeadLetter], int | None]:
    """Dead letters after sequence ``after``, oldest first, and the cursor of the next page (None: last).

    ``service`` narrows to one service's consumers, ``consumer`` (with it) to one durable consumer.
    """
    limit = max(1, min(limit, MAX_LIST))
    subject = f"{DEAD_LETTER_PREFIX}.>"
    if service:
        subject = subject_of(service, consumer) if consumer else f"{DEAD_LETTER_PREFIX}.{service}.>"
    found: list[DeadLetter] = []
    seq = after + 1
    while len(found) < limit:
        try:
            raw = await bus.js.get_msg(DEAD_LETTER_STREAM, seq, subject=subject, next=True)
        except NotFoundError:
            return found, None
        letter = _of(raw)
        if consumer and not service and letter.consumer != consumer:
            seq = letter.seq + 1
            continue
        found.append(letter)
        seq = letter.seq + 1
    return found, found[-1].seq


async def remove(bus: Bus, seq: int) -> None:
    """Take a replayed dead letter off the stream (the audit log keeps the record of it)."""
    try:
        await bus.js.delete_msg(DEAD_LETTER_STREAM, seq)
    except NotFoundError:
        pass  # removed by another replica's replay of the same letter
