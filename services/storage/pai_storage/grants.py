"""Which storages a user may mount. Pure: no I/O.

A storage is granted by either side: the storage's own ``groups`` (kept by this service) or a group's
``acls.storageConfigs`` (kept by the auth service and read through its ``auth.authorize`` RPC). Admins
see every storage.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def visible(
    storages: Iterable[Mapping[str, Any]], admin: bool, groups: Iterable[str], storage_configs: Iterable[str]
) -> list[Mapping[str, Any]]:
    member_of = set(groups)
    granted = set(storage_configs)
    return [
        s for s in storages if admin or s["_id"] in granted or member_of.intersection(s.get("groups") or [])
    ]
