"""Fragmentation-aware chain preference: where a gang that several chains could hold should go, given the
requests the cluster has been seeing (the idea of Weng et al.'s fragmentation gradient descent, FGD: place
so that the capacity left stays usable by the workload's typical requests).

The allocator keeps the *recent request mix*: the last ``MIX_WINDOW`` GPU pods submitted, each with the
leaf types it accepts (none named: any) and its demand in thousandths of a GPU. From it, the demand *typed*
to each leaf type: a pod naming one type counts fully for it, a pod naming ``n`` types ``1/n`` for each.
Capacity of a type that the pods naming it will need is worth keeping; capacity nobody names is free to
take. So a gang that accepts several chains tries them in this order (every pass, same machinery, same
guarantees: only the order of the candidates changes):

1. the leaf type with the most free capacity per unit of demand typed to it (``free / (typed + 1)``, in
   thousandths of a GPU: a type nobody names first; then the one whose free capacity most exceeds what its
   own pods will want), so that untyped work fills the models that typed work does not need and every
   model's typed demand finds room as long as any can;
2. within one type, for whole-leaf pods, the chain whose best-fitting node leaves the fewest free leaves
   (HiveD's best fit, across chains: the gang's first pod takes the tightest node of any chain of its type,
   keeping bigger nodes whole for bigger pods); for share pods, chains with a shared leaf that has room
   for the share first (a new leaf is opened only where none can take it);
3. then the chains' names, as before.

Without the mix (``mix_aware=False``, the simulator's ``hived-plain``) chains are tried in name order only.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from pai_scheduler.hived.admission import Admission
from pai_scheduler.hived.cells import MILLI_PER_LEAF
from pai_scheduler.hived.gangs import Gang
from pai_scheduler.hived.requests import GangRequest
from pai_scheduler.hived.state import MixEntry

# How many recent GPU pods the mix remembers.
MIX_WINDOW = 2000


class RequestMix(Admission):
    def _record(self, req: GangRequest) -> None:
        """A new gang's GPU pods join the mix (CPU-only pods ask nothing of the accelerators)."""
        if not self.mix_aware:
            return
        for m in req.members:
            if m.is_share:
                demand = m.gpu_milli or 1
            elif m.leaves > 0:
                demand = m.leaves * MILLI_PER_LEAF
            else:
                continue
            for _ in range(m.pods):
                self._mix_add((req.leaf_types, demand))

    def _mix_add(self, entry: MixEntry) -> None:
        self._mix.append(entry)
        self._mix_total += 1
        self._count(entry, 1)
        if len(self._mix) > MIX_WINDOW:
            self._count(self._mix.popleft(), -1)

    def _count(self, entry: MixEntry, sign: int) -> None:
        types, demand = entry
        for t in types:
            self._typed[t] = self._typed.get(t, 0.0) + sign * demand / len(types)

    def _restore_mix(self, entries: Iterable[Sequence[object]], total: object = None) -> None:
        for types, demand in entries:
            assert isinstance(types, list | tuple) and isinstance(demand, int)
            self._mix_add((tuple(str(t) for t in types), demand))
        if total is not None:  # (a snapshot from before it was counted: the window's length)
            assert isinstance(total, int) and total >= len(self._mix)
            self._mix_total = total

    def _mix_snapshot(self) -> list[list[object]]:
        return [[list(types), demand] for types, demand in self._mix]

    # ------------------------------------------------------------------------------------ preference

    def _preferred(self, g: Gang, chains: list[str]) -> list[str]:
        """``chains`` in the order the gang should try them (see the module docstring)."""
        if not self.mix_aware or len(chains) < 2:
            return chains
        free: dict[str, int] = {}
        for chain in chains:
            t = self.cluster.chains[chain].leaf_type
            if t not in free:
                free[t] = 0
            free[t] += self._free_milli(chain)
        pods = self._pods(g.request, chains[0])
        role, _, k = pods[0]
        share = g.shares.get(role)

        def key(chain: str) -> tuple[float, int, str]:
            t = self.cluster.chains[chain].leaf_type
            slack = free[t] / (self._typed.get(t, 0.0) + 1.0)
            if share is not None:
                fit = 0 if self._has_room(chain, share[0]) else 1
            else:
                fit = self._tightest(chain, k)
            return (-slack, fit, chain)

        return sorted(chains, key=key)

    def _free_milli(self, chain: str) -> int:
        """Free accelerator capacity of a chain in milli-GPU: free leaves (a bad leaf is never free), and the
        idle part of shared leaves."""
        whole = sum(top.n_free for top in self.cluster.tops[chain])
        shared = self.cluster.shared[chain]
        return whole * MILLI_PER_LEAF + len(shared) * MILLI_PER_LEAF - self.cluster.shared_milli[chain]

    def _tightest(self, chain: str, k: int) -> int:
        """The fewest free leaves of a node of the chain that has at least ``k`` (more than any node when
        none has)."""
        buckets = self.cluster.free_nodes[chain]
        for n in range(max(k, 1), len(buckets)):
            if buckets[n]:
                return n
        return len(buckets)

    def _has_room(self, chain: str, milli: int) -> bool:
        return any(
            MILLI_PER_LEAF - leaf.share_milli >= milli and leaf.healthy and leaf.reserver is None
            for leaf in self.cluster.shared[chain]
        )
