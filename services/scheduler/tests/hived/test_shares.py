"""Fractional accelerators (GPU shares): scenarios, then properties over random operation sequences."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_scheduler.hived import (
    Allocated,
    GangRequest,
    HivedAllocator,
    Member,
    PodPlacement,
    Preempting,
    Queued,
    Released,
    load_hived_config,
)
from pai_scheduler.hived.audit import audit
from pai_scheduler.hived.config import DEFAULT_LEAF_MEMORY_MB

# Two 4-GPU nodes in one rack (GPU -> switch of 2 -> node of 4) with 16000 MB per GPU, plus a 2-GPU T4
# node whose SKU does not give its memory. VC a: one node; VC b: one node; VC c: the T4 node.
CONFIG = load_hived_config("""
physicalCluster:
  skuTypes:
    V100: {gpu: 1, cpu: 4, memory: 16Gi, gpuMemory: 16000Mi}
  cellTypes:
    SW: {childCellType: V100, childCellNumber: 2}
    NODE: {childCellType: SW, childCellNumber: 2, isNodeLevel: true}
    RACK: {childCellType: NODE, childCellNumber: 2}
    T4-NODE: {childCellType: T4, childCellNumber: 2, isNodeLevel: true}
  physicalCells:
  - {cellType: RACK, cellChildren: [{cellAddress: n0}, {cellAddress: n1}]}
  - {cellType: T4-NODE, cellAddress: t0}
virtualClusters:
  a: {virtualCells: [{cellType: RACK.NODE, cellNumber: 1}]}
  b: {virtualCells: [{cellType: RACK.NODE, cellNumber: 1}]}
  c: {virtualCells: [{cellType: T4-NODE, cellNumber: 1}]}
""")
V100 = ("V100",)


def share(key: str, vc: str, prio: int, milli: int, memory: int = 0, pods: int = 1, **kw: Any) -> GangRequest:
    return GangRequest(
        key, vc, prio, (Member("r", pods, 0, gpu_milli=milli, gpu_memory_mb=memory),), V100, **kw
    )


def whole(key: str, vc: str, prio: int, leaves: int, pods: int = 1) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("r", pods, leaves),), V100)


def spot(d: object) -> list[tuple[str, int]]:
    assert isinstance(d, Allocated | Preempting), d
    return [(p.node, p.leaves[0]) for p in d.placements]


def test_memory_per_leaf_comes_from_the_sku_or_the_default() -> None:
    a = HivedAllocator(CONFIG)
    assert a.cluster.leaf_memory_mb == {"RACK": 16000, "T4-NODE": DEFAULT_LEAF_MEMORY_MB}
    assert CONFIG.sku("V100") is not None and CONFIG.sku("V100").gpu_memory_mb == 16000  # type: ignore[union-attr]


def test_shares_of_one_gang_pack_onto_one_leaf_and_report_the_share() -> None:
    a = HivedAllocator(CONFIG)
    d = a.submit(share("g", "a", 10, 250, 1000, pods=4))
    assert isinstance(d, Allocated)
    assert len(set(spot(d))) == 1
    assert all(p.milli == 250 and p.memory_mb == 1000 and p.is_share for p in d.placements)
    leaf = a.cluster.leaf_at[("RACK", d.placements[0].node, d.placements[0].leaves[0])]
    assert (leaf.share_milli, leaf.share_memory) == (1000, 4000)
    # Whole-leaf placements keep their old shape.
    d2 = a.submit(whole("w", "a", 10, 1))
    assert isinstance(d2, Allocated) and d2.placements[0] == PodPlacement(
        "r", 0, d2.placements[0].node, "V100", d2.placements[0].leaves
    )
    assert audit(a) == []


def test_fraction_as_leaves_is_read_as_milli() -> None:
    m = Member("r", 1, 0.25)  # type: ignore[arg-type]
    assert (m.leaves, m.gpu_milli, m.is_share) == (0, 250, True)
    assert Member("r", 1, 2.0).leaves == 2  # type: ignore[arg-type]


def test_best_fit_packs_onto_the_fullest_shared_leaf_first() -> None:
    a = HivedAllocator(CONFIG)
    s600 = spot(a.submit(share("s600", "a", 10, 600)))
    s300 = spot(a.submit(share("s300", "a", 10, 300)))
    assert s300 == s600  # joins the shared leaf instead of opening a new one
    s400 = spot(a.submit(share("s400", "a", 10, 400)))
    assert s400 != s600  # 100 left there: opens a second leaf, on the same node (best fit in the node)
    assert s400[0][0] == s600[0][0]
    s100 = spot(a.submit(share("s100", "a", 10, 100)))
    assert s100 == s600  # best fit: the leaf with 100 left, not the one with 600 left
    f = a.fragmentation()
    assert (f.shared_leaves, f.stranded_leaves, f.stranded_milli) == (2, 1, 600)
    assert a.fragmentation(milli=500).stranded_leaves == 0  # the 600 left serve a 500 share
    assert a.fragmentation(milli=700).stranded_milli == 600
    assert audit(a) == []


def test_memory_bounds_shares_too() -> None:
    a = HivedAllocator(CONFIG)
    first = spot(a.submit(share("m1", "a", 10, 100, 8000)))
    assert spot(a.submit(share("m2", "a", 10, 100, 8000))) == first
    third = spot(a.submit(share("m3", "a", 10, 100, 1)))
    assert third != first  # no memory left there although 800 milli are idle
    # Memory-only shares work as well.
    assert isinstance(a.submit(share("mem", "a", 10, 0, 15999)), Allocated)
    assert audit(a) == []


def test_whole_gpu_requests_never_land_on_shared_leaves() -> None:
    a = HivedAllocator(CONFIG)
    a.submit(share("s", "a", 10, 100))  # one leaf of VC a's node is shared
    d = a.submit(whole("w4", "a", 10, 4))
    assert isinstance(d, Queued) and "needs 4 on one node" in d.reason
    d3 = a.submit(whole("w3", "a", 10, 3))
    assert isinstance(d3, Allocated)
    shared = a.cluster.leaf_at[("RACK", spot(a.decision_of("s"))[0][0], spot(a.decision_of("s"))[0][1])]
    assert all(a.cluster.leaf_at[("RACK", p.node, i)] is not shared for p in d3.placements for i in p.leaves)
    a.release("s")
    assert a.pending()[0].key == "w4"
    assert audit(a) == []


def test_a_share_holds_its_leaf_for_the_vc_quota() -> None:
    a = HivedAllocator(CONFIG)
    d = a.submit(share("s1", "a", 10, 300))
    a.submit(share("s2", "a", 10, 300))
    assert a.used_leaves() == {"a": {"V100": 1}}  # two shares of one leaf: one leaf of quota
    node = spot(d)[0][0]
    cell = next(c for c in a.cluster.nodes[node] if c.chain == "RACK")
    assert cell.bound_vc == "a" and cell.n_guaranteed == 1
    # VC a's quota is one node: 3 free leaves there, a 4-leaf pod cannot fit while the share runs.
    assert isinstance(a.submit(whole("w", "a", 10, 4)), Queued)
    a.release("s1")
    assert cell.bound_vc == "a"
    out = a.release("s2")
    assert isinstance(out[-1], Allocated) and out[-1].key == "w"  # the whole node is free again
    a.release("w")
    assert cell.bound_vc is None  # nothing of VC a's left: the quota cell is unbound again
    assert audit(a) == []


def test_opportunistic_and_guaranteed_shares_never_mix_on_a_leaf() -> None:
    a = HivedAllocator(CONFIG)
    o = spot(a.submit(share("o", "b", -1, 200)))
    g = spot(a.submit(share("g", "a", 10, 200)))
    assert o != g
    o2 = spot(a.submit(share("o2", "a", -1, 200)))
    assert o2 == o  # opportunistic shares of any VC share a leaf
    assert audit(a) == []


def test_a_guaranteed_whole_pod_preempts_every_sharer_of_a_leaf() -> None:
    a = HivedAllocator(CONFIG)
    # Opportunistic shares spread over all 8 V100 leaves (one 600 share per leaf).
    for i in range(8):
        assert isinstance(a.submit(share(f"o{i}", "b", -1, 600)), Allocated)
    a.submit(share("o8", "b", -1, 300))  # joins one of them
    d = a.submit(whole("w", "a", 10, 1))
    assert isinstance(d, Preempting)
    leaf = a.cluster.leaf_at[("RACK", d.placements[0].node, d.placements[0].leaves[0])]
    assert set(d.victims) == set(leaf.shares) and len(d.victims) == 1
    out = []
    for v in d.victims:
        out += a.release(v)
    assert out[-1] == Allocated("w", d.placements)
    assert audit(a) == []


def test_a_guaranteed_share_preempts_by_reserving_a_whole_leaf() -> None:
    a = HivedAllocator(CONFIG)
    for i in range(8):
        a.submit(whole(f"o{i}", "b", -1, 1))
    d = a.submit(share("s", "a", 10, 400, pods=2))
    assert isinstance(d, Preempting) and len(d.victims) == 2  # each share pod reserves a leaf of its own
    assert audit(a) == []
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap)
    assert b.snapshot() == snap and audit(b) == []
    outs = [a.release(v) for v in d.victims]
    assert isinstance(outs[-1][-1], Allocated) and outs[-1][-1].key == "s"
    assert all(p.milli == 400 for p in outs[-1][-1].placements)
    assert audit(a) == []


def test_release_returns_exactly_the_share_and_snapshots_round_trip() -> None:
    a = HivedAllocator(CONFIG)
    a.submit(share("s1", "a", 10, 300, 2000))
    before = a.snapshot()
    d = a.submit(share("s2", "a", 10, 200, 500, pods=2))
    assert isinstance(d, Allocated)
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap)
    assert b.snapshot() == snap and audit(b) == []
    leaf = b.cluster.leaf_at[("RACK", d.placements[0].node, d.placements[0].leaves[0])]
    assert leaf.shares["s2"] == (400, 1000, 10, 2)
    assert a.release("s2") == [Released("s2")] == b.release("s2")
    after = a.snapshot()
    after["next_seq"] = before["next_seq"]
    assert after["mix"][len(before["mix"]) :] == [[["V100"], 200]] * 2  # the mix remembers what was asked
    for state in (after, before):
        state.pop("next_start", None)
        state.pop("mix", None)
        state.pop("mix_total", None)
    assert after == before
    broken = json.loads(json.dumps(snap))
    broken["groups"][1]["placement"][0]["milli"] = 999
    try:
        HivedAllocator.restore(CONFIG, broken)
    except ValueError as e:
        assert "share placement" in str(e)
    else:
        raise AssertionError("an inconsistent share was restored")


def test_bad_nodes_get_no_new_shares() -> None:
    a = HivedAllocator(CONFIG)
    first = spot(a.submit(share("s", "a", 10, 100)))
    a.set_node_health(first[0][0], False)
    assert spot(a.submit(share("t", "a", -1, 100)))[0][0] != first[0][0]
    assert a.fragmentation().shared_leaves == 1  # the bad node's shared leaf is not counted
    assert audit(a) == []


# ------------------------------------------------------------------------------------------ properties

NODES = ["n0", "n1", "t0"]
share_op = st.tuples(
    st.just("share"),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([-1, 0, 5, 10]),
    st.integers(1, 3),
    st.sampled_from([0, 100, 250, 500, 700, 999]),
    st.sampled_from([0, 0, 4000, 9000]),
    st.sampled_from([(), ("V100",), ("T4",)]),
)
whole_op = st.tuples(
    st.just("whole"),
    st.sampled_from(["a", "b", "c"]),
    st.sampled_from([-1, 0, 5, 10]),
    st.integers(1, 2),
    st.integers(1, 3),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
health_op = st.tuples(st.just("health"), st.sampled_from(NODES), st.booleans())
ops = st.lists(st.one_of(share_op, share_op, whole_op, release_op, health_op), max_size=25)
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(a: HivedAllocator, i: int, op: tuple[Any, ...]) -> list[Any]:
    key = f"g{i}"
    if op[0] == "share":
        _, vc, prio, pods, milli, mem, types = op
        if milli == 0 and mem == 0:
            milli = 1
        member = Member("r", pods, 0, gpu_milli=milli, gpu_memory_mb=mem)
        return [a.submit(GangRequest(key, vc, prio, (member,), types))]
    if op[0] == "whole":
        _, vc, prio, pods, k = op
        return [
            a.submit(GangRequest(key, vc, prio, (Member("w", pods, k), Member("s", 1, 0, gpu_milli=300))))
        ]
    if op[0] == "release":
        keys = sorted(a.groups(), key=lambda k: int(k[1:]))
        return a.release(keys[op[1] % len(keys)]) if keys else []
    return a.set_node_health(op[1], op[2])


def holdings(a: HivedAllocator) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for cell in a.cluster.cells.values():
        if cell.is_leaf:
            if cell.owner is not None:
                out.setdefault(cell.owner, {})[cell.id] = "whole"
            for k, s in cell.shares.items():
                out.setdefault(k, {})[cell.id] = s[:2] + s[3:]
    return out


@SETTINGS
@given(ops)
def test_shares_never_overbook_a_leaf_after_any_operation(seq: list[tuple[Any, ...]]) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        decisions = apply(a, i, op)
        assert audit(a) == [], (op, decisions)
        f = a.fragmentation()
        assert 0 <= f.stranded_leaves <= f.shared_leaves and 0.0 <= f.stranded_ratio <= 1.0


@SETTINGS
@given(ops, st.integers(0, 30))
def test_release_returns_exactly_the_shares_taken(seq: list[tuple[Any, ...]], pick: int) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        apply(a, i, op)
    held = holdings(a)
    if not held:
        return
    key = sorted(held)[pick % len(held)]
    decisions = a.release(key)
    assert decisions[0] == Released(key)
    after = holdings(a)
    newly = {d.key for d in decisions if isinstance(d, Allocated | Preempting)}
    assert key not in after
    for k, h in held.items():
        if k != key and k not in newly:
            assert after.get(k) == h
    assert audit(a) == []


@SETTINGS
@given(ops, ops)
def test_snapshot_round_trips_shares_exactly(
    first: list[tuple[Any, ...]], then: list[tuple[Any, ...]]
) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(first):
        apply(a, i, op)
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap)
    assert b.snapshot() == snap and audit(b) == []
    assert {c.id: (c.shares, c.n_free) for c in a.cluster.cells.values()} == {
        c.id: (c.shares, c.n_free) for c in b.cluster.cells.values()
    }
    for i, op in enumerate(then, start=100):
        assert apply(a, i, op) == apply(b, i, op)
    assert a.snapshot() == b.snapshot()


@SETTINGS
@given(st.lists(st.tuples(st.integers(1, 999), st.integers(1, 3)), max_size=25))
def test_any_fit_at_most_one_shared_leaf_is_half_empty(sizes: list[tuple[int, int]]) -> None:
    """Best fit opens a new leaf only when no shared leaf has room: without releases, two shared leaves
    that are both at most half used cannot exist (the later one's first share would have fitted)."""
    a = HivedAllocator(CONFIG)
    for i, (milli, pods) in enumerate(sizes):
        a.submit(share(f"s{i}", "b", -1, milli, pods=pods))
    assert audit(a) == []
    half_empty = [x for x in a.cluster.shared["RACK"] if x.share_milli <= 500]
    assert len(half_empty) <= 1
    used = sum(x.share_milli for x in a.cluster.shared["RACK"])
    assert len(a.cluster.shared["RACK"]) <= max(1, 2 * -(-used // 1000))
