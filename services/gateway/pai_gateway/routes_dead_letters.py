"""Dead letters (admins only): the messages a consumer gave up on, with the error that sent each there.

OpenPAI has no such routes; these are this project's. The list and the detail read the dead-letter stream;
a replay asks the service that runs the consumer to handle the message again (``deadletters.replay``), and
once it did, announces it (``deadletter.replayed``) so that the audit log records who replayed what.
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Request

from pai_common import dead_letters
from pai_common.contract.events import DeadLetterReplayed
from pai_common.contract.rpc import ReplayDeadLetterReply, ReplayDeadLetterRequest
from pai_common.errors import ForbiddenUserError
from pai_gateway.auth_deps import NO_APPLICATIONS, Human
from pai_gateway.deps import bus_of, rpc

log = logging.getLogger(__name__)
router = APIRouter()
PATH = "/api/v2/dead-letters"
NON_ADMIN = "Non-admin is not allow to do this operation."
Seq = Annotated[int, Path(ge=1, le=2**63 - 1)]
Name = Annotated[str | None, Query(min_length=1, max_length=300, pattern=r"^[A-Za-z0-9_~-]+$")]


def _admin(user: Human) -> None:
    if user.application:
        raise ForbiddenUserError(NO_APPLICATIONS)
    if not user.admin:
        raise ForbiddenUserError(NON_ADMIN)


@router.get(PATH)
async def list_dead_letters(
    request: Request,
    user: Human,
    service: Name = None,
    consumer: Name = None,
    after: Annotated[int, Query(ge=0, le=2**63 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=dead_letters.MAX_LIST)] = 100,
) -> dict[str, Any]:
    """Oldest first; ``next`` is the ``after`` of the following page (null on the last one)."""
    _admin(user)
    found, cursor = await dead_letters.page(bus_of(request), service, consumer, after, limit)
    return {"data": [letter.summary() for letter in found], "next": cursor}


@router.get(PATH + "/{seq}")
async def get_dead_letter(request: Request, user: Human, seq: Seq) -> dict[str, Any]:
    _admin(user)
    return (await dead_letters.fetch(bus_of(request), seq)).detail()


@router.post(PATH + "/{seq}/replay")
async def replay_dead_letter(request: Request, user: Human, seq: Seq) -> dict[str, Any]:
    _admin(user)
    bus = bus_of(request)
    letter = await dead_letters.fetch(bus, seq)
    letter.check_replayable()
    summary = letter.summary()
    reply = await rpc(
        request, ReplayDeadLetterRequest(seq=seq, actor=user.username), ReplayDeadLetterReply, letter.consumer
    )
    event = DeadLetterReplayed(
        seq=seq,
        service=summary["service"],
        consumer=letter.consumer,
        message_type=reply.message_type,
        message_id=reply.message_id,
        error=summary["error"],
        outcome=reply.outcome,
        by=user.username,
        at=int(time.time() * 1000),
    )
    try:
        await bus.publish_event(event, msg_id=f"dlq-replayed:{seq}")
        audited = True
    except Exception as exc:  # the replay happened: say so, and that its audit entry is missing
        log.error("dead letter replayed but not audited", extra={"seq": seq, "error": repr(exc)})
        audited = False
    return {**summary, "outcome": reply.outcome, "replayedBy": user.username, "audited": audited}
