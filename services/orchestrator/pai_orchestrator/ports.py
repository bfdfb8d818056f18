"""Host ports for the tasks of a placed gang.

Tasks run with the host's network (local processes, and Kubernetes pods with hostNetwork), so each task's
ports must be free on its node and known to every peer before any of them starts. Like OpenPAI the choice
is a hash of who asks (so a replayed event picks the same ports), but unlike OpenPAI it never gives one
port twice on a node within the gang, and it includes the attempt so that a retry after a port clash
with something outside the platform lands elsewhere. Like OpenPAI every task gets one ``ssh`` and one
``http`` port even when the job asks for none: the ssh plugin and the host lists use them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from pai_common.contract.types import JobSpec, Placement

# OpenPAI draws from [15000, 40000); that overlaps Linux's default ephemeral range (32768-60999), where
# every outgoing connection on the node takes a port, so a task would now and then find its port taken.
PORT_RANGE = (15000, 32768)
# Labels every task gets (at least one port each), as OpenPAI's port-scheduling spec always adds them.
ALWAYS = {"ssh": 1, "http": 1}


def _candidate(key: str) -> int:
    digest = int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "big")
    low, high = PORT_RANGE
    return low + digest % (high - low)


def assign_ports(
    job_key: str,
    attempt_id: int,
    spec: JobSpec,
    gang: list[Placement],
    placed_before: Sequence[Placement] = (),
) -> list[Placement]:
    """The gang's placements with ``ports`` filled in from each role's ``ports`` request. ``placed_before``:
    tasks of the attempt placed earlier (pods placed one by one), whose ports stay theirs."""
    wanted = {r.name: {**ALWAYS, **r.ports} for r in spec.task_roles}
    taken: dict[str, set[int]] = {}
    for p in placed_before:
        taken.setdefault(p.host_ip or p.node, set()).update(
            port for ports in p.ports.values() for port in ports
        )
    placed: list[Placement] = []
    low, high = PORT_RANGE
    for p in sorted(gang, key=lambda p: (p.task_role, p.index)):
        # Keyed by address: simulated nodes of the embedded platform share one host and its ports.
        on_node = taken.setdefault(p.host_ip or p.node, set())
        ports: dict[str, list[int]] = {}
        for label, count in sorted(wanted.get(p.task_role, {}).items()):
            chosen: list[int] = []
            for i in range(count):
                port = _candidate(f"{job_key}|{attempt_id}|{p.task_role}|{p.index}|{label}|{i}")
                if len(on_node) >= high - low:
                    raise ValueError(f"node {p.node} has no free port left in {PORT_RANGE} for this gang")
                while port in on_node:  # linear probing within the range
                    port = low + (port + 1 - low) % (high - low)
                on_node.add(port)
                chosen.append(port)
            ports[label] = chosen
        placed.append(p.model_copy(update={"ports": ports}))
    return placed
