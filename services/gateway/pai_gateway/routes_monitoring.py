"""Alerts: OpenPAI's ``GET /api/v2/alerts``, and the webhook Alertmanager posts its notifications to.

The webhook is this project's (OpenPAI's alert handler listens on a port of its own); Alertmanager
reaches it through the gateway like any client, with a bearer token in its webhook configuration
(``http_config.authorization``): an admin's application token (``pai up --monitoring`` makes one).
"""

from __future__ import annotations

import json
import logging
from typing import Any, Literal

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pai_common.contract.rpc import (
    AlertListReply,
    AlertsReceivedReply,
    AlertsReceivedRequest,
    ListAlertsRequest,
    ReceivedAlert,
)
from pai_common.errors import ForbiddenUserError, InvalidParametersError
from pai_gateway.deps import User, read_body, rpc

router = APIRouter()
log = logging.getLogger(__name__)


class _Alert(BaseModel):
    # Alertmanager's webhook payload (version 4); fields it may add later are ignored, not refused.
    model_config = ConfigDict(extra="ignore")

    status: Literal["firing", "resolved"]
    labels: dict[str, str]
    annotations: dict[str, str] = Field(default_factory=dict)
    startsAt: str
    endsAt: str = ""
    generatorURL: str = ""
    fingerprint: str = ""


class _Notification(BaseModel):
    model_config = ConfigDict(extra="ignore")

    version: str = "4"
    truncatedAlerts: int = 0
    status: Literal["firing", "resolved"]
    receiver: str = ""
    externalURL: str = ""
    alerts: list[_Alert]


@router.get("/api/v2/alerts")
async def alerts(request: Request, user: User) -> list[dict[str, Any]]:
    req = ListAlertsRequest(username=user.username, admin=user.admin)
    return (await rpc(request, req, AlertListReply)).alerts


@router.post("/api/v2/alerts/webhook")
async def alertmanager_webhook(request: Request, user: User) -> dict[str, Any]:
    if not user.admin:
        raise ForbiddenUserError("Only an admin's token may post alert notifications.")
    raw = await read_body(request)
    try:
        notification = _Notification.model_validate(json.loads(raw or b"{}"))
    except (ValueError, UnicodeDecodeError) as exc:
        if isinstance(exc, ValidationError):
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'body'}: {e['msg']}" for e in exc.errors()
            )
            raise InvalidParametersError(f"not an Alertmanager notification: {problems}") from None
        raise InvalidParametersError("the body is not valid JSON") from None
    if notification.version != "4":
        raise InvalidParametersError(f"unsupported Alertmanager webhook version {notification.version!r}")
    try:
        req = AlertsReceivedRequest(
            receiver=notification.receiver,
            status=notification.status,
            external_url=notification.externalURL,
            actor=user.username,
            alerts=[
                ReceivedAlert(
                    status=a.status,
                    labels=a.labels,
                    annotations=a.annotations,
                    starts_at=a.startsAt,
                    ends_at=a.endsAt,
                    generator_url=a.generatorURL,
                    fingerprint=a.fingerprint,
                )
                for a in notification.alerts
            ],
        )
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors())
        raise InvalidParametersError(f"not an Alertmanager notification: {problems}") from None
    reply = await rpc(request, req, AlertsReceivedReply)
    if notification.truncatedAlerts:
        # Alertmanager left alerts out (its max_alerts): they are not lost there, but not seen here.
        log.warning(
            "Alertmanager truncated a notification",
            extra={"truncated": notification.truncatedAlerts, "receiver": notification.receiver},
        )
    return {"alerts": reply.alerts, "actions": reply.actions}
