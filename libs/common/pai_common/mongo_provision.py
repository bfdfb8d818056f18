"""Creates, or brings up to date, one MongoDB user per platform service: ``readWrite`` on its own database
``pai_<service>`` and nothing else. The Compose deployment runs it as a one-shot container before the
services start, on every ``docker compose up`` (``python -m pai_common.mongo_provision``); its settings come
from the environment (deploy/compose/mongo_users.py writes them into ``bus/mongo-users.env``):

    PAI_MONGO_PROVISION_URL        the server, without credentials (TLS options included)
    PAI_MONGO_ROOT_USER            the administrator, in the ``admin`` database
    PAI_MONGO_ROOT_PASSWORD        its password; when the server refuses it,
    PAI_MONGO_ROOT_PASSWORD_PREVIOUS   (optional) is tried, and the root's password then set to the first
    PAI_MONGO_PASSWORD_<SERVICE>   each service's password, one variable per service

Safe to run again: a user that exists gets the given password and role (a rotation takes effect), one
that does not is created. Passwords are never printed; a failure names the user and the server's error.

The Kubernetes deployment does the same with mongosh (deploy/k8s/base/mongo/replicaset-init-job.yaml).
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pymongo import MongoClient
from pymongo.errors import OperationFailure, PyMongoError

# The error mongod (and SecantusDB) answers to createUser for a user that exists.
USER_EXISTS = 51003
AUTHENTICATION_FAILED = 18
PASSWORD_PREFIX = "PAI_MONGO_PASSWORD_"


class ProvisionError(RuntimeError):
    """The users could not be brought up to date; the message says which and why (no secret)."""


@dataclass(frozen=True)
class Plan:
    url: str
    root_user: str
    root_password: str
    root_previous: str | None
    passwords: Mapping[str, str]  # service -> password


def database(service: str) -> str:
    return f"pai_{service}"


def roles(service: str) -> list[dict[str, str]]:
    return [{"role": "readWrite", "db": database(service)}]


def plan_from_env(env: Mapping[str, str]) -> Plan:
    missing = [
        k
        for k in ("PAI_MONGO_PROVISION_URL", "PAI_MONGO_ROOT_USER", "PAI_MONGO_ROOT_PASSWORD")
        if not env.get(k)
    ]
    if missing:
        raise ProvisionError(f"not set: {', '.join(missing)} (deploy/compose/mongo_users.py writes them)")
    passwords = {
        k.removeprefix(PASSWORD_PREFIX).lower(): v for k, v in env.items() if k.startswith(PASSWORD_PREFIX)
    }
    if not passwords:
        raise ProvisionError(f"no {PASSWORD_PREFIX}<SERVICE> variable: no user to provision")
    empty = sorted(s for s, p in passwords.items() if not p)
    if empty:
        raise ProvisionError(f"empty password for {', '.join(empty)}")
    return Plan(
        url=env["PAI_MONGO_PROVISION_URL"],
        root_user=env["PAI_MONGO_ROOT_USER"],
        root_password=env["PAI_MONGO_ROOT_PASSWORD"],
        root_previous=env.get("PAI_MONGO_ROOT_PASSWORD_PREVIOUS") or None,
        passwords=passwords,
    )


def _client(url: str, user: str, password: str, timeout_s: float) -> MongoClient[dict[str, Any]]:
    return MongoClient(
        url,
        username=user,
        password=password,
        authSource="admin",
        serverSelectionTimeoutMS=int(timeout_s * 1000),
    )


def _root_client(plan: Plan, timeout_s: float) -> tuple[MongoClient[dict[str, Any]], bool]:
    """A client logged in as the administrator, and whether it took the previous password."""
    candidates = [plan.root_password] + ([plan.root_previous] if plan.root_previous else [])
    for i, password in enumerate(candidates):
        client = _client(plan.url, plan.root_user, password, timeout_s)
        try:
            client.admin.command("ping")  # the driver logs in on the connection it opens for it
            return client, i > 0
        except OperationFailure as exc:
            client.close()
            if exc.code != AUTHENTICATION_FAILED:
                raise
    raise ProvisionError(
        f"the server refused {plan.root_user}'s password"
        + (" (the current and the previous one)" if plan.root_previous else "")
        + ": is this a data volume from before the rotation's previous password?"
    )


def _create_or_update(client: MongoClient[dict[str, Any]], service: str, password: str) -> str:
    db = client[database(service)]
    try:
        db.command("createUser", service, pwd=password, roles=roles(service))
        return "created"
    except OperationFailure as exc:
        if exc.code != USER_EXISTS:
            raise
    db.command("updateUser", service, pwd=password, roles=roles(service))
    return "updated"


def provision(plan: Plan, timeout_s: float = 30.0) -> list[str]:
    """Brings every user up to date; returns one line per user for the log (no secret)."""
    client, took_previous = _root_client(plan, timeout_s)
    done = []
    try:
        if took_previous:
            client.admin.command("updateUser", plan.root_user, pwd=plan.root_password)
            done.append(f"{plan.root_user}: password rotated")
        for service, password in sorted(plan.passwords.items()):
            try:
                how = _create_or_update(client, service, password)
            except OperationFailure as exc:
                raise ProvisionError(
                    f"user {service}: {exc.details.get('errmsg') if exc.details else exc}"
                ) from exc
            done.append(f"user {service} ({how}) may read and write {database(service)} only")
    finally:
        client.close()
    return done


def main(env: Mapping[str, str] | None = None, attempts: int = 20, pause_s: float = 3.0) -> int:
    """Retries while the server is not reachable yet (a primary being elected); a refused login or a bad
    setting fails at once."""
    try:
        plan = plan_from_env(os.environ if env is None else env)
    except ProvisionError as exc:
        print(f"mongo_provision: {exc}", file=sys.stderr)
        return 2
    for attempt in range(1, attempts + 1):
        try:
            for line in provision(plan):
                print(line)
            return 0
        except ProvisionError as exc:
            print(f"mongo_provision: {exc}", file=sys.stderr)
            return 1
        except PyMongoError as exc:
            # The error names the server and the failure, never a password (the URL carries none).
            print(
                f"mongo_provision: attempt {attempt}/{attempts}: {type(exc).__name__}: {exc}", file=sys.stderr
            )
            if attempt < attempts:
                time.sleep(pause_s)
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
