"""A higher-priority preemptor takes over a lower preemptor's reservation (HiveD's Reserving/Reserved
overwrite): the lower one's reservation is withdrawn and it goes back to waiting."""

from __future__ import annotations

import json
from typing import Any

import pytest
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
    Released,
    load_hived_config,
)
from pai_scheduler.hived.audit import audit

# VC a: two 4-GPU nodes; VC b: one. Nothing else.
CONFIG = load_hived_config("""
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


def gang(key: str, prio: int, pods: int = 1, gpus: int = 4, vc: str = "a", milli: int = 0) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("r", pods, gpus, gpu_milli=milli),))


def running_low() -> HivedAllocator:
    a = HivedAllocator(CONFIG)
    assert isinstance(a.submit(gang("l0", 1)), Allocated)
    assert isinstance(a.submit(gang("l1", 1)), Allocated)
    return a


@pytest.mark.parametrize(
    ("restart_first", "victim"),
    [
        (False, "l1"),  # l1 started last
        (True, "l2"),  # l0 ended and l2 took n0 after l1 started: node order does not decide
    ],
)
def test_among_equally_cheap_victims_the_most_recently_started_goes(restart_first: bool, victim: str) -> None:
    a = running_low()
    if restart_first:
        a.release("l0")
        assert isinstance(a.submit(gang("l2", 1)), Allocated)
    p = a.submit(gang("p", 5))
    assert isinstance(p, Preempting) and p.victims == (victim,)


def test_a_cheaper_victim_is_preferred_to_overriding() -> None:
    a = running_low()
    p = a.submit(gang("p", 5))
    assert isinstance(p, Preempting) and p.victims == ("l1",)  # the most recently started of the two
    h = a.submit(gang("h", 10))
    # l0 (priority 1) is cheaper than p's reservation (priority 5): no override.
    assert isinstance(h, Preempting) and h.victims == ("l0",)
    assert a.groups()["p"] is GroupState.PREEMPTING
    assert audit(a) == []


def test_higher_preemptor_overrides_and_the_lower_goes_back_to_waiting() -> None:
    a = running_low()
    p = a.submit(gang("p", 5, pods=2))
    assert isinstance(p, Preempting) and p.victims == ("l0", "l1")
    out = a.submit_all(gang("h", 10))
    assert [type(d) for d in out] == [Queued, Preempting]
    assert out[0].key == "p" and "VC a:" in out[0].reason
    h = out[1]
    assert isinstance(h, Preempting) and len(h.victims) == 1
    victim = h.victims[0]
    other = ({"l0", "l1"} - {victim}).pop()
    # Nobody preempts the other victim any more: it runs on.
    assert a.groups() == {
        "l0": GroupState.ALLOCATED if other == "l0" else GroupState.BEING_PREEMPTED,
        "l1": GroupState.ALLOCATED if other == "l1" else GroupState.BEING_PREEMPTED,
        "p": GroupState.PENDING,
        "h": GroupState.PREEMPTING,
    }
    assert audit(a) == []
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap)
    assert b.snapshot() == snap and audit(b) == []
    # The victim goes: h starts; p (2 nodes) still cannot, since h now holds one of VC a's nodes.
    out = a.release(victim)
    assert out[:2] == [Released(victim), a.decision_of("h")] and isinstance(out[1], Allocated)
    assert a.release(victim) == []
    assert b.release(victim) == out
    assert isinstance(a.decision_of("p"), Queued)
    # Once h ends p preempts the other low gang again.
    out = a.release("h")
    assert isinstance(out[1], Preempting) and out[1].key == "p" and out[1].victims == (other,)
    assert audit(a) == []


def test_what_a_withdrawn_reservation_frees_is_used_at_once() -> None:
    a = HivedAllocator(CONFIG)
    assert isinstance(a.submit(gang("l0", 1, gpus=2)), Allocated)  # n0: 2 leaves, 2 free
    assert isinstance(a.submit(gang("l1", 7)), Allocated)  # n1 whole, above p
    p = a.submit(gang("p", 5))
    assert isinstance(p, Preempting) and p.victims == ("l0",) and p.placements[0].node == "n0"
    assert isinstance(a.submit(gang("q", 5, gpus=2)), Queued)
    # h takes l0's two leaves from p's reservation; p's two free leaves are free again and q starts at
    # once, in the same call, before h's own decision. p (4 on one node) waits.
    out = a.submit_all(gang("h", 10, gpus=2))
    assert [(type(d), d.key) for d in out] == [(Queued, "p"), (Allocated, "q"), (Preempting, "h")]
    assert out[2].victims == ("l0",)  # type: ignore[union-attr]
    assert {pl.node for pl in out[1].placements} == {"n0"}  # type: ignore[union-attr]
    assert a.groups()["p"] is GroupState.PENDING
    assert audit(a) == []


def test_equal_priority_opportunistic_and_other_vcs_never_override() -> None:
    a = running_low()
    assert isinstance(a.submit(gang("p", 5, pods=2)), Preempting)
    assert isinstance(a.submit(gang("same", 5)), Queued)
    assert isinstance(a.submit(gang("oppo", -1)), Allocated)  # takes VC b's idle node, preempts nothing
    assert isinstance(a.submit(gang("b", 10, vc="b")), Preempting)  # VC b's own node: only oppo
    assert a.groups()["p"] is GroupState.PREEMPTING
    assert audit(a) == []


def test_a_preemptor_holding_shares_is_never_overridden() -> None:
    a = HivedAllocator(CONFIG)
    assert isinstance(a.submit(gang("l0", 1)), Allocated)
    assert isinstance(a.submit(gang("l1", 1, gpus=3)), Allocated)
    # p's two share pods: one joins the free leaf of n1, the other must preempt.
    p = a.submit(gang("p", 5, pods=2, gpus=0, milli=600))
    assert isinstance(p, Preempting)
    # h needs both nodes whole; n1 holds p's share and p's reserved leaf, neither of which it may take.
    assert [type(d) for d in a.submit_all(gang("h", 10, pods=2))] == [Queued]
    assert a.groups()["p"] is GroupState.PREEMPTING
    assert audit(a) == []


OPS = st.lists(
    st.one_of(
        st.tuples(
            st.just("submit"), st.sampled_from([-1, 1, 5, 10, 20]), st.integers(1, 2), st.integers(1, 4)
        ),
        st.tuples(st.just("release"), st.integers(0, 30), st.just(0), st.just(0)),
    ),
    max_size=25,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(OPS)
def test_property_overrides_keep_preemptions_consistent(ops: list[tuple[Any, ...]]) -> None:
    a = HivedAllocator(CONFIG)
    for i, (kind, x, y, z) in enumerate(ops):
        if kind == "submit":
            for d in a.submit_all(gang(f"g{i}", x, y, z)):
                if isinstance(d, Queued) and d.key != f"g{i}":
                    # Only a lower preemptor is sent back to waiting, by a higher gang.
                    assert a.request_of(d.key) is not None and a.request_of(d.key).priority < x  # type: ignore[union-attr]
        else:
            keys = sorted(a.groups(), key=lambda k: int(k[1:]))
            if keys:
                a.release(keys[x % len(keys)])
        assert audit(a) == []
        groups = a._groups
        for key, g in groups.items():
            if g.state is GroupState.PREEMPTING:
                assert g.victims and all(key in groups[v].preemptors for v in g.victims)
                for leaf in g.leaves():
                    assert leaf.reserver == key
            if g.state is GroupState.BEING_PREEMPTED:
                assert g.preemptors and all(key in groups[p].victims for p in g.preemptors)
    snap = json.loads(json.dumps(a.snapshot()))
    assert HivedAllocator.restore(CONFIG, snap).snapshot() == snap
