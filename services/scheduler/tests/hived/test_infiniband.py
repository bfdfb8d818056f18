"""InfiniBand placement: a gang with ``infiniband=True`` has all its pods under one InfiniBand domain (a
cell of the chain's ``isInfiniBand`` level, else its top cell; an inventory's rack)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_common.contract.types import PodRequest
from pai_scheduler.hived import (
    Allocated,
    ConfigError,
    GangRequest,
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    Rejected,
    gang_from_pods,
    load_hived_config,
    parse_inventory_csv,
)
from pai_scheduler.hived.audit import audit

TEXT = """
physicalCluster:
  cellTypes:
    NODE: {childCellType: V100, childCellNumber: 4, isNodeLevel: true}
    IBSW: {childCellType: NODE, childCellNumber: 2, isInfiniBand: true}
    POOL: {childCellType: IBSW, childCellNumber: 2}
  physicalCells:
  - cellType: POOL
    cellChildren:
    - {cellChildren: [{cellAddress: n0}, {cellAddress: n1}]}
    - {cellChildren: [{cellAddress: n2}, {cellAddress: n3}]}
virtualClusters:
  a: {virtualCells: [{cellType: POOL.IBSW.NODE, cellNumber: 3}]}
  b: {virtualCells: [{cellType: POOL.IBSW.NODE, cellNumber: 1}]}
"""
CONFIG = load_hived_config(TEXT)
DOMAIN = {"n0": 0, "n1": 0, "n2": 1, "n3": 1}


def gang(key: str, vc: str, prio: int, pods: int, leaves: int, ib: bool = True) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("r", pods, leaves),), infiniband=ib)


def nodes(d: object) -> list[str]:
    assert isinstance(d, Allocated | Preempting), d
    return [p.node for p in d.placements]


def test_the_infiniband_level_is_marked_or_the_top() -> None:
    assert CONFIG.chain("POOL").infiniband_level == 3
    unmarked = load_hived_config(TEXT.replace(", isInfiniBand: true", ""))
    assert unmarked.chain("POOL").infiniband_level == 4
    inv = parse_inventory_csv(
        "node,leaf_type,leaf_count,cpu,memory_mb,rack\na,V,8,8,8,r1\nb,V,8,8,8,r1\nc,V,8,8,8,\n"
    )
    assert [(c.name, c.infiniband_level, c.top_level) for c in inv.chains] == [
        ("2-V-8-NODE", 3, 3),
        ("V-8-NODE", 2, 2),
    ]
    below = TEXT.replace(
        "NODE: {childCellType: V100, childCellNumber: 4, isNodeLevel: true}",
        "NODE: {childCellType: SW, childCellNumber: 2, isNodeLevel: true}\n"
        "    SW: {childCellType: V100, childCellNumber: 2}",
    ).replace(
        "IBSW: {childCellType: NODE, childCellNumber: 2, isInfiniBand: true}",
        "IBSW: {childCellType: NODE, childCellNumber: 2}",
    )
    below = below.replace(
        "SW: {childCellType: V100, childCellNumber: 2}",
        "SW: {childCellType: V100, childCellNumber: 2, isInfiniBand: true}",
    )
    with pytest.raises(ConfigError, match="the isInfiniBand cell type SW is below the node level"):
        load_hived_config(below)
    with pytest.raises(ConfigError, match="at most one cell type may have isInfiniBand"):
        load_hived_config(
            TEXT.replace(
                "childCellNumber: 2}\n  physicalCells",
                "childCellNumber: 2, isInfiniBand: true}\n  physicalCells",
            )
        )
    with pytest.raises(ConfigError, match="isInfiniBand must be true or false"):
        load_hived_config(TEXT.replace("isInfiniBand: true", "isInfiniBand: 3"))


def test_an_infiniband_gang_stays_under_one_domain_and_waits_with_a_reason() -> None:
    a = HivedAllocator(CONFIG)
    d = a.submit(gang("ib", "a", 10, 2, 4))
    assert len({DOMAIN[n] for n in nodes(d)}) == 1
    a.release("ib")
    a.set_node_health("n1", False)
    a.set_node_health("n3", False)
    q = a.submit(gang("ib", "a", 10, 2, 4))
    assert isinstance(q, Queued)
    assert "InfiniBand: all 8 leaves must lie under one IBSW cell" in q.reason
    # The same gang without InfiniBand spans both domains.
    plain = a.submit(gang("plain", "a", 10, 2, 4, ib=False))
    assert sorted(nodes(plain)) == ["n0", "n2"]
    a.release("plain")
    assert isinstance(a.pending()[0], Queued)
    out = a.set_node_health("n1", True)
    assert sorted(nodes(out[-1])) == ["n0", "n1"]
    assert audit(a) == []


def test_guaranteed_infiniband_gang_prefers_the_domain_of_its_vcs_cells() -> None:
    a = HivedAllocator(CONFIG)
    first = a.submit(gang("one", "a", 10, 1, 2, ib=False))
    home = DOMAIN[nodes(first)[0]]
    d = a.submit(gang("ib", "a", 10, 2, 2))
    assert {DOMAIN[n] for n in nodes(d)} == {home}
    assert audit(a) == []


def test_gangs_that_can_never_share_a_domain_are_rejected_naming_infiniband() -> None:
    a = HivedAllocator(CONFIG)
    r = a.submit(gang("huge", "a", 10, 3, 4))
    assert isinstance(r, Rejected) and "InfiniBand" in r.reason and "at most 8" in r.reason
    # Without InfiniBand the same gang fits VC a's three nodes.
    assert isinstance(a.submit(gang("huge", "a", 10, 3, 4, ib=False)), Allocated)
    r = a.submit(gang("b-ib", "b", 10, 2, 4))
    assert isinstance(r, Rejected)  # VC b has one node
    o = a.submit(gang("oppo", "b", -1, 2, 2))
    assert isinstance(o, Allocated) and len({DOMAIN[n] for n in nodes(o)}) == 1


def test_inventory_racks_are_infiniband_domains_and_requests_round_trip() -> None:
    inv = parse_inventory_csv(
        "node,leaf_type,leaf_count,cpu,memory_mb,rack\n"
        + "".join(f"n{i},A100,8,64,512000,r{i // 2}\n" for i in range(4))
    )
    a = HivedAllocator(inv)
    a.set_node_health("n1", False)
    pods = [PodRequest(task_role="w", index=i, gpu=8, cpu=1, memory_mb=1) for i in range(2)]
    req = gang_from_pods("job", "default", 10, pods, infiniband=True)
    assert req.infiniband
    d = a.submit(req)
    assert sorted(nodes(d)) == ["n2", "n3"]
    snap = json.loads(json.dumps(a.snapshot()))
    assert snap["groups"][0]["request"]["infiniband"] is True
    b = HivedAllocator.restore(inv, snap)
    assert b.snapshot() == snap and b.request_of("job") == req


submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(["a", "b"]),
    st.sampled_from([-1, 0, 10]),
    st.integers(1, 3),
    st.sampled_from([1, 2, 4]),
    st.booleans(),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
health_op = st.tuples(st.just("health"), st.sampled_from(sorted(DOMAIN)), st.booleans())
ops = st.lists(st.one_of(submit_op, submit_op, release_op, health_op), max_size=25)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops)
def test_infiniband_gangs_always_sit_under_one_domain(seq: list[tuple[Any, ...]]) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        if op[0] == "submit":
            a.submit_all(gang(f"g{i}", op[1], op[2], op[3], op[4], op[5]))
        elif op[0] == "release":
            keys = sorted(a.groups(), key=lambda k: int(k[1:]))
            if keys:
                a.release(keys[op[1] % len(keys)])
        else:
            a.set_node_health(op[1], op[2])
        assert audit(a) == []
        for key in a.groups():
            d = a.decision_of(key)
            req = a.request_of(key)
            assert req is not None
            if req.infiniband and isinstance(d, Allocated | Preempting):
                assert len({DOMAIN[n] for n in nodes(d)}) == 1
