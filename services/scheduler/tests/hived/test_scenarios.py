"""Scenarios modelled on HiveD's own test suite (design config) and feature walkthrough.

Exact node names among equivalent cells depend on free-list order, which differs from HiveD's; the tests
assert the invariants HiveD's scenarios are about (same node, same rack, not preempting, ...) and exact
names only where the choice is forced.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

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
)
from pai_scheduler.hived.audit import audit

# This project's test clusters (the same hardware as HiveD's example configs of the same names).
CONFIGS = Path(__file__).resolve().parent / "clusters"
V100 = ("DGX2-V100",)


def gang(
    key: str,
    vc: str,
    prio: int,
    *members: tuple[int, int],
    types: tuple[str, ...] = (),
    pin: str | None = None,
) -> GangRequest:
    return GangRequest(
        key, vc, prio, tuple(Member(f"r{i}", p, n) for i, (p, n) in enumerate(members)), types, pin
    )


def design(text_edit: tuple[str, str] | None = None) -> HivedAllocator:
    text = (CONFIGS / "design.yaml").read_text()
    if text_edit is not None:
        assert text_edit[0] in text
        text = text.replace(*text_edit)
    return HivedAllocator(load_hived_config(text))


def nodes(d: object) -> list[str]:
    assert isinstance(d, Allocated | Preempting), d
    return [p.node for p in d.placements]


def leaves(d: object) -> list[tuple[int, ...]]:
    assert isinstance(d, Allocated), d
    return [p.leaves for p in d.placements]


def rack_of(a: HivedAllocator, node: str, chain: str) -> str:
    cell = next(c for c in a.cluster.nodes[node] if c.chain == chain)
    assert cell.parent is not None
    return cell.parent.id


@pytest.fixture
def a() -> HivedAllocator:
    return design()


def test_buddy_packing_and_preemption_avoidance(a: HivedAllocator) -> None:
    d1 = a.submit(gang("pod1", "VC1", 0, (1, 1), types=V100))
    d2 = a.submit(gang("pod2", "VC1", 1, (1, 1), types=V100))
    # The second 1-GPU pod lands on the buddy leaf of the first.
    assert nodes(d1) == nodes(d2)
    (l1,), (l2,) = leaves(d1)[0], leaves(d2)[0]
    assert {l1, l2} == {0, 1}
    # An 8-GPU pod of higher priority takes the free half of the node rather than preempting.
    d3 = a.submit(gang("pod3", "VC1", 2, (1, 8), types=V100))
    assert nodes(d3) == nodes(d1) and leaves(d3) == [tuple(range(8, 16))]
    # An opportunistic pod keeps away from nodes with guaranteed work.
    d4 = a.submit(gang("pod4", "VC1", -1, (1, 1), types=V100))
    assert nodes(d4) != nodes(d1)
    assert audit(a) == []


def test_gang_is_packed_into_the_lowest_cell_and_one_rack(a: HivedAllocator) -> None:
    d = a.submit(gang("g", "VC1", 1, (2, 16), types=V100))
    n = nodes(d)
    assert len(set(n)) == 2
    chain = next(c.chain for c in a.cluster.nodes[n[0]])
    assert rack_of(a, n[0], chain) == rack_of(a, n[1], chain)


def test_best_affinity_over_permuted_indices() -> None:
    a = design()
    # Fill 1.0.0.2 and 1.0.0.1 first? No: a 7-GPU pod wants the lowest common ancestor: the node; its
    # 7 leaves there come from whole sockets and switches, and the one left free is a single GPU.
    d = a.submit(gang("g9", "VC2", 1, (1, 7), (1, 5), types=("DGX1-P100",)))
    assert isinstance(d, Allocated)
    p7, p5 = d.placements
    assert len(p7.leaves) == 7 and len(p5.leaves) == 5 and p7.node != p5.node
    node = next(c for c in a.cluster.nodes[p7.node] if c.chain == "3-DGX1-P100-NODE")
    left = [x for x in node.leaves if x.owner is None]
    assert len(left) == 1


def test_pinned_cells_serve_only_jobs_that_name_them(a: HivedAllocator) -> None:
    d = a.submit(gang("g5", "VC1", 1, (2, 16), types=V100, pin="VC1-YQW-DGX2"))
    assert sorted(nodes(d)) == ["0.0.3.0", "0.0.3.1"]
    # Jobs not naming the pin never land there, even with it idle.
    a.release("g5")
    for i in range(6):
        d = a.submit(gang(f"x{i}", "VC1", 1, (1, 16), types=V100))
        assert isinstance(d, Allocated) and d.placements[0].node not in ("0.0.3.0", "0.0.3.1")
    o = a.submit(gang("oppo", "VC2", -1, (1, 1)))
    assert isinstance(o, Allocated)
    assert all(p.node not in ("0.0.3.0", "0.0.3.1", "0.1.0.0", "0.1.0.1") for p in o.placements)
    assert isinstance(a.submit(gang("p2", "VC2", 1, (1, 1), pin="VC1-YQW-DGX2")), Rejected)
    assert isinstance(a.submit(gang("p3", "VC1", -1, (1, 1), pin="VC1-YQW-DGX2")), Rejected)
    assert audit(a) == []


def test_pinned_preemption_waits_for_the_victims_then_allocates(a: HivedAllocator) -> None:
    a.submit(gang("g5", "VC1", 1, (2, 16), types=V100, pin="VC1-YQW-DGX2"))
    d = a.submit(gang("g11", "VC1", 2, (2, 16), types=V100, pin="VC1-YQW-DGX2"))
    assert isinstance(d, Preempting) and d.victims == ("g5",)
    assert a.groups()["g5"] is GroupState.BEING_PREEMPTED
    # A third gang of the same priority cannot take the reserved cells (a higher one could: test_override.py).
    q = a.submit(gang("g12", "VC1", 2, (1, 16), types=V100, pin="VC1-YQW-DGX2"))
    assert isinstance(q, Queued)
    out = a.release("g5")
    assert out[0] == Released("g5")
    assert isinstance(out[1], Allocated) and out[1].key == "g11"
    assert audit(a) == []


def test_preemption_chain_lowest_priority_and_opportunistic_first() -> None:
    text = (CONFIGS / "hived-config-3.yaml").read_text()
    a = HivedAllocator(load_hived_config(text))  # vc1: 1 K80 node (4 GPUs), default: 3 K80 nodes
    k80 = ("K80",)
    assert isinstance(a.submit(gang("test", "vc1", 10, (1, 2), types=k80)), Allocated)
    assert isinstance(a.submit(gang("test2", "vc1", 20, (1, 2), types=k80)), Allocated)
    # prod (100) needs the whole node: both lower-priority gangs of its own VC are victims, lowest first.
    d = a.submit(gang("prod", "vc1", 100, (1, 4), types=k80))
    assert isinstance(d, Preempting) and d.victims == ("test", "test2")
    # crit (120) of the same VC overrides prod's reservation (HiveD's Reserving/Reserved overwrite):
    # prod goes back to waiting, crit preempts the same victims.
    out = a.submit_all(gang("crit", "vc1", 120, (1, 4), types=k80))
    assert [type(x) for x in out] == [Queued, Preempting]
    assert out[0].key == "prod" and out[1].key == "crit" and out[1].victims == ("test", "test2")
    assert a.groups()["prod"] is GroupState.PENDING
    assert audit(a) == []
    assert a.release("test")[1:] == []
    out = a.release("test2")
    assert [type(x) for x in out] == [Released, Allocated]
    assert out[1].key == "crit"
    # prod cannot preempt crit; it starts when crit ends.
    assert isinstance(a.decision_of("prod"), Queued)
    out = a.release("crit")
    assert [type(x) for x in out] == [Released, Allocated] and out[1].key == "prod"
    assert audit(a) == []


def test_guaranteed_preempts_other_vcs_opportunistic_but_never_their_guaranteed() -> None:
    a = HivedAllocator(load_hived_config((CONFIGS / "hived-config-3.yaml").read_text()))
    k80 = ("K80",)
    # vc1 runs opportunistic work on 2 nodes beyond its quota (itc-inter-preempt-oppo).
    o = a.submit(gang("oppo", "vc1", -1, (4, 4), types=k80))
    assert isinstance(o, Allocated) and len(set(nodes(o))) == 4
    # default's prod gang over 3 nodes preempts the opportunistic gang (whole).
    d = a.submit(gang("prod", "default", 100, (3, 4), types=k80))
    assert isinstance(d, Preempting) and d.victims == ("oppo",)
    a.release("oppo")
    assert a.groups()["prod"] is GroupState.ALLOCATED
    # vc1's highest-priority work can use only vc1's node; a 2-node gang never preempts default's.
    assert isinstance(a.submit(gang("big", "vc1", 1000, (2, 4), types=k80)), Rejected)
    assert isinstance(a.submit(gang("one", "vc1", 1000, (1, 4), types=k80)), Allocated)
    assert isinstance(a.submit(gang("two", "vc1", 1000, (1, 4), types=k80)), Queued)
    assert a.groups()["prod"] is GroupState.ALLOCATED
    assert audit(a) == []


def test_opportunistic_jobs_use_idle_cells_of_any_vc_and_never_preempt() -> None:
    a = HivedAllocator(load_hived_config((CONFIGS / "hived-config-1.yaml").read_text()))
    # vc1 owns one node; its opportunistic gang uses two (a gang stays inside one chain).
    o = a.submit(gang("oppo", "vc1", -1, (2, 4), types=("K80",)))
    assert isinstance(o, Allocated) and len(set(nodes(o))) == 2
    o2 = a.submit(gang("o2", "vc2", -1, (2, 4)))
    assert isinstance(o2, Allocated) and "10.151.41.25" not in nodes(o2)  # never the pinned node
    q = a.submit(gang("o3", "vc2", -1, (1, 4)))
    assert isinstance(q, Queued) and q.reason.startswith("opportunistic (idle cells of any VC): 0 idle K80")
    assert isinstance(a.submit(gang("o4", "vc2", -1, (3, 4))), Rejected)


def test_vc_safety_no_sharing_anomaly() -> None:
    # Two VCs each own one K80 node of the 3-node chain; vc1 runs 4 one-GPU jobs, then vc2 still gets a
    # whole node for a 4-GPU job (a quota-only scheduler could have spread vc1's jobs over both nodes).
    text = (CONFIGS / "hived-config-1.yaml").read_text()
    a = HivedAllocator(load_hived_config(text))
    used = {nodes(a.submit(gang(f"s{i}", "vc1", 10, (1, 1), types=("K80",))))[0] for i in range(4)}
    assert len(used) == 1
    assert isinstance(a.submit(gang("s5", "vc1", 10, (1, 1), types=("K80",))), Queued)
    assert isinstance(a.submit(gang("whole", "vc2", 10, (1, 4), types=("K80",))), Allocated)


def test_bad_nodes_are_avoided_and_running_work_survives(a: HivedAllocator) -> None:
    d = a.submit(gang("run", "VC1", 1, (1, 16), types=V100))
    node = nodes(d)[0]
    assert a.set_node_health(node, False) == []
    assert a.groups()["run"] is GroupState.ALLOCATED
    a.submit(gang("more", "VC1", 1, (1, 1), types=V100))
    assert nodes(a.decision_of("more"))[0] != node
    a.release("run")
    for i in range(4):
        got = a.submit(gang(f"n{i}", "VC1", 1, (1, 16), types=V100))
        if isinstance(got, Allocated):
            assert got.placements[0].node != node
    assert audit(a) == []


def test_doomed_bad_cells_are_bound_to_bad_hardware_per_vc() -> None:
    """HiveD's testBadNodes: the 3-node rack 0.0.2.x is fully reserved (VC1 2 node cells, VC2 1)."""
    a = design(
        (
            "    - cellType: CT1-NODE\n      cellNumber: 1\n",
            "    - cellType: CT1-NODE\n      cellNumber: 1\n"
            "    - cellType: 3-DGX2-V100-NODE.DGX2-V100-NODE\n      cellNumber: 1\n",
        )
    )

    def doomed() -> dict[str, list[str]]:
        assert audit(a) == []
        return {
            vc: [a.cluster.cells[c].node_name or "" for c in cells] for vc, cells in a.doomed_cells().items()
        }

    assert nodes(a.submit(gang("pod42", "VC1", 1, (1, 16), types=V100))) == ["0.0.2.0"]
    a.set_node_health("0.0.2.1", False)
    assert doomed() == {}  # per VC, each still has a healthy free node for its one unbound cell
    assert nodes(a.submit(gang("pod43", "VC2", 1, (1, 16), types=V100))) == ["0.0.2.2"]
    assert doomed() == {"VC1": ["0.0.2.1"]}
    assert "bound to bad hardware (doomed: node(s) 0.0.2.1)" in a.doomed_quota()["VC1"][0]
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(a.config, snap)
    assert b.snapshot() == snap and audit(b) == []
    assert a.release("pod43") == b.release("pod43") == [Released("pod43")]
    assert doomed() == {} and a.snapshot() == b.snapshot()
    a.set_node_health("0.0.2.2", False)
    assert doomed() == {"VC1": ["0.0.2.1"], "VC2": ["0.0.2.2"]}
    a.set_node_health("0.0.2.2", True)
    assert doomed() == {}
    a.set_node_health("0.0.2.0", False)
    a.set_node_health("0.0.2.2", False)
    a.release("pod42")
    assert doomed() == {"VC1": ["0.0.2.0", "0.0.2.1"], "VC2": ["0.0.2.2"]}
    # A doomed cell is avoided: VC2's only V100 quota is doomed, so its V100 job waits.
    q = a.submit(gang("pod44", "VC2", 1, (1, 16), types=V100))
    assert isinstance(q, Queued) and "3 bad node(s)" in q.reason
    assert "its bound cells have 0 free leaves (at most 0 on one node), 1 of them doomed" in q.reason
    # Its node recovers: the doomed binding goes, and the job starts there.
    out = a.set_node_health("0.0.2.2", True)
    assert nodes(out[0]) == ["0.0.2.2"]
    assert doomed() == {"VC1": ["0.0.2.0", "0.0.2.1"]}
    for node in ("0.0.2.0", "0.0.2.1"):
        a.set_node_health(node, True)
    assert doomed() == {}


def test_safe_relaxed_buddy_allocation() -> None:
    # HiveD's testSafeRelaxedBuddyAlloc: VC1 = 4 node cells of the 4-rack chain, VC2 = one 2-node cell.
    text = (CONFIGS / "design.yaml").read_text()
    start = text.index("virtualClusters:")
    text = (
        text[:start]
        + """virtualClusters:
  VC1:
    virtualCells:
    - cellType: 4-DGX2-V100-NODE.2-DGX2-V100-NODE.DGX2-V100-NODE
      cellNumber: 4
    pinnedCells:
    - pinnedCellId: VC1-YQW-DGX2
  VC2:
    virtualCells:
    - cellType: 4-DGX2-V100-NODE.2-DGX2-V100-NODE
      cellNumber: 1
"""
    )
    a = HivedAllocator(load_hived_config(text))
    assert nodes(a.submit(gang("p44", "VC1", 1, (1, 16), types=V100))) == ["0.0.3.2"]
    a.set_node_health("0.0.3.3", False)
    # Plain buddy would bind the bad 0.0.3.3; splitting rack B is still safe.
    n45 = nodes(a.submit(gang("p45", "VC1", 1, (1, 16), types=V100)))[0]
    assert n45.startswith("0.0.4.")
    n46 = nodes(a.submit(gang("p46", "VC1", 1, (1, 16), types=V100)))[0]
    assert n46.startswith("0.0.4.") and n46 != n45
    # Two healthy nodes are free in rack B, but taking one would break VC2's 2-node cell: wait.
    q = a.submit(gang("p47", "VC1", 1, (1, 16), types=V100))
    assert isinstance(q, Queued) and "1 bad node(s)" in q.reason
    assert sorted(nodes(a.submit(gang("vc2", "VC2", 1, (2, 16), types=V100)))) != []
    # VC1's last unbound node cell can only be backed by the bad 0.0.3.3 now: it is bound there, doomed.
    assert a.doomed_quota() == {
        "VC1": [
            "VC VC1: its DGX2-V100-NODE cell (chain 4-DGX2-V100-NODE, level 5) is bound to bad hardware"
            " (doomed: node(s) 0.0.3.3)"
        ]
    }
    assert [a.cluster.cells[c].node_name for c in a.doomed_cells()["VC1"]] == ["0.0.3.3"]
    assert audit(a) == []


def test_why_pending_names_free_and_unbound_cells_per_level() -> None:
    a = HivedAllocator(
        load_hived_config("""
physicalCluster:
  cellTypes:
    NODE: {childCellType: V100, childCellNumber: 4, isNodeLevel: true}
  physicalCells:
  - {cellType: NODE, cellAddress: n0}
  - {cellType: NODE, cellAddress: n1}
  - {cellType: NODE, cellAddress: n2}
virtualClusters:
  a: {virtualCells: [{cellType: NODE, cellNumber: 2}]}
  b: {virtualCells: [{cellType: NODE, cellNumber: 1}]}
""")
    )
    assert isinstance(a.submit(gang("l0", "a", 1, (1, 3))), Allocated)
    q = a.submit(gang("big", "a", 1, (2, 4)))
    assert isinstance(q, Queued)
    assert (
        "3 of 8 guaranteed V100 leaves in use; its bound cells have 1 free leaves (at most 1 on one node),"
        " unbound quota: 1 NODE (level 2, 4 leaves each; 2 free healthy such cells); needs 2 pods of 4"
    ) in q.reason
    a.set_node_health("n2", False)
    assert (
        "unbound quota: 1 NODE (level 2, 4 leaves each; 1 free healthy such cells)" in a.pending()[0].reason
    )
    a.set_node_health("n0", False)
    assert "its bound cells have 0 free leaves" in a.pending()[0].reason


def test_why_pending_names_the_vc_quota_and_need() -> None:
    a = HivedAllocator(load_hived_config((CONFIGS / "hived-config-2.yaml").read_text()))
    for i in range(2):
        assert isinstance(a.submit(gang(f"j{i}", "vc1", 10, (1, 2), types=("K80",))), Allocated)
    q = a.submit(gang("big", "vc1", 10, (1, 4), types=("K80",)))
    assert isinstance(q, Queued)
    assert q.reason == (
        "VC vc1: 4 of 4 guaranteed K80 leaves in use; its bound cells have 0 free leaves (at most 0 on one"
        " node), unbound quota: none; needs 4 on one node (position 1 in VC vc1's queue)"
    )
    # Opportunistic work sees the idle leaves of the whole cluster, and the most on one node.
    o = a.submit(gang("o", "vc1", -1, (3, 4), types=("K80",)))
    assert isinstance(o, Allocated)
    o2 = a.submit(gang("o2", "vc1", -1, (1, 4), types=("K80",)))
    assert isinstance(o2, Queued) and "(at most 0 on one node); needs 4 on one node" in o2.reason
    a.release("o")
    a.release("o2")
    q2 = a.submit(gang("big2", "vc1", 10, (1, 4), types=("K80",)))
    assert isinstance(q2, Queued) and q2.position == 2
    a.release("j0")
    assert [p.key for p in a.pending()] == ["big", "big2"]
    out = a.release("j1")
    assert out[1] == a.decision_of("big") and isinstance(out[1], Allocated)


def test_user_errors_are_rejected_and_unsupported_features_raise(a: HivedAllocator) -> None:
    cases = {
        "VC VC2 has no guaranteed quota of DGX2-V100": gang("p10", "VC2", 1, (1, 1), types=V100),
        "unknown virtual cluster 'surprise!'": gang("p13", "surprise!", 1, (1, 1)),
        "unknown pinned cell 'nope'": gang("p14", "VC1", 1, (1, 1), pin="nope"),
        "priority 1001 is outside": gang("p15", "VC1", 1001, (1, 1)),
        "unknown leaf type 'TPU'": gang("t", "VC1", 1, (1, 1), types=("TPU",)),
        "a pod needs 32 DGX2-V100 leaves on one node": gang("huge", "VC1", 1, (1, 32), types=V100),
        "do not fit VC VC2's quota in chain 3-DGX1-P100-NODE even when it is all free": gang(
            "pod7", "VC2", 1, (3, 8), types=("DGX1-P100",)
        ),
    }
    for message, req in cases.items():
        d = a.submit(req)
        assert isinstance(d, Rejected) and message in d.reason, (message, d)
    share_errors = {
        "gpu_milli must be 1..999": GangRequest("m", "VC1", 1, (Member("r", 1, 0, gpu_milli=1000),)),
        "or a share of one leaf, not both": GangRequest("b", "VC1", 1, (Member("r", 1, 1, gpu_milli=5),)),
        "leaves must be a whole number or a fraction below 1": GangRequest(
            "f",
            "VC1",
            1,
            (Member("r", 1, 1.5),),  # type: ignore[arg-type]
        ),
        "needs 40000 MB of GPU memory but a DGX2-V100 leaf has 16384 MB": GangRequest(
            "g", "VC1", 1, (Member("r", 1, 0, gpu_memory_mb=40000),), V100
        ),
    }
    for message, req in share_errors.items():
        d = a.submit(req)
        assert isinstance(d, Rejected) and message in d.reason, (message, d)
    # InfiniBand placement is supported now (test_infiniband.py).
    assert isinstance(a.submit(GangRequest("ib", "VC1", 1, (Member("r", 1, 1),), infiniband=True)), Allocated)
    a.release("ib")
    # A pod asking for no GPU on a cluster without CPU leaves holds one leaf (tests/hived/test_cpu.py).
    assert isinstance(a.submit(GangRequest("cpu", "VC1", 1, (Member("r", 1, 0),))), Allocated)
    a.release("cpu")
    assert a.snapshot()["groups"] == []


def test_sku_cpu_and_memory_raise_the_leaf_count() -> None:
    a = HivedAllocator(load_hived_config((CONFIGS / "hived-config-2.yaml").read_text()))
    # K80 SKU: 4 CPUs and 8192 MiB per GPU; 1 GPU with 10 CPUs takes 3 leaves.
    d = a.submit(GangRequest("c", "vc1", 10, (Member("r", 1, 1, cpu=10.0),), ("K80",)))
    assert isinstance(d, Allocated) and len(d.placements[0].leaves) == 3
    d = a.submit(GangRequest("m", "default", 10, (Member("r", 1, 1, memory_mb=20000),), ("K80",)))
    assert isinstance(d, Allocated) and len(d.placements[0].leaves) == 3


def test_any_leaf_type_and_alternatives() -> None:
    a = HivedAllocator(load_hived_config((CONFIGS / "hived-config-2.yaml").read_text()))
    # vc1 owns one K80 node and one M60 node: 8 one-GPU tasks need both types (itc-no-type).
    d = a.submit(gang("k", "vc1", 10, (1, 4), types=("K80",)))
    assert isinstance(d, Allocated)
    d = a.submit(gang("any", "vc1", 10, (1, 4)))
    assert isinstance(d, Allocated) and d.placements[0].leaf_type == "M60"
    a.release("any")
    d = a.submit(gang("alt", "vc1", 10, (1, 4), types=("K80", "M60")))
    assert isinstance(d, Allocated) and d.placements[0].leaf_type == "M60"


def test_release_gives_back_exactly_and_is_idempotent(a: HivedAllocator) -> None:
    before = a.snapshot()
    d = a.submit(gang("g", "VC1", 1, (2, 16), (1, 3), types=V100))
    assert isinstance(d, Allocated)
    assert a.release("g") == [Released("g")]
    after = a.snapshot()
    assert after["next_seq"] == 1
    after["next_seq"] = 0
    assert after.pop("next_start") == 1  # the order gangs start in, for choosing victims
    # The recent request mix remembers what was asked.
    assert after.pop("mix") == [[list(V100), 16000], [list(V100), 16000], [list(V100), 3000]]
    assert after.pop("mix_total") == 3  # every entry the window ever had
    assert after == before
    assert a.release("g") == []


def test_snapshot_round_trip_in_the_middle_of_a_preemption(a: HivedAllocator) -> None:
    a.submit(gang("g5", "VC1", 1, (2, 16), types=V100, pin="VC1-YQW-DGX2"))
    a.submit(gang("g11", "VC1", 2, (2, 16), types=V100, pin="VC1-YQW-DGX2"))
    a.submit(gang("o", "VC2", -1, (3, 2)))
    a.submit(gang("q", "VC2", 1, (2, 8), types=("DGX1-P100",)))
    a.set_node_health("0.0.1.0", False)
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(a.config, snap)
    assert b.snapshot() == snap and audit(b) == []
    assert a.release("g5") == b.release("g5")
    assert a.snapshot() == b.snapshot()
    with pytest.raises(ValueError, match="unsupported HiveD snapshot version"):
        HivedAllocator.restore(a.config, {**snap, "version": 99})
    broken = json.loads(json.dumps(snap))
    broken["groups"][0]["placement"] = broken["groups"][1]["placement"]
    broken["groups"][0]["state"] = "Allocated"
    broken["groups"][1]["state"] = "Allocated"
    with pytest.raises(ValueError):
        HivedAllocator.restore(a.config, broken)
