"""The engine's bookkeeping, driven by the real baseline policies and by policies that break the rules."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pai_scheduler.hived.config import parse_inventory_csv
from pai_scheduler.sim.cluster import SimCluster, from_config, load_cluster
from pai_scheduler.sim.engine import ARRIVED_LEVELS, SimulationError, simulate
from pai_scheduler.sim.jobs import SimJob, parse_workload_csv
from pai_scheduler.sim.policy import Outcome, Started
from pai_scheduler.sim.registry import make_policy, policies
from pai_scheduler.sim.workloads import WorkloadSpec, generate

BASELINES = ("first-fit", "best-fit", "whole-gpu", "quota-only")
NEVER_PREEMPT = ("first-fit", "best-fit", "whole-gpu")
# Every policy the registry offers.
ALL = tuple(policies())
EXAMPLES = Path(__file__).resolve().parents[4] / "examples" / "sim"


def job(
    job_id: str,
    submit: float,
    gpus: float,
    duration: float = 100.0,
    *,
    vc: str = "default",
    priority: int = 100,
    tasks: int = 1,
    types: tuple[str, ...] = (),
) -> SimJob:
    return SimJob(job_id, submit, duration, vc, priority, tasks, gpus, types, 1.0, 1024)


def inventory(*nodes: tuple[str, str, int], quotas: dict[str, object] | None = None) -> SimCluster:
    text = "node,leaf_type,leaf_count,cpu,memory_mb\n" + "".join(
        f"{name},{leaf},{count},{8 * count},{65536 * count}\n" for name, leaf, count in nodes
    )
    return from_config(parse_inventory_csv(text, quotas))


def busy_workload() -> list[SimJob]:
    # Overloaded, with many opportunistic jobs, so that queues form and quota-only preempts.
    return generate(
        WorkloadSpec(
            jobs=250,
            seed=3,
            capacity_gpus=64,
            load=1.3,
            vcs=(("vc-a", 0.4), ("vc-b", 0.35), ("vc-c", 0.25)),
            opportunistic=0.4,
            fractional=0.2,
            max_job_gpus=16,
        )
    )


@pytest.mark.parametrize("name", ALL)
def test_every_job_ends_exactly_once_and_the_books_balance(name: str) -> None:
    cluster = load_cluster(EXAMPLES / "cluster-8x8.yaml")
    jobs = busy_workload()
    result = simulate(make_policy(name, cluster), cluster.capacity, jobs)
    m = result.metrics
    assert m["jobs_total"] == len(jobs) == len(result.records)
    assert m["jobs_completed"] + m["jobs_rejected"] == len(jobs)
    assert m["jobs_running"] == 0 and m["jobs_unplaced"] == m["jobs_rejected"]
    preempts = 0
    for rec in result.records.values():
        kinds = [k for k, _ in rec.history]
        assert kinds[0] == "submit" and kinds.count("submit") == 1
        assert sum(k in ("end", "reject") for k in kinds) == 1, rec.history
        assert kinds[-1] in ("end", "reject")
        assert rec.state in ("completed", "rejected")
        starts = [t for k, t in rec.history if k == "start"]
        assert all(t >= rec.job.submit_time for t in starts)
        # Every preemption is followed by a restart: the victim went back to the queue and ran again.
        assert kinds.count("start") == kinds.count("preempt") + (rec.state == "completed")
        for i, k in enumerate(kinds):
            if k == "preempt":
                assert kinds[i + 1 :].count("start") >= 1
        if rec.state == "completed":
            assert rec.end is not None and rec.start is not None
            assert rec.end == pytest.approx(rec.start + rec.job.duration)
            # JCT counts from the original submission, whatever happened in between.
            assert rec.end - rec.job.submit_time >= rec.job.duration + rec.queue_time - 1e-6
        preempts += rec.preemptions
    assert preempts == m["preemptions"]
    assert 0.0 <= m["gpu_allocation_ratio"] <= 1.0
    assert 0.0 <= m["gpu_allocation_ratio_while_arriving"] <= 1.0
    assert m["decision_latency_ms"]["calls"] >= len(jobs) + m["jobs_completed"]
    if name not in NEVER_PREEMPT:
        assert m["preemptions"] > 0  # otherwise the re-queue checks above proved nothing


@pytest.mark.parametrize("name", ALL)
def test_replay_is_deterministic(name: str) -> None:
    cluster = inventory(*((f"n{i}", "V100", 8) for i in range(4)))
    jobs = generate(WorkloadSpec(jobs=150, seed=5, capacity_gpus=32, load=1.2, max_job_gpus=16))
    a = simulate(make_policy(name, cluster), cluster.capacity, jobs)
    b = simulate(make_policy(name, cluster), cluster.capacity, jobs)
    assert [r.history for r in a.records.values()] == [r.history for r in b.records.values()]
    strip = ("wall_s", "decision_latency_ms")
    assert {k: v for k, v in a.metrics.items() if k not in strip} == {
        k: v for k, v in b.metrics.items() if k not in strip
    }


@pytest.mark.parametrize("name", [n for n in ALL if n not in NEVER_PREEMPT])
def test_preempted_job_is_requeued_with_its_original_submit_time(name: str) -> None:
    cluster = inventory(("n0", "V100", 8))
    jobs = [
        job("oppo", 0, 8, duration=100, priority=-1),
        job("prod", 10, 8, duration=5, priority=100),
    ]
    result = simulate(make_policy(name, cluster), cluster.capacity, jobs)
    oppo, prod = result.records["oppo"], result.records["prod"]
    assert prod.history == [("submit", 10), ("start", 10), ("end", 15)]
    assert oppo.history == [("submit", 0), ("start", 0), ("preempt", 10), ("start", 15), ("end", 115)]
    assert oppo.queue_time == 5 and oppo.preemptions == 1
    assert result.metrics["preemptions"] == 1
    assert result.metrics["jct_s"]["p95"] == 115  # oppo: from its submission at 0, not its requeue at 10
    # 8 GPUs held over [0, 115] except nothing is lost at the hand-over: always full.
    assert result.metrics["gpu_allocation_ratio"] == 1.0


def test_first_fit_never_preempts_and_backfills_in_priority_order() -> None:
    cluster = inventory(("n0", "V100", 8))
    jobs = [
        job("big", 0, 8, duration=10, priority=-1),
        job("low", 1, 4, duration=10, priority=10),
        job("high", 2, 4, duration=10, priority=100),
        job("huge", 3, 16),
    ]
    result = simulate(make_policy("first-fit", cluster), cluster.capacity, jobs)
    r = result.records
    assert r["big"].history[-1] == ("end", 10)
    assert r["low"].history[1] == ("start", 10) and r["high"].history[1] == ("start", 10)
    assert r["huge"].state == "rejected" and "16" in r["huge"].reason
    assert result.metrics["preemptions"] == 0


def test_quota_only_holds_a_vc_to_its_quota_even_on_an_idle_cluster() -> None:
    cluster = inventory(
        ("n0", "V100", 8),
        ("n1", "V100", 8),
        quotas={
            "a": {"virtualCells": [{"cellType": "V100-8-NODE", "cellNumber": 1}]},
            "b": {"virtualCells": [{"cellType": "V100-8-NODE", "cellNumber": 1}]},
        },
    )
    jobs = [
        job("a1", 0, 8, vc="a"),
        job("a2", 1, 8, vc="a"),
        job("b1", 2, 16, vc="b"),
        job("x", 3, 1, vc="z"),
    ]
    result = simulate(make_policy("quota-only", cluster), cluster.capacity, jobs)
    r = result.records
    assert r["a2"].history[1] == ("start", 100)  # waited for a1 although n1 was idle
    assert r["b1"].state == "rejected" and "quota of 8" in r["b1"].reason
    assert r["x"].state == "rejected" and "unknown virtual cluster" in r["x"].reason
    # first-fit has no VCs: a2 starts at once on the idle node.
    ff = simulate(make_policy("first-fit", cluster), cluster.capacity, jobs).records
    assert ff["a2"].history[1] == ("start", 1)


def test_leaf_types_are_hard_constraints() -> None:
    cluster = inventory(("v", "V100", 8), ("a", "A100", 8))
    jobs = [
        job("j1", 0, 8, types=("A100",)),
        job("j2", 1, 8, types=("A100", "V100")),
        job("j3", 2, 1, types=("A100",)),
        job("j4", 3, 1, types=("H100",)),
    ]
    for name in BASELINES:
        r = simulate(make_policy(name, cluster), cluster.capacity, jobs).records
        assert r["j1"].history[1] == ("start", 0)
        assert r["j2"].history[1] == ("start", 1)  # A100 busy: takes its second choice at once
        assert r["j3"].history[1] == ("start", 100)  # waits for an A100, never takes a V100
        assert r["j4"].state == "rejected" and "H100" in r["j4"].reason


def test_fractional_tasks_hold_whole_gpus_on_the_whole_gpu_baselines() -> None:
    cluster = inventory(("n0", "V100", 2))
    jobs = [job("f1", 0, 0.5), job("f2", 0, 0.5), job("f3", 0, 0.5)]
    result = simulate(make_policy("whole-gpu", cluster), cluster.capacity, jobs, departures=False)
    # Both GPUs are held, for half a GPU of demand each: the allocation ratio counts the demand.
    assert result.metrics["final_held_ratio"] == 1.0
    assert result.metrics["final_allocation_ratio"] == 0.5
    assert result.metrics["jobs_unplaced"] == 1
    # The sharing baselines put all three on the GPUs' halves.
    for name in ("first-fit", "best-fit"):
        m = simulate(make_policy(name, cluster), cluster.capacity, jobs, departures=False).metrics
        assert m["final_allocation_ratio"] == m["final_held_ratio"] == 0.75 and m["jobs_unplaced"] == 0


@pytest.mark.skipif("hived" not in ALL, reason="the HiveD allocator is not importable")
def test_hived_packs_fractional_tasks_onto_shared_gpus() -> None:
    cluster = inventory(("n0", "V100", 2))
    jobs = [job("f1", 0, 0.5), job("f2", 0, 0.5), job("f3", 0, 0.5), job("w", 0, 1)]
    result = simulate(make_policy("hived", cluster), cluster.capacity, jobs, departures=False)
    assert result.metrics["jobs_unplaced"] == 1  # w: the second GPU holds f3's share
    assert result.metrics["final_allocation_ratio"] == 0.75


@given(
    sizes=st.lists(
        st.tuples(st.sampled_from([0.25, 0.5, 1, 2, 3, 4, 8]), st.integers(1, 2)), min_size=1, max_size=40
    )
)
@settings(max_examples=60, deadline=None)
def test_no_departure_ratios_are_monotone_for_first_fit_on_one_node(sizes: list[tuple[float, int]]) -> None:
    cluster = inventory(("n0", "V100", 8))
    jobs = [job(f"j{i}", float(i), g, tasks=t) for i, (g, t) in enumerate(sizes)]
    m = simulate(make_policy("first-fit", cluster), cluster.capacity, jobs, departures=False).metrics
    ratios = m["allocation_ratio_by_arrived"]
    assert list(ratios) == [str(level) for level in ARRIVED_LEVELS]
    reached = [v for v in ratios.values() if v is not None]
    assert reached == sorted(reached)
    # A level not reached is followed only by levels not reached.
    assert list(ratios.values()) == reached + [None] * (len(ratios) - len(reached))
    assert all(0.0 <= v <= 1.0 for v in reached)
    assert m["jobs_completed"] == 0
    assert m["jobs_running"] + m["jobs_unplaced"] == len(jobs)


def test_no_departure_ratios_known_values() -> None:
    cluster = inventory(("n0", "V100", 8))
    jobs = [job("a", 0, 4), job("b", 1, 4), job("c", 2, 4)]
    m = simulate(make_policy("first-fit", cluster), cluster.capacity, jobs, departures=False).metrics
    assert m["allocation_ratio_by_arrived"] == {
        "0.5": 0.5,
        **{str(level): 1.0 for level in ARRIVED_LEVELS[1:]},
    }
    assert m["jobs_unplaced"] == 1


class _Rogue:
    """A policy that starts whatever it is told to, to check that the engine refuses bad outcomes."""

    name = "rogue"

    def __init__(self, on_submit: dict[str, Outcome]):
        self.on_submit = on_submit

    def submit(self, job: SimJob, now: float) -> Outcome:
        return self.on_submit.get(job.job_id, Outcome())

    def release(self, job_id: str, now: float) -> Outcome:
        return Outcome()

    def running(self) -> Mapping[str, Started]:
        return {}


@pytest.mark.parametrize(
    ("outcomes", "message"),
    [
        ({"a": Outcome(started=(Started("b", (), 1),))}, "started job b while it is future"),
        (
            {"a": Outcome(started=(Started("a", (), 1),)), "b": Outcome(started=(Started("a", (), 1),))},
            "started job a while it is running",
        ),
        ({"a": Outcome(preempted=("a",))}, "preempted job a while it is pending"),
        ({"a": Outcome(started=(Started("a", (), 9),))}, "9.0 GPUs allocated on 8"),
        ({"a": Outcome(started=(Started("zz", (), 1),))}, "unknown job 'zz'"),
    ],
)
def test_engine_refuses_a_policy_that_breaks_the_protocol(outcomes: dict[str, Outcome], message: str) -> None:
    jobs = [job("a", 0, 1), job("b", 5, 1)]
    with pytest.raises(SimulationError, match=message):
        simulate(_Rogue(outcomes), 8, jobs)


def test_engine_running_view_matches_the_policy() -> None:
    cluster = inventory(*((f"n{i}", "V100", 8) for i in range(2)))
    jobs = generate(
        WorkloadSpec(jobs=60, seed=2, capacity_gpus=16, load=1.5, max_job_gpus=16, opportunistic=0.5)
    )
    for name in policies():
        policy = make_policy(name, cluster)
        result = simulate(policy, cluster.capacity, jobs, departures=False)
        running = {j for j, r in result.records.items() if r.state == "running"}
        assert set(policy.running()) == running
        assert sum(s.gpus for s in policy.running().values()) == pytest.approx(
            result.metrics["final_held_ratio"] * cluster.capacity
        )


def test_sharing_anomaly_example() -> None:
    """vc-a is within its quota, yet quota-only makes it wait for vc-b; HiveD starts it at once."""
    cluster = load_cluster(EXAMPLES / "anomaly-2x8.yaml")
    jobs = parse_workload_csv((EXAMPLES / "anomaly-jobs.csv").read_text())
    quota = simulate(make_policy("quota-only", cluster), cluster.capacity, jobs)
    assert quota.records["a-2"].history[:2] == [("submit", 12), ("start", 1000)]
    assert quota.metrics["per_vc"]["vc-a"]["queueing_delay_s"]["p95"] == 988
    hived = simulate(make_policy("hived", cluster), cluster.capacity, jobs)
    assert hived.records["a-2"].history[:2] == [("submit", 12), ("start", 12)]
    assert hived.metrics["per_vc"]["vc-a"]["queueing_delay_s"]["p95"] == 0
    assert hived.metrics["preemptions"] == 0


def test_hived_runs_fractional_and_cpu_only_jobs() -> None:
    cluster = inventory(("n0", "V100", 8))
    # No GPU, CPU or memory, on a cluster without CPU leaves: the pod holds one GPU leaf it does not see.
    cpu_only = SimJob("cpu", 1, 100, "default", 100, 1, 0, (), 0, 0)
    jobs = [job("frac", 0, 0.5), cpu_only, job("sku", 2, 0), job("ok", 3, 2)]
    r = simulate(make_policy("hived", cluster), cluster.capacity, jobs).records
    assert r["frac"].state == "completed"
    assert r["cpu"].state == "completed"
    assert r["sku"].state == "completed" and r["ok"].state == "completed"


def test_hived_adapter_requeues_a_victim_that_started_in_the_same_call() -> None:
    """A release can start gang x and then preempt it for gang y; the engine never saw x run."""
    from pai_scheduler.hived.decisions import Allocated, PodPlacement, Preempting, Queued, Released
    from pai_scheduler.sim.hived_policy import HivedPolicy

    def placed(key: str) -> Allocated:
        return Allocated(key, (PodPlacement("task", 0, "n0", "V100", (0,)),))

    class Scripted:
        def __init__(self) -> None:
            self.calls: list[str] = []

        def submit(self, req: object, now: float | None = None) -> object:
            key = req.key  # type: ignore[attr-defined]
            self.calls.append(f"submit {key}")
            return Queued(key, "waiting (position 1)", 1, "waiting")

        def release(self, key: str, now: float | None = None) -> list[object]:
            self.calls.append(f"release {key}")
            if key == "done#0":
                return [Released(key), placed("x#0"), Preempting("y#0", ("x#0",), ())]
            if key == "x#0":
                return [Released(key), placed("y#0")]
            return [Released(key)]

    policy = HivedPolicy(inventory(("n0", "V100", 8)))
    script = Scripted()
    policy._alloc = script  # type: ignore[assignment]
    for j in ("done", "x", "y"):
        policy.submit(job(j, 0, 1), 0)
    policy._running["done"] = Started("done", (), 1)
    out = policy.release("done", 1)
    assert [s.job_id for s in out.started] == ["y"]
    assert out.preempted == ()  # x never ran as far as the engine knows
    assert script.calls[-2:] == ["release x#0", "submit x#1"]  # back in the queue as a new attempt
    assert set(policy.running()) == {"y"}


def test_every_policy_is_available() -> None:
    assert set(ALL) == {
        "first-fit",
        "best-fit",
        "whole-gpu",
        "quota-only",
        "hived",
        "hived-plain",
        "hived-no-borrow",
        "hived-strict",
        "hived-no-protect",
    }


def test_the_default_starvation_guard_costs_nothing_on_the_example_workload() -> None:
    # Simulated time, deterministic. Protecting every head at once drains a VC for each big head (the
    # drain waits for the longest job on its cells); the service's default, a 24 h guard, never changes a
    # completion time here (benchmarks/sim_backfill.py has the figures).
    cluster = load_cluster(EXAMPLES / "cluster-8x8.yaml")
    jobs = parse_workload_csv((EXAMPLES / "jobs-500.csv").read_text())

    def jct(policy: str) -> float:
        return float(simulate(make_policy(policy, cluster), cluster.capacity, jobs).metrics["jct_s"]["avg"])

    plain = jct("hived-no-protect")
    assert jct("hived") <= 1.02 * plain
    assert jct("hived-strict") > 1.2 * plain
