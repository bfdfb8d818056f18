"""Writes the NATS users of base/nats/configmap.yaml from the message contract and the services' code (and
copies deploy/nats/store-check.sh, the full-disk liveness check, into it).

    .venv/bin/python deploy/k8s/nats_users.py           # rewrite the `users: [...]` block
    .venv/bin/python deploy/k8s/nats_users.py --check   # exit 1 if the file is not what it would write

The permissions are the platform's one table, libs/common/pai_common/bus_permissions.py (derived from the
message contract; `pai up` configures its embedded server from it too): each service may publish the events
and commands the contract names it the producer of, the RPCs it asks (bus_permissions.RPC_CALLS, which
tests/deploy checks against the request types each service's code names), its own dead letters and the
JetStream API (stream removal denied by $JS_ADMIN); it may subscribe to the events it consumes, its own RPC
and dead-letter replay subjects, the NATS micro services discovery subjects and its own inbox. The node
agents have no static user: a DaemonSet's pods cannot each get one from a static configuration, so each
agent connects with its pod's service-account token and the auth callout (pai_auth.callout, user
`auth-callout`) answers with that node's own user (bus_permissions.node_permissions, as under `pai up`).
The static users are the callout's `auth_users` (they never reach it). Run it after adding an event, a
command or an RPC call; tests/deploy/test_k8s_manifests.py fails until then.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from pai_common import bus_permissions
from pai_common.contract import rpc

REPO = Path(__file__).resolve().parents[2]
CONFIGMAP = Path(__file__).resolve().parent / "base" / "nats" / "configmap.yaml"
# The full-disk check (the nats container's liveness probe), shared with Compose: copied into the ConfigMap.
STORE_CHECK = REPO / "deploy" / "nats" / "store-check.sh"
INDENT = " " * 8


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


def static_users() -> list[str]:
    """The users nats.conf lists, each with a password: every service on the bus but the node agents
    (whose users the auth callout makes), and the callout itself."""
    return sorted([s for s in services() if s != "runtime"] + [bus_permissions.CALLOUT])


def password_env(user: str) -> str:
    """The environment variable nats.conf reads a user's password from ($NATS_PASSWORD_<USER>)."""
    return "NATS_PASSWORD_" + user.upper().replace("-", "_")


def permissions(user: str) -> tuple[list[str], list[str]]:
    """(publish, subscribe) subjects of one static user: the platform's one permission table
    (pai_common.bus_permissions, which the embedded default uses too), minus what $JS_ADMIN denies."""
    p = (
        bus_permissions.callout_permissions()
        if user == bus_permissions.CALLOUT
        else bus_permissions.service_permissions(user)
    )
    return sorted(set(p.publish)), sorted(set(p.subscribe))


def _array(indent: str, items: list[str], key: str = "allow") -> list[str]:
    return [f"{indent}{key}: [", *(f'{indent}  "{item}"' for item in items), f"{indent}]"]


def users_block() -> str:
    lines = []
    for user in static_users():
        publish, subscribe = permissions(user)
        i = INDENT
        # The callout publishes nothing but its answers (allow_responses); a service all but $JS_ADMIN.
        deny = (
            _array(f"{i}      ", bus_permissions.callout_permissions().deny_publish, "deny")
            if user == bus_permissions.CALLOUT
            else [f"{i}      deny: $JS_ADMIN"]
        )
        lines += [
            f"{i}{{",
            f"{i}  user: {user}",
            f"{i}  password: ${password_env(user)}",
            f"{i}  permissions: {{",
            f"{i}    publish: {{",
            *(_array(f"{i}      ", publish) if publish else []),
            *deny,
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
    # Who the auth callout does not decide: every static user.
    start = text.index("        auth_users: [\n") + len("        auth_users: [\n")
    end = text.index("        ]\n", start)
    text = text[:start] + "".join(f"          {u}\n" for u in static_users()) + text[end:]
    start = text.index("      users: [\n") + len("      users: [\n")
    end = text.index("\n      ]\n    }\n", start)
    text = text[:start] + users_block() + text[end:]
    # What no service may do (removing streams or their messages), from the same table.
    start = text.index("    JS_ADMIN: [\n") + len("    JS_ADMIN: [\n")
    end = text.index("    ]\n", start)
    never = "".join(f'      "{s}"\n' for s in bus_permissions.NEVER_PUBLISH)
    text = text[:start] + never + text[end:]
    start = text.index("  store-check.sh: |\n") + len("  store-check.sh: |\n")
    script = "".join(f"    {line}".rstrip() + "\n" for line in STORE_CHECK.read_text().splitlines())
    return text[:start] + script


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
