"""Makes the Compose deployment's credentials, before its first `docker compose up`: the bus's users
(nats_users.py) and the database's users, keyfile and TLS certificates (mongo_users.py).

    .venv/bin/python deploy/compose/credentials.py            # writes deploy/compose/bus/
    .venv/bin/python deploy/compose/credentials.py --rotate   # new passwords for every user

Everything goes into one folder (mode 0700, ignored by git; every file 0600 but the database CA's
certificate, mongo-ca.crt, 0644: public, and read by the services' user through a bind mount). Besides
the files each half writes, one `<container>.env` per platform container holds that container's own
PAI_NATS_URL and PAI_MONGO_URL; compose.yaml gives each container its own file and no other. Passwords are
generated here, on the machine that runs Compose; none is printed, logged or committed. Running it again
keeps every password, the CA, the server's certificate and the keyfile; --rotate replaces the passwords
(root's included: the one-shot mongo-users container logs in with the old one once to set the new one).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import yaml

COMPOSE_DIR = Path(__file__).resolve().parent
COMPOSE_FILE = COMPOSE_DIR / "compose.yaml"
OUT = COMPOSE_DIR / "bus"


def _sibling(name: str) -> ModuleType:
    """A script beside this one, whatever the way this one was loaded (a script, a test's loader)."""
    spec = importlib.util.spec_from_file_location(f"pai_compose_{name}", COMPOSE_DIR / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


nats_users = _sibling("nats_users")
mongo_users = _sibling("mongo_users")
PUBLIC = {mongo_users.CA_CERT}


def generate(out: Path, compose_file: Path = COMPOSE_FILE, rotate: bool = False) -> list[str]:
    """Writes the files (see the module's text); returns what it wrote, for the operator (no secret)."""
    compose = yaml.safe_load(compose_file.read_text())
    out.mkdir(mode=0o700, parents=True, exist_ok=True)
    out.chmod(0o700)
    bus_env, wrote = nats_users.write_bus(out, compose, rotate)
    platform = nats_users.platform_containers(compose)
    stored = nats_users.read_passwords(out / mongo_users.PASSWORDS)
    passwords, database_files = mongo_users.files(out, stored, rotate)
    for name, content in sorted(database_files.items()):
        nats_users.write_private(out / name, content, 0o644 if name in PUBLIC else 0o600)
        wrote.append(f"{out / name}")
    mongo_env = mongo_users.container_env(platform, passwords)
    for container in sorted(set(bus_env) | set(mongo_env)):
        env = bus_env.get(container, {}) | mongo_env.get(container, {})
        users = [f"NATS user {nats_users.bus_containers(compose)[container]}"] if container in bus_env else []
        users += [f"MongoDB user {platform[container]}"] if container in mongo_env else []
        text = mongo_users.env_text(env, f"{container}'s own credentials: {', '.join(users)}")
        nats_users.write_private(out / f"{container}.env", text)
        wrote.append(f"{out / container}.env: {', '.join(users)}")
    # Files of containers no longer in compose.yaml hold passwords nobody uses any more.
    keep = {f"{c}.env" for c in [*bus_env, *mongo_env]} | {"mongo.env", "mongo-users.env"}
    for stale in out.glob("*.env"):
        if stale.name not in keep:
            stale.unlink()
            wrote.append(f"{stale}: removed (no such container)")
    return wrote


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=OUT, help="where to write (default: deploy/compose/bus)")
    parser.add_argument("--compose-file", type=Path, default=COMPOSE_FILE)
    parser.add_argument("--rotate", action="store_true", help="new passwords for every user")
    args = parser.parse_args(argv)
    for line in generate(args.out, args.compose_file, args.rotate):
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
