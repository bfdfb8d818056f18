"""Per-leaf badness: a GPU its node agent reports unhealthy gets no new work, what runs there stays, its
cells count as bad for quota (doomed bad cells), and recovery gives the capacity back."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_scheduler import vc_views
from pai_scheduler.hived import (
    Allocated,
    GangRequest,
    GroupState,
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    Released,
    load_hived_config,
    parse_inventory_csv,
)
from pai_scheduler.hived.audit import audit

# Two 4-GPU nodes, one default VC over both.
TWO = parse_inventory_csv(
    "node,leaf_type,leaf_count,cpu,memory_mb\nn0,V100,4,32,262144\nn1,V100,4,32,262144\n"
)

# Two racks of two 4-GPU nodes; VC a: one node + two switches, VC b: one rack.
RACKS = load_hived_config("""
physicalCluster:
  cellTypes:
    SW: {childCellType: V100, childCellNumber: 2}
    NODE: {childCellType: SW, childCellNumber: 2, isNodeLevel: true}
    RACK: {childCellType: NODE, childCellNumber: 2}
  physicalCells:
  - {cellType: RACK, cellChildren: [{cellAddress: n0}, {cellAddress: n1}]}
  - {cellType: RACK, cellChildren: [{cellAddress: n2}, {cellAddress: n3}]}
virtualClusters:
  a: {virtualCells: [{cellType: RACK.NODE, cellNumber: 1}, {cellType: RACK.NODE.SW, cellNumber: 2}]}
  b: {virtualCells: [{cellType: RACK, cellNumber: 1}]}
""")


def gang(
    key: str, *pods: tuple[int, int], vc: str = "default", prio: int = 10, milli: int = 0
) -> GangRequest:
    return GangRequest(
        key, vc, prio, tuple(Member(f"r{i}", n, k, gpu_milli=milli) for i, (n, k) in enumerate(pods))
    )


def used(d: Allocated | Preempting) -> set[tuple[str, int]]:
    return {(p.node, i) for p in d.placements for i in p.leaves}


CASES: list[tuple[str, dict[str, list[int]], GangRequest, set[str] | str]] = [
    ("one bad GPU sends a whole-node pod elsewhere", {"n0": [1]}, gang("g", (1, 4)), {"n1"}),
    (
        "a bad GPU on every node: the whole-node pod waits, naming them",
        {"n0": [1], "n1": [2]},
        gang("g", (1, 4)),
        "bad V100 leaves (no new work): n0 #1, n1 #2",
    ),
    (
        "small pods use the healthy GPUs of a node with bad ones",
        {"n0": [0, 1, 2]},
        gang("g", (2, 1)),
        {"n0", "n1"},
    ),
    ("three healthy GPUs take a 3-GPU pod", {"n0": [3], "n1": [0]}, gang("g", (1, 3)), {"n0"}),
    ("opportunistic work avoids bad GPUs too", {"n0": [0]}, gang("g", (1, 4), prio=-1), {"n1"}),
    (
        "a share goes only to a healthy GPU",
        {"n0": [0, 1, 2, 3], "n1": [0, 1, 2]},
        gang("g", (1, 0), milli=500),
        {"n1"},
    ),
    (
        "every GPU bad: even a share waits",
        {"n0": [0, 1, 2, 3], "n1": [0, 1, 2, 3]},
        gang("g", (1, 0), milli=500),
        "n0 #0, n0 #1, n0 #2, n0 #3, n1 #0",
    ),
]


@pytest.mark.parametrize(("bad", "req", "expected"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_placement_skips_bad_leaves(
    bad: dict[str, list[int]], req: GangRequest, expected: set[str] | str
) -> None:
    a = HivedAllocator(TWO)
    for node, indices in bad.items():
        assert a.set_bad_leaves(node, indices) == []
    d = a.submit(req)
    assert audit(a) == []
    if isinstance(expected, str):
        assert isinstance(d, Queued), d
        assert expected in d.reason
    else:
        assert isinstance(d, Allocated), d
        assert {p.node for p in d.placements} == expected
        assert not used(d) & {(n, i) for n, idx in bad.items() for i in idx}
    # Recovery gives every GPU back: a waiting gang starts, and all leaves count as free again.
    out: list[Any] = []
    for node in bad:
        out += a.set_bad_leaves(node, [])
    if isinstance(expected, str):
        assert [type(x) for x in out] == [Allocated]
    assert a.bad_leaves() == {} and audit(a) == []
    busy = sum(1 for c in a.cluster.cells.values() if c.is_leaf and (c.owner or c.shares))
    assert sum(t.n_free for tops in a.cluster.tops.values() for t in tops) == 8 - busy


def test_running_work_survives_and_the_leaf_is_avoided_afterwards() -> None:
    a = HivedAllocator(TWO)
    d = a.submit(gang("run", (1, 4)))
    assert isinstance(d, Allocated) and d.placements[0].node == "n0"
    assert a.set_leaf_health("n0", 2, False) == []
    assert a.groups()["run"] is GroupState.ALLOCATED and audit(a) == []
    a.release("run")
    # n0 has three usable GPUs now: the whole-node pod goes to n1, and a 3-GPU one fits n0.
    d = a.submit(gang("next", (1, 4)))
    assert isinstance(d, Allocated) and d.placements[0].node == "n1"
    d = a.submit(gang("three", (1, 3)))
    assert isinstance(d, Allocated) and used(d) == {("n0", 0), ("n0", 1), ("n0", 3)}
    q = a.submit(gang("one", (1, 1)))
    assert isinstance(q, Queued) and "n0 #2" in q.reason
    # The GPU recovers: the waiting pod gets it.
    out = a.set_leaf_health("n0", 2, True)
    assert [(type(x), used(x)) for x in out if isinstance(x, Allocated)] == [(Allocated, {("n0", 2)})]
    assert audit(a) == []


def test_preemption_never_takes_a_bad_leaf() -> None:
    a = HivedAllocator(TWO)
    assert isinstance(a.submit(gang("low0", (1, 4), prio=-1)), Allocated)
    assert isinstance(a.submit(gang("low1", (1, 4), prio=-1)), Allocated)
    a.set_bad_leaves("n0", [0])
    d = a.submit(gang("high", (1, 4)))
    assert isinstance(d, Preempting) and d.victims == ("low1",) and d.placements[0].node == "n1"
    a.set_bad_leaves("n1", [3])
    q = a.submit(gang("high2", (1, 4)))
    assert isinstance(q, Queued) and "n0 #0, n1 #3" in q.reason
    assert audit(a) == []


def test_a_preemption_waiting_for_a_leaf_that_goes_bad_is_cancelled() -> None:
    a = HivedAllocator(TWO)
    assert isinstance(a.submit(gang("low0", (1, 4), prio=-1)), Allocated)
    assert isinstance(a.submit(gang("low1", (1, 2), prio=-1)), Allocated)
    assert isinstance(a.submit(gang("low2", (1, 2), prio=-1)), Allocated)
    d = a.submit(gang("high", (1, 4)))
    assert isinstance(d, Preempting) and d.placements[0].node == "n0" and d.victims == ("low0",)
    # One reserved GPU of n0 goes bad: the preemption moves to n1 (low1 and low2 are the victims now) and
    # low0, no longer anyone's victim, runs on.
    out = a.set_bad_leaves("n0", [3])
    assert [type(x) for x in out] == [Queued, Preempting]
    assert out[1].key == "high" and out[1].placements[0].node == "n1" and out[1].victims == ("low1", "low2")
    assert a.groups()["low0"] is GroupState.ALLOCATED
    assert audit(a) == []
    assert a.release("low1") == [Released("low1")]
    done = a.release("low2")
    assert [type(x) for x in done] == [Released, Allocated] and used(done[1]) == {("n1", i) for i in range(4)}
    # Running work on a leaf that goes bad is never touched.
    assert a.set_bad_leaves("n1", [0]) == [] and a.groups()["high"] is GroupState.ALLOCATED
    assert audit(a) == []


def test_unknown_nodes_and_indices_are_ignored() -> None:
    a = HivedAllocator(TWO)
    assert a.set_bad_leaves("nowhere", [0]) == []
    assert a.set_bad_leaves("n0", [7, 1]) == []
    assert a.bad_leaves() == {"n0": {1}}
    assert a.unknown_leaves("n0", [7, 1]) == [7]
    assert a.unknown_leaves("nowhere", [0]) == [0]


def test_bad_leaves_doom_quota_and_recovery_frees_it() -> None:
    """A cell with a bad leaf is bad for quota, like one on a bad node: VC b's rack quota cannot be backed
    by a healthy rack, so it is bound (doomed) to the rack with the bad GPUs."""
    a = HivedAllocator(RACKS)
    a.set_bad_leaves("n0", [0])
    assert a.doomed_cells() == {}  # rack 2 is still healthy for VC b
    a.set_bad_leaves("n3", [3])
    # b's rack quota is bound to a bad rack; then a's node and two switches have only n2 and n3's healthy
    # switch left, so one switch quota is bound to n3's bad switch.
    doomed = {vc: [a.cluster.cells[c] for c in cells] for vc, cells in a.doomed_cells().items()}
    assert [(c.cell_type, c.n_bad_leaves) for c in doomed["b"]] == [("RACK", 1)]
    assert [(c.cell_type, c.node_name) for c in doomed["a"]] == [("SW", "n3")]
    assert "(doomed: leaves n0 #0)" in a.doomed_quota()["b"][0]
    assert "(doomed: leaves n3 #3)" in a.doomed_quota()["a"][0]
    assert audit(a) == []
    # VC b's work still runs on the healthy leaves of its (doomed) rack; never on the bad GPU.
    d = a.submit(gang("b1", (1, 4), vc="b"))
    assert isinstance(d, Allocated) and not used(d) & {("n0", 0), ("n3", 3)}
    assert audit(a) == []
    a.set_bad_leaves("n0", [])
    a.set_bad_leaves("n3", [])
    assert a.doomed_cells() == {} and audit(a) == []


def test_snapshot_round_trip_and_reconfiguration_keep_bad_leaves() -> None:
    a = HivedAllocator(TWO)
    a.submit(gang("run", (1, 2)))
    a.set_bad_leaves("n1", [1, 3])
    a.submit(gang("wait", (1, 4)))
    snap = json.loads(json.dumps(a.snapshot()))
    assert snap["bad_leaves"] == [["n1", 1], ["n1", 3]]
    b = HivedAllocator.restore(TWO, snap)
    assert b.snapshot() == snap and audit(b) == [] and b.bad_leaves() == {"n1": {1, 3}}
    assert {c.id: (c.n_free, c.n_bad_leaves) for c in a.cluster.cells.values()} == {
        c.id: (c.n_free, c.n_bad_leaves) for c in b.cluster.cells.values()
    }
    assert a.release("run") == b.release("run")
    assert a.set_bad_leaves("n1", [3]) == b.set_bad_leaves("n1", [3])
    assert a.snapshot() == b.snapshot()
    # Without bad leaves the snapshot has no such field (older snapshots stay as they were).
    assert "bad_leaves" not in HivedAllocator(TWO).snapshot()
    # A reconfiguration keeps the bad leaves that still exist (n1 shrinks to 2 GPUs: #3 goes).
    smaller = parse_inventory_csv(
        "node,leaf_type,leaf_count,cpu,memory_mb\nn0,V100,4,32,262144\nn1,V100,2,16,131072\n"
    )
    c, _ = HivedAllocator.reconfigure(snap, smaller)
    assert c.bad_leaves() == {"n1": {1}} and audit(c) == []
    with pytest.raises(ValueError, match="n1/3"):
        HivedAllocator.restore(smaller, {**snap, "groups": [], "bindings": []})


def test_quota_binds_to_wholly_healthy_cells_first() -> None:
    """VC b's rack binds to rack 1, not to rack 0 whose n0 is bad: rack 0 would hold one of the gang's two
    pods only, and the gang would wait while rack 1 stood free (found by the property test below)."""
    a = HivedAllocator(RACKS)
    a.set_node_health("n0", False)
    (started,) = a.submit_all(gang("g", (2, 3), vc="b", prio=0))
    assert isinstance(started, Allocated)
    assert {p.node for p in started.placements} == {"n2", "n3"}
    assert audit(a) == []


# ---------------------------------------------------------------------------- property

submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(["a", "b"]),
    st.sampled_from([-1, 0, 5, 10]),
    st.lists(st.tuples(st.integers(1, 3), st.integers(0, 4)), min_size=1, max_size=2),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
leaf_op = st.tuples(
    st.just("leaves"), st.sampled_from(["n0", "n1", "n2", "n3"]), st.sets(st.integers(0, 3), max_size=3)
)
node_op = st.tuples(st.just("node"), st.sampled_from(["n0", "n1", "n2", "n3"]), st.booleans())
ops = st.lists(st.one_of(submit_op, submit_op, release_op, leaf_op, node_op), max_size=30)
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(a: HivedAllocator, i: int, op: tuple[Any, ...]) -> list[Any]:
    if op[0] == "submit":
        # leaves 0 stands for a half-GPU share.
        members = tuple(Member(f"r{j}", n, k, gpu_milli=0 if k else 500) for j, (n, k) in enumerate(op[3]))
        return a.submit_all(GangRequest(f"g{i}", op[1], op[2], members))
    if op[0] == "release":
        keys = sorted(a.groups(), key=lambda k: int(k[1:]))
        return a.release(keys[op[1] % len(keys)]) if keys else []
    if op[0] == "leaves":
        return a.set_bad_leaves(op[1], op[2])
    return a.set_node_health(op[1], op[2])


@SETTINGS
@given(ops, st.sampled_from(["n0", "n1", "n2", "n3"]), st.sets(st.integers(0, 3), min_size=1))
def test_never_allocates_a_bad_leaf_and_recovery_restores_capacity(
    seq: list[tuple[Any, ...]], node: str, indices: set[int]
) -> None:
    a = HivedAllocator(RACKS)
    for i, op in enumerate(seq):
        for d in apply(a, i, op):
            if not isinstance(d, Allocated | Preempting):
                continue
            bad = {(n, x) for n, idx in a.bad_leaves().items() for x in idx}
            # Neither a new placement nor a finishing preemption ever uses a bad leaf.
            assert not used(d) & bad, (op, d)
        # No preemption in progress waits for a bad leaf.
        for key, state in a.groups().items():
            if state is GroupState.PREEMPTING:
                leaves = a._groups[key].leaves()
                assert all(x.healthy or (x.node is not None and x.node.n_bad_nodes) for x in leaves), key
        assert audit(a) == [], op
        for vc in a.quota.vcs:
            for chain, level, _, _ in a.quota.healthy_shortfall(vc):
                assert all(c.healthy for c in a.quota.free[(chain, level)]), (vc, chain, level)
    # Round trip through a snapshot with bad leaves in it.
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(RACKS, snap)
    assert b.snapshot() == snap and audit(b) == []
    # Marking leaves bad and recovering them at once gives the same state back (nothing was waiting for
    # them that could not start before) unless a preemption had to move off them; and once every leaf
    # recovers each idle leaf counts as free.
    before = a.snapshot()
    current = a.bad_leaves().get(node, set())
    moved = a.set_bad_leaves(node, current | indices)
    a.set_bad_leaves(node, current)
    if not moved:
        assert a.snapshot() == before
    for n in a.bad_leaves():
        a.set_bad_leaves(n, [])
    assert audit(a) == []
    for cell in a.cluster.cells.values():
        if cell.is_leaf:
            assert cell.n_free == int(cell.owner is None and cell.reserver is None and not cell.shares)


def test_vc_views_do_not_count_bad_gpus_as_available() -> None:
    a = HivedAllocator(RACKS)
    views = vc_views.virtual_clusters(a)
    assert views["a"]["resourcesAvailable"]["gpu"] == 8 and views["b"]["resourcesAvailable"]["gpu"] == 8
    assert isinstance(a.submit(gang("b1", (1, 2), vc="b")), Allocated)
    assert vc_views.virtual_clusters(a)["b"]["resourcesAvailable"]["gpu"] == 6
    # One bad GPU in each rack: b's rack quota is backed by a rack with a bad GPU (its own bound rack or
    # a doomed one), a's quota loses the bad GPU its cells are bound to; the totals keep them.
    a.set_bad_leaves("n0", [3])
    a.set_bad_leaves("n2", [3])
    views = vc_views.virtual_clusters(a)
    assert views["b"]["resourcesAvailable"]["gpu"] == 5
    assert views["a"]["resourcesAvailable"]["gpu"] == 7
    assert views["a"]["resourcesTotal"]["gpu"] == 16 and views["b"]["resourcesGuaranteed"]["gpu"] == 8
    a.set_bad_leaves("n0", [])
    a.set_bad_leaves("n2", [])
    assert vc_views.virtual_clusters(a)["b"]["resourcesAvailable"]["gpu"] == 6
