"""Which storages a submitted job asks for, and the paths its commands see. Pure: no I/O.

OpenPAI's two ways: ``extras.storages: [{name, mountPath?}]`` and, deprecated, the ``teamwise_storage``
runtime plugin (``parameters.storageConfigNames: [...]``). A job naming none mounts its user's default
storages (``None`` here). A ``data`` or ``output`` prerequisite whose URI points into a storage
(``storage://<name>/<path>``) mounts that storage too, and the commands see the path inside the task
where they use the URI (``$data``, ``$output``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

from pai_common.contract.types import JobSpec, StorageMount
from pai_common.errors import InvalidProtocolError

PLUGIN_EXTRA: Final = "com.microsoft.pai.runtimeplugin"
TEAMWISE: Final = "teamwise_storage"
STORAGE_URI: Final = re.compile(r"storage://([A-Za-z0-9][A-Za-z0-9_.-]{0,62})(?=[/\s'\"]|$)")


def _plugin_name(entry: Mapping[str, Any]) -> str:
    name = str(entry.get("plugin", ""))
    return name.rsplit(".", 1)[-1] if name.startswith(PLUGIN_EXTRA + ".") else name


def requested(doc: Mapping[str, Any]) -> list[dict[str, Any]] | None:
    """The storages the job names (``[{name, mountPath?}]``), or None when it names none."""
    extras = doc.get("extras")
    if not isinstance(extras, Mapping):
        return None
    storages = extras.get("storages")
    if isinstance(storages, list) and storages:
        # The protocol schema has checked the shape of each entry.
        return [{k: v for k, v in s.items() if k in ("name", "mountPath")} for s in storages]
    names: list[str] = []
    plugins = extras.get(PLUGIN_EXTRA)
    for i, entry in enumerate(plugins if isinstance(plugins, list) else []):
        if not isinstance(entry, Mapping) or _plugin_name(entry) != TEAMWISE:
            continue
        where = f"extras.{PLUGIN_EXTRA}[{i}].parameters.storageConfigNames"
        configs = (entry.get("parameters") or {}).get("storageConfigNames", [])
        if not isinstance(configs, list) or not all(isinstance(c, str) and c for c in configs):
            raise InvalidProtocolError(
                json.dumps([{"field": where, "message": "must be a list of storage names"}])
            )
        for config in configs:
            if config not in names:
                names.append(config)
    return [{"name": n} for n in names] or None


def referenced(doc: Mapping[str, Any]) -> list[str]:
    """Storages that data and output prerequisites point into, in the order they appear."""
    found: list[str] = []
    for prerequisite in doc.get("prerequisites") or []:
        if not isinstance(prerequisite, Mapping) or prerequisite.get("type") not in ("data", "output"):
            continue
        uris = prerequisite.get("uri")
        for uri in uris if isinstance(uris, list) else [uris]:
            for match in STORAGE_URI.finditer(str(uri)):
                if match.group(1) not in found:
                    found.append(match.group(1))
    return found


def with_mounts(spec: JobSpec, mounts: list[StorageMount]) -> JobSpec:
    """The spec with its mounts, and ``storage://<name>`` in its commands replaced by the mount path."""
    paths = {m.name: m.mount_path.rstrip("/") for m in mounts}

    def inside(text: str) -> str:
        return STORAGE_URI.sub(lambda m: paths.get(m.group(1), m.group(0)), text)

    roles = [r.model_copy(update={"entrypoint": inside(r.entrypoint)}) for r in spec.task_roles]
    return spec.model_copy(update={"storages": mounts, "task_roles": roles})
