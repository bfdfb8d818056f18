"""Makes the Compose deployment's NATS users, before its first `docker compose up`.

    .venv/bin/python deploy/compose/nats_users.py            # writes deploy/compose/bus/
    .venv/bin/python deploy/compose/nats_users.py --rotate   # new passwords for every user

The users and their subject permissions are the ones `pai up` gives its embedded server, from the same
table (pai_common.bus_permissions, derived from the message contract; deploy/k8s/nats_users.py renders it
for Kubernetes): one user per platform service, one per node agent (the runtime containers of compose.yaml,
each named after its PAI_NODE_NAME: it reads only its own commands and publishes no job event), the
operator (everything but removing streams) and a read-only extension user.

What it writes (the folder 0700, every file 0600; the folder is ignored by git):

    bus/nats.conf        the server's users, passwords and permissions; the nats container reads it
    bus/<container>.env  PAI_NATS_URL with that container's own user, one per platform container on the
                         bus; compose.yaml gives each container its own file and no other
    bus/operator.url     the operator's URL, for an admin's tools
    bus/extension.url    the extension user's URL (examples/extensions/job-notifier's --credentials)
    bus/passwords.json   user -> password, so that running it again keeps the passwords

Running it again (after a new event, command or RPC call) keeps every password and rewrites the
permissions: then `docker compose kill -s HUP nats` makes the server reload them. With --rotate every
password is new: `docker compose up -d --force-recreate` then restarts everything with them. Passwords are
generated here, on the machine that runs Compose; none is printed, logged or committed.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from pai_common import bus_permissions

COMPOSE_DIR = Path(__file__).resolve().parent
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
OUT = COMPOSE_DIR / "bus"
# The NATS container as the platform's containers reach it (compose.yaml's `nats` service).
NATS_URL = "nats://nats:4222"
PASSWORDS = "passwords.json"


def _node_name(name: str, container: dict[str, Any]) -> str:
    node = (container.get("environment") or {}).get("PAI_NODE_NAME")
    if not node:
        raise SystemExit(f"the compose file's node agent {name} sets no PAI_NODE_NAME")
    return str(node)


def _platform_containers(compose: dict[str, Any]) -> dict[str, tuple[str, dict[str, Any]]]:
    """Compose container -> (the service it runs: its SERVICE build argument, the container)."""
    found = {}
    for name, container in (compose.get("services") or {}).items():
        build = container.get("build")
        service = (build.get("args") or {}).get("SERVICE") if isinstance(build, dict) else None
        if service:
            found[name] = (str(service), container)
    return found


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


def _write_private(path: Path, text: str) -> None:
    """Readable by the owner only from its first byte; replaced whole, so a reader never sees half."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def _read_passwords(out: Path) -> dict[str, str]:
    path = out / PASSWORDS
    if not path.is_file():
        return {}
    stored = json.loads(path.read_text())
    if not isinstance(stored, dict) or not all(isinstance(v, str) for v in stored.values()):
        raise SystemExit(f"{path} is not a map of user to password: remove it, or run with --rotate")
    return stored


def generate(out: Path, compose_file: Path = COMPOSE_FILE, rotate: bool = False) -> list[str]:
    """Writes the files (see the module's text); returns what it wrote, for the operator (no secret)."""
    compose = yaml.safe_load(compose_file.read_text())
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    table = users(compose, {} if rotate else _read_passwords(out))
    password = {user: pw for user, (pw, _) in table.items()}
    _write_private(out / PASSWORDS, json.dumps(password, indent=2, sort_keys=True) + "\n")
    header = "# Written by deploy/compose/nats_users.py from pai_common.bus_permissions: do not edit.\n"
    _write_private(out / "nats.conf", header + bus_permissions.nats_config(table))
    wrote = [f"{out / 'nats.conf'}: {len(table)} users"]
    for container, user in sorted(bus_containers(compose).items()):
        url = bus_permissions.url_for(NATS_URL, user, password[user])
        _write_private(
            out / f"{container}.env", f"# {container}'s own NATS user ({user})\nPAI_NATS_URL={url}\n"
        )
        wrote.append(f"{out / container}.env: user {user}")
    for user in (bus_permissions.OPERATOR, bus_permissions.EXTENSION):
        _write_private(out / f"{user}.url", bus_permissions.url_for(NATS_URL, user, password[user]) + "\n")
        wrote.append(f"{out / user}.url: user {user}")
    # Files of containers no longer in compose.yaml hold passwords nobody uses any more.
    keep = {f"{c}.env" for c in bus_containers(compose)}
    for stale in out.glob("*.env"):
        if stale.name not in keep:
            stale.unlink()
            wrote.append(f"{stale}: removed (no such container)")
    return wrote


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: deploy/compose/bus)")
    parser.add_argument("--compose-file", type=Path, default=COMPOSE_FILE)
    parser.add_argument("--rotate", action="store_true", help="new passwords for every user")
    args = parser.parse_args(argv)
    for line in generate(args.out, args.compose_file, args.rotate):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
