"""The Compose deployment's NATS users (the bus half of deploy/compose/credentials.py, which is the step
to run; running this file runs that step whole, so that every env file keeps its database URL too).

The users and their subject permissions are the ones `pai up` gives its embedded server, from the same
table (pai_common.bus_permissions, derived from the message contract; deploy/k8s/nats_users.py renders it
for Kubernetes): one user per platform service, one per node agent (the runtime containers of compose.yaml,
each named after its PAI_NODE_NAME: it reads only its own commands and publishes no job event), the
operator (everything but removing streams) and a read-only extension user.

What it writes into the generated folder (0700, every file 0600, ignored by git):

    bus/nats.conf        the server's users, passwords and permissions; the nats container reads it
    bus/operator.url     the operator's URL, for an admin's tools
    bus/extension.url    the extension user's URL (examples/extensions/job-notifier's --credentials)
    bus/passwords.json   user -> password, so that running it again keeps the passwords
    and PAI_NATS_URL in each platform container's bus/<container>.env (credentials.py writes those)

Running it again (after a new event, command or RPC call) keeps every password and rewrites the
permissions: then `docker compose kill -s HUP nats` makes the server reload them. With --rotate every
password is new: `docker compose up -d --force-recreate` then restarts everything with them. Passwords are
generated here, on the machine that runs Compose; none is printed, logged or committed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from pai_common import bus_permissions

COMPOSE_DIR = Path(__file__).resolve().parent
# The NATS container as the platform's containers reach it (compose.yaml's `nats` service).
NATS_URL = "nats://nats:4222"
PASSWORDS = "passwords.json"


def _node_name(name: str, container: dict[str, Any]) -> str:
    node = (container.get("environment") or {}).get("PAI_NODE_NAME")
    if not node:
        raise SystemExit(f"the compose file's node agent {name} sets no PAI_NODE_NAME")
    return str(node)


def _platform_containers(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Compose container -> (the service it runs: its SERVICE build argument, the container), for every
    container that runs its image's own command: a service. One that runs another command from the same
    image (the one-shot mongo-users) is a tool, not a service."""
    found = {}
    for name, container in (compose.get("services") or {}).items():
        build = container.get("build")
        service = (build.get("args") or {}).get("SERVICE") if isinstance(build, dict) else None
        if service and "command" not in container:
            found[name] = (str(service), container)
    return found


def platform_containers(compose: dict[str, Any]) -> dict[str, str]:
    """Compose container -> the platform service it runs."""
    return {name: service for name, (service, _) in _platform_containers(compose).items()}


def bus_containers(compose: dict[str, Any]) -> dict[str, str]:
    """Compose container -> its NATS user, for every platform container on the bus: a service's user is
    the service, a node agent's is its node's (``bus_permissions.node_durable``). The portal, a client of
    the REST API only, is not on the bus."""
    users = {}
    for name, (service, container) in _platform_containers(compose).items():
        if service == "runtime":
            users[name] = bus_permissions.node_durable(_node_name(name, container))
        elif service in bus_permissions.PLATFORM_SERVICES:
            users[name] = service
    return users


def node_names(compose: dict[str, Any]) -> list[str]:
    return sorted(
        _node_name(name, container)
        for name, (service, container) in _platform_containers(compose).items()
        if service == "runtime"
    )


def users(
    compose: dict[str, Any], passwords: dict[str, str]
) -> dict[str, tuple[str, bus_permissions.Permissions]]:
    """The embedded default's users for this file's node agents, keeping the passwords already made."""
    made = bus_permissions.embedded_users(node_names(compose))
    return {user: (passwords.get(user, fresh), perms) for user, (fresh, perms) in made.items()}


def write_private(path: Path, content: str | bytes, mode: int = 0o600) -> None:
    """Readable by the owner only from its first byte (then `mode`); replaced whole, so a reader never
    sees half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(content.encode() if isinstance(content, str) else content)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def read_passwords(path: Path) -> dict[str, str]:
    """A passwords file a former run wrote (user -> password); none: empty."""
    if not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        raise SystemExit(f"{path} is not a map of user to password: remove it, or run with --rotate")
    return stored


def write_bus(
    out: Path, compose: dict[str, Any], rotate: bool = False
) -> tuple[dict[str, dict[str, str]], list[str]]:
    """Writes the bus's files (see the module's text) into `out`, which exists; returns each bus
    container's env (PAI_NATS_URL) and what it wrote, for the operator (no secret)."""
    table = users(compose, {} if rotate else read_passwords(out / PASSWORDS))
    password = {user: pw for user, (pw, _) in table.items()}
    write_private(out / PASSWORDS, json.dumps(password, indent=2, sort_keys=True) + "\n")
    header = "# Written by deploy/compose/credentials.py from pai_common.bus_permissions: do not edit.\n"
    write_private(out / "nats.conf", header + bus_permissions.nats_config(table))
    wrote = [f"{out / 'nats.conf'}: {len(table)} users"]
    env = {
        container: {"PAI_NATS_URL": bus_permissions.url_for(NATS_URL, user, password[user])}
        for container, user in sorted(bus_containers(compose).items())
    }
    for user in (bus_permissions.OPERATOR, bus_permissions.EXTENSION):
        write_private(out / f"{user}.url", bus_permissions.url_for(NATS_URL, user, password[user]) + "\n")
        wrote.append(f"{out / user}.url: user {user}")
    return env, wrote


def main(argv: list[str]) -> int:
    """The whole step (credentials.py): the bus's users alone would leave env files without a database."""
    spec = importlib.util.spec_from_file_location("pai_compose_credentials", COMPOSE_DIR / "credentials.py")
    assert spec is not None and spec.loader is not None
    credentials = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(credentials)
    print(
        "nats_users.py runs deploy/compose/credentials.py: the bus's and the database's users",
        file=sys.stderr,
    )
    code: int = credentials.main(argv)
    return code


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
