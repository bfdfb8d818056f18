"""Base classes of the message contract and the registry the bus and the proto generator read."""

from __future__ import annotations

import re
from typing import ClassVar

from pydantic import BaseModel, ConfigDict


class Message(BaseModel):
    """A message body. Unknown fields are refused so that a producer's typo fails loudly.

    ``defer_build``: each model's validator is built at its first use, not when the contract is imported.
    Every service imports the whole contract (some 140 models) and uses a few dozen of them: building them
    all cost each process about 0.1 s of CPU and 5 MiB at start. Validation, its errors and the JSON schema
    (``generate.py``, ``proto/``) are the same.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)


class Event(Message):
    """A fact, in the past tense, published to JetStream on ``pai.evt.<TYPE>``."""

    TYPE: ClassVar[str]
    PRODUCER: ClassVar[str]
    CONSUMERS: ClassVar[tuple[str, ...]]
    DESCRIPTION: ClassVar[str] = ""

    def subject_key(self) -> str:
        """The CloudEvents ``subject``: what the event is about (a job key, a node name)."""
        return ""


class Command(Message):
    """A request to one owner to act, on the work-queue stream ``pai.cmd.<owner>.<target>.<verb>``.

    ``TYPE`` is ``<owner>.<verb>``; the target (a node name, say) is chosen by the sender.
    """

    TYPE: ClassVar[str]
    PRODUCER: ClassVar[str]
    CONSUMER: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""


class RpcRequest(Message):
    """A question that needs an answer now (core NATS request/reply, NATS micro services)."""

    SERVICE: ClassVar[str]
    ENDPOINT: ClassVar[str]
    DESCRIPTION: ClassVar[str] = ""
    # The reply model; set by each request class.
    REPLY: ClassVar[type[Message]]


class RpcReply(Message):
    pass


# A node's name: a Kubernetes node name (a DNS-1123 subdomain such as EKS's ip-10-0-0-1.ec2.internal) or
# any name of letters, digits, '_' and '-' as before, in dot-separated parts; at most 253 characters.
NODE_NAME_PATTERN = r"^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$"
NODE_NAME_MAX = 253
_NODE_NAME = re.compile(NODE_NAME_PATTERN)
# A '.' separates NATS subject tokens and may not appear in a durable consumer's name: a node's name is
# carried in them with '~' (which no node name holds) in its place.
_TOKEN_DOT = "~"


def valid_node_name(name: str) -> bool:
    return len(name) <= NODE_NAME_MAX and _NODE_NAME.fullmatch(name) is not None


def subject_token(name: str) -> str:
    """A node's name as one NATS subject token (and a legal durable or collection name part)."""
    return name.replace(".", _TOKEN_DOT)


def name_of_token(token: str) -> str:
    return token.replace(_TOKEN_DOT, ".")


EVENT_SUBJECT_PREFIX = "pai.evt"
COMMAND_SUBJECT_PREFIX = "pai.cmd"
RPC_SUBJECT_PREFIX = "pai.rpc"
DEAD_LETTER_PREFIX = "pai.dlq"
# Heartbeats are core NATS messages, not JetStream: frequent, ephemeral, worthless once stale.
HEARTBEAT_PREFIX = "pai.hb"


def event_subject(event_type: str) -> str:
    return f"{EVENT_SUBJECT_PREFIX}.{event_type}"


def command_subject(command_type: str, target: str) -> str:
    owner, verb = command_type.split(".", 1)
    return f"{COMMAND_SUBJECT_PREFIX}.{owner}.{subject_token(target)}.{verb}"


def rpc_subject(service: str, endpoint: str, target: str | None = None) -> str:
    if target:
        return f"{RPC_SUBJECT_PREFIX}.{service}.{subject_token(target)}.{endpoint}"
    return f"{RPC_SUBJECT_PREFIX}.{service}.{endpoint}"


def heartbeat_subject(node: str) -> str:
    return f"{HEARTBEAT_PREFIX}.{subject_token(node)}"
