"""The callout's decision, without I/O: a TokenReview's answer to a node agent's identity or a refusal,
and the user claims of that node (its permissions from the platform's one table)."""

from __future__ import annotations

import base64
import binascii
import json
import re
from dataclasses import dataclass, field
from typing import Any

from pai_common.bus_permissions import node_durable, node_permissions
from pai_common.contract.base import NODE_NAME_MAX, NODE_NAME_PATTERN

# Where Kubernetes puts the node a bound service-account token's pod runs on (ServiceAccountTokenPodNodeInfo:
# beta and on by default since Kubernetes 1.30, GA in 1.32).
NODE_NAME_KEY = "authentication.kubernetes.io/node-name"
# The global account of a nats-server configured without accounts: the account the users it makes join.
GLOBAL_ACCOUNT = "$G"


class Refused(Exception):
    """The connection is not let in; the message says why (it goes to the log and to nats-server, never
    the token)."""


@dataclass(frozen=True)
class Review:
    """What the API server answered (TokenReviewStatus), as far as the callout reads it."""

    authenticated: bool
    error: str = ""
    audiences: list[str] = field(default_factory=list)
    username: str = ""
    extra: dict[str, list[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Policy:
    """Whose tokens make a node agent: the audience its projected token is bound to and its service
    account (``system:serviceaccount:<namespace>:<name>``)."""

    audience: str
    service_account: str


def node_of(review: Review, policy: Policy) -> str:
    """The node whose agent presented the token; Refused unless the API server authenticated it for our
    audience, as the node agents' service account, on exactly one valid node."""
    if not review.authenticated:
        raise Refused(f"the token was not authenticated: {review.error or 'no reason given'}")
    if policy.audience not in review.audiences:
        raise Refused(
            f"the token is not bound to the audience {policy.audience!r} (it is for {review.audiences})"
        )
    if review.username != policy.service_account:
        raise Refused(f"the token is of {review.username!r}, not the node agents' ({policy.service_account})")
    nodes = review.extra.get(NODE_NAME_KEY) or []
    if not nodes:
        raise Refused(
            f"the review names no node ({NODE_NAME_KEY} absent): the token must be a pod's projected token "
            "and the cluster Kubernetes 1.30 or later (ServiceAccountTokenPodNodeInfo); there is no shared "
            "node user to fall back to"
        )
    if len(nodes) != 1:
        raise Refused(f"the review names {len(nodes)} nodes, not one")
    node = nodes[0]
    if len(node) > NODE_NAME_MAX or not re.fullmatch(NODE_NAME_PATTERN, node):
        raise Refused(f"the node name {node[:80]!r} is not a valid node name")
    return node


def connect_token(request: dict[str, Any]) -> str:
    """The token a client presented, from an authorization request's claims."""
    opts = (request.get("nats") or {}).get("connect_opts") or {}
    token = opts.get("auth_token") or ""
    if not isinstance(token, str) or not token:
        raise Refused("the client presented no token (a node agent connects with its service-account token)")
    return token


def user_claims(node: str, user_nkey: str, expires_at: int | None = None) -> dict[str, Any]:
    """The user JWT's claims for ``node``'s agent: the rights ``pai up`` gives that node's own user, its
    inbox that of ``runtime-<node>`` (``bus_permissions``), valid until its token expires."""
    p = node_permissions(node).to_nats()
    publish, subscribe = p["publish"], p["subscribe"]
    assert isinstance(publish, dict) and isinstance(subscribe, dict)
    claims: dict[str, Any] = {
        "sub": user_nkey,
        "name": node_durable(node),
        "aud": GLOBAL_ACCOUNT,
        "nats": {
            "pub": publish,
            "sub": subscribe,
            # allow_responses: answering an RPC needs no right on the asker's inbox (one reply each).
            "resp": {"max": 1, "ttl": 0},
            "subs": -1,
            "data": -1,
            "payload": -1,
            "type": "user",
            "version": 2,
        },
    }
    if expires_at is not None:
        claims["exp"] = expires_at
    return claims


def response_claims(user_nkey: str, server_id: str, user_jwt: str = "", error: str = "") -> dict[str, Any]:
    """The authorization response: the user JWT, or the error that refuses the connection."""
    nats: dict[str, Any] = {"type": "authorization_response", "version": 2}
    if user_jwt:
        nats["jwt"] = user_jwt
    if error:
        nats["error"] = error
    return {"sub": user_nkey, "aud": server_id, "nats": nats}


def token_expiry(token: str) -> int | None:
    """The ``exp`` of a service-account token (a JWT), read once the API server has vouched for it, so
    that the bus identity lasts no longer than its credential; None when it carries none."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return exp if isinstance(exp, int) and not isinstance(exp, bool) else None
