"""Workload CSV parsing: valid files round-trip, invalid rows are refused with their line and column."""

from __future__ import annotations

import pytest

from pai_scheduler.sim.jobs import COLUMNS, WorkloadError, format_workload_csv, parse_workload_csv
from pai_scheduler.sim.workloads import SIZE_MIX, WorkloadSpec, generate

HEADER = ",".join(COLUMNS)
GOOD = "j1,0,60,vc-a,100,2,4,A100|H100,8,16384"


def parse_rows(*rows: str, header: str = HEADER) -> list[object]:
    return list(parse_workload_csv("\n".join([header, *rows]) + "\n"))


def test_valid_row_is_parsed() -> None:
    (j,) = parse_workload_csv(f"{HEADER}\n{GOOD}\n")
    assert (j.job_id, j.submit_time, j.duration, j.vc, j.priority) == ("j1", 0.0, 60.0, "vc-a", 100)
    assert (j.tasks, j.gpu_per_task, j.gpu_types, j.cpu_per_task, j.memory_mb_per_task) == (
        2,
        4.0,
        ("A100", "H100"),
        8.0,
        16384,
    )
    assert j.gpus == 8 and j.line == 2


def test_columns_in_any_order_classes_fractions_and_empty_type() -> None:
    header = (
        "vc,job_id,duration,submit_time,priority,tasks,gpu_per_task,gpu_type,cpu_per_task,memory_mb_per_task"
    )
    (j,) = parse_workload_csv(f"{header}\nvc-b,x,5,1.5,oppo,1,0.25,,1,0\n")
    assert (j.job_id, j.vc, j.submit_time, j.priority, j.gpu_per_task, j.gpu_types) == (
        "x",
        "vc-b",
        1.5,
        -1,
        0.25,
        (),
    )
    assert not j.guaranteed


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ("j1,-1,60,vc-a,100,2,4,,8,16384", "line 2, column submit_time: must be >= 0"),
        ("j1,soon,60,vc-a,100,2,4,,8,16384", "line 2, column submit_time: must be a number"),
        ("j1,0,0,vc-a,100,2,4,,8,16384", "line 2, column duration: must be > 0"),
        ("j1,0,inf,vc-a,100,2,4,,8,16384", "line 2, column duration: must be a finite number"),
        ("j1,0,60,,100,2,4,,8,16384", "line 2, column vc: must name a virtual cluster"),
        ("j1,0,60,vc-a,1001,2,4,,8,16384", "line 2, column priority: must be -1"),
        ("j1,0,60,vc-a,-2,2,4,,8,16384", "line 2, column priority: must be -1"),
        ("j1,0,60,vc-a,urgent,2,4,,8,16384", "line 2, column priority: must be a whole number"),
        ("j1,0,60,vc-a,100,0,4,,8,16384", "line 2, column tasks: must be >= 1"),
        ("j1,0,60,vc-a,100,1.5,4,,8,16384", "line 2, column tasks: must be a whole number"),
        ("j1,0,60,vc-a,100,2,1.5,,8,16384", "line 2, column gpu_per_task: a fraction must be below 1"),
        ("j1,0,60,vc-a,100,2,-1,,8,16384", "line 2, column gpu_per_task: must be >= 0"),
        ("j1,0,60,vc-a,100,2,4,A100||H100,8,16384", "line 2, column gpu_type: alternatives"),
        ("j1,0,60,vc-a,100,2,4,A100|A100,8,16384", "line 2, column gpu_type: lists a type twice"),
        ("j1,0,60,vc-a,100,2,4,,-8,16384", "line 2, column cpu_per_task: must be >= 0"),
        ("j1,0,60,vc-a,100,2,4,,8,16.5", "line 2, column memory_mb_per_task: must be a whole number"),
        (",0,60,vc-a,100,2,4,,8,16384", "line 2, column job_id: must not be empty"),
        ("j1,0,60,vc-a,100,2,4,,8", "line 2: 9 fields, the header has 10"),
    ],
)
def test_invalid_row_names_line_and_column(row: str, message: str) -> None:
    with pytest.raises(WorkloadError) as e:
        parse_rows(row)
    assert message in str(e.value)


def test_error_line_counts_from_the_header_and_skips_blank_lines() -> None:
    with pytest.raises(WorkloadError, match=r"^line 4, column duration"):
        parse_rows(GOOD, "", "j2,0,-5,vc-a,100,1,1,,1,1")


def test_duplicate_job_id_names_both_lines() -> None:
    with pytest.raises(WorkloadError, match=r"line 3, column job_id: 'j1' is already used on line 2"):
        parse_rows(GOOD, GOOD)


@pytest.mark.parametrize(
    ("header", "message"),
    [
        (HEADER.replace(",gpu_type", ""), "missing column(s) gpu_type"),
        (HEADER + ",color", "unknown column(s) color"),
        (HEADER + ",vc", "column(s) vc appear more than once"),
    ],
)
def test_bad_header(header: str, message: str) -> None:
    with pytest.raises(WorkloadError) as e:
        parse_rows(header=header)
    assert str(e.value).startswith("line 1: header:") and message in str(e.value)


def test_empty_file() -> None:
    with pytest.raises(WorkloadError, match="line 1: the workload is empty"):
        parse_workload_csv("")


def test_generated_workload_round_trips_and_is_seeded() -> None:
    spec = WorkloadSpec(jobs=300, seed=7, vcs=(("a", 2.0), ("b", 1.0)), fractional=0.3)
    jobs = generate(spec)
    assert parse_workload_csv(format_workload_csv(jobs)) == [
        type(j)(**{**j.__dict__, "line": i + 2}) for i, j in enumerate(jobs)
    ]
    assert generate(spec) == jobs
    assert generate(WorkloadSpec(jobs=300, seed=8)) != jobs
    times = [j.submit_time for j in jobs]
    assert times == sorted(times) and len(set(times)) == len(times)


def test_generated_mix_looks_like_the_spec() -> None:
    jobs = generate(WorkloadSpec(jobs=4000, seed=1, vcs=(("a", 3.0), ("b", 1.0)), opportunistic=0.2))
    one = sum(j.tasks * max(1.0, j.gpu_per_task) == 1 for j in jobs) / len(jobs)
    assert abs(one - SIZE_MIX[0][2]) < 0.04
    assert any(j.tasks == 4 and j.gpu_per_task == 8 for j in jobs)  # a few 32-GPU gangs
    assert abs(sum(j.vc == "a" for j in jobs) / len(jobs) - 0.75) < 0.04
    assert abs(sum(j.priority == -1 for j in jobs) / len(jobs) - 0.2) < 0.04
    assert max(j.gpus for j in generate(WorkloadSpec(jobs=500, max_job_gpus=8))) <= 8
