"""Persistence: the whole dynamic state as JSON values (``snapshot``) and the allocator rebuilt from them on
the same config (``restore``; the round trip is exact, and an inconsistent snapshot raises ValueError)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Self

from pai_scheduler.hived.cells import MILLI_PER_LEAF, UNTOUCHABLE_PRIORITY, Cell
from pai_scheduler.hived.config import ClusterConfig
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.mix import RequestMix
from pai_scheduler.hived.requests import request_from_dict, request_to_dict
from pai_scheduler.hived.state import PROTECT_HEAD_AFTER_S

SNAPSHOT_VERSION = 1


class Persistence(RequestMix):
    def snapshot(self) -> dict[str, Any]:
        """The whole dynamic state as JSON values; the config is not included (restore takes it)."""
        bindings = sorted(
            (cell for vc in self.quota.vcs for cells in self.quota.bound[vc].values() for cell in cells),
            key=lambda c: c.order,
        )
        return {
            "version": SNAPSHOT_VERSION,
            "next_seq": self._next_seq,
            **({"next_start": self._next_start} if self._next_start else {}),
            "bad_nodes": sorted(self.cluster.bad_nodes),
            **(
                {"bad_leaves": [list(x) for x in sorted(self.cluster.bad_leaves)]}
                if self.cluster.bad_leaves
                else {}
            ),
            "bindings": [{"cell": c.id, "vc": c.bound_vc} for c in bindings],
            **({"doomed": sorted(c.id for c in self._doomed)} if self._doomed else {}),
            "groups": [
                {
                    "request": request_to_dict(g.request),
                    "seq": g.seq,
                    "state": g.state.value,
                    "chain": g.chain,
                    "placement": [
                        {
                            "role": role,
                            "index": index,
                            "node": leaves[0].node_name,
                            "leaves": [leaf.leaf_index for leaf in leaves],
                            **self._share_fields(g, role, leaves),
                        }
                        for role, index, leaves in g.slots
                    ],
                    "victims": sorted(g.victims),
                    **({"downgraded": True} if g.downgraded else {}),
                    **({"borrowed": True} if g.borrowed else {}),
                    **({"since": g.since} if g.since is not None else {}),
                    **({"held_by": g.held_by} if g.held_by is not None else {}),
                    **({"started": g.started} if g.started >= 0 else {}),
                }
                for g in sorted(self._groups.values(), key=lambda g: g.seq)
            ],
            **({"now": self._now} if self._now is not None else {}),
            **({"mix": self._mix_snapshot(), "mix_total": self._mix_total} if self._mix else {}),
            **(
                {
                    "holds": [
                        {
                            "vc": vc,
                            "head": head,
                            "leaves": [
                                [x.chain, x.node_name, x.leaf_index]
                                for x in sorted(leaves, key=lambda x: x.order)
                            ],
                        }
                        for vc, (head, leaves) in sorted(self._holds.items())
                    ]
                }
                if self._holds
                else {}
            ),
        }

    @staticmethod
    def _share_fields(g: Gang, role: str, leaves: tuple[Cell, ...]) -> dict[str, Any]:
        share = g.shares.get(role)
        if share is None:
            return {}
        return {"milli": share[0], "memory_mb": share[1], "reserved": leaves[0].reserver == g.request.key}

    @classmethod
    def restore(
        cls,
        config: ClusterConfig,
        snap: Mapping[str, Any],
        protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S,
        *,
        mix_aware: bool = True,
    ) -> Self:
        """Rebuild the allocator that produced ``snap`` on ``config``; ValueError if it is inconsistent."""
        if snap.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"unsupported HiveD snapshot version {snap.get('version')!r}")
        a = cls(config, protect_head_after_s, mix_aware=mix_aware)
        a._restore_mix(snap.get("mix", ()), snap.get("mix_total"))
        a._next_seq = int(snap["next_seq"])
        a._next_start = int(snap.get("next_start", 0))
        a._now = None if snap.get("now") is None else float(snap["now"])
        for node in snap["bad_nodes"]:
            a.cluster.set_node_health(str(node), False)
        for node, index in snap.get("bad_leaves", ()):
            try:
                a.cluster.set_leaf_health(str(node), int(index), False)
            except KeyError as e:
                raise ValueError(f"snapshot marks leaf {node}/{index} bad, which this config lacks") from e
        reserved_shares: dict[str, set[int]] = {}  # gang -> its share slots that reserve their leaf
        try:
            for b in snap["bindings"]:
                a.quota.bind(a.cluster.cells[str(b["cell"])], str(b["vc"]))
            for gd in snap["groups"]:
                req = request_from_dict(gd["request"])
                if req.key in a._groups:
                    raise ValueError(f"gang {req.key} appears twice")
                g = Gang(req, int(gd["seq"]), GroupState(gd["state"]), gd["chain"])
                g.downgraded = bool(gd.get("downgraded", False))
                g.borrowed = bool(gd.get("borrowed", False))
                g.since = None if gd.get("since") is None else float(gd["since"])
                g.held_by = None if gd.get("held_by") is None else str(gd["held_by"])
                g.started = int(gd.get("started", -1))
                reserved_shares[req.key] = set()
                for p in gd["placement"]:
                    leaves = tuple(
                        a.cluster.leaf_at[(str(gd["chain"]), str(p["node"]), int(i))] for i in p["leaves"]
                    )
                    share = g.shares.get(str(p["role"]))
                    if share is not None:
                        if len(leaves) != 1 or [p.get("milli"), p.get("memory_mb")] != list(share):
                            raise ValueError(f"gang {req.key}: share placement disagrees with its request")
                        if p.get("reserved"):
                            reserved_shares[req.key].add(len(g.slots))
                    g.slots.append((str(p["role"]), int(p["index"]), leaves))
                g.victims = {str(v) for v in gd["victims"]}
                a._groups[req.key] = g
                if g.state is GroupState.PENDING:
                    a._pending.add(g)
                if g.state in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED):
                    a._restore_holdings(g, g.priority, set())
            for g in a._groups.values():
                if g.state is not GroupState.PREEMPTING:
                    continue
                reserved = {i for i, (role, _, _) in enumerate(g.slots) if role not in g.shares}
                a._restore_holdings(g, UNTOUCHABLE_PRIORITY, reserved | reserved_shares[g.request.key])
                for v in g.victims:
                    a._groups[v].preemptors.add(g.request.key)
            for h in snap.get("holds", ()):
                head = a._groups[str(h["head"])]
                if head.state is not GroupState.PENDING or head.request.vc != str(h["vc"]):
                    raise ValueError(f"hold for {h['head']} in VC {h['vc']} does not match a queued head")
                a._holds[str(h["vc"])] = (
                    head.request.key,
                    frozenset(a.cluster.leaf_at[(str(c), str(n), int(i))] for c, n, i in h["leaves"]),
                )
        except KeyError as e:
            raise ValueError(f"snapshot refers to something this config lacks: {e}") from e
        for cid in snap.get("doomed", ()):
            cell = a.cluster.cells.get(str(cid))
            if cell is None or cell.bound_vc is None or cell.healthy:
                raise ValueError(f"doomed cell {cid} is unknown, not bound or not bad")
            a._doomed.add(cell)
        for vc in a.quota.vcs:
            for cells in a.quota.bound[vc].values():
                for cell in cells:
                    if cell.n_guaranteed == 0 and cell not in a._doomed:
                        raise ValueError(f"cell {cell.id} is bound to VC {vc} but holds none of its work")
        a._recount_borrowed()
        return a

    def _restore_holdings(self, g: Gang, share_priority: int, reserved: set[int]) -> None:
        """Put a restored gang's leaves back: the slots in ``reserved`` reserve their leaves, share slots
        hold their share, whole-leaf slots own their leaves."""
        key = g.request.key
        assert g.chain is not None
        memory = self.cluster.leaf_memory_mb[g.chain]
        for i, (role, _, leaves) in enumerate(g.slots):
            share = g.shares.get(role)
            for leaf in leaves:
                if i in reserved:
                    if leaf.reserver is not None:
                        raise ValueError(f"leaf {leaf.id} is reserved by {leaf.reserver} and {key}")
                    self.cluster.set_leaf(leaf, leaf.owner, leaf.owner_priority, key)
                elif share is not None:
                    if leaf.owner is not None:
                        raise ValueError(f"leaf {leaf.id} is used by {leaf.owner} and shared by {key}")
                    if leaf.share_milli + share[0] > MILLI_PER_LEAF or leaf.share_memory + share[1] > memory:
                        raise ValueError(f"leaf {leaf.id}: its shares exceed the device")
                    self.cluster.add_share(leaf, key, share[0], share[1], share_priority)
                else:
                    if leaf.owner is not None or leaf.shares:
                        who = leaf.owner or ", ".join(sorted(leaf.shares))
                        raise ValueError(f"leaf {leaf.id} is used by {who} and {key}")
                    self.cluster.set_leaf(leaf, key, g.priority, None)
