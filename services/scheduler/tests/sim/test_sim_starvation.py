"""The backfill-starvation workload: a 16-GPU gang among a steady overload of 1-2 GPU jobs of its VC.

Without backfill protection the freed GPUs always go to a small job and the gang waits for the stream to
end; with it, the gang waits until it is protected plus, at most, the longest small job then running."""

from __future__ import annotations

from pathlib import Path

from pai_scheduler.hived.allocator import PROTECT_HEAD_AFTER_S
from pai_scheduler.sim.cluster import load_cluster
from pai_scheduler.sim.engine import SimResult, simulate
from pai_scheduler.sim.jobs import format_workload_csv, parse_workload_csv
from pai_scheduler.sim.registry import make_policy
from pai_scheduler.sim.workloads import BIG_JOB_ID, StarvationSpec, starvation

EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "sim"
SPEC = StarvationSpec()
CLUSTER = load_cluster(EXAMPLES / "starvation-2x8.yaml")


def replay(policy: str) -> SimResult:
    return simulate(make_policy(policy, CLUSTER), CLUSTER.capacity, starvation(SPEC))


def test_the_example_file_is_the_generator_output() -> None:
    text = (EXAMPLES / "starvation-jobs.csv").read_text()
    assert text == format_workload_csv(starvation(SPEC))
    jobs = parse_workload_csv(text)
    big = [j for j in jobs if j.job_id == BIG_JOB_ID]
    assert len(big) == 1 and big[0].tasks * big[0].gpu_per_task == 16
    small = [j for j in jobs if j.job_id != BIG_JOB_ID]
    assert {j.gpu_per_task for j in small} == {1.0, 2.0} and {j.vc for j in jobs} == {SPEC.vc}
    # Small jobs arrive faster than the VC's quota can run them.
    offered = sum(j.duration * j.gpu_per_task for j in small)
    assert offered > 1.2 * SPEC.quota_gpus * SPEC.stream_s
    assert SPEC.stream_s > PROTECT_HEAD_AFTER_S + SPEC.small_max_s


def test_without_protection_the_big_gang_waits_for_the_stream_to_end() -> None:
    big = replay("hived-no-protect").records[BIG_JOB_ID]
    assert big.start is not None and big.start > SPEC.stream_s


def test_the_default_guard_bounds_the_wait_by_the_threshold_and_the_longest_small_job() -> None:
    result = replay("hived")
    big = result.records[BIG_JOB_ID]
    assert big.start is not None and big.preemptions == 0
    # It is the head once the small jobs submitted before it started (they fit at once: the VC was empty).
    protected_at = big.job.submit_time + PROTECT_HEAD_AFTER_S
    assert big.start <= protected_at + SPEC.small_max_s
    # Precisely: it starts when the last small job running at that moment ends; none started after.
    running = [
        r
        for k, r in result.records.items()
        if k != BIG_JOB_ID and r.start is not None and r.end is not None and r.start <= protected_at < r.end
    ]
    assert running and big.start == max(r.end for r in running if r.end is not None)
    assert all(
        r.start is None or r.start <= protected_at or r.start >= big.start
        for k, r in result.records.items()
        if k != BIG_JOB_ID
    )
    assert result.metrics["jobs_completed"] == result.metrics["jobs_total"]


def test_strict_protection_starts_it_once_the_jobs_ahead_of_it_have_drained() -> None:
    result = replay("hived-strict")
    big = result.records[BIG_JOB_ID]
    ahead = [
        r for k, r in result.records.items() if k != BIG_JOB_ID and r.job.submit_time < big.job.submit_time
    ]
    head_at = max(r.start for r in ahead if r.start is not None)
    assert big.start is not None and big.start <= head_at + SPEC.small_max_s
    assert big.start - big.job.submit_time < 2 * SPEC.small_max_s
