"""The simulator's workload: one job per CSV row, validated with errors that name the line and column.

Columns (header required, in any order, extra columns refused so that a typo is not silently ignored):
``job_id,submit_time,duration,vc,priority,tasks,gpu_per_task,gpu_type,cpu_per_task,memory_mb_per_task``.

* ``submit_time`` and ``duration`` are seconds (floats, >= 0 and > 0 respectively).
* ``priority`` is an integer: -1 (opportunistic) or 0..1000 (guaranteed), or one of OpenPAI's class names
  (``crit``, ``prod``, ``test``, ``oppo``).
* ``gpu_per_task`` may be fractional below 1 (a share of one GPU); at or above 1 it must be whole, because
  one task cannot hold "one and a half" devices.
* ``gpu_type`` is empty (any), one leaf type, or alternatives separated by ``|``.

One optional column, ``min_tasks``, makes a job *elastic* (OpenPAI's ``extras.elastic``: ``minInstances`` is
``min_tasks``, ``maxInstances`` is ``tasks``): empty, absent or equal to ``tasks``, the job is rigid. An
elastic job's work is fixed: ``tasks * duration`` task-seconds, i.e. ``duration`` is its run time at its
maximum; the engine divides the work left by the instances it has at each moment (see ``engine.py``).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

COLUMNS = (
    "job_id",
    "submit_time",
    "duration",
    "vc",
    "priority",
    "tasks",
    "gpu_per_task",
    "gpu_type",
    "cpu_per_task",
    "memory_mb_per_task",
)
OPTIONAL_COLUMNS = ("min_tasks",)

# OpenPAI's priority classes (kept here rather than imported from the HiveD package, which is in flux:
# the CSV format must not change when the allocator does).
PRIORITY_CLASSES = {"crit": 120, "prod": 100, "test": 10, "oppo": -1}
OPPORTUNISTIC = -1
MAX_PRIORITY = 1000


class WorkloadError(ValueError):
    """A workload that cannot be replayed; the message names the line (1 = header) and column."""


@dataclass(frozen=True)
class SimJob:
    job_id: str
    submit_time: float
    duration: float
    vc: str
    priority: int
    tasks: int
    gpu_per_task: float
    gpu_types: tuple[str, ...]  # empty: any leaf type
    cpu_per_task: float
    memory_mb_per_task: int
    line: int = 0  # where it came from, for messages; 0 when built in code
    # Elastic jobs: the fewest tasks the job runs with (``tasks`` is the most); 0 (or ``tasks``): rigid.
    min_tasks: int = 0

    @property
    def gpus(self) -> float:
        """The job's total GPU demand at its largest (shares count as their fraction)."""
        return self.tasks * self.gpu_per_task

    @property
    def elastic(self) -> bool:
        return 0 < self.min_tasks < self.tasks

    @property
    def minimum(self) -> int:
        """The tasks the job needs to run at all (its gang)."""
        return self.min_tasks if self.elastic else self.tasks

    @property
    def work(self) -> float:
        """Task-seconds the job must run to complete: ``duration`` at its largest."""
        return self.tasks * self.duration

    @property
    def guaranteed(self) -> bool:
        return self.priority >= 0


def parse_workload_csv(text: str) -> list[SimJob]:
    """Parse and validate the whole file; jobs are returned in file order."""
    reader = csv.reader(io.StringIO(text))
    try:
        header = next(reader)
    except StopIteration:
        raise WorkloadError("line 1: the workload is empty (a header row is required)") from None
    header = [h.strip() for h in header]
    missing = [c for c in COLUMNS if c not in header]
    unknown = [h for h in header if h not in COLUMNS + OPTIONAL_COLUMNS]
    if missing or unknown:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(unknown)}")
        raise WorkloadError(
            f"line 1: header: {'; '.join(parts)} (expected {','.join(COLUMNS)}, optionally"
            f" {','.join(OPTIONAL_COLUMNS)})"
        )
    dupes = sorted({h for h in header if header.count(h) > 1})
    if dupes:
        raise WorkloadError(f"line 1: header: column(s) {', '.join(dupes)} appear more than once")
    index = {name: header.index(name) for name in COLUMNS + OPTIONAL_COLUMNS if name in header}
    jobs: list[SimJob] = []
    seen: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not row or all(not cell.strip() for cell in row):
            continue  # blank lines are harmless, e.g. a trailing newline
        if len(row) != len(header):
            raise WorkloadError(f"line {line}: {len(row)} fields, the header has {len(header)}")
        cells = {name: row[i].strip() for name, i in index.items()}
        job = _parse_row(cells, line)
        if job.job_id in seen:
            raise WorkloadError(
                f"line {line}, column job_id: {job.job_id!r} is already used on line {seen[job.job_id]}"
            )
        seen[job.job_id] = line
        jobs.append(job)
    return jobs


def _parse_row(cells: dict[str, str], line: int) -> SimJob:
    def fail(column: str, message: str) -> WorkloadError:
        return WorkloadError(f"line {line}, column {column}: {message} (got {cells[column]!r})")

    def number(column: str) -> float:
        try:
            value = float(cells[column])
        except ValueError:
            raise fail(column, "must be a number") from None
        if not math.isfinite(value):
            raise fail(column, "must be a finite number")
        return value

    def integer(column: str) -> int:
        try:
            return int(cells[column])
        except ValueError:
            raise fail(column, "must be a whole number") from None

    job_id = cells["job_id"]
    if not job_id:
        raise fail("job_id", "must not be empty")
    submit = number("submit_time")
    if submit < 0:
        raise fail("submit_time", "must be >= 0")
    duration = number("duration")
    if duration <= 0:
        raise fail("duration", "must be > 0")
    vc = cells["vc"]
    if not vc:
        raise fail("vc", "must name a virtual cluster")
    raw_priority = cells["priority"]
    if raw_priority.lower() in PRIORITY_CLASSES:
        priority = PRIORITY_CLASSES[raw_priority.lower()]
    else:
        priority = integer("priority")
        if priority != OPPORTUNISTIC and not 0 <= priority <= MAX_PRIORITY:
            raise fail("priority", f"must be -1 (opportunistic), 0..{MAX_PRIORITY}, or crit/prod/test/oppo")
    tasks = integer("tasks")
    if tasks < 1:
        raise fail("tasks", "must be >= 1")
    gpu = number("gpu_per_task")
    if gpu < 0:
        raise fail("gpu_per_task", "must be >= 0")
    if gpu > 1 and gpu != int(gpu):
        raise fail(
            "gpu_per_task", "a fraction must be below 1 (a share of one GPU); above 1 it must be whole"
        )
    raw_types = cells["gpu_type"]
    types = tuple(t.strip() for t in raw_types.split("|")) if raw_types else ()
    if any(not t for t in types):
        raise fail("gpu_type", "alternatives separated by '|' must not be empty")
    if len(set(types)) != len(types):
        raise fail("gpu_type", "lists a type twice")
    cpu = number("cpu_per_task")
    if cpu < 0:
        raise fail("cpu_per_task", "must be >= 0")
    memory = integer("memory_mb_per_task")
    if memory < 0:
        raise fail("memory_mb_per_task", "must be >= 0")
    min_tasks = 0
    if cells.get("min_tasks"):
        min_tasks = integer("min_tasks")
        if not 1 <= min_tasks <= tasks:
            raise fail("min_tasks", f"must be 1..tasks ({tasks}), or empty for a rigid job")
        if min_tasks == tasks:
            min_tasks = 0  # rigid, written the long way
    return SimJob(job_id, submit, duration, vc, priority, tasks, gpu, types, cpu, memory, line, min_tasks)


def _fmt_number(value: float) -> str:
    # Whole numbers without ".0" keep the files readable and round-trip exactly.
    return str(int(value)) if value == int(value) else repr(value)


def format_workload_csv(jobs: Iterable[SimJob]) -> str:
    """The workload as CSV; the ``min_tasks`` column only when a job is elastic (rigid workloads keep the
    plain format)."""
    jobs = list(jobs)
    elastic = any(j.elastic for j in jobs)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS + OPTIONAL_COLUMNS if elastic else COLUMNS)
    for j in jobs:
        writer.writerow(
            [
                j.job_id,
                _fmt_number(j.submit_time),
                _fmt_number(j.duration),
                j.vc,
                j.priority,
                j.tasks,
                _fmt_number(j.gpu_per_task),
                "|".join(j.gpu_types),
                _fmt_number(j.cpu_per_task),
                j.memory_mb_per_task,
            ]
            + ([j.min_tasks if j.elastic else ""] if elastic else [])
        )
    return out.getvalue()


def sort_by_submit(jobs: Sequence[SimJob]) -> list[SimJob]:
    """Arrival order: submit time, then file order (a stable sort keeps equal times as written)."""
    return sorted(jobs, key=lambda j: j.submit_time)
