"""Elastic jobs in the simulator: growth into idle cells, shrink by a guaranteed job, below-minimum
preemption, and the rigid view the baselines get. Each test replays a handful of jobs (well under a
second)."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from pai_scheduler.hived.config import parse_inventory_csv
from pai_scheduler.sim.cli import JOB_COLUMNS, format_jobs_csv
from pai_scheduler.sim.cluster import SimCluster, from_config, load_cluster
from pai_scheduler.sim.elastic import make_elastic, rigid_at_max, rigid_at_min
from pai_scheduler.sim.engine import JobRecord, simulate
from pai_scheduler.sim.jobs import SimJob, WorkloadError, format_workload_csv, parse_workload_csv
from pai_scheduler.sim.registry import make_policy
from pai_scheduler.sim.workloads import WorkloadSpec, generate

EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "sim"


def job(
    job_id: str,
    submit: float,
    duration: float,
    *,
    tasks: int = 1,
    min_tasks: int = 0,
    gpus: float = 1.0,
    priority: int = 100,
    vc: str = "default",
) -> SimJob:
    return SimJob(job_id, submit, duration, vc, priority, tasks, gpus, (), 1.0, 1024, min_tasks=min_tasks)


def one_node(gpus: int = 4, quotas: dict[str, object] | None = None) -> SimCluster:
    text = f"node,leaf_type,leaf_count,cpu,memory_mb\nn0,V100,{gpus},{8 * gpus},{65536 * gpus}\n"
    return from_config(parse_inventory_csv(text, quotas))


def run(cluster: SimCluster, jobs: list[SimJob], policy: str = "hived"):  # type: ignore[no-untyped-def]
    return simulate(make_policy(policy, cluster), cluster.capacity, jobs, nodes=cluster.nodes)


def test_an_elastic_job_grows_into_idle_cells_and_finishes_earlier_than_rigid_at_its_minimum() -> None:
    cluster = one_node(4)
    # 1..4 tasks of one GPU, 400 task-seconds of work: 100 s at 4 tasks, 400 s at 1.
    elastic = job("e", 0, 100, tasks=4, min_tasks=1)
    rec = run(cluster, [elastic]).records["e"]
    assert rec.state == "completed"
    # Started with its minimum; its three growth tasks placed at once in the same call (one resize).
    assert rec.sizes == [(0, 1), (0, 4), (100, 0)]
    assert rec.end == pytest.approx(100)
    rigid = run(cluster, [rigid_at_min(elastic)]).records["e"]
    assert rigid.end == pytest.approx(400)
    # The same job on a policy that cannot grow it runs rigidly at its minimum, with the same work.
    baseline = run(cluster, [elastic], "first-fit").records["e"]
    assert baseline.end == pytest.approx(400) and max(n for _, n in baseline.sizes) == 1


def test_growth_waits_for_cells_to_free_and_the_work_left_is_divided_by_the_tasks_now() -> None:
    cluster = one_node(4)
    jobs = [job("r", 0, 100, tasks=2), job("e", 0, 100, tasks=4, min_tasks=2)]  # e: 400 task-seconds
    r = run(cluster, jobs).records
    # 0..100: e runs 2 tasks (200 done); r ends, e grows to 4: the 200 left take 50 s.
    assert r["r"].end == pytest.approx(100)
    assert r["e"].end == pytest.approx(150)
    assert (100, 4) in r["e"].sizes


def test_a_guaranteed_job_shrinks_growth_and_waits_no_longer_than_without_elastic_jobs() -> None:
    cluster = one_node(4)
    # e (opportunistic-free: guaranteed, min 1) grows to 4 at t=0; g needs 2 GPUs at t=10.
    jobs = [job("e", 0, 100, tasks=4, min_tasks=1), job("g", 10, 50, tasks=2)]
    r = run(cluster, jobs).records
    assert r["g"].queue_time == pytest.approx(0)  # started at once: it took the growth's cells
    assert r["e"].preemptions == 0 and r["e"].resizes >= 2 and r["e"].state == "completed"
    # e: 40 task-seconds at 4 tasks by t=10, then 2 tasks until g ends at 60 (100 more), then grows back to
    # 4 for the 260 left: ends at 125 (rigid at its minimum it would end at 400).
    assert (10, 2) in r["e"].sizes and (60, 4) in r["e"].sizes
    assert r["e"].end == pytest.approx(125)
    # g's wait as on the same workload with e rigid at its minimum (no growth): the bound holds.
    without = run(cluster, [rigid_at_min(jobs[0]), jobs[1]]).records
    assert r["g"].queue_time <= without["g"].queue_time + 1e-9


def test_an_elastic_job_is_preempted_whole_below_its_minimum() -> None:
    cluster = one_node(4)
    # e holds 2 (its minimum) + 2 growth; a higher-priority job of the same VC needs all 4.
    jobs = [job("e", 0, 100, tasks=4, min_tasks=2, priority=10), job("g", 10, 50, tasks=4, priority=500)]
    r = run(cluster, jobs).records
    assert r["e"].preemptions == 1 and ("preempt", 10) in r["e"].history
    assert r["g"].start == pytest.approx(10)
    # Preempted, it loses its work and reruns it all after g: 400 task-seconds at 4 tasks from t=60.
    assert r["e"].state == "completed" and r["e"].end == pytest.approx(160)


def _work_done(rec: JobRecord) -> float:
    """Task-seconds the job's last attempt ran, from its size history."""
    assert rec.start is not None
    area, last, n = 0.0, rec.start, 0
    for t, size in rec.sizes:
        if t >= rec.start:
            area += n * (t - last)
            last, n = t, size
    return area


def test_the_books_balance_on_a_busy_elastic_workload() -> None:
    cluster = one_node(8)
    jobs = make_elastic(
        generate(WorkloadSpec(jobs=60, seed=1, capacity_gpus=8, load=1.2, max_job_gpus=4, opportunistic=0.3)),
        0.5,
    )
    assert any(j.elastic for j in jobs)
    for policy in ("hived", "first-fit", "quota-only"):
        result = run(cluster, jobs, policy)
        assert all(rec.state == "completed" for rec in result.records.values()), policy
        for rec in result.records.values():
            assert rec.sizes[-1][1] == 0 and rec.instances == 0  # every task stopped
            # The last attempt ran exactly the job's work, whatever its sizes were.
            assert _work_done(rec) == pytest.approx(rec.job.work, rel=1e-6), (policy, rec.job.job_id)
        assert result.metrics["gpu_allocation_ratio"] <= 1.0


def test_elastic_jobs_across_vcs_with_borrowing_and_reclaim_grace() -> None:
    cluster = load_cluster(EXAMPLES / "sharing-3vc.yaml")
    mix = (("vc-busy", 0.5), ("nlp", 0.2), ("cv", 0.1), ("vc-idle", 0.2))
    spec = WorkloadSpec(
        jobs=300, capacity_gpus=96, load=1.0, vcs=mix, opportunistic=0.2, fractional=0.2, max_job_gpus=16
    )
    jobs = make_elastic(generate(spec), 0.5, max_gpus=cluster.capacity)
    result = run(cluster, jobs)
    assert result.metrics["elastic"]["resizes"] > 0 and result.metrics["preemptions"] > 0
    for rec in result.records.values():
        assert rec.state in ("completed", "rejected"), rec
        if rec.state == "completed":
            assert _work_done(rec) == pytest.approx(rec.job.work, rel=1e-6)


def test_workload_csv_round_trips_min_tasks_and_refuses_a_bad_one() -> None:
    jobs = [job("a", 0, 10, tasks=4, min_tasks=2), job("b", 1, 10)]
    text = format_workload_csv(jobs)
    assert text.splitlines()[0].endswith(",min_tasks")
    assert parse_workload_csv(text) == [replace(j, line=i + 2) for i, j in enumerate(jobs)]
    assert "min_tasks" not in format_workload_csv([jobs[1]])  # rigid workloads keep the plain format
    with pytest.raises(WorkloadError, match=r"line 2, column min_tasks: must be 1\.\.tasks \(4\)"):
        parse_workload_csv(
            text.replace("a,0,10,default,100,4,1,,1,1024,2", "a,0,10,default,100,4,1,,1,1024,5")
        )
    assert rigid_at_max(jobs[0]).tasks == 4 and not rigid_at_max(jobs[0]).elastic
    assert rigid_at_min(jobs[0]).work == jobs[0].work


def test_jobs_out_has_the_instance_history() -> None:
    cluster = one_node(4)
    result = run(cluster, [job("e", 0, 100, tasks=4, min_tasks=1)])
    rows = format_jobs_csv(result).splitlines()
    assert rows[0] == ",".join(JOB_COLUMNS)
    row = dict(zip(JOB_COLUMNS, rows[1].split(","), strict=True))
    assert row["min_tasks"] == "1" and row["max_tasks"] == "4" and row["queue_time"] == "0"
    assert row["instances"].split("|")[-1] == "100:0" and "0:4" in row["instances"].split("|")


def test_generate_writes_an_elastic_poisson_workload_that_pai_sim_replays(tmp_path: Path) -> None:
    from pai_scheduler.sim.cli import main

    args = ["--shape", "poisson", "--nodes", "2", "--jobs", "40", "--elastic-fraction", "0.5"]
    assert main(["generate", "--out-dir", str(tmp_path), *args]) == 0
    jobs = parse_workload_csv((tmp_path / "jobs.csv").read_text())
    elastic = [j for j in jobs if j.elastic]
    assert elastic and all(j.gpus <= 16 and j.tasks >= 2 * j.min_tasks for j in elastic)
    out, outcomes = tmp_path / "m.json", tmp_path / "jobs-out.csv"
    argv = ["--cluster", str(tmp_path / "inventory.csv"), "--workload", str(tmp_path / "jobs.csv")]
    assert main([*argv, "--out", str(out), "--jobs-out", str(outcomes)]) == 0
    m = json.loads(out.read_text())
    assert m["elastic"]["jobs_completed"] == len(elastic) and m["elastic"]["resizes"] > 0
    assert m["elastic"]["run_as"] == "elastic"
    assert main([*argv, "--policy", "best-fit", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["elastic"]["run_as"] == "rigid at their minimum"
    assert main(["generate", "--out-dir", str(tmp_path), *args[:-1], "1.5"]) == 2  # a clear error, exit 2
