"""Tests of the scheduler's pure core: table-driven rules, then properties over random operation sequences."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pai_common.contract.types import PodRequest
from pai_scheduler.sim.firstfit import (
    Allocated,
    Decision,
    FirstFitScheduler,
    GangRequest,
    NodeState,
    Queued,
    Rejected,
    Released,
)

# ------------------------------------------------------------------------------------------- helpers


def gang(job: str, *gpus: int, attempt: int = 0, priority: int = 10, role: str = "worker") -> GangRequest:
    pods = tuple(
        PodRequest(task_role=role, index=i, gpu=g, cpu=1, memory_mb=1024) for i, g in enumerate(gpus)
    )
    return GangRequest(job_key=job, attempt_id=attempt, priority=priority, pods=pods)


def cluster(**sizes: int) -> FirstFitScheduler:
    s = FirstFitScheduler()
    for name, size in sizes.items():
        assert s.add_node(name, size) == []
    return s


def where(decision: Decision) -> list[tuple[str, list[int]]]:
    assert isinstance(decision, Allocated), decision
    return [(p.node, p.gpus) for p in decision.placements]


def free(s: FirstFitScheduler, node: str) -> set[int]:
    return s.nodes[node].free_gpus


def check_invariants(s: FirstFitScheduler, declared: Mapping[str, int], healthy: Mapping[str, bool]) -> None:
    """The allocator's bookkeeping, checked against a model the test keeps on its own."""
    nodes = s.nodes
    assert set(nodes) == set(declared)
    holder: dict[tuple[str, int], str] = {}
    for key, a in s.allocations.items():
        req = a.request
        assert key == req.alloc_key == f"{req.job_key}#{req.attempt_id}"
        # The gang is placed whole: one placement per pod, in pod order, with exactly its GPU count.
        assert [(p.task_role, p.index) for p in a.placements] == [(q.task_role, q.index) for q in req.pods]
        for pod, p in zip(req.pods, a.placements, strict=True):
            assert p.node in nodes
            assert len(p.gpus) == pod.gpu
            assert len(set(p.gpus)) == len(p.gpus)
            for g in p.gpus:
                # Never two allocations (or two pods) on the same (node, gpu).
                assert (p.node, g) not in holder, f"{p.node}/{g} held by {holder[(p.node, g)]} and {key}"
                holder[(p.node, g)] = key
    for name, node in nodes.items():
        used = {g for (n, g) in holder if n == name}
        assert node.name == name
        assert node.healthy == healthy[name]
        assert not used & node.free_gpus
        # free + allocated = capacity (GPUs above a shrunken declared size are held, never free).
        assert node.free_gpus | used == set(range(declared[name])) | used
        assert all(0 <= g < declared[name] for g in node.free_gpus)
        assert node.gpu_count == max(declared[name], max(used, default=-1) + 1)
        if node.gpu_count == declared[name]:
            assert len(node.free_gpus) + len(used) == node.gpu_count
    pending = s.pending
    keys = [r.alloc_key for r in pending]
    assert len(keys) == len(set(keys))
    assert not set(keys) & set(s.allocations)
    # Queue order: priority never increases along the queue.
    assert [r.priority for r in pending] == sorted((r.priority for r in pending), reverse=True)
    for req in pending:
        want = sum(p.gpu for p in req.pods)
        if not declared:
            continue  # with no nodes yet every gang waits
        # Queued means "can fit when the cluster is empty" (necessary conditions, checked independently).
        assert max(p.gpu for p in req.pods) <= max(declared.values())
        assert want <= sum(declared.values())
        # Queued also means "does not fit now": a gang whose whole demand fits on one healthy node's free
        # GPUs always fits under best-fit-decreasing, so it must have been placed.
        assert not any(n.healthy and len(n.free_gpus) >= want for n in nodes.values()), req


# ------------------------------------------------------------------------------------ placement rule


@pytest.mark.parametrize(
    ("sizes", "gpus", "expected"),
    [
        # Best fit: the node with the fewest free GPUs that still fits.
        ({"a": 8, "b": 4, "c": 2}, (2,), [("c", [0, 1])]),
        ({"a": 8, "b": 4, "c": 2}, (3,), [("b", [0, 1, 2])]),
        ({"a": 8, "b": 4, "c": 2}, (5,), [("a", [0, 1, 2, 3, 4])]),
        # Ties by node name, whatever the registration order.
        ({"b": 4, "a": 4}, (1,), [("a", [0])]),
        # Largest pods first: 3 takes b, then both 2s fit a; placements come back in pod order.
        ({"a": 4, "b": 3}, (2, 2, 3), [("a", [0, 1]), ("a", [2, 3]), ("b", [0, 1, 2])]),
        # A GPU-less pod goes to the node with the most free GPUs, ties by name.
        ({"a": 2, "b": 4}, (0,), [("b", [])]),
        ({"b": 4, "a": 4}, (0,), [("a", [])]),
        ({"a": 2, "b": 4}, (2, 0), [("a", [0, 1]), ("b", [])]),
        # A gang may span nodes.
        ({"a": 4, "b": 4}, (4, 4), [("a", [0, 1, 2, 3]), ("b", [0, 1, 2, 3])]),
        # A CPU-only node takes GPU-less pods.
        ({"cpu": 0}, (0, 0), [("cpu", []), ("cpu", [])]),
    ],
)
def test_placement_rule(sizes: dict[str, int], gpus: tuple[int, ...], expected: list[Any]) -> None:
    s = cluster(**sizes)
    d = s.submit(gang("u~j", *gpus))
    assert where(d) == expected
    assert s.allocations == {"u~j#0": d}
    for name, size in sizes.items():
        taken = {g for node, gs in expected if node == name for g in gs}
        assert free(s, name) == set(range(size)) - taken


def test_lowest_free_indices_are_chosen() -> None:
    s = cluster(a=4)
    assert where(s.submit(gang("u~x", 1))) == [("a", [0])]
    assert where(s.submit(gang("u~y", 1))) == [("a", [1])]
    s.release("u~x", 0)
    assert free(s, "a") == {0, 2, 3}
    assert where(s.submit(gang("u~z", 2))) == [("a", [0, 2])]


def test_best_fit_follows_current_free_counts() -> None:
    s = cluster(a=4, b=4)
    assert where(s.submit(gang("u~x", 1))) == [("a", [0])]
    # a has 3 free, b has 4: the tighter node wins for a 2-GPU pod, the emptier one for a 4-GPU pod.
    assert where(s.submit(gang("u~y", 2))) == [("a", [1, 2])]
    assert where(s.submit(gang("u~z", 4))) == [("b", [0, 1, 2, 3])]


def test_gang_is_all_or_nothing() -> None:
    s = cluster(a=4, b=4)
    s.submit(gang("u~x", 1))
    # 4+4 fits the empty cluster but not now: nothing of it is placed.
    before = {n: set(v.free_gpus) for n, v in s.nodes.items()}
    req = gang("u~y", 4, 4)
    assert s.submit(req) == Queued(req)
    assert {n: v.free_gpus for n, v in s.nodes.items()} == before
    assert list(s.allocations) == ["u~x#0"]
    assert s.pending == (req,)


def test_gang_request_accepts_a_list_of_pods() -> None:
    pods = [PodRequest(task_role="w", index=0, gpu=1, cpu=1, memory_mb=1)]
    req = GangRequest("u~j", 3, 10, pods)  # type: ignore[arg-type]
    assert req.pods == tuple(pods)
    assert req.alloc_key == "u~j#3"
    assert hash(req) == hash(GangRequest("u~j", 3, 10, tuple(pods)))


# ----------------------------------------------------------------------------------------- rejection


@pytest.mark.parametrize(
    ("sizes", "req", "reason"),
    [
        (
            {"a": 4, "b": 2},
            gang("u~j", 1, 5, role="trainer"),
            "pod trainer[1] wants 5 GPUs but the largest node (a) has 4",
        ),
        (
            {"a": 4, "b": 2},
            gang("u~j", 4, 4),
            "the gang wants 8 GPUs in total but the cluster has 6 on 2 node(s)",
        ),
        (
            {"a": 4, "b": 2},
            gang("u~j", 3, 3),
            "the gang's 2 pods (6 GPUs: 3+3) do not pack onto the nodes (a=4, b=2) even when the cluster is"
            " empty",
        ),
        ({"a": 4}, GangRequest("u~j", 0, 10, ()), "the gang has no pods"),
        (
            {"a": 4},
            GangRequest("u~j", 0, 10, gang("u~j", 1).pods * 2),
            "pod worker[0] appears more than once in the gang",
        ),
        ({"a": 0}, gang("u~j", 1), "pod worker[0] wants 1 GPUs but the largest node (a) has 0"),
    ],
)
def test_rejection_reasons(sizes: dict[str, int], req: GangRequest, reason: str) -> None:
    s = cluster(**sizes)
    assert s.submit(req) == Rejected(req, reason)
    assert s.pending == ()
    assert dict(s.allocations) == {}
    # Rejection is not remembered: asking again gives the same answer, and releasing it is a no-op.
    assert s.submit(req) == Rejected(req, reason)
    assert s.release(req.job_key, req.attempt_id) == []


def test_rejection_ignores_current_usage_and_health() -> None:
    s = cluster(a=4, b=4)
    s.submit(gang("u~x", 4))
    s.set_node_health("b", False)
    # Fits the (empty) cluster, so it waits even though nothing fits now and b is unhealthy.
    req = gang("u~y", 4, 4)
    assert s.submit(req) == Queued(req)
    assert s.set_node_health("b", True) == []
    d = s.release("u~x", 0)
    assert d[0] == Released("u~x", 0)
    assert where(d[1]) == [("a", [0, 1, 2, 3]), ("b", [0, 1, 2, 3])]


def test_largest_node_is_named_deterministically() -> None:
    s = cluster(b=2, a=2)
    d = s.submit(gang("u~j", 3))
    assert isinstance(d, Rejected)
    assert d.reason == "pod worker[0] wants 3 GPUs but the largest node (a) has 2"


# -------------------------------------------------------------------------------- queue and backfill


def test_queue_order_and_backfill() -> None:
    s = cluster(a=4)
    s.submit(gang("u~a", 4))
    b, c = gang("u~b", 4, priority=10), gang("u~c", 2, priority=10)
    d, e = gang("u~d", 3, priority=20), gang("u~e", 1, priority=10)
    for req in (b, c, d, e):
        assert s.submit(req) == Queued(req)
    # Higher priority first, then arrival.
    assert list(s.pending) == [d, b, c, e]
    out = s.release("u~a", 0)
    # d (head) fits; b does not and is skipped; c (2) no longer fits after d; e (1) is backfilled.
    assert out == [Released("u~a", 0), s.allocations["u~d#0"], s.allocations["u~e#0"]]
    assert where(out[1]) == [("a", [0, 1, 2])]
    assert where(out[2]) == [("a", [3])]
    assert list(s.pending) == [b, c]


def test_head_does_not_block_a_smaller_gang_behind_it() -> None:
    s = cluster(a=4)
    s.submit(gang("u~x", 2))
    big = gang("u~big", 4, priority=100)
    assert s.submit(big) == Queued(big)
    small = gang("u~small", 2, priority=0)
    assert where(s.submit(small)) == [("a", [2, 3])]
    assert s.pending == (big,)


def test_same_priority_is_served_in_arrival_order() -> None:
    s = cluster(a=4)
    s.submit(gang("u~x", 4))
    first, second = gang("u~1", 4), gang("u~2", 4)
    s.submit(first)
    s.submit(second)
    out = s.release("u~x", 0)
    assert out == [Released("u~x", 0), s.allocations["u~1#0"]]
    assert s.pending == (second,)


# ------------------------------------------------------------------------------------- idempotency


def test_submit_is_idempotent() -> None:
    s = cluster(a=4)
    req = gang("u~j", 2)
    first = s.submit(req)
    assert isinstance(first, Allocated)
    snap = s.snapshot()
    assert s.submit(req) == first
    # Same key, different contents: the existing allocation stands.
    assert s.submit(gang("u~j", 1, 1)) == first
    assert s.snapshot() == snap

    s.submit(gang("u~full", 2))
    queued = gang("u~q", 3)
    assert s.submit(queued) == Queued(queued)
    assert s.submit(queued) == Queued(queued)
    assert s.submit(gang("u~q", 1)) == Queued(queued)
    assert s.pending == (queued,)


def test_release_is_idempotent() -> None:
    s = cluster(a=4)
    s.submit(gang("u~j", 2))
    assert s.release("u~j", 0) == [Released("u~j", 0)]
    assert free(s, "a") == {0, 1, 2, 3}
    assert s.release("u~j", 0) == []
    assert s.release("u~never", 7) == []
    # A different attempt of the same job is a different key.
    s.submit(gang("u~j", 1, attempt=1))
    assert s.release("u~j", 0) == []
    assert list(s.allocations) == ["u~j#1"]


def test_release_of_a_queued_gang_drops_it() -> None:
    s = cluster(a=2)
    s.submit(gang("u~x", 2))
    s.submit(gang("u~q", 2))
    assert s.release("u~q", 0) == [Released("u~q", 0)]
    assert s.pending == ()
    assert s.release("u~q", 0) == []
    # It does not come back when capacity appears.
    assert s.release("u~x", 0) == [Released("u~x", 0)]
    assert dict(s.allocations) == {}


# ------------------------------------------------------------------------------------------- nodes


def test_reregistering_with_the_same_size_keeps_allocations() -> None:
    s = cluster(a=4)
    d = s.submit(gang("u~j", 2))
    assert s.add_node("a", 4) == []
    assert s.allocations == {"u~j#0": d}
    assert free(s, "a") == {2, 3}
    assert s.nodes["a"] == NodeState("a", 4, {2, 3}, True)


def test_shrink_is_clamped_and_shrinks_back_on_release() -> None:
    s = cluster(a=4)
    s.submit(gang("u~x", 2))  # a/0-1
    s.submit(gang("u~y", 2))  # a/2-3
    assert s.add_node("a", 2) == []
    assert s.nodes["a"] == NodeState("a", 4, set(), True)
    assert s.declared_gpu_count("a") == 2
    s.release("u~x", 0)
    # Still 4 while y holds GPU 3; but only GPUs below the declared size are free again.
    assert s.nodes["a"] == NodeState("a", 4, {0, 1}, True)
    assert where(s.submit(gang("u~z", 2))) == [("a", [0, 1])]
    one = gang("u~one", 1)
    assert s.submit(one) == Queued(one)  # GPUs 2 and 3 are retired, never handed out
    assert s.release("u~y", 0) == [Released("u~y", 0)]
    assert s.nodes["a"] == NodeState("a", 2, set(), True)
    assert s.pending == (one,)


def test_shrink_with_partial_overhang() -> None:
    s = cluster(a=4)
    s.submit(gang("u~x", 1, 1, 1))  # a/0-2
    s.add_node("a", 1)
    assert s.nodes["a"] == NodeState("a", 3, set(), True)
    s.release("u~x", 0)
    assert s.nodes["a"] == NodeState("a", 1, {0}, True)


def test_growth_retries_the_queue() -> None:
    s = cluster(a=2)
    s.submit(gang("u~x", 2))
    q1, q2 = gang("u~q1", 2), gang("u~q2", 2)
    s.submit(q1)
    s.submit(q2)
    out = s.add_node("b", 2)
    assert out == [s.allocations["u~q1#0"]]
    assert where(out[0]) == [("b", [0, 1])]
    out = s.add_node("a", 4)
    assert out == [s.allocations["u~q2#0"]]
    assert where(out[0]) == [("a", [2, 3])]
    assert s.pending == ()


def test_shrink_rejects_queued_gangs_that_can_no_longer_fit() -> None:
    s = cluster(a=4, b=4)
    s.submit(gang("u~x", 4))
    s.submit(gang("u~y", 4))
    small, wide = gang("u~small", 2), gang("u~wide", 4, 4, priority=1)
    s.submit(small)
    s.submit(wide)
    out = s.add_node("b", 2)
    assert out == [Rejected(wide, "the gang wants 8 GPUs in total but the cluster has 6 on 2 node(s)")]
    assert s.pending == (small,)


def test_negative_size_is_refused() -> None:
    s = FirstFitScheduler()
    with pytest.raises(ValueError, match="gpu_count must be >= 0"):
        s.add_node("a", -1)
    assert dict(s.nodes) == {}


def test_unhealthy_nodes_get_no_new_pods() -> None:
    s = cluster(a=4, b=2)
    assert s.set_node_health("a", False) == []
    assert s.set_node_health("a", False) == []
    req = gang("u~j", 3)
    assert s.submit(req) == Queued(req)
    assert where(s.submit(gang("u~k", 0))) == [("b", [])]
    out = s.set_node_health("a", True)
    assert len(out) == 1 and where(out[0]) == [("a", [0, 1, 2])]
    assert s.set_node_health("ghost", True) == []


def test_reregistration_marks_a_node_healthy() -> None:
    s = cluster(a=4)
    s.set_node_health("a", False)
    req = gang("u~j", 1)
    s.submit(req)
    out = s.add_node("a", 4)
    assert s.nodes["a"].healthy
    assert len(out) == 1 and where(out[0]) == [("a", [0])]


def test_node_views_are_copies() -> None:
    s = cluster(a=2)
    s.nodes["a"].free_gpus.clear()
    assert free(s, "a") == {0, 1}
    with pytest.raises(TypeError):
        s.allocations["x"] = None  # type: ignore[index]


# ---------------------------------------------------------------------------------------- snapshot


def assert_plain_json(value: Any) -> None:
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            assert_plain_json(v)
    elif isinstance(value, list):
        for v in value:
            assert_plain_json(v)
    else:
        assert type(value) in (str, int, bool), value


def test_snapshot_round_trip() -> None:
    s = cluster(a=4, b=2)
    s.submit(gang("u~x", 2, 0, 1, priority=5))
    s.submit(gang("u~y", 4))
    s.submit(gang("u~z", 3, priority=50))
    s.add_node("a", 2)
    s.set_node_health("b", False)
    snap = s.snapshot()
    assert_plain_json(snap)
    assert json.loads(json.dumps(snap)) == snap
    r = FirstFitScheduler.restore(json.loads(json.dumps(snap)))
    assert r.snapshot() == snap
    assert r.allocations == s.allocations
    assert r.pending == s.pending
    assert r.nodes == s.nodes


def corrupt(snap: dict[str, Any], path: list[Any], value: Any) -> dict[str, Any]:
    d: dict[str, Any] = json.loads(json.dumps(snap))
    target: Any = d
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    return d


@pytest.mark.parametrize(
    ("path", "value", "message"),
    [
        (["version"], 99, "unsupported scheduler snapshot version"),
        (["nodes", 0, "free_gpus"], [0, 1, 2, 3], "out of range or free"),
        (["nodes", 0, "free_gpus"], [4], "do not complement"),
        (["nodes", 0, "gpu_count"], 5, "does not match its allocations"),
        (["allocations", 1, "placements", 0, "gpus"], [0, 1], "held by both"),
        (["allocations", 1, "placements", 0, "node"], "ghost", "unknown node"),
        (["allocations", 1, "placements", 0, "gpus"], [2], "does not match pod"),
        (["pending", 0, "seq"], 1000, "sequence numbers"),
    ],
)
def test_restore_refuses_inconsistent_snapshots(path: list[Any], value: Any, message: str) -> None:
    s = cluster(a=6)
    s.submit(gang("u~x", 2))
    s.submit(gang("u~y", 2))
    s.submit(gang("u~q", 4))
    snap = s.snapshot()
    assert snap["nodes"][0]["free_gpus"] == [4, 5] and len(snap["pending"]) == 1
    assert FirstFitScheduler.restore(snap).snapshot() == snap
    with pytest.raises(ValueError, match=message):
        FirstFitScheduler.restore(corrupt(snap, path, value))


def test_invariant_checker_can_fail() -> None:
    # The property tests are only as good as this checker: show that it catches a double booking.
    s = cluster(a=4)
    s.submit(gang("u~x", 2))
    check_invariants(s, {"a": 4}, {"a": True})
    s._nodes["a"].free_gpus.add(0)  # corrupt the bookkeeping behind the allocator's back
    with pytest.raises(AssertionError):
        check_invariants(s, {"a": 4}, {"a": True})


# -------------------------------------------------------------------------------------- properties

NODE_NAMES = ("n0", "n1", "n2", "n3")
Op = tuple[Any, ...]

pods_strategy = st.lists(
    st.tuples(st.sampled_from(("ps", "worker")), st.integers(0, 6)), min_size=1, max_size=4
)

op_strategy: st.SearchStrategy[Op] = st.one_of(
    st.tuples(st.just("add"), st.sampled_from(NODE_NAMES), st.integers(0, 8)),
    st.tuples(
        st.just("submit"),
        st.integers(0, 5),  # job
        st.integers(0, 1),  # attempt
        st.integers(0, 3),  # priority
        pods_strategy,
    ),
    st.tuples(st.just("release"), st.integers(0, 5), st.integers(0, 1)),
    st.tuples(st.just("health"), st.sampled_from(NODE_NAMES), st.booleans()),
)
ops_strategy = st.lists(op_strategy, max_size=40)


def make_request(op: Op) -> GangRequest:
    _, job, attempt, priority, pods = op
    return GangRequest(
        job_key=f"u~j{job}",
        attempt_id=attempt,
        priority=priority,
        pods=tuple(
            PodRequest(task_role=role, index=i, gpu=g, cpu=1, memory_mb=1) for i, (role, g) in enumerate(pods)
        ),
    )


def apply(s: FirstFitScheduler, op: Op) -> list[Decision]:
    if op[0] == "add":
        return s.add_node(op[1], op[2])
    if op[0] == "submit":
        return [s.submit(make_request(op))]
    if op[0] == "release":
        return s.release(f"u~j{op[1]}", op[2])
    return s.set_node_health(op[1], op[2])


def run_checked(ops: list[Op]) -> tuple[FirstFitScheduler, list[list[Decision]]]:
    """Apply ``ops``, checking every decision against the state before and after, and the invariants."""
    s = FirstFitScheduler()
    declared: dict[str, int] = {}
    healthy: dict[str, bool] = {}
    trace: list[list[Decision]] = []
    for op in ops:
        before_alloc = dict(s.allocations)
        before_pending = {r.alloc_key: r for r in s.pending}
        out = apply(s, op)
        trace.append(out)
        if op[0] == "add":
            declared[op[1]] = op[2]
            healthy[op[1]] = True
        elif op[0] == "health" and op[1] in declared:
            healthy[op[1]] = op[2]
        after_alloc = dict(s.allocations)
        after_pending = {r.alloc_key: r for r in s.pending}

        new_allocs = [d for d in out if isinstance(d, Allocated)]
        released = [d for d in out if isinstance(d, Released)]
        rejected = [d for d in out if isinstance(d, Rejected)]
        released_keys = {f"{d.job_key}#{d.attempt_id}" for d in released}

        if op[0] == "submit":
            req = make_request(op)
            (d,) = out
            if req.alloc_key in before_alloc:
                assert d == before_alloc[req.alloc_key]
            elif req.alloc_key in before_pending:
                assert d == Queued(before_pending[req.alloc_key])
            elif isinstance(d, Queued):
                assert d.request == req and req.alloc_key in after_pending
            elif isinstance(d, Rejected):
                assert d.request == req and d.reason
                assert req.alloc_key not in after_alloc and req.alloc_key not in after_pending
            else:
                assert isinstance(d, Allocated) and d.request == req
                new_allocs = [d]
            if req.alloc_key in before_alloc or req.alloc_key in before_pending:
                new_allocs = []
        elif op[0] == "release":
            key = f"u~j{op[1]}#{op[2]}"
            if key in before_alloc or key in before_pending:
                assert out[0] == Released(f"u~j{op[1]}", op[2])
                assert len(released) == 1
            else:
                assert out == []
            assert key not in after_alloc and key not in after_pending
            # Released comes first; everything after it is a queued gang now placed.
            assert all(isinstance(d, Allocated) for d in out[1:])
        else:
            assert not released
            assert all(isinstance(d, Allocated | Rejected) for d in out)
            # Rejections of queued gangs come before the new allocations.
            kinds = [type(d) for d in out]
            assert kinds == sorted(kinds, key=lambda k: k is Allocated)

        for d in rejected:
            if op[0] != "submit":
                assert before_pending[d.request.alloc_key] == d.request
                assert d.request.alloc_key not in after_pending
        new_keys = [d.request.alloc_key for d in new_allocs]
        if op[0] != "submit":
            # Only queued gangs get placed when capacity appears, each once, in queue order.
            assert all(k in before_pending for k in new_keys)
            assert new_keys == [k for k in before_pending if k in new_keys]
            # Nothing joins the queue, and what stays keeps its relative order.
            order = [r.alloc_key for r in s.pending]
            assert order == [k for k in before_pending if k in order]
        # Allocations change exactly by the decisions: nothing moves or appears silently.
        expected = {k: v for k, v in before_alloc.items() if k not in released_keys}
        expected.update({d.request.alloc_key: d for d in new_allocs})
        assert after_alloc == expected
        assert list(after_alloc)[: len(expected) - len(new_keys)] == [
            k for k in before_alloc if k not in released_keys
        ]
        check_invariants(s, declared, healthy)
    return s, trace


PROPERTY_SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY_SETTINGS
@given(ops_strategy)
def test_random_operations_keep_the_invariants(ops: list[Op]) -> None:
    run_checked(ops)


@PROPERTY_SETTINGS
@given(ops_strategy)
def test_decisions_are_deterministic(ops: list[Op]) -> None:
    _, first = run_checked(ops)
    s = FirstFitScheduler()
    assert [apply(s, op) for op in ops] == first


@PROPERTY_SETTINGS
@given(ops_strategy, ops_strategy)
def test_snapshot_restore_round_trip_after_random_operations(before: list[Op], after: list[Op]) -> None:
    s, _ = run_checked(before)
    snap = s.snapshot()
    assert_plain_json(snap)
    stored = json.loads(json.dumps(snap))  # what MongoDB would give back
    assert stored == snap
    r = FirstFitScheduler.restore(stored)
    assert r.snapshot() == snap
    assert r.allocations == s.allocations
    assert r.pending == s.pending
    assert r.nodes == s.nodes
    # The restored allocator behaves exactly like the original from here on.
    for op in after:
        assert apply(r, op) == apply(s, op)
    assert r.snapshot() == s.snapshot()


@PROPERTY_SETTINGS
@given(ops_strategy, op_strategy)
def test_submit_and_release_are_idempotent(ops: list[Op], extra: Op) -> None:
    s, _ = run_checked(ops)
    if extra[0] == "submit":
        first = s.submit(make_request(extra))
        snap = s.snapshot()
        second = s.submit(make_request(extra))
        # Allocated -> the same Allocated, Queued -> the same Queued, Rejected -> the same reason.
        assert second == first
        assert s.snapshot() == snap
    elif extra[0] == "release":
        s.release(f"u~j{extra[1]}", extra[2])
        snap = s.snapshot()
        assert s.release(f"u~j{extra[1]}", extra[2]) == []
        assert s.snapshot() == snap


def test_gang_waits_for_nodes_when_none_are_registered() -> None:
    sched = FirstFitScheduler()
    assert isinstance(sched.submit(gang("u~j", 2)), Queued)
    decisions = sched.add_node("a", 4)
    assert [type(d) for d in decisions] == [Allocated]
