"""Lazy preemption (HiveD's): a lazy victim is downgraded to opportunistic when it can stay where it is."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_scheduler.hived import (
    Allocated,
    Downgraded,
    GangRequest,
    HivedAllocator,
    Member,
    Preempting,
    Queued,
    load_hived_config,
)
from pai_scheduler.hived.audit import audit
from pai_scheduler.hived.cells import OPPORTUNISTIC_PRIORITY

# This project's test clusters (the same hardware as HiveD's example configs of the same names).
CONFIGS = Path(__file__).resolve().parent / "clusters"
K80 = ("K80",)


def config3() -> HivedAllocator:
    # A pool of 4 K80 nodes (4 GPUs each); vc1 owns one node, default three.
    return HivedAllocator(load_hived_config((CONFIGS / "hived-config-3.yaml").read_text()))


def gang(key: str, vc: str, prio: int, pods: int, leaves: int, lazy: bool = False) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("r", pods, leaves),), K80, lazy_preemption=lazy)


def node_of(d: object) -> set[str]:
    assert isinstance(d, Allocated | Preempting), d
    return {p.node for p in d.placements}


def test_hived_walkthrough_downgrade_then_preempt_as_opportunistic() -> None:
    """HiveD's feature walkthrough (hived-config-3): the prod job downgrades the lazy test job instead
    of preempting it, because all jobs still fit the cluster; a later job of another VC that needs the
    test job's node preempts it like any opportunistic job."""
    a = config3()
    test = a.submit(gang("test", "vc1", 0, 1, 4, lazy=True))
    assert isinstance(test, Allocated)
    out = a.submit_all(gang("prod", "vc1", 100, 1, 4))
    assert out[0] == Downgraded("test", "prod")
    prod = out[-1]
    assert isinstance(prod, Allocated) and node_of(prod) != node_of(test)
    assert a.downgraded() == ["test"]
    assert a.decision_of("test") == test  # still running where it was
    leaves = [a.cluster.leaf_at[("K80-NODE-POOL", p.node, i)] for p in test.placements for i in p.leaves]
    assert all(x.owner == "test" and x.owner_priority == OPPORTUNISTIC_PRIORITY for x in leaves)
    assert audit(a) == []
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(a.config, snap)
    assert b.snapshot() == snap and audit(b) == [] and b.downgraded() == ["test"]
    prod2 = a.submit(gang("prod2", "default", 100, 3, 4))
    assert isinstance(prod2, Preempting) and prod2.victims == ("test",)
    assert a.release("test")[-1] == Allocated("prod2", prod2.placements)
    assert audit(a) == []
    assert b.submit(gang("prod2", "default", 100, 3, 4)) == prod2


def test_submit_returns_only_the_gangs_own_decision() -> None:
    a = config3()
    a.submit(gang("test", "vc1", 0, 1, 4, lazy=True))
    d = a.submit(gang("prod", "vc1", 100, 1, 4))
    assert isinstance(d, Allocated) and a.downgraded() == ["test"]


def test_no_downgrade_when_the_victim_could_not_stay_where_it_is() -> None:
    a = config3()
    a.submit(gang("test", "vc1", 0, 1, 4, lazy=True))
    assert isinstance(a.submit(gang("full", "default", 10, 3, 4)), Allocated)  # the other three nodes
    out = a.submit_all(gang("prod", "vc1", 100, 1, 4))
    assert len(out) == 1 and isinstance(out[0], Preempting) and out[0].victims == ("test",)
    assert a.downgraded() == []
    assert a._groups["test"].priority == 0  # reverted: still guaranteed until it is released
    assert audit(a) == []


def test_non_lazy_victims_are_preempted_and_lazy_ones_downgraded_in_the_same_vc() -> None:
    a = config3()
    a.submit(gang("lazy", "vc1", 0, 1, 2, lazy=True))
    a.submit(gang("eager", "vc1", 0, 1, 2))
    d = a.submit(gang("prod", "vc1", 100, 1, 4))
    # Only the node cell of vc1 holds both; downgrading "lazy" does not free it ("eager" still holds it).
    assert isinstance(d, Preempting) and set(d.victims) == {"eager", "lazy"}
    assert a.downgraded() == []
    assert audit(a) == []


def test_lazy_gang_is_never_downgraded_by_an_opportunistic_or_lower_gang() -> None:
    a = config3()
    a.submit(gang("test", "vc1", 10, 1, 4, lazy=True))
    assert isinstance(a.submit(gang("low", "vc1", 5, 1, 4)), Queued)
    assert isinstance(a.submit(gang("oppo", "vc1", -1, 4, 4)), Queued)
    assert a.downgraded() == []


# ------------------------------------------------------------------------------------------ properties

CONFIG = load_hived_config("""
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
submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(["a", "b"]),
    st.sampled_from([-1, 0, 5, 10]),
    st.integers(1, 2),
    st.integers(1, 4),
    st.booleans(),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
health_op = st.tuples(st.just("health"), st.sampled_from(["n0", "n1", "n2", "n3"]), st.booleans())
ops = st.lists(st.one_of(submit_op, submit_op, submit_op, release_op, health_op), max_size=30)
SETTINGS = settings(max_examples=50, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(a: HivedAllocator, i: int, op: tuple[Any, ...]) -> list[Any]:
    if op[0] == "submit":
        _, vc, prio, pods, k, lazy = op
        return a.submit_all(GangRequest(f"g{i}", vc, prio, (Member("r", pods, k),), lazy_preemption=lazy))
    if op[0] == "release":
        keys = sorted(a.groups(), key=lambda k: int(k[1:]))
        return a.release(keys[op[1] % len(keys)]) if keys else []
    return a.set_node_health(op[1], op[2])


@SETTINGS
@given(ops, ops)
def test_lazy_preemption_keeps_the_state_sound_and_round_trips(
    first: list[tuple[Any, ...]], then: list[tuple[Any, ...]]
) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(first):
        before = {k: a.decision_of(k) for k in a.groups()}
        decisions = apply(a, i, op)
        assert audit(a) == [], (op, decisions)
        for d in decisions:
            if isinstance(d, Downgraded):
                # A downgraded gang keeps running exactly where it was, and is never also a victim now.
                assert a.decision_of(d.key) == before[d.key]
                assert d.key in a.downgraded()
                assert not any(isinstance(x, Preempting) and d.key in x.victims for x in decisions)
            if isinstance(d, Preempting):
                for v in d.victims:
                    vg = a._groups[v]
                    assert vg.priority < a._groups[d.key].priority
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap)
    assert b.snapshot() == snap and audit(b) == []
    for i, op in enumerate(then, start=100):
        assert apply(a, i, op) == apply(b, i, op)
    assert a.snapshot() == b.snapshot()


@SETTINGS
@given(ops, st.integers(1, 4), st.sampled_from([0, 5, 10, 1000]))
def test_guaranteed_job_within_free_quota_is_still_always_placed(
    seq: list[tuple[Any, ...]], k: int, prio: int
) -> None:
    a = HivedAllocator(CONFIG)
    for i, op in enumerate(seq):
        if op[0] != "health":
            apply(a, i, op)
    if a.quota.unbound("b", ("RACK", 4)) == 1:
        out = a.submit_all(GangRequest("probe", "b", prio, (Member("r", 1, k),)))
        assert isinstance(out[-1], Allocated | Preempting), out
        assert not any(isinstance(d, Downgraded) for d in out)  # VC b's lazy gangs hold no quota now
        if isinstance(out[-1], Preempting):
            assert all(a._groups[v].priority == -1 for v in out[-1].victims)
    assert audit(a) == []


def test_seeded_random_walk_downgrades_and_stays_sound() -> None:
    """Long random sequences (hypothesis keeps its examples short): downgrades do happen, and every state
    passes the audit."""
    rng = random.Random(1)
    downgrades = preemptions = 0
    for _ in range(120):
        a = HivedAllocator(CONFIG)
        for i in range(30):
            op: tuple[Any, ...]
            if rng.random() < 0.7:
                vc, prio = rng.choice("ab"), rng.choice([-1, 0, 5, 10])
                op = ("submit", vc, prio, rng.randint(1, 2), rng.randint(1, 4), rng.random() < 0.5)
            else:
                op = ("release", rng.randint(0, 30))
            for d in apply(a, i, op):
                downgrades += isinstance(d, Downgraded)
                preemptions += isinstance(d, Preempting)
            assert audit(a) == [], op
    assert downgrades > 0 and preemptions > 0
