"""Virtual clusters as numbers of cells per (chain, level), bound lazily to physical cells by a buddy system.

A VC's quota is HiveD's list of *preassigned* virtual cells: ``quota[vc][(chain, level)] = n``. None of
them is tied to a physical cell at load. When the VC's guaranteed work first needs one, it is *bound* to a
physical cell of that chain and level taken from the buddy free lists; when the VC's guaranteed work no
longer uses it, it is *unbound* and merges back with its free buddies.

The free lists (``free[(chain, level)]``) hold the maximal physical cells that are neither bound, pinned,
nor above a bound or pinned cell. They are a pure function of the set of bound cells: binding a cell
splits its free ancestor down the path to it, unbinding merges siblings that are all free again. That is
what makes a snapshot of the bindings enough to rebuild them exactly.

Safety (no sharing anomaly): at every moment, for every chain, walking from the top level down,
``available(l) - unbound_quota(l) >= 0`` where ``available(top) = |free(top)|`` and
``available(l-1) = left(l) * children(l) + |free(l-1)|``. HiveD checks this once at start-up; a buddy
allocator that binds from the lowest level holding a free cell keeps it true (taking a free cell at the
requested level never changes ``left``). Binding that splits a higher cell while cells at the requested
level are still free (to avoid a bad cell, or one busy with opportunistic work) can break it, so every
binding that splits is checked against it (HiveD's "safe relaxed buddy allocation"). Every VC can
therefore always bind all of its unbound quota, however the cluster is fragmented.

Pinned cells are bound to their VC at load, forever, and serve only requests that name them.
"""

from __future__ import annotations

from collections.abc import Iterable

from pai_scheduler.hived.cells import Cell, PhysicalCluster
from pai_scheduler.hived.errors import ConfigError

Slot = tuple[str, int]  # (chain, level)


class QuotaBook:
    def __init__(self, cluster: PhysicalCluster):
        self.cluster = cluster
        config = cluster.config
        self.vcs: tuple[str, ...] = tuple(vc.name for vc in config.virtual_clusters)
        self.quota: dict[str, dict[Slot, int]] = {}
        self.pinned_owner: dict[str, str] = {}
        self.pinned_of: dict[str, list[Cell]] = {vc: [] for vc in self.vcs}
        self.bound: dict[str, dict[Slot, set[Cell]]] = {vc: {} for vc in self.vcs}
        # Bumped by every bind and unbind, so that views of the bound cells can be cached between them; the
        # same per chain.
        self.binding_version = 0
        self.chain_binding_version: dict[str, int] = {c: 0 for c in cluster.chains}
        self.free: dict[Slot, set[Cell]] = {}
        self.unbound_need: dict[Slot, int] = {}
        for chain in cluster.chains.values():
            for level in range(1, chain.top_level + 1):
                self.free[(chain.name, level)] = set()
                self.unbound_need[(chain.name, level)] = 0
            for top in cluster.tops[chain.name]:
                self.free[(chain.name, chain.top_level)].add(top)
        for vc in config.virtual_clusters:
            q: dict[Slot, int] = {}
            for vcell in vc.virtual_cells:
                slot = (vcell.chain, cluster.chains[vcell.chain].level_of(vcell.cell_type))
                q[slot] = q.get(slot, 0) + vcell.number
                self.unbound_need[slot] += vcell.number
            self.quota[vc.name] = q
            for pid in vc.pinned_cells:
                cell = cluster.pinned[pid]
                self.pinned_owner[pid] = vc.name
                self.pinned_of[vc.name].append(cell)
                self._take(cell)
                cell.bound_vc = vc.name
        for chain_name in sorted(cluster.chains):
            problem = self.unsafe_level(chain_name)
            if problem is not None:
                level, needed, available = problem
                ctype = cluster.chains[chain_name].types[level - 1]
                raise ConfigError(
                    "virtualClusters: insufficient physical cells at"
                    f" chain {chain_name} level {level} ({ctype}):"
                    f" {needed} needed, {available} available"
                )

    # --------------------------------------------------------------------------------------- views

    def unbound(self, vc: str, slot: Slot) -> int:
        return self.quota[vc].get(slot, 0) - len(self.bound[vc].get(slot, ()))

    def bound_cells(self, vc: str, chain: str) -> list[Cell]:
        out: list[Cell] = []
        for (c, _), cells in self.bound[vc].items():
            if c == chain:
                out.extend(cells)
        return out

    def quota_leaves(self, vc: str, chain: str) -> int:
        spec = self.cluster.chains[chain]
        return sum(n * spec.leaves_per_cell(lv) for (c, lv), n in self.quota[vc].items() if c == chain)

    def chains_of(self, vc: str) -> list[str]:
        return sorted({c for (c, _) in self.quota[vc]})

    def unsafe_level(self, chain: str) -> tuple[int, int, int] | None:
        """The first level, from the top, where free cells cannot cover every VC's unbound quota:
        (level, needed, available); None when the chain is safe."""
        spec = self.cluster.chains[chain]
        available = len(self.free[(chain, spec.top_level)])
        for level in range(spec.top_level, 0, -1):
            need = self.unbound_need[(chain, level)]
            left = available - need
            if left < 0:
                return level, need, available
            if level > 1:
                available = left * spec.child_numbers[level - 1] + len(self.free[(chain, level - 1)])
        return None

    def healthy_shortfall(self, vc: str) -> list[tuple[str, int, int, int]]:
        """(chain, level, unbound cells, of which healthy free cells can back) for every slot where this
        VC's own unbound quota could not be bound to healthy cells right now (HiveD's per-VC "doomed bad
        cells" check; other VCs' needs are not subtracted)."""
        out: list[tuple[str, int, int, int]] = []
        for chain in self.chains_of(vc):
            spec = self.cluster.chains[chain]
            pool: list[Cell] = []
            for level in range(spec.top_level, 0, -1):
                pool.extend(self.free[(chain, level)])
                healthy = [c for c in pool if c.healthy]
                need = self.unbound(vc, (chain, level))
                usable = min(need, len(healthy))
                if usable < need:
                    out.append((chain, level, need, usable))
                # Cells not used at this level split into their children for the next one (bad cells too:
                # their healthy parts still count).
                healthy.sort(key=lambda c: c.order)
                rest = healthy[usable:] + [c for c in pool if not c.healthy]
                pool = [child for c in rest for child in c.children]
        return out

    # ------------------------------------------------------------------------------------ mutations

    def bind(self, cell: Cell, vc: str) -> None:
        """Bind a physical cell (free, or inside a free cell) to one of ``vc``'s unbound quota cells."""
        slot = (cell.chain, cell.level)
        if self.unbound(vc, slot) <= 0:
            raise ValueError(f"VC {vc} has no unbound quota at chain {cell.chain} level {cell.level}")
        self._take(cell)
        cell.bound_vc = vc
        self.bound[vc].setdefault(slot, set()).add(cell)
        self.binding_version += 1
        self.chain_binding_version[cell.chain] += 1
        self.unbound_need[slot] -= 1

    def unbind(self, cell: Cell) -> None:
        vc = cell.bound_vc
        if vc is None or cell.pinned_id is not None:
            raise ValueError(f"cell {cell.id} is not bound, or is pinned")
        slot = (cell.chain, cell.level)
        self.binding_version += 1
        self.chain_binding_version[cell.chain] += 1
        self.bound[vc][slot].discard(cell)
        if not self.bound[vc][slot]:
            del self.bound[vc][slot]
        self.unbound_need[slot] += 1
        cell.bound_vc = None
        for c in cell.path:
            c.n_bound_below -= 1
        self.free[slot].add(cell)
        parent = cell.parent
        while parent is not None and parent.n_bound_below == 0:
            for child in parent.children:
                self.free[(child.chain, child.level)].remove(child)
            self.free[(parent.chain, parent.level)].add(parent)
            parent = parent.parent

    def _take(self, cell: Cell) -> None:
        """Remove ``cell`` from the free structure, splitting its free ancestor down to it."""
        top = next((c for c in cell.path if c in self.free[(c.chain, c.level)]), None)
        if top is None:
            raise ValueError(f"cell {cell.id} is not free")
        self.free[(top.chain, top.level)].remove(top)
        for level in range(top.level - 1, cell.level - 1, -1):
            on_path = cell.path[-(level - cell.level) - 1]
            above = on_path.parent
            assert above is not None
            for sibling in above.children:
                if sibling is not on_path:
                    self.free[(sibling.chain, sibling.level)].add(sibling)
        for c in cell.path:
            c.n_bound_below += 1

    def free_descendants(self, level: int, roots: Iterable[Cell]) -> list[Cell]:
        out: list[Cell] = []
        for r in roots:
            stack = [r]
            while stack:
                c = stack.pop()
                if c.level == level:
                    out.append(c)
                else:
                    stack.extend(reversed(c.children))
        return out
