"""The allocator's state: the physical cells and their leaves, the VC quota book, every gang, the queue, and
the fields that one placement attempt works with. The concept modules (``ledger``, ``admission``, ``regions``,
``binding``, ``placement``, ``preemption``, ``backfill``, ``reasons``, ``scheduling``, ``persistence``,
``reconfiguration``, ``views``) add the methods of one idea each on top of it; ``allocator`` assembles them
into ``HivedAllocator`` with the commands (as HiveD's ``pkg/algorithm`` spreads one type's methods over files
by concept)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from pai_scheduler.hived.cells import Cell, PhysicalCluster
from pai_scheduler.hived.config import ClusterConfig
from pai_scheduler.hived.decisions import PodPlacement
from pai_scheduler.hived.gangs import Gang, GroupState
from pai_scheduler.hived.pending import PendingQueue
from pai_scheduler.hived.quota import QuotaBook
from pai_scheduler.hived.requests import GangRequest, Member

# One pod of the recent request mix: (the leaf types it accepts, () for any; its demand in milli-GPU).
MixEntry = tuple[tuple[str, ...], int]

# A region is where one pod may go: (node, cell whose n_free counts exactly the usable leaves or None,
# the usable leaves of that node).
Region = tuple[Cell, Cell | None, tuple[Cell, ...]]

# Backfill protection: how long the head of a VC's queue waits before the leaves it needs are held for it.
# A starvation guard, not an every-day rule: holding drains the head's cells, and with run times unknown the
# drain waits for the longest job on them. Shorter thresholds cost 4-178% average completion time on the
# example workloads, 24 h costs nothing there and still bounds a starved gang's wait (hived/README.md).
PROTECT_HEAD_AFTER_S = 24 * 3600.0


def by_order(cell: Cell) -> int:
    """The cells' depth-first order: the final tie-break of every choice."""
    return cell.order


def leaf_names(leaves: Iterable[Cell]) -> str:
    """Leaves as users name them: node and device index (``node-a #3``)."""
    return ", ".join(f"{x.node_name} #{x.leaf_index}" for x in sorted(leaves, key=by_order))


class AllocatorState:
    def __init__(
        self,
        config: ClusterConfig,
        protect_head_after_s: float | None = PROTECT_HEAD_AFTER_S,
        *,
        mix_aware: bool = True,
    ):
        """``protect_head_after_s``: how long (clock seconds, see ``now`` on the commands) the head of a VC's
        queue may wait before backfill protection reserves what it needs; None disables it. ``mix_aware``:
        a gang that several chains could hold tries them in the order the recent request mix prefers
        (``mix.py``); off, in name order (plain HiveD)."""
        self.config = config
        self.protect_head_after_s = protect_head_after_s
        # Fair sharing (borrowing.py): each VC's spec, the VCs that may borrow, and what each borrows now
        # (milli-GPU).
        self._vc_specs = {vc.name: vc for vc in config.virtual_clusters}
        self._borrowers = frozenset(vc.name for vc in config.virtual_clusters if vc.borrowing_limit > 0)
        self._borrowed_milli: dict[str, int] = {}
        self.mix_aware = mix_aware
        # The recent request mix (mix.py): its pods, and the demand typed to each leaf type over them.
        self._mix: deque[MixEntry] = deque()
        self._mix_total = 0  # entries ever added: where the window starts, for storing it in chunks
        self._typed: dict[str, float] = {}
        self._now: float | None = None  # the latest clock time a command was given
        # Backfill protection: VC -> (its protected head gang, the leaves reserved for it).
        self._holds: dict[str, tuple[str, frozenset[Cell]]] = {}
        # While one gang is placed: leaves it must not take (another gang's hold) and their nodes.
        self._blocked: frozenset[Cell] = frozenset()
        self._blocked_nodes: frozenset[Cell] = frozenset()
        # While a gang is placed behind a protected head: that head and its held leaves, so that a placement
        # that would leave the head unplaceable on them (by spending the VC's quota elsewhere) is refused.
        self._guarding: tuple[Gang, frozenset[Cell]] | None = None
        # The leaves of a hold's chain outside the hold (held leaves -> complement), built once per hold.
        self._outside_hold: tuple[frozenset[Cell], frozenset[Cell]] | None = None
        self.cluster = PhysicalCluster(config)
        self.quota = QuotaBook(self.cluster)
        # InfiniBand domains per chain (cells of its InfiniBand level, depth-first), and the one an
        # InfiniBand gang is being placed under (None: anywhere).
        self._ib_cells: dict[str, list[Cell]] = {
            chain: sorted(
                (
                    c
                    for c in self.cluster.cells.values()
                    if c.chain == chain and c.level == spec.infiniband_level
                ),
                key=lambda c: c.order,
            )
            for chain, spec in self.cluster.chains.items()
        }
        self._within: Cell | None = None
        # Doomed bad cells (HiveD's): quota cells bound to bad hardware because the VC's unbound quota
        # could not all be bound to healthy free cells (see _refresh_doomed).
        self._doomed: set[Cell] = set()
        self._groups: dict[str, Gang] = {}
        # The waiting gangs in retry order: a gang enters at submit/restore and when its preemption is
        # cancelled, and leaves when it is placed or withdrawn.
        self._pending = PendingQueue()
        self._pods_cache: dict[tuple[tuple[Member, ...], str], tuple[tuple[str, int, int], ...]] = {}
        # The same by the members object's id (hashing the members costs more than the lookup).
        self._pods_by_id: dict[tuple[int, str], tuple[tuple[Member, ...], tuple[tuple[str, int, int], ...]]]
        self._pods_by_id = {}
        self._chains_cache: dict[tuple[Any, ...], list[str]] = {}
        self._quota_levels_cache: dict[tuple[str, str], list[tuple[int, int]]] = {}
        # What a VC's cells in a chain offer, in words, per (chain cell version, chain binding version).
        self._cells_text_cache: dict[tuple[str, str], tuple[tuple[int, int], str]] = {}
        # Gang shapes that found no placement, with the state version they failed at: the same shape fails
        # again until the state changes (a busy queue is mostly look-alikes).
        self._unplaceable: dict[GangRequest, tuple[int, int]] = {}
        # Why a gang shape waits, per state version (the reason is asked for every gang that waits).
        self._why_cache: dict[tuple[Any, ...], tuple[tuple[int, int], str]] = {}
        self._why_in_cache: dict[tuple[Any, ...], tuple[tuple[int, int, int, int], str]] = {}
        # Why a request can never fit depends only on its shape and the (fixed) config and quota.
        self._never_fits_cache: dict[tuple[Any, ...], str | None] = {}
        # id(region list) -> (that list, its node-counted regions by node, the others): for lists scanned
        # by _best_free_region through the free-node buckets.
        self._region_index: dict[int, tuple[Sequence[Region], dict[Cell, Region], list[Region]]] = {}
        self._bound_regions_cache: dict[tuple[str, str], tuple[int, list[Region]]] = {}
        self._next_seq = 0
        self._next_start = 0
        self._undo: list[Callable[[], None]] | None = None
        # While one gang is placed: the gang, and the lower preemptors whose reservations it takes over
        # (transactional: each entry has its undo).
        self._placing: Gang | None = None
        self._overridden: list[str] = []
        # Set when a placement sent lower preemptors back to the queue (they are retried at once).
        self._requeued = False
        # Where opportunistic pods may go (everything but pinned cells), grouped by top cell so that full
        # tops are skipped at once.
        self._open_regions: dict[str, list[Region]] = {}
        self._open_by_top: dict[str, list[tuple[Cell, list[Region]]]] = {}
        for chain, tops in self.cluster.tops.items():
            regions: list[Region] = []
            self._open_by_top[chain] = []
            for top in tops:
                start = len(regions)
                for node in top.node_cells:
                    if any(c.pinned_id is not None for c in node.path):
                        continue
                    pinned_inside = {
                        leaf for c in node.walk() if c.pinned_id is not None for leaf in c.leaves
                    }
                    if pinned_inside:
                        regions.append((node, None, tuple(x for x in node.leaves if x not in pinned_inside)))
                    else:
                        regions.append((node, node, node.leaves))
                self._open_by_top[chain].append((top, regions[start:]))
            self._open_regions[chain] = regions

    def _version(self) -> tuple[int, int]:
        """Changes whenever leaf state, health or quota bindings change (placements read nothing else that
        changes, outside backfill holds)."""
        return (self.cluster.version, self.quota.binding_version)

    def _queue(self) -> list[Gang]:
        """The waiting gangs, highest priority then oldest first: the order they are retried in."""
        return [self._groups[key] for key in self._pending.keys()]

    def _tick(self, now: float | None) -> None:
        if now is not None:
            self._now = now if self._now is None else max(self._now, float(now))

    def _set_blocked(self, leaves: frozenset[Cell]) -> None:
        self._blocked = leaves
        self._blocked_nodes = frozenset(x.node for x in leaves if x.node is not None)

    def _recount_borrowed(self) -> None:
        """What each VC borrows, from its running borrowed gangs (after a restore or a reconfiguration)."""
        self._borrowed_milli = {}
        for g in self._groups.values():
            if g.borrowed and g.state in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED):
                vc = g.request.vc
                self._borrowed_milli[vc] = self._borrowed_milli.get(vc, 0) + g.request.demand_milli

    def _reclaim_grace(self, victims: list[str] | tuple[str, ...]) -> float:
        """How long victims may run on before they are stopped (borrowing.py answers for borrowers)."""
        return 0.0

    def _preempting(self, key: str) -> bool:
        g = self._groups.get(key)
        return g is not None and g.state is GroupState.PREEMPTING

    def _placements(self, g: Gang) -> tuple[PodPlacement, ...]:
        assert g.chain is not None
        leaf_type = self.cluster.chains[g.chain].leaf_type
        out = []
        for role, index, leaves in g.slots:
            node = leaves[0].node_name
            assert node is not None
            milli, memory = g.shares.get(role, (0, 0))
            out.append(
                PodPlacement(role, index, node, leaf_type, tuple(x.leaf_index for x in leaves), milli, memory)
            )
        return tuple(out)
