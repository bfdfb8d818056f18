"""Who may mount what, and what a job mounts. Pure: no I/O.

A storage is granted through OpenPAI's group ACL: a user may use the storages named in the
``acls.storageConfigs`` of any of their groups (kept by the auth service, which answers with the union).
Admins may use every storage. A user's default storages are the granted ones defined ``default``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from pai_common.contract.types import StorageMount
from pai_common.errors import ForbiddenUserError, InvalidParametersError, NoStorageError
from pai_storage.definitions import mount, mount_path_problem


def visible(
    storages: Iterable[Mapping[str, Any]], admin: bool, storage_configs: Iterable[str]
) -> list[Mapping[str, Any]]:
    granted = set(storage_configs)
    return [s for s in storages if admin or s["_id"] in granted]


def check_access(
    name: str, doc: Mapping[str, Any] | None, username: str, admin: bool, configs: Iterable[str]
) -> Mapping[str, Any]:
    """The storage ``name`` for this user: NoStorageError if it does not exist, ForbiddenUserError if no
    group of the user grants it."""
    if doc is None:
        raise NoStorageError(f"Storage {name} is not found.")
    if not admin and name not in set(configs):
        raise ForbiddenUserError(f"User {username} is not allowed to access {name}.")
    return doc


def resolve(
    storages: Mapping[str, Mapping[str, Any]],
    username: str,
    admin: bool,
    configs: Sequence[str],
    requests: Sequence[Mapping[str, Any]] | None,
    referenced: Sequence[str] = (),
) -> list[StorageMount]:
    """What a job's tasks mount: each storage the job names (``[{name, mountPath?}]``) or, when it names
    none (``None``), the user's default storages, each at /mnt/<name> unless a mountPath is given; and the
    storages its prerequisites point into (``referenced``), at /mnt/<name> where not named already."""
    if requests is None:
        defaults = [d for d in visible(storages.values(), admin, configs) if d.get("default")]
        requests = [{"name": d["_id"]} for d in sorted(defaults, key=lambda d: str(d["_id"]))]
    named = {r.get("name") for r in requests}
    requests = [*requests, *({"name": n} for n in dict.fromkeys(referenced) if n not in named)]
    problems: list[str] = []
    mounts: list[StorageMount] = []
    names: set[str] = set()
    paths: set[str] = set()
    for i, request in enumerate(requests):
        name = request.get("name")
        if not isinstance(name, str) or not name:
            problems.append(f"extras.storages[{i}].name: must be a storage name")
            continue
        if name in names:
            problems.append(f"extras.storages[{i}]: storage {name} is named twice")
            continue
        names.add(name)
        doc = check_access(name, storages.get(name), username, admin, configs)
        path = request.get("mountPath")
        if path is not None and (problem := mount_path_problem(path)):
            problems.append(f"extras.storages[{i}].mountPath: {problem}")
            continue
        task_mount = mount(doc, username, path)
        if task_mount.mount_path in paths:
            problems.append(f"extras.storages[{i}].mountPath: {task_mount.mount_path} is mounted twice")
            continue
        paths.add(task_mount.mount_path)
        mounts.append(task_mount)
    if problems:
        raise InvalidParametersError("; ".join(problems))
    return mounts
