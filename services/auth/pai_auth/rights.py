"""What a user may do, derived from their groups, and what others may see of them. Pure: no I/O.

A user's rights are the union of their groups' ACLs (``extension.acls``): ``admin`` (any group with it
makes the user an admin), ``virtualClusters`` (the VCs they may submit to) and ``storageConfigs`` (the
storages they may mount). Admins may use every VC and every storage.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from pai_common.errors import InvalidParametersError

ADMIN_GROUP = "admingroup"
DEFAULT_GROUP = "default"
BUILT_IN_GROUPS = (ADMIN_GROUP, DEFAULT_GROUP)
# Shown instead of a secret the reader may not see.
MASK = "******"
# Extension keys whose values only the user themself may read: the private half of the job SSH key pair
# (OpenPAI hands it to every logged-in user; here nobody else, not even an admin, reads it).
PRIVATE_EXTENSION_PATHS: tuple[tuple[str, ...], ...] = (("jobSSH", "key"),)
MAX_EXTENSION_BYTES = 64 * 1024


@dataclass(frozen=True)
class Rights:
    admin: bool
    virtual_clusters: tuple[str, ...]
    storage_configs: tuple[str, ...]

    def may_use_vc(self, vc: str) -> bool:
        return self.admin or vc in self.virtual_clusters

    def may_use_storage(self, storage: str) -> bool:
        return self.admin or storage in self.storage_configs


def acls_of(group: Mapping[str, Any]) -> dict[str, Any]:
    acls = (group.get("extension") or {}).get("acls") or {}
    return dict(acls) if isinstance(acls, Mapping) else {}


def rights_of(grouplist: Iterable[str], groups: Mapping[str, Mapping[str, Any]]) -> Rights:
    """The rights a grouplist carries; groups that no longer exist carry nothing."""
    admin = False
    vcs: set[str] = set()
    storages: set[str] = set()
    for name in grouplist:
        group = groups.get(name)
        if group is None:
            continue
        acls = acls_of(group)
        admin = admin or bool(acls.get("admin"))
        vcs.update(str(v) for v in acls.get("virtualClusters") or [])
        storages.update(str(s) for s in acls.get("storageConfigs") or [])
    return Rights(admin, tuple(sorted(vcs)), tuple(sorted(storages)))


def normalize_acls(extension: Mapping[str, Any]) -> dict[str, Any]:
    """A group extension with well-formed ACLs, or a precise error about what is wrong."""
    out = dict(extension)
    raw = out.get("acls", {})
    if not isinstance(raw, Mapping):
        raise InvalidParametersError("extension.acls must be an object")
    acls: dict[str, Any] = dict(raw)
    if "admin" in acls and not isinstance(acls["admin"], bool):
        raise InvalidParametersError("extension.acls.admin must be true or false")
    for key in ("virtualClusters", "storageConfigs"):
        value = acls.get(key, [])
        if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
            raise InvalidParametersError(f"extension.acls.{key} must be a list of names")
        acls[key] = sorted(set(value))
    acls["admin"] = bool(acls.get("admin", False))
    out["acls"] = acls
    return out


def merge(base: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """``patch`` laid over ``base`` recursively (objects merge, everything else replaces)."""
    out = copy.deepcopy(dict(base))
    for key, value in patch.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def check_extension_size(extension: Mapping[str, Any]) -> None:
    if len(json.dumps(extension, default=str)) > MAX_EXTENSION_BYTES:
        raise InvalidParametersError(f"extension exceeds {MAX_EXTENSION_BYTES} bytes")


def mask_private(extension: Mapping[str, Any]) -> dict[str, Any]:
    """The extension as someone other than its owner sees it."""
    out = copy.deepcopy(dict(extension))
    for path in PRIVATE_EXTENSION_PATHS:
        node: Any = out
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict) and path[-1] in node:
            node[path[-1]] = MASK
    return out


def user_view(
    user: Mapping[str, Any], groups: Mapping[str, Mapping[str, Any]], reader: str
) -> dict[str, Any]:
    """OpenPAI's user shape, without the password hash, private extension values only to the user."""
    rights = rights_of(user.get("grouplist", []), groups)
    extension = user.get("extension") or {}
    if reader != user["_id"]:
        extension = mask_private(extension)
    all_vcs = sorted({v for g in groups.values() for v in acls_of(g).get("virtualClusters") or []})
    return {
        "username": user["_id"],
        "grouplist": list(user.get("grouplist", [])),
        "email": user.get("email", ""),
        "extension": copy.deepcopy(dict(extension)),
        "admin": rights.admin,
        # OpenPAI lists every VC for an admin.
        "virtualCluster": all_vcs if rights.admin else list(rights.virtual_clusters),
        "storageConfig": list(rights.storage_configs),
    }


def group_view(group: Mapping[str, Any]) -> dict[str, Any]:
    return {
        "groupname": group["_id"],
        "description": group.get("description", ""),
        "externalName": group.get("externalName", ""),
        "extension": copy.deepcopy(dict(group.get("extension") or {})),
    }


def grouplist_for(admin: bool, virtual_clusters: Iterable[str]) -> list[str]:
    """OpenPAI's basic-mode mapping of ``admin`` and ``virtualCluster`` to groups of the same names."""
    groups = [DEFAULT_GROUP, *(vc for vc in virtual_clusters if vc != DEFAULT_GROUP)]
    if admin:
        groups.append(ADMIN_GROUP)
    return list(dict.fromkeys(groups))
