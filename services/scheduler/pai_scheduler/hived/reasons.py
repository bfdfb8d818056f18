"""What the allocator says about a gang: its current decision, and for a waiting gang why it waits (its VC's
cells per chain, bound and unbound, bad hardware, InfiniBand, backfill holds) and its place in its VC's
queue."""

from __future__ import annotations

from pai_scheduler.hived.admission import Admission
from pai_scheduler.hived.cells import MILLI_PER_LEAF, Cell
from pai_scheduler.hived.decisions import Allocated, Decision, Preempting, Queued
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.regions import Regions
from pai_scheduler.hived.requests import GangRequest
from pai_scheduler.hived.state import leaf_names


class Reasons(Regions, Admission):
    def _current(self, g: Gang) -> Decision:
        if g.state is GroupState.PENDING:
            return self._queued(g)
        if g.state is GroupState.PREEMPTING:
            victims = tuple(sorted(g.victims))
            return Preempting(g.request.key, victims, self._placements(g), self._reclaim_grace(victims))
        return Allocated(g.request.key, self._placements(g))

    def _queued(self, g: Gang) -> Queued:
        req = g.request
        position = self._pending.position(g)
        held = ""
        head = self._groups.get(g.held_by) if g.held_by is not None else None
        if head is not None and head.state is GroupState.PENDING:
            held = (
                f"; held back so that {head.request.key} can start (backfill protection: it has waited"
                f" over {self.protect_head_after_s:g} s at the head of VC {req.vc}'s queue, and gangs"
                " behind it may not take the leaves it needs)"
            )
        spec = self._vc_specs.get(req.vc)
        if req.guaranteed and spec is not None and spec.borrowing_limit > 0:
            borrowed = self._borrowed_milli.get(req.vc, 0) / MILLI_PER_LEAF
            held += (
                f"; borrowing: {borrowed:g} of its {spec.borrowing_limit:g} GPUs limit in use (it borrows"
                " idle cells of other VCs when they can hold it within the limit)"
            )
        cause = f"{self._why(req)}{held}"
        return Queued(req.key, f"{cause} (position {position} in VC {req.vc}'s queue)", position, cause)

    def _vc_cells_text(self, vc: str, chain: str) -> str:
        version = (self.cluster.chain_version[chain], self.quota.chain_binding_version[chain])
        cached = self._cells_text_cache.get((vc, chain))
        if cached is not None and cached[0] == version:
            return cached[1]
        text = self._compute_vc_cells_text(vc, chain)
        self._cells_text_cache[(vc, chain)] = (version, text)
        return text

    def _compute_vc_cells_text(self, vc: str, chain: str) -> str:
        """What the VC's cells in the chain offer now: free leaves of its bound cells on healthy nodes (and
        the most on one node), then its unbound quota per level with how many free healthy cells of that
        level could take it (a cell of a higher free one counts: it can be split)."""
        spec = self.cluster.chains[chain]
        free_per_node: dict[Cell, int] = {}
        for cell in self.quota.bound_cells(vc, chain):
            if cell.pinned_id is not None:
                continue
            for node, counter, leaves in self._regions_of(cell):
                if node.n_bad_nodes:
                    continue
                n = counter.n_free if counter is not None else sum(1 for x in leaves if x.n_free)
                free_per_node[node] = free_per_node.get(node, 0) + n
        free = sum(free_per_node.values())
        text = (
            f"its bound cells have {free} free leaves (at most {max(free_per_node.values(), default=0)}"
            " on one node)"
        )
        unbound = []
        for (c, level), _ in sorted(self.quota.quota[vc].items(), key=lambda kv: -kv[0][1]):
            n = self.quota.unbound(vc, (c, level))
            if c != chain or n <= 0:
                continue
            healthy = sum(
                len(self.quota.free_descendants(level, [f]))
                for upper in range(level, spec.top_level + 1)
                for f in self.quota.free[(chain, upper)]
                if f.healthy
            )
            unbound.append(
                f"{n} {spec.types[level - 1]} (level {level}, {spec.leaves_per_cell(level)} leaves each;"
                f" {healthy} free healthy such cells)"
            )
        doomed = sum(1 for c in self._doomed if c.bound_vc == vc and c.chain == chain)
        if doomed:
            text += f", {doomed} of them doomed (bound to bad hardware)"
        return f"{text}, unbound quota: {', '.join(unbound) if unbound else 'none'}"

    def _why(self, req: GangRequest) -> str:
        key = (req.vc, req.guaranteed, req.members, req.leaf_types, req.pinned_cell, req.infiniband)
        version = self._version()
        cached = self._why_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        text = self._compute_why(req)
        if len(self._why_cache) >= 10_000:
            self._why_cache.clear()
        self._why_cache[key] = (version, text)
        return text

    def _compute_why(self, req: GangRequest) -> str:
        chains = self._chains_for(req)
        parts = [self._why_in(req, chain, len(chains) > 1) for chain in chains]
        if req.guaranteed:
            return f"VC {req.vc}: " + "; ".join(parts)
        return "opportunistic (idle cells of any VC): " + "; ".join(parts)

    def _why_in(self, req: GangRequest, chain: str, several: bool) -> str:
        """The part of the reason about one chain, cached per chain state: a change in one chain leaves the
        other chains' parts as they were."""
        key = (req.vc, req.guaranteed, req.members, req.pinned_cell, req.infiniband, chain, several)
        version = (
            self.cluster.chain_version[chain],
            self.quota.chain_binding_version[chain],
            len(self.cluster.bad_nodes),
            len(self.cluster.bad_leaves),
        )
        cached = self._why_in_cache.get(key)
        if cached is not None and cached[0] == version:
            return cached[1]
        text = self._compute_why_in(req, chain, several)
        if len(self._why_in_cache) >= 10_000:
            self._why_in_cache.clear()
        self._why_in_cache[key] = (version, text)
        return text

    def _compute_why_in(self, req: GangRequest, chain: str, several: bool) -> str:
        spec = self.cluster.chains[chain]
        sizes = [k for _, _, k in self._pods(req, chain)]
        shapes = "/".join(str(s) for s in sorted(set(sizes), reverse=True))
        need = (
            f"needs {sizes[0]} on one node"
            if len(sizes) == 1
            else f"needs {len(sizes)} pods of {shapes} (each pod on one node)"
        )
        where = f" in chain {chain}" if several else ""
        bad = sum(1 for n in self.cluster.bad_nodes if any(c.chain == chain for c in self.cluster.nodes[n]))
        bad_text = f"; {bad} bad node(s)" if bad else ""
        bad_leaves = [
            x
            for node, i in sorted(self.cluster.bad_leaves)
            for x in self.cluster.leaves_of(node, i)
            if x.chain == chain
        ]
        if bad_leaves:
            bad_text += f"; bad {spec.leaf_type} leaves (no new work): {leaf_names(bad_leaves)}"
        if req.infiniband:
            ib_type = spec.types[spec.infiniband_level - 1]
            domains = [c for c in self._ib_cells[chain] if c.n_bad_nodes < len(c.node_cells)]
            most = max((c.n_free for c in domains), default=0)
            bad_text += (
                f"; InfiniBand: all {sum(sizes)} leaves must lie under one {ib_type} cell, and the"
                f" emptiest healthy one has {most} free"
            )
        if req.pinned_cell is not None:
            cell = self.cluster.pinned[req.pinned_cell]
            return (
                f"pinned cell {req.pinned_cell}: {cell.n_guaranteed} of {len(cell.leaves)}"
                f" {spec.leaf_type} leaves in use; {need}{bad_text}"
            )
        if req.guaranteed:
            bound = self.quota.bound_cells(req.vc, chain)
            used = sum(c.n_guaranteed for c in bound)
            reserved = sum(1 for c in bound for x in c.leaves if x.reserver is not None)
            total = self.quota.quota_leaves(req.vc, chain)
            held = f" ({reserved} reserved by preemptions in progress)" if reserved else ""
            return (
                f"{used} of {total} guaranteed {spec.leaf_type} leaves in use{where}{held};"
                f" {self._vc_cells_text(req.vc, chain)}; {need}{bad_text}"
            )
        per_node = [
            r[1].n_free if r[1] is not None else sum(x.n_free for x in r[2])
            for r in self._open_regions[chain]
            if not r[0].n_bad_nodes
        ]
        return (
            f"{sum(per_node)} idle {spec.leaf_type} leaves on healthy nodes{where}"
            f" (at most {max(per_node, default=0)} on one node); {need}{bad_text}"
        )
