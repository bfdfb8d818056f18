"""A full consistency audit of a HiveD allocator, recomputed from scratch (slow; for tests and restores).

Returns the list of violated invariants, empty when the state is sound:

* every leaf's owner/reserver is a gang that holds the leaf in its placement, in a state that owns or
  reserves (no leaf is ever given to two gangs);
* every leaf's shares are exactly the share pods placed on it (milli, memory, pods, priority), they add up
  to at most the device (1000 milli, the leaf's memory), a leaf has an owner or shares but never both,
  its sharers are all opportunistic or all guaranteed, and the index of shared leaves is exact;
* a leaf's priority is its owner's (-1 once downgraded), or its highest sharer's;
* downgraded gangs are allocated or being preempted (lazy preemption downgrades only lazy whole-leaf
  unpinned gangs, a reconfiguration any running gang);
* every placed gang is whole: one slot per pod, each with the pod's leaf count, all on one node;
* guaranteed gangs sit inside cells bound to their VC (or their pinned cell), opportunistic ones outside
  pinned cells;
* every cell's counters equal a recount of its leaves (a bad leaf is never free; the bad-leaf counts and
  marks agree with the cluster's set of bad leaves), and every node cell sits in exactly the free-node
  bucket of its free leaves; every bound cell still holds its VC's work, except doomed bad cells (bound
  to bad hardware, idle);
* what each VC borrows is what its borrowing gangs (running, guaranteed) ask for;
* per chain, the sum of its shares, its busy leaves by priority and its reserved leaves match a recount;
* the free lists are exactly the maximal unbound cells; every chain is safe (each VC can still bind all of
  its unbound quota).
"""

from __future__ import annotations

from pai_scheduler.hived.allocator import GroupState, HivedAllocator
from pai_scheduler.hived.cells import (
    FREE_PRIORITY,
    MILLI_PER_LEAF,
    OPPORTUNISTIC_PRIORITY,
    UNTOUCHABLE_PRIORITY,
    Cell,
    Share,
)


def audit(a: HivedAllocator) -> list[str]:
    problems: list[str] = []
    groups = a._groups
    holder: dict[Cell, str] = {}  # leaf -> the gang using it
    reserving: dict[Cell, str] = {}  # leaf -> the gang preempting for it
    shares: dict[Cell, dict[str, Share]] = {}  # leaf -> the share pods placed on it, per gang
    for key, g in groups.items():
        req = g.request
        # Lazy preemption downgrades only lazy whole-leaf unpinned gangs; a reconfiguration may downgrade
        # any running gang (shares then keep one kind per leaf, pinned leaves stay guaranteed: both below).
        if g.downgraded and g.state not in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED):
            problems.append(f"gang {key} is downgraded but cannot be")
        if g.state is GroupState.PENDING:
            if g.slots:
                problems.append(f"pending gang {key} holds leaves")
            continue
        assert g.chain is not None
        wanted = sorted((role, i, k) for role, i, k in a._pods(req, g.chain))
        got = sorted((role, i, len(leaves)) for role, i, leaves in g.slots)
        if wanted != got:
            problems.append(f"gang {key} is not whole: wants {wanted}, holds {got}")
        for role, _, leaves in g.slots:
            if len({x.node for x in leaves}) != 1:
                problems.append(f"gang {key}: a pod spans several nodes")
            share = g.shares.get(role)
            for leaf in leaves:
                held_share = share is not None and leaf.reserver != key
                if held_share:
                    assert share is not None
                    prio = UNTOUCHABLE_PRIORITY if g.state is GroupState.PREEMPTING else g.priority
                    m, mem, _, pods = shares.setdefault(leaf, {}).get(key, (0, 0, prio, 0))
                    shares[leaf][key] = (m + share[0], mem + share[1], prio, pods + 1)
                else:
                    if share is not None and g.state is not GroupState.PREEMPTING:
                        problems.append(f"share of allocated gang {key} reserves leaf {leaf.id}")
                    table = reserving if g.state is GroupState.PREEMPTING else holder
                    if leaf in table:
                        problems.append(f"leaf {leaf.id} is in the placements of {table[leaf]} and {key}")
                    table[leaf] = key
                bound = next((c for c in reversed(leaf.path) if c.bound_vc is not None), None)
                if g.priority >= 0:
                    if bound is None or bound.bound_vc != req.vc:
                        problems.append(
                            f"guaranteed gang {key} uses leaf {leaf.id} outside VC {req.vc}'s cells"
                        )
                    elif (bound.pinned_id is not None) != (req.pinned_cell is not None):
                        problems.append(f"gang {key} and pinned cell use disagree at leaf {leaf.id}")
                elif bound is not None and bound.pinned_id is not None:
                    problems.append(f"opportunistic gang {key} uses pinned leaf {leaf.id}")
                if held_share:
                    continue
                if g.state is GroupState.PREEMPTING:
                    if leaf.reserver != key:
                        problems.append(f"leaf {leaf.id} should be reserved by {key}")
                elif leaf.owner != key:
                    problems.append(f"leaf {leaf.id} should be owned by {key}, is {leaf.owner}")
    for cell in a.cluster.cells.values():
        if cell.is_leaf:
            if cell.owner is not None and groups.get(cell.owner) is None:
                problems.append(f"leaf {cell.id} owned by unknown gang {cell.owner}")
            if cell.reserver != reserving.get(cell) or cell.owner != holder.get(cell):
                problems.append(f"leaf {cell.id}: owner/reserver disagree with the gangs' placements")
            if cell.owner is not None and groups[cell.owner].state is GroupState.PREEMPTING:
                problems.append(f"leaf {cell.id} owned by preempting gang {cell.owner}")
            if cell.reserver is not None and groups[cell.reserver].state is not GroupState.PREEMPTING:
                problems.append(f"leaf {cell.id} reserved by non-preempting gang {cell.reserver}")
            problems.extend(_audit_shares(a, cell, shares.get(cell, {})))
        free = sum(
            1
            for x in cell.leaves
            if x.owner is None and x.reserver is None and not x.shares and not x.bad_leaf
        )
        if cell.n_bad_leaves != sum(1 for x in cell.leaves if x.bad_leaf):
            problems.append(f"cell {cell.id}: n_bad_leaves {cell.n_bad_leaves} disagrees with its leaves")
        if cell.is_leaf and cell.bad_leaf != (
            (cell.node_name or "", cell.leaf_index) in a.cluster.bad_leaves
        ):
            problems.append(f"leaf {cell.id}: its bad mark disagrees with the cluster's bad leaves")
        oppo = sum(
            1
            for x in cell.leaves
            if (x.owner is not None or x.shares) and x.owner_priority == OPPORTUNISTIC_PRIORITY
        )
        guar = sum(
            1
            for x in cell.leaves
            if x.reserver is not None or ((x.owner is not None or x.shares) and x.owner_priority >= 0)
        )
        if (cell.n_free, cell.n_opportunistic, cell.n_guaranteed) != (free, oppo, guar):
            problems.append(f"cell {cell.id}: counters disagree with its leaves")
        if cell.node is cell:
            in_buckets = [n for n, nodes in enumerate(a.cluster.free_nodes[cell.chain]) if cell in nodes]
            if in_buckets != [free]:
                problems.append(f"node cell {cell.id} is in free-node buckets {in_buckets}, not [{free}]")
        bound_below = sum(1 for c in cell.walk() if c.bound_vc is not None)
        if cell.n_bound_below != bound_below:
            problems.append(f"cell {cell.id}: n_bound_below {cell.n_bound_below} != {bound_below}")
        maximal_free = (
            bound_below == 0
            and all(c.bound_vc is None for c in cell.path)
            and (cell.parent is None or cell.parent.n_bound_below > 0)
        )
        if maximal_free != (cell in a.quota.free[(cell.chain, cell.level)]):
            problems.append(f"cell {cell.id}: free-list membership is wrong")
        doomed = cell in a._doomed
        if cell.bound_vc is not None and cell.pinned_id is None and cell.n_guaranteed == 0 and not doomed:
            problems.append(f"cell {cell.id} is bound to {cell.bound_vc} but idle")
        if doomed and (cell.bound_vc is None or cell.pinned_id is not None or cell.n_guaranteed):
            problems.append(f"doomed cell {cell.id} is not an idle quota binding")
    for v, g in groups.items():
        for p in g.preemptors:
            if v not in groups[p].victims:
                problems.append(f"{v} lists preemptor {p} that does not list it")
    for chain, index in a.cluster.shared.items():
        expected = {x for x in a.cluster.cells.values() if x.is_leaf and x.chain == chain and x.shares}
        if index != expected:
            problems.append(f"chain {chain}: the index of shared leaves is wrong")
        if a.cluster.shared_milli[chain] != sum(x.share_milli for x in expected):
            problems.append(f"chain {chain}: the sum of its shares is wrong")
        chain_leaves = [x for x in a.cluster.cells.values() if x.is_leaf and x.chain == chain]
        busy: dict[int, int] = {}
        for x in chain_leaves:
            if x.owner is not None or x.shares:
                busy[x.owner_priority] = busy.get(x.owner_priority, 0) + 1
        if a.cluster.busy_by_priority[chain] != busy:
            problems.append(f"chain {chain}: busy leaves by priority are {busy}, not as counted")
        if a.cluster.n_reserved[chain] != sum(1 for x in chain_leaves if x.reserver is not None):
            problems.append(f"chain {chain}: the count of reserved leaves is wrong")
    borrowed: dict[str, int] = {}
    for g in groups.values():
        if g.borrowed:
            if g.state not in (GroupState.ALLOCATED, GroupState.BEING_PREEMPTED) or not g.request.guaranteed:
                problems.append(f"gang {g.request.key} borrows but is not a running guaranteed gang")
            borrowed[g.request.vc] = borrowed.get(g.request.vc, 0) + g.request.demand_milli
    if a._borrowed_milli != borrowed:
        problems.append(f"borrowed milli-GPUs per VC {a._borrowed_milli} disagree with the gangs {borrowed}")
    for node, leaf_index in a.cluster.bad_leaves:
        if not a.cluster.leaves_of(node, leaf_index):
            problems.append(f"bad leaf {node}/{leaf_index} names no leaf")
    for chain in a.cluster.chains:
        bad = a.quota.unsafe_level(chain)
        if bad is not None:
            problems.append(f"chain {chain} is unsafe at level {bad[0]}")
    return problems


def _audit_shares(a: HivedAllocator, leaf: Cell, expected: dict[str, Share]) -> list[str]:
    problems = []
    if leaf.shares != expected:
        problems.append(f"leaf {leaf.id}: shares {leaf.shares} disagree with the placements {expected}")
    if leaf.share_milli != sum(s[0] for s in leaf.shares.values()) or leaf.share_memory != sum(
        s[1] for s in leaf.shares.values()
    ):
        problems.append(f"leaf {leaf.id}: share totals disagree with its shares")
    if leaf.share_milli > MILLI_PER_LEAF or leaf.share_memory > a.cluster.leaf_memory_mb[leaf.chain]:
        problems.append(f"leaf {leaf.id} is overbooked: {leaf.share_milli} milli, {leaf.share_memory} MB")
    if leaf.owner is not None and leaf.shares:
        problems.append(f"leaf {leaf.id} is used whole by {leaf.owner} and shared")
    if len({s[2] >= 0 for s in leaf.shares.values()}) > 1:
        problems.append(f"leaf {leaf.id} mixes opportunistic and guaranteed shares")
    if leaf.owner is not None:
        want = a._groups[leaf.owner].priority
    else:
        want = max((s[2] for s in leaf.shares.values()), default=FREE_PRIORITY)
    if leaf.owner_priority != want:
        problems.append(f"leaf {leaf.id}: priority {leaf.owner_priority}, expected {want}")
    return problems
