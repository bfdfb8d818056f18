"""How many ``scheduling.pending`` events a queue draining one placement at a time causes (linear in the
attempts, not quadratic), and that a reader still gets each waiting job's exact, current place from
``scheduler.pending``. Against a real NATS server (JetStream) and a real MongoDB-wire server."""

from __future__ import annotations

import uuid
from pathlib import Path

from pai_common.bus import Bus
from pai_common.contract.events import (
    JobAttemptCompleted,
    SchedulingAllocated,
    SchedulingPending,
)
from pai_common.contract.rpc import JobPendingReply, JobPendingRequest
from pai_common.embedded import ServerProcess
from pai_common.testing import EventRecorder
from pai_scheduler.pending_events import gist, to_publish

from .test_service import gang, register, scheduler_app

# One node of 4 GPUs, all of VC "default".
CLUSTER = """
physicalCluster:
  skuTypes:
    V100: {gpu: 1, cpu: 8, memory: 64Gi}
  cellTypes:
    V100-NODE: {childCellType: V100, childCellNumber: 4, isNodeLevel: true}
  physicalCells:
    - {cellType: V100-NODE, cellAddress: n0}
virtualClusters:
  default:
    virtualCells:
      - {cellType: V100-NODE, cellNumber: 1}
"""


def test_only_a_new_wait_or_a_new_cause_is_published() -> None:
    before = {"a#0": ["VC x: 4 of 4 leaves in use; needs 1", 3], "b#0": ["VC x: 4 of 4 leaves in use", 4]}
    now = {
        "a#0": ["VC x: 3 of 4 leaves in use; needs 1", 2],  # counts and place moved: same cause
        "b#0": ["VC x: 4 of 4 leaves in use; 1 bad node(s)", 3],  # a node went bad: a new cause
        "c#0": ["VC x: 4 of 4 leaves in use", 5],  # starts waiting
    }
    assert to_publish(before, now) == ["b#0", "c#0"]
    assert to_publish(now, now) == []
    assert gist("12 of 16.5 (position 3)") == "# of # (position #)"


async def test_a_draining_queue_publishes_linearly_and_places_are_read_live(
    fresh_nats: ServerProcess, mongo_server: ServerProcess, fresh_bus: Bus, tmp_path: Path
) -> None:
    cluster = tmp_path / "cluster.yaml"
    cluster.write_text(CLUSTER)
    events = EventRecorder(fresh_bus, "pai.evt.scheduling.>")
    await events.start()
    app = scheduler_app(fresh_nats, mongo_server, cluster, f"sched{uuid.uuid4().hex[:8]}", tmp_path)
    await app.start()
    n = 40
    try:
        await register(fresh_bus, "n0", 4)
        running = [f"u~run{i}" for i in range(4)]
        for key in running:
            await fresh_bus.publish_event(gang(key, 1, vc="default"))
        for key in running:
            await events.wait_for(SchedulingAllocated, key)
        waiting = [f"u~w{i:02d}" for i in range(n)]
        for key in waiting:
            await fresh_bus.publish_event(gang(key, 1, vc="default"))
        await events.wait_for(SchedulingPending, waiting[-1])
        last = await fresh_bus.request(JobPendingRequest(job_key=waiting[-1]), JobPendingReply)
        assert (last.attempt_id, last.position) == (0, n)
        assert "4 of 4 guaranteed" in last.reason and "position" not in last.reason

        # Free one GPU at a time: every placement moves each waiting job one place up.
        for i, key in enumerate(waiting):
            await fresh_bus.publish_event(
                JobAttemptCompleted(job_key=running.pop(0), attempt_id=0, exit_code=0)
            )
            await events.wait_for(SchedulingAllocated, key)
            running.append(key)
            if i == n // 2:
                # The place a reader gets is the current, exact one, though no event said it.
                reply = await fresh_bus.request(JobPendingRequest(job_key=waiting[-1]), JobPendingReply)
                assert reply.position == n - i - 1
                placed = await fresh_bus.request(JobPendingRequest(job_key=key), JobPendingReply)
                assert placed == JobPendingReply()
        await events.drain()
        published = events.of(SchedulingPending)
        # One event as each job starts waiting (and a few if its cause changed); publishing every move of
        # its place would give n(n+1)/2 = 820 here.
        assert n <= len(published) <= 3 * n, len(published)
        assert {e.job_key for e in published} == set(waiting)
    finally:
        await app.stop()
