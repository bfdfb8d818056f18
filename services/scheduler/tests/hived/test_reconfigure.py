"""Reconfiguration (HiveD's work-preserving restart with a new config): gangs whose leaves still exist stay
where they are; guaranteed ones that no longer fit their VC's quota are downgraded; gangs on removed
leaves are lost; queued gangs are checked again."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_scheduler.hived import (
    Allocated,
    Downgraded,
    GangRequest,
    HivedAllocator,
    Lost,
    Member,
    Preempting,
    Queued,
    Rejected,
    load_hived_config,
)
from pai_scheduler.hived.audit import audit

BASE = """
physicalCluster:
  cellTypes:
    SW: {childCellType: V100, childCellNumber: 2}
    NODE: {childCellType: SW, childCellNumber: 2, isNodeLevel: true}
    RACK: {childCellType: NODE, childCellNumber: 2}
  physicalCells:
  - {cellType: RACK, cellChildren: [{cellAddress: n0}, {cellAddress: n1}]}
  - {cellType: RACK, cellChildren: [{cellAddress: n2}, {cellAddress: n3}]}
virtualClusters:
  a: {virtualCells: [{cellType: RACK.NODE, cellNumber: 2}]}
  b: {virtualCells: [{cellType: RACK.NODE, cellNumber: 2}]}
"""
A2 = "a: {virtualCells: [{cellType: RACK.NODE, cellNumber: 2}]}"
B2 = "b: {virtualCells: [{cellType: RACK.NODE, cellNumber: 2}]}"
RACK2 = "  - {cellType: RACK, cellChildren: [{cellAddress: n2}, {cellAddress: n3}]}\n"
RACK3 = "  - {cellType: RACK, cellChildren: [{cellAddress: n4}, {cellAddress: n5}]}\n"
VARIANTS = {
    "same": BASE,
    "a-shrinks-b-grows": BASE.replace(A2, A2.replace("2}", "1}")).replace(B2, B2.replace("2}", "3}")),
    "a-grows-on-new-rack": BASE.replace(RACK2, RACK2 + RACK3).replace(A2, A2.replace("2}", "4}")),
    "rack-removed-b-gone": BASE.replace(RACK2, "").replace(B2, ""),
    "a-split-to-switches": BASE.replace(A2, "a: {virtualCells: [{cellType: RACK.NODE.SW, cellNumber: 4}]}"),
}


def cfg(name: str) -> Any:
    return load_hived_config(VARIANTS[name])


def gang(key: str, vc: str, prio: int, pods: int, leaves: int) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("r", pods, leaves),))


def busy() -> HivedAllocator:
    a = HivedAllocator(cfg("same"))
    assert isinstance(a.submit(gang("a-hi", "a", 20, 1, 4)), Allocated)
    assert isinstance(a.submit(gang("a-lo", "a", 5, 1, 4)), Allocated)
    assert isinstance(a.submit(gang("b-one", "b", 10, 2, 4)), Allocated)
    assert isinstance(a.submit(gang("a-wait", "a", 5, 1, 2)), Queued)
    assert isinstance(a.submit(gang("b-wait", "b", 10, 1, 4)), Queued)
    return a


def placements(a: HivedAllocator) -> dict[str, Any]:
    return {g["request"]["key"]: g["placement"] for g in a.snapshot()["groups"] if g["placement"]}


def test_same_config_keeps_everything_where_it_is() -> None:
    a = busy()
    new, out = HivedAllocator.reconfigure(a.snapshot(), cfg("same"))
    assert audit(new) == []
    assert new.snapshot()["groups"] == a.snapshot()["groups"]
    assert [type(d) for d in out] == [Queued, Queued]


def test_shrunk_vc_downgrades_its_lowest_priority_gang_and_grown_vc_starts_its_queue() -> None:
    a = busy()
    before = placements(a)
    new, out = HivedAllocator.reconfigure(a.snapshot(), cfg("a-shrinks-b-grows"))
    assert audit(new) == []
    downgraded = [d for d in out if isinstance(d, Downgraded)]
    assert [d.key for d in downgraded] == ["a-lo"]
    assert downgraded[0].preemptor == "" and "VC a's new quota" in downgraded[0].reason
    assert new.downgraded() == ["a-lo"]
    # Nobody moved; a-lo now runs as opportunistic work on its node.
    after = placements(new)
    assert {k: after[k] for k in before} == before
    assert all(leaf.owner_priority == -1 for leaf in new._groups["a-lo"].leaves())
    # b's third node is bound for the waiting gang... which is where a-lo runs: b preempts it.
    started = next(d for d in out if getattr(d, "key", "") == "b-wait")
    assert isinstance(started, Preempting) and started.victims == ("a-lo",)
    snap = json.loads(json.dumps(new.snapshot()))
    assert HivedAllocator.restore(cfg("a-shrinks-b-grows"), snap).snapshot() == snap


def test_added_nodes_serve_the_queue_and_removed_nodes_lose_their_gangs() -> None:
    a = busy()
    new, out = HivedAllocator.reconfigure(a.snapshot(), cfg("a-grows-on-new-rack"))
    assert audit(new) == []
    assert any(isinstance(d, Allocated) and d.key == "a-wait" for d in out)
    assert not any(isinstance(d, Downgraded | Lost) for d in out)

    gone, out = HivedAllocator.reconfigure(a.snapshot(), cfg("rack-removed-b-gone"))
    assert audit(gone) == []
    lost = {d.key: d.reason for d in out if isinstance(d, Lost)}
    on_rack2 = {k for k, p in placements(a).items() if any(x["node"] in ("n2", "n3") for x in p)}
    assert set(lost) == on_rack2 and on_rack2
    assert all("no longer exist" in r for r in lost.values())
    rejected = {d.key: d.reason for d in out if isinstance(d, Rejected)}
    assert "unknown virtual cluster 'b'" in rejected["b-wait"]
    assert set(gone.groups()) == {"a-hi", "a-lo", "a-wait"} - set(lost)
    # A running gang of a VC that no longer exists but whose nodes remain is downgraded.
    for k in gone.groups():
        assert gone._groups[k].request.vc == "a"


def test_quota_split_into_smaller_cells_still_covers_running_gangs() -> None:
    a = HivedAllocator(cfg("same"))
    assert isinstance(a.submit(gang("two", "a", 10, 2, 2)), Allocated)
    new, out = HivedAllocator.reconfigure(a.snapshot(), cfg("a-split-to-switches"))
    assert audit(new) == [] and out == []
    assert placements(new) == placements(a)
    assert sum(len(c) for c in new.quota.bound["a"].values()) == 2


def test_preemption_in_progress_is_redone_after_reconfiguration() -> None:
    a = HivedAllocator(cfg("same"))
    assert isinstance(a.submit(gang("o", "b", -1, 4, 4)), Allocated)
    p = a.submit(gang("g", "a", 10, 1, 4))
    assert isinstance(p, Preempting)
    new, out = HivedAllocator.reconfigure(a.snapshot(), cfg("same"))
    assert audit(new) == []
    again = [d for d in out if isinstance(d, Preempting)]
    assert len(again) == 1 and again[0].key == "g" and again[0].victims == p.victims


# ----------------------------------------------------------------------------------- properties

submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(["a", "b"]),
    st.sampled_from([-1, 0, 10]),
    st.integers(1, 3),
    st.sampled_from([1, 2, 4]),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
health_op = st.tuples(st.just("health"), st.sampled_from(["n0", "n1", "n2", "n3"]), st.booleans())
ops = st.lists(st.one_of(submit_op, submit_op, release_op, health_op), max_size=20)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(a: HivedAllocator, i: int, op: tuple[Any, ...]) -> None:
    if op[0] == "submit":
        a.submit_all(gang(f"g{i}", op[1], op[2], op[3], op[4]))
    elif op[0] == "release":
        keys = sorted(a.groups(), key=lambda k: int(k[1:]))
        if keys:
            a.release(keys[op[1] % len(keys)])
    else:
        a.set_node_health(op[1], op[2])


@SETTINGS
@given(ops, st.sampled_from(sorted(VARIANTS)), ops)
def test_reconfiguration_keeps_what_fits_and_accounts_for_every_gang(
    seq: list[tuple[Any, ...]], variant: str, then: list[tuple[Any, ...]]
) -> None:
    a = HivedAllocator(cfg("same"))
    for i, op in enumerate(seq):
        apply(a, i, op)
    old = a.snapshot()
    new, out = HivedAllocator.reconfigure(json.loads(json.dumps(old)), cfg(variant))
    assert audit(new) == []
    gone = {d.key for d in out if isinstance(d, Lost | Rejected)}
    old_keys = {g["request"]["key"] for g in old["groups"]}
    assert set(new.groups()) | gone == old_keys and not set(new.groups()) & gone
    running = {
        g["request"]["key"]: g["placement"]
        for g in old["groups"]
        if g["state"] in ("Allocated", "BeingPreempted")
    }
    now = placements(new)
    for key, placement in running.items():
        if key not in gone:
            assert now[key] == placement  # kept exactly where it was
    if variant == "same":
        assert not gone and not any(isinstance(d, Downgraded) for d in out)
    snap = json.loads(json.dumps(new.snapshot()))
    assert HivedAllocator.restore(cfg(variant), snap).snapshot() == snap
    for i, op in enumerate(then, start=100):
        if op[0] == "health" and op[1] not in new.cluster.nodes:
            continue
        apply(new, i, op)
        assert audit(new) == []
