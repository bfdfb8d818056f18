"""Token records: one per issued token (never the token itself), so that a token can be revoked."""

from __future__ import annotations

import time
from typing import Any, Literal

from pai_auth import audit
from pai_auth.tokens import Claims
from pai_common.consumer import HandlerContext
from pai_common.contract.events import TokenIssued, TokenRevoked

TOKENS = "tokens"
RevokeReason = Literal["logout", "revoked", "password_changed", "user_deleted"]


def record_of(claims: Claims, kid: str, issued_at: int) -> dict[str, Any]:
    return {
        "_id": claims.jti,
        "username": claims.username,
        "application": claims.application,
        "issued_at": issued_at,
        "expires_at": claims.expires_at,
        "kid": kid,
    }


def claims_of(record: dict[str, Any]) -> Claims:
    return Claims(
        str(record["username"]), str(record["_id"]), bool(record.get("application")), record.get("expires_at")
    )


async def store(tx: HandlerContext, claims: Claims, kid: str, issued_at: int, actor: str) -> None:
    await tx.db[TOKENS].insert_one(record_of(claims, kid, issued_at), session=tx.session)
    tx.out.event(
        TokenIssued(
            username=claims.username,
            token_id=claims.jti,
            application=claims.application,
            expires_at=claims.expires_at * 1000 if claims.expires_at is not None else None,
            at=int(time.time() * 1000),
        )
    )
    await audit.record(
        tx,
        actor,
        "token.issued",
        claims.username,
        {"token_id": claims.jti, "application": claims.application},
    )


async def revoke(
    tx: HandlerContext, username: str, query: dict[str, Any], reason: RevokeReason, actor: str
) -> list[str]:
    """Delete the user's token records matching ``query``; publish and audit their ids."""
    selector = {**query, "username": username}
    ids = [str(d["_id"]) async for d in tx.db[TOKENS].find(selector, {"_id": 1}, session=tx.session)]
    if not ids:
        return []
    await tx.db[TOKENS].delete_many({"_id": {"$in": ids}}, session=tx.session)
    tx.out.event(
        TokenRevoked(username=username, token_ids=ids, reason=reason, actor=actor, at=int(time.time() * 1000))
    )
    await audit.record(tx, actor, "token.revoked", username, {"token_ids": ids, "reason": reason})
    return ids
