"""Admission: whether a request is valid, which chains it may go to, what its pods need on each, and whether
it could ever fit (its VC's whole quota, the cluster, one InfiniBand domain). A request that fails here is
``Rejected`` and never queued. Everything here is pure in the request and the fixed config and quota, so it is
cached."""

from __future__ import annotations

import math
from collections.abc import Sequence

from pai_scheduler.hived.cells import MAX_GUARANTEED_PRIORITY, MILLI_PER_LEAF, OPPORTUNISTIC_PRIORITY
from pai_scheduler.hived.requests import GangRequest
from pai_scheduler.hived.state import AllocatorState


def cpu_only(req: GangRequest) -> bool:
    """Every pod of the gang asks for no accelerator (no leaves, no share): CPU work."""
    return all(m.leaves == 0 and not m.is_share for m in req.members)


def first_fit_decreasing(sizes: Sequence[int], bins: Sequence[int]) -> bool:
    room = sorted(bins, reverse=True)
    for k in sorted(sizes, reverse=True):
        for i, r in enumerate(room):
            if r >= k:
                room[i] = r - k
                break
        else:
            return False
    return True


class Admission(AllocatorState):
    def _invalid_reason(self, req: GangRequest) -> str | None:
        if isinstance(req.priority, bool) or not isinstance(req.priority, int):
            return f"priority must be an integer, got {req.priority!r}"
        if not OPPORTUNISTIC_PRIORITY <= req.priority <= MAX_GUARANTEED_PRIORITY:
            return (
                f"priority {req.priority} is outside -1 (opportunistic) .. {MAX_GUARANTEED_PRIORITY}"
                " (guaranteed)"
            )
        if req.vc not in self.quota.quota:
            return f"unknown virtual cluster {req.vc!r} (known: {', '.join(sorted(self.quota.quota))})"
        if not req.members:
            return "the gang has no members"
        roles = [m.role for m in req.members]
        if len(set(roles)) != len(roles):
            return "a task role appears twice in the gang"
        for m in req.members:
            if m.pods < 1:
                return f"role {m.role}: pods must be >= 1, got {m.pods}"
            for name, value in (
                ("leaves", m.leaves),
                ("gpu_milli", m.gpu_milli),
                ("gpu_memory_mb", m.gpu_memory_mb),
            ):
                if isinstance(value, bool) or not isinstance(value, int):
                    extra = " or a fraction below 1" if name == "leaves" else ""
                    return f"role {m.role}: {name} must be a whole number{extra}, got {value!r}"
            if m.leaves < 0:
                return f"role {m.role}: leaves must be >= 0, got {m.leaves}"
            if not 0 <= m.gpu_milli < MILLI_PER_LEAF:
                return (
                    f"role {m.role}: gpu_milli must be 1..{MILLI_PER_LEAF - 1} (a share of one GPU), got"
                    f" {m.gpu_milli}; ask for whole leaves instead"
                )
            if m.gpu_memory_mb < 0:
                return f"role {m.role}: gpu_memory_mb must be >= 0, got {m.gpu_memory_mb}"
            if m.is_share and m.leaves:
                return f"role {m.role}: ask for whole leaves ({m.leaves}) or a share of one leaf, not both"
        known = {c.leaf_type for c in self.cluster.chains.values()}
        for t in req.leaf_types:
            if t not in known:
                return f"unknown leaf type {t!r} (this cluster has {', '.join(sorted(known))})"
        fpga_types = [t for t in req.leaf_types if self.config.is_fpga_leaf(t)]
        if fpga_types and any(m.is_share for m in req.members):
            return f"{'|'.join(fpga_types)} leaves are FPGAs: a task gets whole FPGAs, never a share of one"
        if not cpu_only(req):
            cpu_types = [t for t in req.leaf_types if self.config.is_cpu_leaf(t)]
            if cpu_types and len(cpu_types) == len(req.leaf_types):
                return (
                    f"{'|'.join(cpu_types)} leaves are CPU and memory only, but the gang asks for GPUs"
                    " (or a GPU share)"
                )
        if req.pinned_cell is not None:
            if not req.guaranteed:
                return "opportunistic gangs cannot use pinned cells"
            if req.pinned_cell not in self.cluster.pinned:
                return f"unknown pinned cell {req.pinned_cell!r}"
            owner = self.quota.pinned_owner.get(req.pinned_cell)
            if owner != req.vc:
                return f"pinned cell {req.pinned_cell} belongs to VC {owner}, not {req.vc}"
            leaf_type = self.cluster.chains[self.cluster.pinned[req.pinned_cell].chain].leaf_type
            if req.leaf_types and leaf_type not in req.leaf_types:
                return (
                    f"pinned cell {req.pinned_cell} holds {leaf_type} leaves, not {'|'.join(req.leaf_types)}"
                )
            if self.config.is_cpu_leaf(leaf_type) and not cpu_only(req):
                return (
                    f"pinned cell {req.pinned_cell} holds {leaf_type} leaves (no GPU), but the gang asks for"
                    " GPUs"
                )
        return None

    def _chains_for(self, req: GangRequest) -> list[str]:
        """The chains a gang may go to, in the order they are tried. A gang with an accelerator (or share)
        member never goes to CPU chains; a CPU-only gang (every pod asks for no GPU) goes to the CPU chains
        it may use and, only when there are none, to accelerator chains (each pod then holds the leaves
        its CPU and memory need through the SKU, at least one, as OpenPAI does)."""
        # Pure in what the choice reads of the request and the (fixed) config and quota; asked on every
        # placement attempt.
        key = (req.pinned_cell, req.leaf_types, req.guaranteed and req.vc, cpu_only(req))
        cached = self._chains_cache.get(key)
        if cached is not None:
            return cached
        chains = self._compute_chains_for(req)
        if len(self._chains_cache) >= 10_000:
            self._chains_cache.clear()
        self._chains_cache[key] = chains
        return chains

    def _compute_chains_for(self, req: GangRequest) -> list[str]:
        if req.pinned_cell is not None:
            return [self.cluster.pinned[req.pinned_cell].chain]
        names = sorted(self.cluster.chains)
        if req.leaf_types:
            chains = [c for t in req.leaf_types for c in names if self.cluster.chains[c].leaf_type == t]
        else:
            # FPGAs go only to gangs that name their type: a task asking for GPUs never gets one.
            chains = [c for c in names if not self.config.is_fpga_leaf(self.cluster.chains[c].leaf_type)]
        if req.guaranteed:
            own = set(self.quota.chains_of(req.vc))
            chains = [c for c in chains if c in own]
        cpu = [c for c in chains if self._cpu_chain(c)]
        if cpu_only(req) and cpu:
            return cpu
        return [c for c in chains if not self._cpu_chain(c)]

    def _cpu_chain(self, chain: str) -> bool:
        return self.config.is_cpu_leaf(self.cluster.chains[chain].leaf_type)

    def _pods(self, req: GangRequest, chain: str) -> list[tuple[str, int, int]]:
        """(role, index, leaves) for every pod on this chain's leaf type, largest first."""
        # Pure in the request and the (fixed) config; asked again on every retry of a waiting gang.
        # Keyed by the members object first (hashing it costs more than the lookup), then by value.
        members = req.members
        fast = self._pods_by_id.get((id(members), chain))
        if fast is not None and fast[0] is members:
            return list(fast[1])
        cached = self._pods_cache.get((members, chain))
        if cached is None:
            cached = tuple(self._compute_pods(req, chain))
            if len(self._pods_cache) >= 10_000:
                self._pods_cache.clear()
            self._pods_cache[(members, chain)] = cached
        if len(self._pods_by_id) >= 10_000:
            self._pods_by_id.clear()
        self._pods_by_id[(id(members), chain)] = (members, cached)
        return list(cached)

    def _compute_pods(self, req: GangRequest, chain: str) -> list[tuple[str, int, int]]:
        sku = self.config.sku(self.cluster.chains[chain].leaf_type)
        out: list[tuple[int, str, int, int]] = []
        # A pod asking for no GPU still holds at least one leaf: a CPU unit on a CPU chain, else one leaf
        # whose accelerator it does not see (its CPU and memory come with the leaf, as in OpenPAI).
        for order, m in enumerate(req.members):
            if m.is_share:  # one leaf, after the whole-leaf pods of the same size
                out.extend((len(req.members) + order, m.role, i, 1) for i in range(m.pods))
                continue
            k = int(m.leaves)
            if sku is not None:
                if sku.cpu > 0 and m.cpu > 0:
                    k = max(k, math.ceil(m.cpu / sku.cpu))
                if sku.memory_mb > 0 and m.memory_mb > 0:
                    k = max(k, math.ceil(m.memory_mb / sku.memory_mb))
            k = max(k, 1)
            out.extend((order, m.role, i, k) for i in range(m.pods))
        out.sort(key=lambda p: (-p[3], p[0], p[2]))
        return [(role, i, k) for _, role, i, k in out]

    def _never_fits_reason(self, req: GangRequest) -> str | None:
        shape = (req.vc, req.guaranteed, req.members, req.leaf_types, req.pinned_cell, req.infiniband)
        if shape in self._never_fits_cache:
            return self._never_fits_cache[shape]
        reason = self._compute_never_fits_reason(req)
        if len(self._never_fits_cache) >= 10_000:
            self._never_fits_cache.clear()
        self._never_fits_cache[shape] = reason
        return reason

    def _compute_never_fits_reason(self, req: GangRequest) -> str | None:
        chains = self._chains_for(req)
        if not chains:
            types = "|".join(req.leaf_types) or "any leaf type"
            if req.guaranteed:
                return f"VC {req.vc} has no guaranteed quota of {types}"
            return f"the cluster has no {types} leaves"
        reasons = []
        for chain in chains:
            spec = self.cluster.chains[chain]
            memory = self.cluster.leaf_memory_mb[chain]
            too_big = [m for m in req.members if m.gpu_memory_mb > memory]
            if too_big:
                reasons.append(
                    f"a pod of role {too_big[0].role} needs {too_big[0].gpu_memory_mb} MB of GPU memory but a"
                    f" {spec.leaf_type} leaf has {memory} MB"
                )
                continue
            sizes = [k for _, _, k in self._pods(req, chain)]
            if req.pinned_cell is not None:
                cell = self.cluster.pinned[req.pinned_cell]
                per_node = (
                    len(cell.leaves)
                    if cell.level <= spec.node_level
                    else spec.leaves_per_cell(spec.node_level)
                )
                total = len(cell.leaves)
                whose = f"pinned cell {req.pinned_cell}"
            elif req.guaranteed:
                levels = [lv for (c, lv) in self.quota.quota[req.vc] if c == chain]
                per_node = max(spec.leaves_per_node_in(lv) for lv in levels)
                total = self.quota.quota_leaves(req.vc, chain)
                whose = f"VC {req.vc}'s quota"
            else:
                per_node = spec.leaves_per_cell(spec.node_level)
                total = sum(len(r[2]) for r in self._open_regions[chain])
                whose = "the cluster"
            if req.guaranteed and req.pinned_cell is None and max(sizes) <= per_node and sum(sizes) <= total:
                bins = self._empty_quota_bins(req.vc, chain)
                if not first_fit_decreasing(sizes, bins):
                    reasons.append(
                        f"the gang's pods ({'+'.join(str(k) for k in sizes)} {spec.leaf_type} leaves, each on"
                        f" one node) do not fit {whose} in chain {chain} even when it is all free"
                        f" (per-node capacities {'+'.join(str(b) for b in bins)})"
                    )
                    continue
            if req.infiniband:
                ib = self._ib_never_fits(req, chain, sizes, total)
                if ib is not None:
                    reasons.append(ib)
                    continue
            if max(sizes) > per_node:
                reasons.append(
                    f"a pod needs {max(sizes)} {spec.leaf_type} leaves on one node but {whose} in chain"
                    f" {chain} offers at most {per_node}"
                )
            elif sum(sizes) > total:
                reasons.append(
                    f"the gang needs {sum(sizes)} {spec.leaf_type} leaves but {whose} in chain {chain} has"
                    f" {total}"
                )
            else:
                return None
        return "; ".join(reasons)

    def _ib_never_fits(self, req: GangRequest, chain: str, sizes: list[int], total: int) -> str | None:
        """Why an InfiniBand gang can never fit under one InfiniBand domain of the chain (None if it can):
        the gang's pods, each on one node, must fit one domain's nodes (and, for guaranteed gangs, the VC's
        quota in the chain or its pinned cell)."""
        spec = self.cluster.chains[chain]
        level = spec.infiniband_level
        domain = self._ib_cells[chain][0]
        ib_type = spec.types[level - 1]
        bins = [len(n.leaves) for n in domain.node_cells]
        cap = min(len(domain.leaves), total)
        if sum(sizes) > cap or not first_fit_decreasing(sizes, bins):
            return (
                f"InfiniBand: the gang needs {sum(sizes)} {spec.leaf_type} leaves"
                f" ({'+'.join(map(str, sizes))},"
                f" each pod on one node) under one InfiniBand cell ({ib_type}, level {level}) but in chain"
                f" {chain} one holds at most {cap} for it (per-node capacities {'+'.join(map(str, bins))})"
            )
        return None

    def _empty_quota_bins(self, vc: str, chain: str) -> list[int]:
        """The per-node leaf capacities of a VC's whole quota in a chain, as if it were all free."""
        spec = self.cluster.chains[chain]
        bins: list[int] = []
        for (c, level), n in sorted(self.quota.quota[vc].items()):
            if c != chain:
                continue
            if level >= spec.node_level:
                nodes = spec.leaves_per_cell(level) // spec.leaves_per_cell(spec.node_level)
                bins.extend([spec.leaves_per_cell(spec.node_level)] * (n * nodes))
            else:
                bins.extend([spec.leaves_per_cell(level)] * n)
        return bins
