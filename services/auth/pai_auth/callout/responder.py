"""The NATS side of the callout: answers nats-server's authorization requests (``$SYS.REQ.USER.AUTH``).

Each request is a JWT signed by the server, naming the connecting client's options (its token) and the
user nkey the answer must be issued to. The answer is an authorization response signed with the callout's
account key: the node agent's user JWT, or the reason it is refused.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg

from pai_auth.callout import jwt
from pai_auth.callout.decision import (
    Policy,
    Refused,
    Review,
    connect_token,
    node_of,
    response_claims,
    token_expiry,
    user_claims,
)

log = logging.getLogger("pai.auth.callout")

AUTH_SUBJECT = "$SYS.REQ.USER.AUTH"
QUEUE = "pai-auth-callout"


class Reviewer(Protocol):
    async def review(self, token: str) -> Review: ...


class CalloutResponder:
    def __init__(self, nc: NatsClient, reviewer: Reviewer, policy: Policy, issuer_seed: str) -> None:
        self._nc = nc
        self._reviewer = reviewer
        self._policy = policy
        self._issuer = jwt.keypair(issuer_seed)
        self._sub: Any = None

    async def start(self) -> None:
        # A queue group: with two replicas, each request is answered once.
        self._sub = await self._nc.subscribe(AUTH_SUBJECT, queue=QUEUE, cb=self._on_request)

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()

    async def _on_request(self, msg: Msg) -> None:
        try:
            answer = await self.answer(msg.data)
        except jwt.JwtError as exc:
            # Not a request the server signed: nothing to answer to (the server times the client out).
            log.warning("auth callout: an unreadable request", extra={"error": str(exc)})
            return
        except Exception:
            # Unanswered, the connection is refused at the server's timeout: never let in unchecked.
            log.exception("auth callout: the request could not be answered")
            return
        if msg.reply:
            await msg.respond(answer.encode())

    async def answer(self, data: bytes) -> str:
        """The signed authorization response to one request (JwtError if the request is not a server's)."""
        request = jwt.decode(data.decode(errors="replace"), issuer_prefix="N")
        nats = request.get("nats") or {}
        user_nkey = str(nats.get("user_nkey") or "")
        server_id = str((nats.get("server_id") or {}).get("id") or request["iss"])
        if not user_nkey.startswith("U"):
            raise jwt.JwtError("an authorization request without the user nkey to issue to")
        client = nats.get("client_info") or {}
        try:
            token = connect_token(request)
            node = node_of(await self._reviewer.review(token), self._policy)
        except Refused as exc:
            log.warning(
                "auth callout: connection refused",
                extra={
                    "reason": str(exc),
                    "client_host": client.get("host"),
                    "client_name": client.get("name"),
                },
            )
            return jwt.encode(response_claims(user_nkey, server_id, error=str(exc)), self._issuer)
        user = jwt.encode(user_claims(node, user_nkey, token_expiry(token)), self._issuer)
        log.info("auth callout: node agent let in", extra={"node": node, "client_host": client.get("host")})
        return jwt.encode(response_claims(user_nkey, server_id, user_jwt=user), self._issuer)
