"""Properties over random operation sequences (submit, release, node health), checked after every step."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_scheduler.hived import (
    Allocated,
    GangRequest,
    GroupState,
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    Rejected,
    Released,
    load_hived_config,
    parse_inventory_csv,
)
from pai_scheduler.hived.audit import audit

# Two racks of two 4-GPU nodes (GPU -> switch of 2 -> node of 4), plus one standalone 2-GPU node of
# another type. VC a: one node + two switches; VC b: one rack; VC c: the T4 node.
CONFIG = load_hived_config("""
physicalCluster:
  cellTypes:
    SW: {childCellType: V100, childCellNumber: 2}
    NODE: {childCellType: SW, childCellNumber: 2, isNodeLevel: true}
    RACK: {childCellType: NODE, childCellNumber: 2}
    T4-NODE: {childCellType: T4, childCellNumber: 2, isNodeLevel: true}
  physicalCells:
  - {cellType: RACK, cellChildren: [{cellAddress: n0}, {cellAddress: n1}]}
  - {cellType: RACK, cellChildren: [{cellAddress: n2}, {cellAddress: n3}]}
  - {cellType: T4-NODE, cellAddress: t0}
virtualClusters:
  a: {virtualCells: [{cellType: RACK.NODE, cellNumber: 1}, {cellType: RACK.NODE.SW, cellNumber: 2}]}
  b: {virtualCells: [{cellType: RACK, cellNumber: 1}]}
  c: {virtualCells: [{cellType: T4-NODE, cellNumber: 1}]}
""")
NODES = ["n0", "n1", "n2", "n3", "t0"]

members = st.lists(st.tuples(st.integers(1, 3), st.integers(1, 4)), min_size=1, max_size=2)
submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([-1, 0, 5, 10]),
    members,
    st.sampled_from([(), ("V100",), ("T4",), ("V100", "T4")]),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
health_op = st.tuples(st.just("health"), st.sampled_from(NODES), st.booleans())
ops = st.lists(st.one_of(submit_op, submit_op, release_op, health_op), max_size=30)

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def request(i: int, op: tuple[Any, ...]) -> GangRequest:
    _, vc, prio, ms, types = op
    return GangRequest(f"g{i}", vc, prio, tuple(Member(f"r{j}", p, n) for j, (p, n) in enumerate(ms)), types)


def apply(a: HivedAllocator, i: int, op: tuple[Any, ...]) -> list[Any]:
    if op[0] == "submit":
        return [a.submit(request(i, op))]
    if op[0] == "release":
        keys = sorted(a.groups(), key=lambda k: int(k[1:]))
        return a.release(keys[op[1] % len(keys)]) if keys else []
    return a.set_node_health(op[1], op[2])


def owned(a: HivedAllocator) -> dict[str, set[str]]:
    out: dict[str, set[str]] = {}
    for cell in a.cluster.cells.values():
        if cell.is_leaf and cell.owner is not None:
            out.setdefault(cell.owner, set()).add(cell.id)
    return out


@SETTINGS
@given(ops)
def test_state_stays_sound_after_every_operation(seq: list[tuple[Any, ...]]) -> None:
    """Never over-allocate a leaf, gangs whole or absent, counters/free lists/safety exact."""
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        decisions = apply(a, i, op)
        assert audit(a) == [], (op, decisions)
        # Doomed bad cells: a VC never lacks healthy cells for its unbound quota while a bad free cell of
        # that level could be bound to it instead.
        for vc in a.quota.vcs:
            for chain, level, _, _ in a.quota.healthy_shortfall(vc):
                assert all(c.healthy for c in a.quota.free[(chain, level)]), (vc, chain, level)
        for d in decisions:
            if isinstance(d, Allocated | Preempting):
                g = a._groups[d.key]
                assert len(d.placements) == sum(m.pods for m in g.request.members)
            if isinstance(d, Rejected | Released):
                assert d.key not in a.groups() or d.key != f"g{i}"


@SETTINGS
@given(ops, st.integers(0, 30))
def test_release_returns_exactly_what_was_taken(seq: list[tuple[Any, ...]], pick: int) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        apply(a, i, op)
    held = {k: s for k, s in owned(a).items()}
    if not held:
        return
    key = sorted(held)[pick % len(held)]
    before_others = {k: s for k, s in held.items() if k != key}
    decisions = a.release(key)
    assert decisions[0] == Released(key)
    after = owned(a)
    assert key not in after and key not in a.groups()
    newly = {d.key for d in decisions if isinstance(d, Allocated | Preempting)}
    for k, s in before_others.items():
        # Other gangs keep exactly their leaves (a preemptor that was waiting may now add its own).
        assert after.get(k) == s or k in newly
    freed = held[key]
    taken_again = {leaf for k in newly for leaf in after.get(k, set())}
    for leaf in freed - taken_again:
        assert a.cluster.cells[leaf].owner is None
    assert audit(a) == []


@SETTINGS
@given(ops, st.sampled_from([-1, 0, 5, 10]), members)
def test_submit_then_release_restores_the_state(seq: list[tuple[Any, ...]], prio: int, ms: Any) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        apply(a, i, op)
    before = a.snapshot()
    d = a.submit(request(99, ("submit", "a", prio, ms, ())))
    if isinstance(d, Rejected):
        return
    a.release("g99")
    if isinstance(d, Queued | Preempting | Allocated) and not any(
        g["state"] == "Pending" for g in before["groups"]
    ):
        after = a.snapshot()
        # Counters only move forward: the submission and start order of the gang that came and went, and the
        # recent request mix (a history of what was asked, not a holding).
        after["next_seq"] = before["next_seq"]
        for snap in (after, before):
            snap.pop("next_start", None)
            snap.pop("mix", None)
            snap.pop("mix_total", None)
        assert after == before


@SETTINGS
@given(ops, st.integers(1, 4), st.sampled_from([0, 5, 10, 1000]))
def test_guaranteed_job_within_free_quota_is_always_placed(
    seq: list[tuple[Any, ...]], k: int, prio: int
) -> None:
    """If VC b (one whole rack) has its rack cell unbound and the cluster is healthy, any single pod that
    fits a node is placed at once or by preempting (only opportunistic work can be in its way)."""
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        if op[0] != "health":
            apply(a, i, op)
    if a.quota.unbound("b", ("RACK", 4)) == 1:
        d = a.submit(GangRequest("probe", "b", prio, (Member("r", 1, k),), ("V100",)))
        assert isinstance(d, Allocated | Preempting), d
        if isinstance(d, Preempting):
            assert all(a._groups[v].request.priority == -1 for v in d.victims)
    # Same for VC a's unbound node cell, with the pod size of a node or a switch.
    if a.quota.unbound("a", ("RACK", 3)) == 1:
        d = a.submit(GangRequest("probe-a", "a", prio, (Member("r", 1, k),), ("V100",)))
        assert isinstance(d, Allocated | Preempting), d
    assert audit(a) == []


@SETTINGS
@given(ops, ops)
def test_snapshot_restore_rebuilds_the_same_state(
    first: list[tuple[Any, ...]], then: list[tuple[Any, ...]]
) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(first):
        apply(a, i, op)
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap)
    assert b.snapshot() == snap
    assert audit(b) == []
    assert {c.id: (c.n_free, c.n_bound_below) for c in a.cluster.cells.values()} == {
        c.id: (c.n_free, c.n_bound_below) for c in b.cluster.cells.values()
    }
    # The restored allocator makes exactly the same decisions from here on.
    for i, op in enumerate(then, start=100):
        assert apply(a, i, op) == apply(b, i, op)
    assert a.snapshot() == b.snapshot()
    assert all(s in {st.value for st in GroupState} for s in (g["state"] for g in snap["groups"]))


# 24 nodes of 4 GPUs in racks of 8, one VC over all of it: region lists long enough for the free-node index.
WIDE = parse_inventory_csv(
    "node,leaf_type,leaf_count,cpu,memory_mb,rack\n"
    + "".join(f"n{i},V100,4,32,262144,r{i // 8}\n" for i in range(24))
)
wide_ops = st.lists(
    st.one_of(
        st.tuples(st.just("submit"), st.sampled_from([-1, 5, 10]), st.integers(1, 3), st.integers(1, 4)),
        st.tuples(st.just("release"), st.integers(0, 60), st.just(0), st.just(0)),
        st.tuples(st.just("health"), st.integers(0, 23), st.booleans(), st.just(0)),
    ),
    max_size=40,
)


@SETTINGS
@given(wide_ops)
def test_indexed_best_free_region_matches_the_scan(ops: list[tuple[Any, ...]]) -> None:
    a = HivedAllocator(WIDE)
    for i, (kind, x, y, z) in enumerate(ops):
        if kind == "submit":
            a.submit(GangRequest(f"g{i}", "default", x, (Member("r", y, z),)))
        elif kind == "release":
            keys = sorted(a.groups(), key=lambda k: int(k[1:]))
            if keys:
                a.release(keys[x % len(keys)])
        else:
            a.set_node_health(f"n{x}", y)
        chain = WIDE.chains[0].name
        regions = a._bound_regions("default", chain) + a._open_regions[chain]
        for k in range(1, 5):
            assert a._best_free_indexed(regions, k) == a._best_free_scan(regions, k)
    assert audit(a) == []
