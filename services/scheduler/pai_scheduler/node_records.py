"""Every node of the cluster as one record (resources, address, health), for OpenPAI's node list (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any


def node_records(
    configured: Iterable[str],
    registrations: Mapping[str, Mapping[str, Any]],
    bad_nodes: set[str],
    bad_gpus: Mapping[str, set[int]],
) -> list[dict[str, Any]]:
    """The nodes the cluster config names and those that registered, by name.

    `registrations` holds each registered node's `node.registered` body. A configured node that never
    registered is reported unregistered (and unhealthy: nothing is placed there); a registered node the
    config does not name is reported too, since its agent runs, though nothing is placed there either.
    """
    out = []
    names = set(configured)
    for name in sorted(names | set(registrations)):
        reg = registrations.get(name)
        bad = sorted(bad_gpus.get(name, set()))
        gpus = [
            {
                "index": g.get("index"),
                "model": g.get("model", ""),
                "memory_mb": g.get("memory_mb", 0),
                "healthy": bool(g.get("healthy", True)) and g.get("index") not in bad,
            }
            for g in (reg or {}).get("gpus", [])
        ]
        out.append(
            {
                "name": name,
                "registered": reg is not None,
                "configured": name in names,
                "host_ip": (reg or {}).get("host_ip", ""),
                "cpu": int((reg or {}).get("cpu", 0)),
                "memory_mb": int((reg or {}).get("memory_mb", 0)),
                "gpus": gpus,
                "simulated": bool((reg or {}).get("simulated", False)),
                "healthy": reg is not None and name in names and name not in bad_nodes,
                "bad_gpus": bad,
            }
        )
    return out
