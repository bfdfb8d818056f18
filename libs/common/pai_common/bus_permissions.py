"""Who may publish and subscribe to what on the bus: one table, derived from the message contract.

Each platform service connects as its own NATS user and may publish only the events and commands the
contract names it the producer of, the RPCs it asks (``RPC_CALLS``), its own dead letters and heartbeats;
it may subscribe only to its own RPC subjects, the events it consumes, the replay subject of its durable
consumers and its own inbox (``_INBOX.<user>.>``: nobody reads another user's RPC replies, such as the
secrets a node agent is given).

A node agent is less trusted than a service (it runs on every machine, next to users' tasks): it gets a
user of its own per node, whose JetStream rights reach only its own command consumer (``runtime-<node>``)
and never the streams' messages directly, so it cannot read another node's commands nor publish a job
event. An extension gets a read-only user: it may create its own consumers on the events stream and read
through them, nothing else (it may not touch the platform's consumers nor publish anything).

``nats_config`` renders the table for nats-server (the embedded default writes it at every start); the
Kubernetes and Compose configurations are generated from the same table (``deploy/k8s/nats_users.py``,
``deploy/compose/nats_users.py``).
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit, urlunsplit

from pai_common.bus import COMMANDS_STREAM, EVENTS_STREAM
from pai_common.contract.base import (
    COMMAND_SUBJECT_PREFIX,
    DEAD_LETTER_PREFIX,
    HEARTBEAT_PREFIX,
    RPC_SUBJECT_PREFIX,
    event_subject,
    subject_token,
)
from pai_common.contract.commands import ALL_COMMANDS
from pai_common.contract.events import ALL_EVENTS

PLATFORM_SERVICES = (
    "auth",
    "storage",
    "jobs",
    "scheduler",
    "orchestrator",
    "diagnosis",
    "monitoring",
    "gateway",
    "marketplace",
)
# The RPC subjects each service asks (below pai.rpc.). A test reads every service's code and fails when it
# names a request that is not here, so the table cannot fall behind the code.
RPC_CALLS: dict[str, tuple[str, ...]] = {
    "gateway": (">",),  # the API: it asks every service
    "jobs": ("orchestrator.placement", "scheduler.>", "storage.>"),
    "storage": ("auth.>",),
    "marketplace": ("auth.>",),
    # Alert actions: the owner's address, stop or tag a job, cordon or drain a node.
    "monitoring": ("auth.user_get", "jobs.execution_type", "jobs.tag", "scheduler.node_schedulable"),
    "runtime": ("jobs.secrets", "storage.credentials"),
}
# Streams and messages no service removes: the history the platform's guarantees rest on. Replayed dead
# letters are the one exception (their record moves to the audit log).
NEVER_PUBLISH = [
    "$JS.API.STREAM.DELETE.>",
    "$JS.API.STREAM.PURGE.>",
    f"$JS.API.STREAM.MSG.DELETE.{EVENTS_STREAM}",
    f"$JS.API.STREAM.MSG.DELETE.{COMMANDS_STREAM}",
]


# Whoever asks RPCs may ask which instances of a service run (NATS micro discovery; pai_common.
# responder_watch): the answer names services and their instances' ids, nothing else.
SERVICE_PING = "$SRV.PING.>"


@dataclass
class Permissions:
    publish: list[str] = field(default_factory=list)
    subscribe: list[str] = field(default_factory=list)
    deny_publish: list[str] = field(default_factory=list)

    def to_nats(self) -> dict[str, object]:
        publish: dict[str, list[str]] = {"allow": sorted(set(self.publish))}
        if self.deny_publish:
            publish["deny"] = sorted(set(self.deny_publish))
        return {
            "publish": publish,
            "subscribe": {"allow": sorted(set(self.subscribe))},
            # Answering a request (RPC, micro discovery) needs no right on the asker's inbox.
            "allow_responses": True,
        }


def inbox_prefix(user: str) -> str:
    """The inbox of one user: its RPC replies and JetStream API answers arrive only there."""
    return f"_INBOX.{subject_token(user)}"


def durables(service: str) -> list[tuple[str, str]]:
    """(stream, durable name) of the consumers a platform service runs (the runner names them)."""
    consumes = any(service in e.CONSUMERS for e in ALL_EVENTS) and service != "gateway"
    return [(EVENTS_STREAM, service)] if consumes else []


def node_durable(node: str) -> str:
    return f"runtime-{subject_token(node)}"


def _consumer_api(stream: str, durable: str) -> list[str]:
    api = "$JS.API.CONSUMER"
    return [
        f"{api}.CREATE.{stream}.{durable}",
        f"{api}.CREATE.{stream}.{durable}.>",
        f"{api}.DURABLE.CREATE.{stream}.{durable}",
        f"{api}.INFO.{stream}.{durable}",
        f"{api}.MSG.NEXT.{stream}.{durable}",
        f"$JS.ACK.{stream}.{durable}.>",
    ]


def service_permissions(service: str) -> Permissions:
    """A platform service: what the contract says it produces and consumes."""
    p = Permissions()
    p.publish += [event_subject(e.TYPE) for e in ALL_EVENTS if e.PRODUCER == service]
    for command in ALL_COMMANDS:
        if command.PRODUCER == service:
            owner, verb = command.TYPE.split(".", 1)
            p.publish.append(f"{COMMAND_SUBJECT_PREFIX}.{owner}.*.{verb}")
    p.publish += [f"{RPC_SUBJECT_PREFIX}.{s}" for s in RPC_CALLS.get(service, ())]
    p.publish += [f"{DEAD_LETTER_PREFIX}.{service}.>", "$JS.API.>", "$JS.ACK.>", SERVICE_PING]
    p.deny_publish += NEVER_PUBLISH
    p.subscribe += [event_subject(e.TYPE) for e in ALL_EVENTS if service in e.CONSUMERS]
    p.subscribe += [f"{RPC_SUBJECT_PREFIX}.{service}.>", f"{inbox_prefix(service)}.>", "$SRV.>"]
    p.subscribe += [f"{RPC_SUBJECT_PREFIX}.deadletters.{d}.>" for _, d in durables(service)]
    if service == "scheduler":
        p.subscribe.append(f"{HEARTBEAT_PREFIX}.*")  # node liveness
        p.publish.append("$KV.pai_leases.>")  # its leader lease (a NATS KV bucket)
    return p


def node_permissions(node: str) -> Permissions:
    """One node agent: its own commands, its own events, its own heartbeat; nothing of other nodes."""
    token, durable = subject_token(node), node_durable(node)
    p = Permissions()
    p.publish += [event_subject(e.TYPE) for e in ALL_EVENTS if e.PRODUCER == "runtime"]
    p.publish += [f"{RPC_SUBJECT_PREFIX}.{s}" for s in RPC_CALLS["runtime"]]
    p.publish += [f"{HEARTBEAT_PREFIX}.{token}", f"{DEAD_LETTER_PREFIX}.runtime.{durable}", SERVICE_PING]
    p.publish += ["$JS.API.INFO", "$JS.API.STREAM.INFO.*", *_consumer_api(COMMANDS_STREAM, durable)]
    p.subscribe += [
        f"{RPC_SUBJECT_PREFIX}.runtime.{token}.>",
        f"{RPC_SUBJECT_PREFIX}.deadletters.{durable}.>",
        f"{inbox_prefix(durable)}.>",
        "$SRV.>",
    ]
    return p


def extension_permissions(user: str) -> Permissions:
    """Read-only: its own consumers on the events stream, never the platform's, and no publishing."""
    api = "$JS.API.CONSUMER"
    p = Permissions()
    p.publish += [
        "$JS.API.INFO",
        f"$JS.API.STREAM.INFO.{EVENTS_STREAM}",
        f"$JS.API.STREAM.MSG.GET.{EVENTS_STREAM}",
        f"{api}.CREATE.{EVENTS_STREAM}.>",
        f"{api}.DURABLE.CREATE.{EVENTS_STREAM}.*",
        f"{api}.INFO.{EVENTS_STREAM}.*",
        f"{api}.MSG.NEXT.{EVENTS_STREAM}.*",
        f"{api}.DELETE.{EVENTS_STREAM}.*",
        f"$JS.ACK.{EVENTS_STREAM}.>",
    ]
    for service in PLATFORM_SERVICES:
        for stream, durable in durables(service):
            p.deny_publish += [*_consumer_api(stream, durable), f"{api}.DELETE.{stream}.{durable}"]
    p.subscribe += [f"{inbox_prefix(user)}.>"]
    return p


def operator_permissions() -> Permissions:
    """The platform's own operator (pai up, an admin's tools): everything but destroying history."""
    return Permissions(publish=[">"], subscribe=[">"], deny_publish=list(NEVER_PUBLISH))


# The auth callout's own user (Kubernetes: pai_auth.callout), which turns a node agent's service-account
# token into that node's user (node_permissions) and may do nothing else on the bus.
CALLOUT = "auth-callout"
CALLOUT_SUBJECT = "$SYS.REQ.USER.AUTH"


def callout_permissions() -> Permissions:
    """Answer nats-server's authorization requests (a reply needs no publish right), nothing more."""
    return Permissions(subscribe=[CALLOUT_SUBJECT], deny_publish=[">"])


def nats_config(users: dict[str, tuple[str, Permissions]], callout_issuer: str | None = None) -> str:
    """The ``authorization`` block of nats-server's configuration for these users (user -> password,
    permissions); nats-server reads JSON values in its configuration format. With ``callout_issuer`` (the
    callout's account public nkey) every other connection is decided by the auth callout, and these users
    are the ones it does not decide."""
    entries = [
        {"user": user, "password": password, "permissions": permissions.to_nats()}
        for user, (password, permissions) in sorted(users.items())
    ]
    block: dict[str, object] = {"users": entries}
    if callout_issuer is not None:
        block["auth_callout"] = {"issuer": callout_issuer, "auth_users": sorted(users)}
    return "authorization: " + json.dumps(block, indent=2) + "\n"


OPERATOR = "operator"
EXTENSION = "extension"


def embedded_users(nodes: list[str]) -> dict[str, tuple[str, Permissions]]:
    """The users of the embedded default, each with a fresh random password: every platform service, one
    per node agent, the operator (``pai up`` and an admin's tools) and one read-only extension user."""
    users = {
        service: (secrets.token_urlsafe(24), service_permissions(service)) for service in PLATFORM_SERVICES
    }
    users.update({node_durable(node): (secrets.token_urlsafe(24), node_permissions(node)) for node in nodes})
    users[OPERATOR] = (secrets.token_urlsafe(24), operator_permissions())
    users[EXTENSION] = (secrets.token_urlsafe(24), extension_permissions(EXTENSION))
    return users


def url_for(url: str, user: str, password: str) -> str:
    """A server URL (``nats://host:port``, ``mongodb://host:port/db?...``) with this user's credentials."""
    parts = urlsplit(url)
    return urlunsplit(
        parts._replace(
            netloc=f"{quote(user, safe='')}:{quote(password, safe='')}@{parts.hostname}:{parts.port}"
        )
    )
