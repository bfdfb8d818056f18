"""Fair sharing of idle quota in the simulator: a busy VC gets more with borrowing, and a lender's wait on
return is bounded by the reclaim grace."""

from __future__ import annotations

from pathlib import Path

from pai_scheduler.sim.cli import replay
from pai_scheduler.sim.cluster import load_cluster
from pai_scheduler.sim.engine import simulate
from pai_scheduler.sim.hived_policy import HivedPolicy
from pai_scheduler.sim.jobs import SimJob
from pai_scheduler.sim.registry import make_policy
from pai_scheduler.sim.workloads import WorkloadSpec, generate

EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "sim"
CLUSTER = load_cluster(EXAMPLES / "sharing-3vc.yaml")
MIX = (("vc-busy", 0.5), ("nlp", 0.2), ("cv", 0.1), ("vc-idle", 0.2))


def workload(seed: int) -> list[SimJob]:
    return generate(
        WorkloadSpec(
            jobs=600, seed=seed, capacity_gpus=96, load=0.8, vcs=MIX, opportunistic=0.0, max_job_gpus=16
        )
    )


def test_a_busy_vc_gets_more_with_borrowing_and_lenders_wait_at_most_the_grace() -> None:
    jobs = workload(0)
    with_borrowing = HivedPolicy(CLUSTER)
    borrowed = simulate(with_borrowing, CLUSTER.capacity, jobs, nodes=CLUSTER.nodes).metrics
    plain = replay(CLUSTER, jobs, "hived-no-borrow").metrics
    busy, busy_plain = borrowed["per_vc"]["vc-busy"], plain["per_vc"]["vc-busy"]
    assert busy["jct_s"]["avg"] < 0.5 * busy_plain["jct_s"]["avg"]
    assert busy["queueing_delay_s"]["avg"] < 0.5 * busy_plain["queueing_delay_s"]["avg"]
    assert borrowed["gpu_allocation_ratio"] > plain["gpu_allocation_ratio"]
    # Every reclaim: the lender's gang started at most the grace after it began preempting borrowers.
    waits = with_borrowing.reclaim_waits
    assert waits and all(0 <= wait <= grace + 1e-6 for _, wait, grace in waits)
    assert max(wait for _, wait, _ in waits) == 600.0  # borrowers that do not end are stopped at the deadline
    # Without borrowing nothing is ever reclaimed (quota-bound guaranteed work never preempts across VCs).
    assert plain["preemptions"] == 0


def test_a_reclaimed_borrower_runs_on_for_the_grace_then_is_requeued() -> None:
    cluster = CLUSTER
    # The research teams fill their 4 nodes; vc-busy fills its 2 and borrows 2 more; then vc-idle asks for
    # all 6 of its nodes: 4 are free, 2 must be reclaimed.
    jobs = [SimJob(f"r{i}", 0, 10_000, "nlp" if i < 3 else "cv", 100, 1, 8, (), 8, 65536) for i in range(4)]
    jobs += [SimJob(f"b{i}", 1 + i, 10_000, "vc-busy", 100, 1, 8, (), 8, 65536) for i in range(4)]
    jobs += [SimJob(f"i{i}", 100 + i, 500, "vc-idle", 100, 1, 8, (), 8, 65536) for i in range(6)]
    policy = make_policy("hived", cluster)
    r = simulate(policy, cluster.capacity, jobs).records
    reclaimed = sorted(k for k in ("b0", "b1", "b2", "b3") if r[k].preemptions)
    assert len(reclaimed) == 2, {k: r[k].history for k in ("b0", "b1", "b2", "b3")}
    for k in reclaimed:
        # It ran on for exactly the grace after the lender's gang asked (at 104 and 105), then went back to
        # the queue; it starts again once the lender's jobs end.
        assert [what for what, _ in r[k].history[:4]] == ["submit", "start", "preempt", "start"]
        assert r[k].history[2][1] in (704.0, 705.0)
    waits = sorted(r[f"i{i}"].queue_time for i in range(6))
    assert waits == [0.0, 0.0, 0.0, 0.0, 600.0, 600.0]
