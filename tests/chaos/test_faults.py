"""Faults on a `pai up` of each scenario's own while jobs of several kinds run (tests/chaos/faults.py says
what is checked after each). Two scenarios, bounded for `./dev test`; benchmarks/chaos.py runs the whole
matrix and records its table."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.acceptance.harness import start_platform, stop_platform
from tests.chaos import faults

pytestmark = pytest.mark.e2e


def _assert_clean(outcome: faults.Outcome) -> None:
    assert not outcome.lost, "jobs ended otherwise than without the fault:\n" + "\n".join(outcome.lost)
    assert not outcome.run_twice, f"task attempts that ran twice: {outcome.run_twice}"
    assert outcome.leaked_gpus == 0, f"{outcome.leaked_gpus} GPUs never came back"
    assert not outcome.undelivered, f"messages left undelivered: {outcome.undelivered}"


def test_several_services_and_a_node_agent_killed_mid_workload(tmp_path: Path) -> None:
    workload = faults.Workload(markers=tmp_path / "markers.log")
    platform = start_platform(tmp_path / "pai", nodes=2, gpus_per_node=4)
    try:
        with platform.client() as client:
            jobs = workload.jobs(platform.admin_user)
            faults.submit_all(client, jobs)
            faults.wait_running(client, [k for k, _ in jobs if "stop" in k or "one" in k])
            with faults.Probe(client, workload, platform.admin_user) as probe:
                fault_at = time.monotonic() - probe.started
                faults.kill(platform, "jobs", "orchestrator", "scheduler", "node-0")
                faults.stop_the_ones_to_stop(client, workload)
                while probe.recovered_after(fault_at) is None:
                    assert platform.proc.poll() is None, platform.log_tail()
                    assert time.monotonic() - probe.started - fault_at < faults.GUARD_S, probe.answers
                    time.sleep(0.5)
            assert not probe.wrong_answers(), probe.answers
            _assert_clean(faults.settle(platform, workload, client))
    finally:
        stop_platform(platform.proc)


def test_an_unclean_stop_then_a_start_on_the_same_data_serves_at_once_and_loses_nothing(
    tmp_path: Path,
) -> None:
    """The 500s seen after an unclean stop: the next start must answer its first submissions 202 (or 503
    with Retry-After, tried again), never 500, and finish what the crashed one had in flight."""
    workload = faults.Workload(markers=tmp_path / "markers.log")
    data = tmp_path / "pai"
    first = start_platform(data, nodes=2, gpus_per_node=4)
    with first.client() as client:
        jobs = workload.jobs(first.admin_user)
        faults.submit_all(client, jobs)
        faults.wait_running(client, [k for k, _ in jobs if "one" in k])
    faults.kill_tree(first)
    (data / "cli.json").unlink(missing_ok=True)  # the harness waits for the next start to write it
    second = start_platform(data, nodes=2, gpus_per_node=4)
    try:
        with second.client() as client:
            answers = []
            for i in range(8):  # at once, as the users who were waiting do
                name = f"after{workload.suffix}{i}"
                text = faults._job(name, {"main": (1, 0, faults._marker(workload.markers))})
                answer = client.post("/api/v2/jobs", content=text, headers=faults.YAML)
                answers.append(answer.status_code)
                assert answer.status_code in (202, 503), answer.text
                if answer.status_code == 503:
                    assert answer.headers["Retry-After"], answer.headers
                    answer = faults.submit_until_final(client, text)
                    assert answer.status_code == 202, answer.text
                workload.expected[f"{second.admin_user}~{name}"] = "SUCCEEDED"
            faults.stop_the_ones_to_stop(client, workload)
            _assert_clean(faults.settle(second, workload, client))
    finally:
        stop_platform(second.proc)
