"""Backfill protection: once the head of a VC's queue has waited long enough, later gangs of that VC with
priority not above the head's may not take the leaves the head's best placement needs."""

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
    Preempting,
    Queued,
    Released,
    load_hived_config,
)
from pai_scheduler.hived.audit import audit

# Three 4-GPU nodes in one pool; VC a owns one node, VC b two.
CONFIG = load_hived_config("""
physicalCluster:
  cellTypes:
    SW: {childCellType: V100, childCellNumber: 2}
    NODE: {childCellType: SW, childCellNumber: 2, isNodeLevel: true}
    POOL: {childCellType: NODE, childCellNumber: 3}
  physicalCells:
  - {cellType: POOL, cellChildren: [{cellAddress: n0}, {cellAddress: n1}, {cellAddress: n2}]}
virtualClusters:
  a: {virtualCells: [{cellType: POOL.NODE, cellNumber: 1}]}
  b: {virtualCells: [{cellType: POOL.NODE, cellNumber: 2}]}
""")


def gang(key: str, vc: str, prio: int, pods: int, leaves: int) -> GangRequest:
    return GangRequest(key, vc, prio, (Member("r", pods, leaves),))


def checked(a: HivedAllocator) -> HivedAllocator:
    assert audit(a) == []
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap, protect_head_after_s=a.protect_head_after_s)
    assert b.snapshot() == snap
    return a


def test_head_is_protected_after_the_threshold_and_only_against_its_own_vc() -> None:
    a = HivedAllocator(CONFIG, protect_head_after_s=100)
    for i in range(4):
        assert isinstance(a.submit(gang(f"s{i}", "a", 10, 1, 1), now=0), Allocated)
    big = a.submit(gang("big", "a", 10, 1, 4), now=1)
    assert isinstance(big, Queued) and "held back" not in big.reason
    # Before the threshold, a small gang backfills the leaf freed by s0.
    assert a.release("s0", now=10) == [Released("s0")]
    assert isinstance(a.submit(gang("early", "a", 10, 1, 1), now=11), Allocated)
    assert a.holds() == {}
    checked(a)

    # The head has now waited 200 s: the node is held for it.
    out = a.release("s1", now=201)
    assert a.holds()["a"][0] == "big" and len(a.holds()["a"][1]) == 4
    late = a.submit(gang("late", "a", 10, 1, 1), now=202)
    assert isinstance(late, Queued)
    assert "held back so that big can start" in late.reason
    assert late.reason.endswith("(position 2 in VC a's queue)")
    # Opportunistic work of the same VC is held back too, and would rather go elsewhere.
    oppo = a.submit(gang("oppo-a", "a", -1, 1, 1), now=203)
    assert isinstance(oppo, Allocated) and oppo.placements[0].node != "n0"
    a.release("oppo-a", now=203)
    # A higher-priority gang of the VC is not held back (it would come first in the queue anyway).
    urgent = a.submit(gang("urgent", "a", 50, 1, 1), now=204)
    assert isinstance(urgent, Allocated)
    checked(a)
    assert not [d for d in a.release("urgent", now=204) if isinstance(d, Allocated)]
    # Another VC's opportunistic gang is never held back: it may take n0's free leaves (after b's idle
    # nodes are used up).
    for i in range(2):
        assert isinstance(a.submit(gang(f"bfill{i}", "b", 10, 1, 4), now=205), Allocated)
    other = a.submit(gang("oppo-b", "b", -1, 1, 1), now=206)
    assert isinstance(other, Allocated) and other.placements[0].node == "n0"
    checked(a)

    # As the running gangs leave, the head starts (preempting the opportunistic gang of VC b); "late"
    # gets its turn after it.
    for key in ("s2", "s3"):
        a.release(key, now=300)
    out = a.release("early", now=301)
    started = [d for d in out if isinstance(d, Allocated | Preempting) and d.key == "big"]
    assert started, out
    assert audit(a) == []
    if isinstance(started[0], Preempting):
        assert started[0].victims == ("oppo-b",)
        out = a.release("oppo-b", now=302)
        assert any(isinstance(d, Allocated) and d.key == "big" for d in out)
    # "late" is the head now, and has waited 100 s itself: it is protected in turn.
    assert a.holds()["a"][0] == "late"
    checked(a)


def test_without_a_clock_nothing_is_held_and_backfill_overtakes() -> None:
    a = HivedAllocator(CONFIG, protect_head_after_s=0)
    for i in range(4):
        a.submit(gang(f"s{i}", "a", 10, 1, 1))
    assert isinstance(a.submit(gang("big", "a", 10, 1, 4)), Queued)
    a.release("s0")
    assert isinstance(a.submit(gang("small", "a", 10, 1, 1)), Allocated)
    assert a.holds() == {} and "now" not in a.snapshot()


def test_protection_can_be_disabled_and_tick_refreshes() -> None:
    a = HivedAllocator(CONFIG, protect_head_after_s=None)
    for i in range(4):
        a.submit(gang(f"s{i}", "a", 10, 1, 1), now=0)
    a.submit(gang("big", "a", 10, 1, 4), now=0)
    a.release("s0", now=10_000)
    assert isinstance(a.submit(gang("small", "a", 10, 1, 1), now=10_001), Allocated)
    b = HivedAllocator(CONFIG, protect_head_after_s=5)
    for i in range(4):
        b.submit(gang(f"s{i}", "a", 10, 1, 1), now=0)
    b.submit(gang("big", "a", 10, 1, 4), now=0)
    assert b.tick(4) == [] and b.holds() == {}
    b.tick(6)
    assert b.holds()["a"][0] == "big"
    # Withdrawing the protected head lifts the hold and lets the queue move.
    b.release("s0", now=7)
    q = b.submit(gang("small", "a", 10, 1, 1), now=8)
    assert isinstance(q, Queued) and "held back so that big can start" in q.reason
    out = b.release("big", now=9)
    assert any(isinstance(d, Allocated) and d.key == "small" for d in out)
    assert b.holds() == {}
    checked(b)


# ----------------------------------------------------------------------------------- properties

submit_op = st.tuples(
    st.just("submit"),
    st.sampled_from(["a", "b"]),
    st.sampled_from([-1, 0, 10]),
    st.integers(1, 2),
    st.sampled_from([1, 2, 4]),
)
release_op = st.tuples(st.just("release"), st.integers(0, 30))
health_op = st.tuples(st.just("health"), st.sampled_from(["n0", "n1", "n2"]), st.booleans())
ops = st.lists(
    st.tuples(st.integers(0, 50), st.one_of(submit_op, submit_op, release_op, health_op)), max_size=25
)
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def apply(a: HivedAllocator, i: int, now: float | None, op: tuple[Any, ...]) -> list[Any]:
    if op[0] == "submit":
        return a.submit_all(gang(f"g{i}", op[1], op[2], op[3], op[4]), now=now)
    if op[0] == "release":
        keys = sorted(a.groups(), key=lambda k: int(k[1:]))
        return a.release(keys[op[1] % len(keys)], now=now) if keys else []
    return a.set_node_health(op[1], op[2], now=now)


@SETTINGS
@given(ops, ops)
def test_holds_keep_the_state_sound_round_trip_and_never_cross_vcs(
    first: list[tuple[int, tuple[Any, ...]]], then: list[tuple[int, tuple[Any, ...]]]
) -> None:
    a = HivedAllocator(CONFIG, protect_head_after_s=30)
    now = 0.0
    for i, (dt, op) in enumerate(first):
        now += dt
        apply(a, i, now, op)
        assert audit(a) == [], op
        for vc, (head, held) in a.holds().items():
            g = a._groups[head]
            assert g.request.vc == vc and g.request.priority >= 0 and held
        for q in a.pending():
            g = a._groups[q.key]
            if g.held_by is not None:
                head = a._groups[g.held_by]
                assert head.request.vc == g.request.vc
                assert head.request.priority >= g.request.priority
    snap = json.loads(json.dumps(a.snapshot()))
    b = HivedAllocator.restore(CONFIG, snap, protect_head_after_s=30)
    assert b.snapshot() == snap
    for i, (dt, op) in enumerate(then, start=100):
        now += dt
        assert apply(a, i, now, op) == apply(b, i, now, op)
    assert a.snapshot() == b.snapshot()


@SETTINGS
@given(ops)
def test_an_unreached_threshold_changes_no_decision(seq: list[tuple[int, tuple[Any, ...]]]) -> None:
    a = HivedAllocator(CONFIG, protect_head_after_s=10**9)
    b = HivedAllocator(CONFIG)
    now = 0.0
    for i, (dt, op) in enumerate(seq):
        now += dt
        assert apply(a, i, now, op) == apply(b, i, None, op)


# ------------------------------------------------------------------ a stream of small gangs behind a head


def start_of_big(
    threshold: float | None, stream: bool, first: tuple[float, ...] = (50, 120, 80, 200)
) -> float:
    """VC a's node runs four 1-leaf gangs ending at ``first``; a 4-leaf gang "big" of the same priority
    arrives at 1 s. With ``stream``, a new 1-leaf gang (running 150 s) arrives every 10 s until 2000 s.
    Returns when "big" starts (it must start before the stream ends)."""
    a = HivedAllocator(CONFIG, protect_head_after_s=threshold)
    ends: dict[str, float] = {}
    for i, end in enumerate(first):
        assert isinstance(a.submit(gang(f"s{i}", "a", 10, 1, 1), now=0), Allocated)
        ends[f"s{i}"] = end
    assert isinstance(a.submit(gang("big", "a", 10, 1, 4), now=1), Queued)
    arrivals = [10.0 * k for k in range(1, 200)] if stream else []
    started: dict[str, float] = {}

    def note(decisions: list[Any], now: float) -> None:
        for d in decisions:
            if isinstance(d, Allocated):
                started[d.key] = now
                if d.key != "big":
                    ends[d.key] = now + 150

    while "big" not in started:
        t_end = min(ends.values(), default=float("inf"))
        t_arr = arrivals[0] if arrivals else float("inf")
        assert min(t_end, t_arr) < float("inf"), "big never started"
        if t_end <= t_arr:  # departures first at one instant, as the simulator does
            key = min(ends, key=lambda k: (ends[k], k))
            del ends[key]
            note(a.release(key, now=t_end), t_end)
        else:
            arrivals.pop(0)
            note(a.submit_all(gang(f"x{int(t_arr)}", "a", 10, 1, 1), now=t_arr), t_arr)
        assert audit(a) == []
    return started["big"]


def test_a_protected_head_starts_as_if_no_small_gangs_kept_arriving() -> None:
    alone = start_of_big(0, stream=False)
    assert alone == 200  # when the last gang running at its arrival ends
    # Protected from the start: the stream does not delay it at all.
    assert start_of_big(0, stream=True) == alone
    # Unprotected, the stream backfills every freed leaf: it waits until the stream stops.
    assert start_of_big(None, stream=True) > 2000
    # Protected after 300 s: the small gangs started before then may still run (150 s each), no more.
    late = start_of_big(300, stream=True)
    assert alone < late <= 1 + 300 + 150


def nodes_of(leaf_ids: list[str]) -> set[str]:
    """Node positions (``POOL[0]/<n>``) of leaf ids: n0, n1, n2 are children 0, 1, 2 of the pool."""
    return {"/".join(x.split("/")[:2]) for x in leaf_ids}


def test_backfill_may_not_spend_the_quota_a_protected_head_needs() -> None:
    # VC b's quota is two of the three nodes. s0 binds n0; the head (two 4-leaf pods) holds n0 and n1.
    a = HivedAllocator(CONFIG, protect_head_after_s=0)
    first = a.submit(gang("s0", "b", 10, 1, 1), now=0)
    assert isinstance(first, Allocated) and first.placements[0].node == "n0"
    assert isinstance(a.submit(gang("big", "b", 10, 2, 4), now=1), Queued)
    a.tick(2)
    head, held = a.holds()["b"]
    assert head == "big" and nodes_of(held) == {"POOL[0]/0", "POOL[0]/1"}
    # A 1-leaf gang of b could bind n2 (free, outside the hold), but then b's two nodes of quota would be
    # n0 and n2, and the head could not have n1 even once s0 ends: it would wait for this gang too.
    late = a.submit(gang("late", "b", 10, 1, 1), now=3)
    assert isinstance(late, Queued) and "held back so that big can start" in late.reason, late
    assert audit(a) == []
    out = a.release("s0", now=4)
    placed = next(d for d in out if isinstance(d, Allocated) and d.key == "big")
    assert sorted(p.node for p in placed.placements) == ["n0", "n1"]
    # Then "late" (the head now) starts on what b has left: nothing of b's quota is free, so it waits.
    assert isinstance(a.decision_of("late"), Queued)
    checked(a)


def test_a_hold_moves_when_another_vc_binds_cells_under_it() -> None:
    a = HivedAllocator(CONFIG, protect_head_after_s=0)
    assert isinstance(a.submit(gang("s0", "b", 10, 1, 1), now=0), Allocated)
    assert isinstance(a.submit(gang("big", "b", 10, 2, 4), now=1), Queued)
    a.tick(2)
    assert nodes_of(a.holds()["b"][1]) == {"POOL[0]/0", "POOL[0]/1"}
    # VC a's guaranteed gang binds a's one node of quota on n1, under b's hold: the hold moves to n2 (the
    # head could not start on n1 while a's gang runs; another VC's guaranteed work is never a victim).
    other = a.submit(gang("a0", "a", 10, 1, 4), now=3)
    assert isinstance(other, Allocated) and other.placements[0].node == "n1"
    assert nodes_of(a.holds()["b"][1]) == {"POOL[0]/0", "POOL[0]/2"}
    out = a.release("s0", now=4)
    placed = next(d for d in out if isinstance(d, Allocated) and d.key == "big")
    assert sorted(p.node for p in placed.placements) == ["n0", "n2"]
    checked(a)
