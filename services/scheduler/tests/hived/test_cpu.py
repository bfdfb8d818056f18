"""CPU-only pods and CPU-only nodes: CPU leaves (SKU ``gpu: 0``) scheduled by the same cell machinery."""

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
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    Rejected,
    load_hived_config,
    parse_inventory_csv,
)
from pai_scheduler.hived.audit import audit

# Two 4-GPU nodes (8 cores, 64000 MB per GPU), a GPU node with 16 spare cores and 64000 MB spare memory,
# and two CPU-only nodes of 32 cores / 128000 MB: CPU leaves of 1 core and 4000 MB each.
MIXED = """node,leaf_type,leaf_count,cpu,memory_mb
g0,V100,4,32,256000
g1,V100,4,32,256000
g2,V100,4,48,320000
c0,,0,32,128000
c1,,0,32,128000
"""


def cpu_gang(
    key: str, vc: str, prio: int, pods: int, cpu: float, mem: int = 0, role: str = "r"
) -> GangRequest:
    return GangRequest(key, vc, prio, (Member(role, pods, 0, cpu=cpu, memory_mb=mem),))


def test_inventory_turns_cpu_only_nodes_and_spare_cpu_into_cpu_leaves() -> None:
    config = parse_inventory_csv(MIXED)
    cpu = config.sku("CPU")
    assert cpu is not None and (cpu.gpu, cpu.cpu, cpu.memory_mb) == (0, 1.0, 4000)
    a = HivedAllocator(config)
    cpu_nodes = {
        n.node_name: len(n.leaves)
        for c in a.cluster.cells.values()
        if c.chain.startswith("CPU")
        for n in [c]
        if c.node is c
    }
    # g2's spare: 48 - 4*8 = 16 cores, 320000 - 4*64000 = 64000 MB = 16 leaves; g0/g1 have no spare.
    assert cpu_nodes == {"c0": 32, "c1": 32, "g2": 16}
    assert config.cpu_only_nodes == ("c0", "c1")
    # The platform's default inventory (8 cores and 64 GiB per GPU) has no CPU leaves.
    plain = parse_inventory_csv("node,leaf_type,leaf_count,cpu,memory_mb\nn0,V100,8,64,524288\n")
    assert plain.sku("CPU") is None and [c.name for c in plain.chains] == ["V100-8-NODE"]


@pytest.mark.parametrize(
    ("pods", "cpu", "mem", "leaves_each"),
    [
        (1, 4, 0, 4),  # cores decide
        (2, 2, 20000, 5),  # memory decides: 20000 / 4000
        (1, 0, 0, 1),  # asks for nothing: one unit
        (3, 1.5, 0, 2),  # fractional cores round up
        (1, 32, 128000, 32),  # a whole CPU-only node
    ],
)
def test_cpu_pods_take_cpu_leaves_sized_by_the_cpu_sku(
    pods: int, cpu: float, mem: int, leaves_each: int
) -> None:
    a = HivedAllocator(parse_inventory_csv(MIXED))
    d = a.submit(cpu_gang("j", "default", 10, pods, cpu, mem))
    assert isinstance(d, Allocated)
    assert [p.leaf_type for p in d.placements] == ["CPU"] * pods
    assert all(len(p.leaves) == leaves_each for p in d.placements)
    assert a.used_leaves() == {"default": {"CPU": pods * leaves_each}}
    assert audit(a) == []


def test_cpu_gangs_are_all_or_nothing_and_never_take_gpus_when_cpu_leaves_exist() -> None:
    a = HivedAllocator(parse_inventory_csv(MIXED))
    assert isinstance(a.submit(cpu_gang("big", "default", 10, 2, 32)), Allocated)  # c0 and c1 whole
    # 2 pods of 16 cores: only g2's 16 CPU leaves are left, so the gang waits whole (no pod placed).
    d = a.submit(cpu_gang("two", "default", 10, 2, 16))
    assert isinstance(d, Queued) and "CPU leaves" in d.reason
    assert a.used_leaves() == {"default": {"CPU": 64}}
    # GPU leaves stay free for GPU work, even though CPU work waits.
    assert all(x.owner is None for x in a.cluster.cells.values() if x.is_leaf and x.chain.startswith("V100"))
    assert a.release("big")[1:] == [a.decision_of("two")]
    assert isinstance(a.decision_of("two"), Allocated)
    # A pod larger than any node's CPU leaves is rejected with the reason.
    d = a.submit(cpu_gang("huge", "default", 10, 1, 40))
    assert isinstance(d, Rejected) and "40 CPU leaves on one node" in d.reason


def test_gpu_gangs_never_use_cpu_leaves_and_mixed_gangs_hold_gpu_leaves() -> None:
    a = HivedAllocator(parse_inventory_csv(MIXED))
    d = a.submit(GangRequest("gpu", "default", 10, (Member("w", 3, 4),)))
    assert isinstance(d, Allocated) and {p.leaf_type for p in d.placements} == {"V100"}
    d = a.submit(GangRequest("named", "default", 10, (Member("w", 1, 1),), ("CPU",)))
    assert isinstance(d, Rejected) and "CPU and memory only" in d.reason
    d = a.submit(GangRequest("share", "default", 10, (Member("w", 1, 0, gpu_milli=500),), ("CPU",)))
    assert isinstance(d, Rejected)
    a.release("gpu")
    # A parameter server asking for no GPU beside GPU workers: one gang stays in one chain, so the
    # server holds one GPU leaf (its CPU and memory come with it), as OpenPAI does.
    mixed = GangRequest("tf", "default", 10, (Member("ps", 1, 0, cpu=2), Member("worker", 2, 2)))
    d = a.submit(mixed)
    assert isinstance(d, Allocated)
    assert {(p.role, p.leaf_type, len(p.leaves)) for p in d.placements} == {
        ("ps", "V100", 1),
        ("worker", "V100", 2),
    }


def test_without_cpu_leaves_a_cpu_pod_holds_gpu_leaves_through_the_sku() -> None:
    a = HivedAllocator(parse_inventory_csv("node,leaf_type,leaf_count,cpu,memory_mb\nn0,V100,8,64,524288\n"))
    for key, cpu, leaves in (("none", 0, 1), ("small", 1, 1), ("wide", 20, 3)):
        d = a.submit(cpu_gang(key, "default", 10, 1, cpu))
        assert isinstance(d, Allocated) and len(d.placements[0].leaves) == leaves, key
    assert audit(a) == []


HIVED_CPU = """
physicalCluster:
  skuTypes:
    CPU4: {gpu: 0, cpu: 4, memory: 16Gi}
    K80: {gpu: 1, cpu: 4, memory: 16Gi}
  cellTypes:
    CPU-NODE: {childCellType: CPU4, childCellNumber: 4, isNodeLevel: true}
    CPU-RACK: {childCellType: CPU-NODE, childCellNumber: 2}
    K80-NODE: {childCellType: K80, childCellNumber: 4, isNodeLevel: true}
  physicalCells:
  - {cellType: CPU-RACK, cellChildren: [{cellAddress: c0}, {cellAddress: c1}]}
  - {cellType: K80-NODE, cellAddress: k0}
virtualClusters:
  a: {virtualCells: [{cellType: CPU-RACK.CPU-NODE, cellNumber: 1}, {cellType: K80-NODE, cellNumber: 1}]}
  b: {virtualCells: [{cellType: CPU-RACK.CPU-NODE, cellNumber: 1}]}
"""


def test_cpu_quota_priorities_and_preemption_follow_the_cell_rules() -> None:
    """OpenPAI's CPU SKUs (``gpu: 0``) in a HiveD config are CPU leaves: VC quota, opportunistic use of idle
    cells, preemption inside the VC and of opportunistic work, never of another VC's guaranteed work."""
    a = HivedAllocator(load_hived_config(HIVED_CPU))
    # 4 cores per CPU4 leaf: a pod of 6 cores takes 2 leaves.
    d = a.submit(cpu_gang("oppo", "b", -1, 2, 16))
    assert isinstance(d, Allocated) and {p.node for p in d.placements} == {"c0", "c1"}
    d = a.submit(cpu_gang("a1", "a", 10, 1, 6))
    assert isinstance(d, Preempting) and d.victims == ("oppo",)
    a.release("oppo")
    assert isinstance(a.decision_of("a1"), Allocated)
    d = a.submit(cpu_gang("b1", "b", 10, 1, 16))
    assert isinstance(d, Allocated)
    # VC a's quota is one CPU node: 2 leaves used, a gang needing 3 waits with the VC's count,
    # it never takes VC b's guaranteed node.
    d = a.submit(cpu_gang("a2", "a", 20, 1, 12))
    assert isinstance(d, Preempting) and d.victims == ("a1",)  # higher priority inside its VC
    d = a.submit(cpu_gang("a3", "a", 5, 1, 8))
    assert isinstance(d, Queued) and "VC a:" in d.reason and "guaranteed CPU4 leaves" in d.reason
    # VC b has no K80 quota: its guaranteed CPU gang cannot be placed on K80 leaves; a GPU gang of b is
    # rejected for lack of quota, VC a's is placed on K80.
    assert isinstance(a.submit(GangRequest("bg", "b", 10, (Member("w", 1, 1),))), Rejected)
    assert isinstance(a.submit(GangRequest("ag", "a", 10, (Member("w", 1, 1),))), Allocated)
    views = vc_views.virtual_clusters(a)
    assert views["a"]["resourcesGuaranteed"]["gpu"] == 4 and views["b"]["resourcesGuaranteed"]["gpu"] == 0
    assert views["b"]["resourcesGuaranteed"]["cpu"] == 16
    assert views["a"]["capacity"] == 100.0  # of the accelerators
    assert vc_views.sku_types(a, "b") == {"CPU4": {"cpu": 4.0, "memory": 16384, "gpu": 0}}
    assert audit(a) == []


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("cpu"),
            st.sampled_from([-1, 5, 10]),
            st.integers(1, 3),
            st.sampled_from([0, 1, 6, 20, 40]),
        ),
        st.tuples(st.just("gpu"), st.sampled_from([-1, 5, 10]), st.integers(1, 3), st.integers(0, 4)),
        st.tuples(st.just("release"), st.integers(0, 40), st.just(0), st.just(0)),
        st.tuples(st.just("health"), st.sampled_from(["g0", "g2", "c0", "c1"]), st.booleans(), st.just(0)),
    ),
    max_size=30,
)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_property_cpu_and_gpu_work_never_overlap_or_overbook(ops: list[tuple[Any, ...]]) -> None:
    a = HivedAllocator(parse_inventory_csv(MIXED))
    cpu_keys: set[str] = set()
    for i, (kind, x, y, z) in enumerate(ops):
        key = f"g{i}"
        if kind == "cpu":
            a.submit(cpu_gang(key, "default", x, y, z))
            cpu_keys.add(key)
        elif kind == "gpu":
            a.submit(GangRequest(key, "default", x, (Member("w", y, z),)))
            if z == 0:
                cpu_keys.add(key)
        elif kind == "release":
            keys = sorted(a.groups(), key=lambda k: int(k[1:]))
            if keys:
                a.release(keys[x % len(keys)])
        else:
            a.set_node_health(x, y)
        assert audit(a) == []
        for leaf in a.cluster.cells.values():
            if not leaf.is_leaf:
                continue
            for holder in (leaf.owner, leaf.reserver):
                if holder is None:
                    continue
                # CPU leaves hold only CPU-only gangs; with CPU leaves in the cluster, CPU gangs hold no GPU.
                assert (holder in cpu_keys) == leaf.chain.startswith("CPU"), (holder, leaf)
    snap = json.loads(json.dumps(a.snapshot()))
    assert HivedAllocator.restore(a.config, snap).snapshot() == snap
