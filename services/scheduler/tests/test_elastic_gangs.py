"""Elastic jobs in the scheduler: the gang (each elastic role at its minimum) is one guaranteed gang, every
task beyond the minimum a growth gang of its own, opportunistic; growth takes only idle cells, never a
waiting guaranteed gang's, and a preemptor takes growth before the gang (it shrinks, down to its minimum;
below that the whole gang is the victim, as before). Pure: the job_gangs mapping on the HiveD core."""

from __future__ import annotations

import pytest
import yaml

from pai_common.contract.events import SchedulingRequested
from pai_common.contract.types import PodRequest
from pai_scheduler.hived.allocator import HivedAllocator
from pai_scheduler.hived.audit import audit
from pai_scheduler.hived.config import parse_hived_config
from pai_scheduler.hived.decisions import Allocated, Decision, Preempting, Queued
from pai_scheduler.hived.requests import GangRequest, Member
from pai_scheduler.job_gangs import (
    OPPORTUNISTIC,
    growth_key,
    parse_key,
    pending_by_attempt,
    pods_of_attempt,
    requests_of,
)

CLUSTER = """
physicalCluster:
  skuTypes: {A100: {gpu: 1, cpu: 8, memory: 64Gi}}
  cellTypes: {A100-NODE: {childCellType: A100, childCellNumber: 4, isNodeLevel: true}}
  physicalCells: [{cellType: A100-NODE, cellAddress: n0}, {cellType: A100-NODE, cellAddress: n1}]
virtualClusters:
  a: {virtualCells: [{cellType: A100-NODE, cellNumber: 1}]}
  b: {virtualCells: [{cellType: A100-NODE, cellNumber: 1}]}
"""


def elastic(minimum: int, total: int, growth: bool = False, vc: str = "a") -> SchedulingRequested:
    """Role ``w`` of ``total`` tasks with one GPU each, elastic from ``minimum``, and a role ``ps`` of one
    fixed task: the first request (the gang) or, with ``growth``, the second (the growth pods alone)."""
    pods = [PodRequest(task_role="ps", index=0, gpu=1, cpu=1, memory_mb=1024)]
    pods += [PodRequest(task_role="w", index=i, gpu=1, cpu=1, memory_mb=1024) for i in range(minimum)]
    if growth:
        pods = [
            PodRequest(task_role="w", index=i, gpu=1, cpu=1, memory_mb=1024, growth=True)
            for i in range(minimum, total)
        ]
    return SchedulingRequested(job_key="u~el", attempt_id=0, virtual_cluster=vc, priority=10, pods=pods)


def submit(alloc: HivedAllocator, body: SchedulingRequested) -> list[Decision]:
    out: list[Decision] = []
    for r in requests_of(body):
        out += alloc.submit_all(r)
    return out


def placed(alloc: HivedAllocator) -> set[str]:
    return {k for k, s in alloc.groups().items() if s.name == "ALLOCATED"}


def test_growth_pods_are_opportunistic_gangs_of_their_own() -> None:
    [gang] = requests_of(elastic(2, 4))
    assert gang.key == "u~el#0" and gang.priority == 10
    assert sorted((m.role, m.pods) for m in gang.members) == [("ps", 1), ("w", 2)]
    growth = requests_of(elastic(2, 4, growth=True))
    assert [r.key for r in growth] == ["u~el#0:w:2:grow", "u~el#0:w:3:grow"]
    assert all(r.priority == OPPORTUNISTIC and not r.lazy_preemption for r in growth)
    # Growth asked together with its gang could run while the gang waits: such a request is refused.
    mixed = elastic(2, 4).model_copy(update={"pods": [*elastic(2, 4).pods, *elastic(2, 4, growth=True).pods]})
    with pytest.raises(ValueError, match="growth pods are asked for alone"):
        requests_of(mixed)
    parts = parse_key(growth_key("u~el", 0, "w", 3))
    assert (parts.attempt, parts.task_role, parts.index, parts.growth) == ("u~el#0", "w", 3, True)
    assert not parse_key("u~el#0:w:3").growth
    # The attempt's end releases its growth gangs with its other pods.
    assert pods_of_attempt(["u~el#0", "u~el#0:w:3:grow"], "u~el", 0) == ["u~el#0:w:3:grow"]


def test_growth_waiting_for_cells_is_not_the_job_waiting() -> None:
    assert pending_by_attempt({"u~el#0:w:3:grow": ["no idle cells", 7]}) == {}
    assert pending_by_attempt({"u~el#0": ["VC busy", 1], "u~el#0:w:3:grow": ["x", 2]}) == {
        "u~el#0": ["VC busy", 1]
    }


def test_the_gang_grows_into_idle_cells_and_shrinks_before_it_stops() -> None:
    alloc = HivedAllocator(parse_hived_config(yaml.safe_load(CLUSTER)))
    [started] = submit(alloc, elastic(2, 7))
    assert isinstance(started, Allocated) and started.key == "u~el#0"
    submit(alloc, elastic(2, 7, growth=True))
    # ps + 2 w in VC a's node; the 5 growth tasks fill a's last GPU and b's idle node (opportunistic).
    assert placed(alloc) == {"u~el#0", *(growth_key("u~el", 0, "w", i) for i in range(2, 7))}
    assert audit(alloc) == []

    # VC b's guaranteed job takes its node back: only the growth there is preempted, the gang runs on.
    claim = alloc.submit(GangRequest("v~b#0", "b", 10, (Member("w", 1, 4),)))
    assert isinstance(claim, Preempting)
    assert all(parse_key(v).growth for v in claim.victims) and len(claim.victims) == 4
    for victim in claim.victims:
        alloc.release(victim)
    assert "v~b#0" in placed(alloc) and "u~el#0" in placed(alloc)
    assert audit(alloc) == []

    # A higher-priority job of VC a needing one GPU takes the last growth task, not the gang.
    one = alloc.submit(GangRequest("v~a1#0", "a", 100, (Member("w", 1, 1),)))
    assert isinstance(one, Preempting) and one.victims == (growth_key("u~el", 0, "w", 6),)
    alloc.release(one.victims[0])
    assert "v~a1#0" in placed(alloc) and "u~el#0" in placed(alloc)

    # Below the minimum the gang itself is the victim, whole, as any gang.
    more = alloc.submit(GangRequest("v~a2#0", "a", 100, (Member("w", 1, 2),)))
    assert isinstance(more, Preempting) and more.victims == ("u~el#0",)
    assert audit(alloc) == []


def test_growth_never_takes_cells_a_waiting_guaranteed_gang_can_use() -> None:
    alloc = HivedAllocator(parse_hived_config(yaml.safe_load(CLUSTER)))
    # VC b's node is full; VC a's job waits for all of a's node, held by a running gang of a.
    alloc.submit(GangRequest("v~b#0", "b", 10, (Member("w", 1, 4),)))
    alloc.submit(GangRequest("v~hold#0", "a", 10, (Member("w", 1, 4),)))
    waiting = alloc.submit(GangRequest("v~next#0", "a", 10, (Member("w", 1, 4),)))
    assert isinstance(waiting, Queued)
    # An elastic job of b asks for growth while a's guaranteed job waits: it stays queued as well.
    growth = [PodRequest(task_role="w", index=i, gpu=1, cpu=1, memory_mb=1024, growth=True) for i in range(4)]
    submit(
        alloc,
        SchedulingRequested(job_key="u~el", attempt_id=0, virtual_cluster="b", priority=10, pods=growth),
    )
    decisions = alloc.release("v~hold#0")
    # The freed node goes to the waiting guaranteed gang, not to the growth that waited too.
    assert any(isinstance(d, Allocated) and d.key == "v~next#0" for d in decisions)
    assert not any(parse_key(k).growth for k in placed(alloc))
    # Once nothing guaranteed waits, idle cells go to growth.
    alloc.release("v~next#0")
    assert sum(parse_key(k).growth for k in placed(alloc)) == 4
    assert audit(alloc) == []
