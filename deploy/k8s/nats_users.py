"""Writes the NATS users of base/nats/configmap.yaml from the message contract and the services' code.

    .venv/bin/python deploy/k8s/nats_users.py           # rewrite the `users: [...]` block
    .venv/bin/python deploy/k8s/nats_users.py --check   # exit 1 if the file is not what it would write

Each service may publish the events and commands the contract (libs/common/pai_common/contract) names it
the producer of, the RPCs of the services its code asks (the request types its package names that another
service serves; all of them for one that asks three or more), its own dead letters and the JetStream API
(stream removal denied by $JS_ADMIN); it may subscribe to the events it consumes, its own RPC subjects,
the NATS micro services discovery subjects when it serves RPCs, and its replies. The runtime publishes
heartbeats, which the scheduler hears; the scheduler keeps its lease in the `pai_leases` bucket. Run it
after adding an event, a command or an RPC call; tests/deploy/test_k8s_manifests.py fails until then.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pai_common.contract import base, commands, events, rpc

REPO = Path(__file__).resolve().parents[2]
CONFIGMAP = Path(__file__).resolve().parent / "base" / "nats" / "configmap.yaml"
INDENT = " " * 8
# Core NATS traffic outside the contract's streams.
EXTRA_PUBLISH = {"runtime": ["pai.hb.*"], "scheduler": ["$KV.pai_leases.>"]}
EXTRA_SUBSCRIBE = {"scheduler": ["pai.hb.*"]}
ALL_RPC_FROM = 3


def services() -> list[str]:
    """The services on the bus (a ServiceApp); the portal, a client of the REST API only, is not."""
    found = []
    for folder in sorted((REPO / "services").iterdir()):
        code = "\n".join(p.read_text() for p in folder.glob("pai_*/**/*.py"))
        if "ServiceApp(" in code:
            found.append(folder.name)
    return found


def rpc_targets(service: str) -> set[str]:
    """The services whose RPCs ``service``'s code asks: the request types it names that others serve."""
    text = "\n".join(p.read_text() for p in (REPO / "services" / service).glob("pai_*/**/*.py"))
    targets = set()
    for name in set(re.findall(r"\b([A-Z]\w*Request)\b", text)):
        request = getattr(rpc, name, None)
        owner = getattr(request, "SERVICE", None) if isinstance(request, type) else None
        if owner is not None and owner != service:
            targets.add(owner)
    return targets


def _of(module: object, kind: type) -> list[type]:
    return [
        c for c in vars(module).values() if isinstance(c, type) and issubclass(c, kind) and "TYPE" in vars(c)
    ]


def permissions(service: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) subjects of one service's NATS user."""
    evs, cmds = _of(events, base.Event), _of(commands, base.Command)
    servers = {getattr(c, "SERVICE", None) for c in vars(rpc).values() if isinstance(c, type)}
    publish = sorted(base.event_subject(e.TYPE) for e in evs if e.PRODUCER == service)  # type: ignore[attr-defined]
    publish += sorted(
        {
            f"{base.COMMAND_SUBJECT_PREFIX}.{c.TYPE.split('.', 1)[0]}.*.{c.TYPE.split('.', 1)[1]}"  # type: ignore[attr-defined]
            for c in cmds
            if c.PRODUCER == service  # type: ignore[attr-defined]
        }
    )
    targets = rpc_targets(service)
    publish += (
        [f"{base.RPC_SUBJECT_PREFIX}.>"]
        if len(targets) >= ALL_RPC_FROM
        else [f"{base.RPC_SUBJECT_PREFIX}.{t}.>" for t in sorted(targets)]
    )
    publish += EXTRA_PUBLISH.get(service, [])
    publish += [f"{base.DEAD_LETTER_PREFIX}.{service}.>", "$JS.API.>", "$JS.ACK.>"]
    subscribe = sorted(base.event_subject(e.TYPE) for e in evs if service in e.CONSUMERS)  # type: ignore[attr-defined]
    if service in servers:
        subscribe += [f"{base.RPC_SUBJECT_PREFIX}.{service}.>", "$SRV.>"]
    subscribe += EXTRA_SUBSCRIBE.get(service, [])
    subscribe.append("_INBOX.>")
    return publish, subscribe


def _array(indent: str, items: list[str]) -> list[str]:
    return [f"{indent}allow: [", *(f'{indent}  "{item}"' for item in items), f"{indent}]"]


def users_block() -> str:
    lines = []
    for service in services():
        publish, subscribe = permissions(service)
        i = INDENT
        lines += [
            f"{i}{{",
            f"{i}  user: {service}",
            f"{i}  password: $NATS_PASSWORD_{service.upper()}",
            f"{i}  permissions: {{",
            f"{i}    publish: {{",
            *_array(f"{i}      ", publish),
            f"{i}      deny: $JS_ADMIN",
            f"{i}    }}",
            f"{i}    subscribe: {{",
            *_array(f"{i}      ", subscribe),
            f"{i}    }}",
            f"{i}    allow_responses: true",
            f"{i}  }}",
            f"{i}}}",
        ]
    return "\n".join(lines)


def rewritten(text: str) -> str:
    start = text.index("      users: [\n") + len("      users: [\n")
    end = text.index("\n      ]\n    }\n", start)
    return text[:start] + users_block() + text[end:]


def main(argv: list[str]) -> int:
    current = CONFIGMAP.read_text()
    wanted = rewritten(current)
    if "--check" in argv:
        if wanted != current:
            print(f"{CONFIGMAP} is out of date: run python deploy/k8s/nats_users.py", file=sys.stderr)
            return 1
        return 0
    CONFIGMAP.write_text(wanted)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
